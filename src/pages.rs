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

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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
        let body = serde_json::json!({
            "error": err.code(),
            "status": status.as_u16(),
            "message": en,
            "messaggio": it,
            "request_id": request_id,
        });
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
<body><main><h1>{title}</h1><p>{it}</p><p class=\"en\" lang=\"en\">{en}</p>\
<p><small>Codice richiesta / Request id: <code>{rid}</code></small></p></main></body></html>\n",
        title = escape_html(&title),
        it = escape_html(it),
        en = escape_html(en),
        rid = escape_html(request_id),
    );
    Page {
        status,
        content_type: HeaderValue::from_static("text/html; charset=utf-8"),
        body: Bytes::from(body),
    }
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
