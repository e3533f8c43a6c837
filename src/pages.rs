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

pub(crate) fn page_shell(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"it\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a}}\
h1{{font-size:1.5rem}}.en{{color:#555}}button{{font:inherit;padding:.6rem 1rem;margin:.3rem 0;\
border:2px solid #06c;background:#06c;color:#fff;border-radius:4px;cursor:pointer;min-width:18rem;text-align:left}}\
button:focus{{outline:3px solid #fc0;outline-offset:2px}}ul{{list-style:none;padding:0}}</style></head>\
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

/// A group of choices under a heading (SPID with its identity providers, CIE, ...).
pub struct LoginSection {
    pub title_it: &'static str,
    pub title_en: &'static str,
    pub choices: Vec<LoginChoice>,
}

/// The login chooser. Works without JavaScript: every choice is a form with a button,
/// reachable with the keyboard; each method is a section with a heading.
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
    for section in sections.iter().filter(|s| !s.choices.is_empty()) {
        body.push_str(&format!(
            "<section><h2>{} <span class=\"en\" lang=\"en\">({})</span></h2><ul>",
            escape_html(section.title_it),
            escape_html(section.title_en)
        ));
        for c in &section.choices {
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
                    "<img src=\"{}\" alt=\"\" width=\"24\" height=\"24\"> ",
                    escape_html(src)
                )
            });
            let english = if c.label_en == c.label_it {
                String::new()
            } else {
                format!(" <span lang=\"en\">({})</span>", escape_html(&c.label_en))
            };
            match &c.unavailable {
                None => body.push_str(&format!(
                    "<button type=\"submit\">{logo}{}{english}</button></form></li>",
                    escape_html(&c.label_it),
                )),
                Some(reason) => body.push_str(&format!(
                    "<button type=\"submit\" disabled>{logo}{}{english}</button> \
<small>Non disponibile <span lang=\"en\">(unavailable)</span>: {}</small></form></li>",
                    escape_html(&c.label_it),
                    escape_html(reason),
                )),
            }
        }
        body.push_str("</ul></section>");
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
