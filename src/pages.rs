//! Server-rendered pages: error pages in HTML (Italian first, then English; no JavaScript)
//! or JSON for API clients (`Accept: application/json`). Everything interpolated into HTML
//! is escaped.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::error::GatewayError;

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

/// The error page (or JSON) for `err`, carrying the request id so users can quote it.
pub fn error_page(err: &GatewayError, request_id: &str, json: bool) -> Page {
    let status = err.status();
    let (it, en) = err.user_message();
    if json {
        let mut body = serde_json::json!({
            "error": err.code(),
            "status": status.as_u16(),
            "message": en,
            "messaggio": it,
            "request_id": request_id,
        });
        // API clients learn where to log in and, for a step-up, the level required.
        if let GatewayError::LoginRequired { login_url } = err {
            body["login_url"] = serde_json::Value::from(login_url.as_str());
            if let Some(level) = login_url.split("level=").nth(1) {
                body["required_level"] = serde_json::Value::from(level);
            }
        }
        if let GatewayError::PinRefused(r) = err {
            body["login_url"] = serde_json::Value::from(r.login_url.as_str());
            body["accepted_methods"] = serde_json::json!(["spid", "cie", "cns"]);
        }
        return Page {
            status,
            content_type: HeaderValue::from_static("application/json"),
            body: Bytes::from(body.to_string()),
        };
    }
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"it\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a}}\
h1{{font-size:1.5rem}}.en{{color:#555}}code{{background:#eee;padding:0 .2rem}}</style></head>\
<body><main><h1>{title}</h1><p>{it}</p><p class=\"en\" lang=\"en\">{en}</p>{action}\
<p><small>Codice richiesta / Request id: <code>{rid}</code></small></p></main></body></html>\n",
        title = escape_html(&title),
        it = escape_html(it),
        en = escape_html(en),
        rid = escape_html(request_id),
        action = match err {
            GatewayError::PinRefused(r) => format!(
                "<p><a href=\"{}\">Accedi con SPID, CIE o CNS</a> · <a lang=\"en\" href=\"{0}\">Log in with SPID, CIE or CNS</a></p>",
                escape_html(&r.login_url)
            ),
            _ => String::new(),
        },
    );
    Page {
        status,
        content_type: HeaderValue::from_static("text/html; charset=utf-8"),
        body: Bytes::from(body),
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
pub struct LoginChoice<'a> {
    pub action: &'a str,
    pub fields: Vec<(&'a str, &'a str)>,
    pub label_it: &'a str,
    pub label_en: &'a str,
    /// An https logo (IdP metadata's `mdui:Logo`), shown before the label.
    pub logo: Option<&'a str>,
}

/// A group of choices under a heading (SPID with its identity providers, CIE, ...).
pub struct LoginSection<'a> {
    pub title_it: &'a str,
    pub title_en: &'a str,
    pub choices: Vec<LoginChoice<'a>>,
}

/// The login chooser. Works without JavaScript: every choice is a form with a button,
/// reachable with the keyboard; each method is a section with a heading.
pub fn login_page(
    sections: &[LoginSection<'_>],
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
                escape_html(c.action)
            ));
            for (k, v) in &c.fields {
                body.push_str(&format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                    escape_html(k),
                    escape_html(v)
                ));
            }
            let logo = c.logo.map_or(String::new(), |src| {
                format!(
                    "<img src=\"{}\" alt=\"\" width=\"24\" height=\"24\"> ",
                    escape_html(src)
                )
            });
            let english = if c.label_en == c.label_it {
                String::new()
            } else {
                format!(" <span lang=\"en\">({})</span>", escape_html(c.label_en))
            };
            body.push_str(&format!(
                "<button type=\"submit\">{logo}{}{english}</button></form></li>",
                escape_html(c.label_it),
            ));
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

    #[test]
    fn pages_escape_the_request_id() {
        let p = error_page(&GatewayError::NoRoute, "<script>", false);
        let body = std::str::from_utf8(&p.body).unwrap();
        assert!(body.contains("&lt;script&gt;"));
        assert!(!body.contains("<script>"));
        assert_eq!(p.status, StatusCode::NOT_FOUND);
    }
}
