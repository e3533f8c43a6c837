//! Server-rendered pages: error pages in HTML (Italian first, then English; no JavaScript)
//! or JSON for API clients (`Accept: application/json`). Everything interpolated into HTML
//! is escaped.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};

/// Whether the client prefers JSON: an `Accept` naming `application/json` (or `+json`)
/// and not `text/html`.
pub fn wants_json(headers: &HeaderMap) -> bool {
    let mut json = false;
    for v in headers.get_all(http::header::ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        if v.contains("text/html") {
            return false;
        }
        if v.contains("application/json") || v.contains("+json") {
            json = true;
        }
    }
    json
}

pub use crate::escape::html as escape_html;

/// A complete page: status, content type and body.
pub struct Page {
    pub status: StatusCode,
    pub content_type: HeaderValue,
    pub body: Bytes,
}

impl Page {
    pub fn headers(&self) -> [(http::HeaderName, HeaderValue); 2] {
        [
            (CONTENT_TYPE, self.content_type.clone()),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ]
    }
}

/// The one design of every page the gateway serves (login, errors, logout): system
/// fonts, AgID's blue (#0066cc, white text: contrast 5.6:1), a dark focus ring that is
/// always visible, buttons the full width of a 320 px screen. No external assets.
pub const STYLE: &str = "*{box-sizing:border-box}\
body{font-family:'Titillium Web',system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:40rem;\
margin:0 auto;padding:1.5rem 1rem 3rem;color:#1a1a1a;line-height:1.5;background:#fff}\
h1{font-size:1.6rem;margin:.5rem 0}h2{font-size:1.1rem;margin:0 0 .4rem}\
.en{color:#555}a{color:#0059b3}code{background:#eee;padding:0 .2rem}\
a:focus,button:focus,summary:focus{outline:3px solid #003366;outline-offset:2px}\
ul{list-style:none;padding:0;margin:0}\
section{border-top:1px solid #d6d6d6;padding:.9rem 0}\
button,.btn{font:inherit;font-weight:600;display:flex;align-items:center;gap:.6rem;width:100%;\
max-width:22rem;min-height:2.75rem;padding:.5rem 1rem;margin:.3rem 0;border:2px solid #0066cc;\
border-radius:4px;background:#fff;color:#0066cc;cursor:pointer;text-align:left}\
.primary,.primary:visited{background:#0066cc;color:#fff}.primary:hover{background:#004d99}\
button:hover{border-color:#004d99}button:disabled{opacity:.6;cursor:not-allowed}\
summary{list-style:none}summary::-webkit-details-marker{display:none}\
summary::after{content:'\\25BE';margin-left:auto}details[open] summary::after{content:'\\25B4'}\
.idps{border:2px solid #0066cc;border-radius:4px;max-width:22rem;margin:.2rem 0;padding:0 .4rem}\
.idps button{border:0;border-bottom:1px solid #e6e6e6;border-radius:0;margin:0;max-width:none;color:#1a1a1a}\
.idps li:last-child button{border-bottom:0}\
.links,.hint{font-size:.9rem;margin:.3rem 0}.hint{color:#444}\
svg{flex:none}small{display:block;color:#444}";

pub(crate) fn page_shell(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"it\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style></head>\
<body><main>{body}</main></body></html>\n",
        title = escape_html(title),
    )
}

/// One choice on the login page: a button that POSTs hidden fields to `action`.
pub struct LoginChoice {
    pub action: String,
    pub fields: Vec<(&'static str, String)>,
    pub label_it: String,
    pub label_en: String,
    /// An https logo (IdP metadata's `mdui:Logo`), shown before the label.
    pub logo: Option<String>,
    /// Why the choice cannot be used right now (a provider whose documents could not be
    /// fetched): shown, with the button disabled.
    pub unavailable: Option<String>,
}

/// How a section is drawn: SPID's button with its menu of identity providers, the CIE
/// and CNS buttons (AgID's style family), or plain choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionStyle {
    Spid,
    Cie,
    Cns,
    Plain,
}

