//! The parameter names a request body carries, for a route whose client (assistito) is
//! named by a query parameter: many frameworks merge body parameters with the query's
//! (PHP `$_REQUEST`, Rails `params` — JSON bodies included —, Spring `@RequestParam`,
//! ASP.NET `Request[...]`), so the same name in the body is a second naming of the client.
//! Pure functions over the headers and the bytes the gateway read.

use http::HeaderMap;
use http::header::CONTENT_TYPE;

/// A body whose parameters a backend framework may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormKind {
    UrlEncoded,
    /// With its boundary.
    Multipart(String),
    /// A JSON document (its top-level keys are parameters to Rails).
    Json,
}

/// The body could not be read the way a backend would read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("more than one Content-Type")]
    RepeatedContentType,
    #[error("a multipart body without a usable boundary")]
    NoBoundary,
}

/// Whether the request's body is one whose parameters frameworks read (`None`: not a
/// form; a body of another type is not inspected).
pub fn form_kind(headers: &HeaderMap) -> Result<Option<FormKind>, FormError> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(FormError::RepeatedContentType);
    }
    let Ok(text) = v.to_str() else {
        return Ok(None);
    };
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-www-form-urlencoded" => Ok(Some(FormKind::UrlEncoded)),
        "multipart/form-data" => {
            let boundary = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
                .filter(|b| !b.is_empty() && b.len() <= 70)
                .ok_or(FormError::NoBoundary)?;
            Ok(Some(FormKind::Multipart(boundary)))
        }
        e if e == "application/json" || (e.starts_with("application/") && e.ends_with("+json")) => {
            Ok(Some(FormKind::Json))
        }
        _ => Ok(None),
    }
}

/// The parameter names `body` carries as `kind` (repeats kept: each is a naming).
pub fn field_names(kind: &FormKind, body: &[u8]) -> Vec<String> {
    match kind {
        FormKind::UrlEncoded => body
            .split(|b| *b == b'&' || *b == b';')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                form_urlencoded::parse(p)
                    .next()
                    .map(|(k, _)| k.into_owned())
            })
            .collect(),
        FormKind::Multipart(boundary) => multipart_names(boundary, body),
        FormKind::Json => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        },
    }
}

/// The `name` of each part's `Content-Disposition` (RFC 7578), `name*` too.
fn multipart_names(boundary: &str, body: &[u8]) -> Vec<String> {
    let delimiter = format!("--{boundary}");
    let d = delimiter.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while let Some(at) = find(&body[i..], d) {
        let start = i + at + d.len();
        // The part's headers end at the first empty line.
        let Some(head_len) = find(&body[start..], b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&body[start..start + head_len]);
        for line in head.split("\r\n") {
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            if !field.trim().eq_ignore_ascii_case("content-disposition") {
                continue;
            }
            for param in value.split(';').skip(1) {
                if let Some((k, v)) = param.split_once('=') {
                    let k = k.trim().to_ascii_lowercase();
                    if k == "name" || k == "name*" {
                        names.push(v.trim().trim_matches('"').to_string());
                    }
                }
            }
        }
        i = start + head_len;
    }
    names
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in ct {
            h.append(CONTENT_TYPE, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn kinds_are_read_from_the_content_type() {
        assert_eq!(form_kind(&headers(&[])), Ok(None));
        assert_eq!(
            form_kind(&headers(&[
                "Application/X-WWW-Form-Urlencoded ; charset=UTF-8"
            ])),
            Ok(Some(FormKind::UrlEncoded))
        );
        assert_eq!(
            form_kind(&headers(&["multipart/form-data; boundary=\"xyz\""])),
            Ok(Some(FormKind::Multipart("xyz".into())))
        );
        assert_eq!(
            form_kind(&headers(&["multipart/form-data"])),
            Err(FormError::NoBoundary)
        );
        assert_eq!(
            form_kind(&headers(&["application/vnd.api+json"])),
            Ok(Some(FormKind::Json))
        );
        assert_eq!(form_kind(&headers(&["text/plain"])), Ok(None));
        assert_eq!(
            form_kind(&headers(&[
                "text/plain",
                "application/x-www-form-urlencoded"
            ])),
            Err(FormError::RepeatedContentType)
        );
    }

    #[test]
    fn names_of_each_kind() {
        assert_eq!(
            field_names(&FormKind::UrlEncoded, b"a=1&c%66=2;cf=3&&x"),
            vec!["a", "cf", "cf", "x"]
        );
        let body = b"--B\r\nContent-Disposition: form-data; name=\"titolo\"\r\n\r\nx\r\n--B\r\ncontent-disposition: form-data; name=cf\r\n\r\nRSS\r\n--B\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"a.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--B--\r\n";
        assert_eq!(
            field_names(&FormKind::Multipart("B".into()), body),
            vec!["titolo", "cf", "doc"]
        );
        assert_eq!(
            field_names(&FormKind::Json, br#"{"cf":"X","n":{"cf":1}}"#),
            vec!["cf", "n"]
        );
        assert!(field_names(&FormKind::Json, b"[1,2]").is_empty());
        assert!(field_names(&FormKind::Json, b"not json").is_empty());
    }
}