/// A group of choices under a heading (SPID with its identity providers, CIE, ...).
pub struct LoginSection {
    pub title_it: &'static str,
    pub title_en: &'static str,
    pub style: SectionStyle,
    pub choices: Vec<LoginChoice>,
}

/// Our own drawings (no copied assets): a person for SPID, a card for CIE, a chip card
/// for CNS; decorative (`aria-hidden`), in the text's colour.
const ICON_PERSON: &str = "<svg aria-hidden=\"true\" width=\"24\" height=\"24\" viewBox=\"0 0 24 24\"><circle cx=\"12\" cy=\"7.5\" r=\"4\" fill=\"currentColor\"/><path d=\"M4 21c0-4.4 3.6-7.5 8-7.5s8 3.1 8 7.5z\" fill=\"currentColor\"/></svg>";
const ICON_CARD: &str = "<svg aria-hidden=\"true\" width=\"24\" height=\"24\" viewBox=\"0 0 24 24\"><rect x=\"2\" y=\"5\" width=\"20\" height=\"14\" rx=\"2\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"2\"/><circle cx=\"8\" cy=\"11\" r=\"2.2\" fill=\"currentColor\"/><path d=\"M13 10h6M13 14h6M5 16h6\" stroke=\"currentColor\" stroke-width=\"1.6\"/></svg>";
const ICON_CHIP: &str = "<svg aria-hidden=\"true\" width=\"24\" height=\"24\" viewBox=\"0 0 24 24\"><rect x=\"2\" y=\"5\" width=\"20\" height=\"14\" rx=\"2\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"2\"/><rect x=\"5\" y=\"9\" width=\"6\" height=\"5\" rx=\"1\" fill=\"currentColor\"/></svg>";

/// One choice: a form POSTing its hidden fields, with a button (`class`, `icon`).
fn choice_form(body: &mut String, c: &LoginChoice, class: &str, icon: &str) {
    body.push_str(&format!(
        "<li><form method=\"post\" action=\"{}\">",
        escape_html(&c.action)
    ));
    for (k, v) in &c.fields {
        body.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape_html(k),
            escape_html(v)
        ));
    }
    let logo = c.logo.as_deref().map_or(String::new(), |src| {
        format!(
            "<img src=\"{}\" alt=\"\" width=\"24\" height=\"24\">",
            escape_html(src)
        )
    });
    let english = if c.label_en == c.label_it {
        String::new()
    } else {
        format!(" <span lang=\"en\">({})</span>", escape_html(&c.label_en))
    };
    let class = if class.is_empty() {
        String::new()
    } else {
        format!(" class=\"{class}\"")
    };
    match &c.unavailable {
        None => body.push_str(&format!(
            "<button type=\"submit\"{class}>{icon}{logo}<span>{}{english}</span></button></form></li>",
            escape_html(&c.label_it),
        )),
        Some(reason) => body.push_str(&format!(
            "<button type=\"submit\"{class} disabled>{icon}{logo}<span>{}{english}</span></button>\
<small>Non disponibile <span lang=\"en\">(unavailable)</span>: {}</small></form></li>",
            escape_html(&c.label_it),
            escape_html(reason),
        )),
    }
}

/// The login chooser, following AgID's rules for service providers: the "Entra con SPID"
/// button opens the list of identity providers (a `<details>`: no JavaScript needed; the
/// order is random at each rendering, by the caller), with the links "Maggiori
/// informazioni", "Non hai SPID?" and "Serve aiuto?"; "Entra con CIE" and "Entra con CNS"
/// (with a hint about the card reader) in the same style; the other methods as plain
/// buttons. One `<h1>`; each method a region labelled by its heading.
pub fn login_page(
    sections: &[LoginSection],
    development: bool,
    note: Option<(&str, &str)>,
) -> String {
    let mut body = String::from(
        "<h1>Accedi al servizio</h1><p class=\"en\" lang=\"en\">Log in to the service</p>",
    );
    if let Some((it, en)) = note {
        body.push_str(&format!(
            "<p><strong>{}</strong> <span class=\"en\" lang=\"en\">{}</span></p>",
            escape_html(it),
            escape_html(en)
        ));
    }
    if development {
        body.push_str(
            "<p><strong>Ambiente di sviluppo:</strong> utenti di prova, nessuna verifica reale. \
<span class=\"en\" lang=\"en\">Development only: test users, no real authentication.</span></p>",
        );
    }
    if sections.iter().all(|s| s.choices.is_empty()) {
        body.push_str(
            "<p>Nessun metodo di accesso è configurato.</p>\
<p class=\"en\" lang=\"en\">No login method is configured.</p>",
        );
    }
    for (i, section) in sections
        .iter()
        .filter(|s| !s.choices.is_empty())
        .enumerate()
    {
        body.push_str(&format!(
            "<section aria-labelledby=\"m{i}\"><h2 id=\"m{i}\">{} <span class=\"en\" lang=\"en\">({})</span></h2>",
            escape_html(section.title_it),
            escape_html(section.title_en)
        ));
        match section.style {
            SectionStyle::Spid => {
                body.push_str(&format!(
                    "<details><summary class=\"btn primary\">{ICON_PERSON}<span>Entra con SPID</span></summary>\
<ul class=\"idps\" aria-label=\"Gestori di identità SPID\">"
                ));
                for c in &section.choices {
                    choice_form(&mut body, c, "", "");
                }
                body.push_str(
                    "</ul></details><p class=\"links\">\
<a href=\"https://www.spid.gov.it\">Maggiori informazioni</a> · \
<a href=\"https://www.spid.gov.it/cos-e-spid/come-attivare-spid/\">Non hai SPID?</a> · \
<a href=\"https://www.spid.gov.it/serve-aiuto\">Serve aiuto?</a></p>",
                );
            }
            SectionStyle::Cie | SectionStyle::Cns => {
                let icon = if section.style == SectionStyle::Cie {
                    ICON_CARD
                } else {
                    ICON_CHIP
                };
                body.push_str("<ul>");
                for c in &section.choices {
                    choice_form(&mut body, c, "primary", icon);
                }
                body.push_str("</ul>");
                if section.style == SectionStyle::Cns {
                    body.push_str(
                        "<p class=\"hint\">Inserisci la carta nel lettore prima di aprire il sito: il browser ti chiederà il certificato e il PIN della carta. \
Se non te li chiede, chiudi e riapri il browser con la carta inserita. \
<span lang=\"en\">Insert the card before opening the site: the browser asks for its certificate and PIN. \
If it does not, close and reopen the browser with the card inserted.</span></p>",
                    );
                }
            }
            SectionStyle::Plain => {
                body.push_str("<ul>");
                for c in &section.choices {
                    choice_form(&mut body, c, "", "");
                }
                body.push_str("</ul>");
            }
        }
        body.push_str("</section>");
    }
    page_shell("Accedi / Log in", &body)
}

/// Asks for the logout with a POST button (GET never ends a session).
pub fn logout_confirm_page(action: &str) -> String {
    page_shell(
        "Esci / Log out",
        &format!(
            "<h1>Vuoi uscire dal servizio?</h1><p class=\"en\" lang=\"en\">Do you want to log out?</p>\
<form method=\"post\" action=\"{}\"><button type=\"submit\">Esci <span lang=\"en\">(Log out)</span></button></form>",
            escape_html(action)
        ),
    )
}

/// Shown after logout when there is nowhere to return to.
pub fn logged_out_page(login_url: &str) -> String {
    page_shell(
        "Uscita / Logged out",
        &format!(
            "<h1>Sei uscito dal servizio</h1><p class=\"en\" lang=\"en\">You are logged out.</p>\
<p><a href=\"{}\">Accedi di nuovo</a> · <a lang=\"en\" href=\"{0}\">Log in again</a></p>",
            escape_html(login_url)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_chosen_only_when_asked_for() {
        let mut h = HeaderMap::new();
        assert!(!wants_json(&h));
        h.insert("accept", HeaderValue::from_static("application/json"));
        assert!(wants_json(&h));
        h.insert(
            "accept",
            HeaderValue::from_static("text/html,application/json;q=0.9"),
        );
        assert!(!wants_json(&h));
    }
}
