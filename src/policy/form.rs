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

/// The body could not be read the way every backend would read it: refused (400) rather
/// than guessed, since a body the gateway cannot read may still name the client to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("more than one Content-Type")]
    RepeatedContentType,
    #[error("a Content-Type that is not plain text")]
    UnreadableContentType,
    #[error("a multipart body without a usable boundary")]
    NoBoundary,
    #[error("a form body with a Content-Encoding")]
    Encoded,
    #[error("a form body that does not parse")]
    Malformed,
}

/// Whether the request's body is one whose parameters frameworks read (`None`: not a
/// form; a body of another type is not inspected). The type is recognized as leniently
/// as the most lenient framework does: PHP cuts it at `,`, `;` or a space, Laravel's
/// `isJson()` looks for `/json` or `+json` anywhere, Rails also takes `text/json`.
pub fn form_kind(
    method: &http::Method,
    headers: &HeaderMap,
) -> Result<Option<FormKind>, FormError> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(FormError::RepeatedContentType);
    }
    let text = match first {
        Some(v) => v.to_str().map_err(|_| FormError::UnreadableContentType)?,
        None => "",
    };
    let lower = text.to_ascii_lowercase();
    let kind = if lower.trim().is_empty() {
        // Rack reads the body of a POST without a (or with an empty) Content-Type as a form.
        if method != http::Method::POST {
            return Ok(None);
        }
        FormKind::UrlEncoded
    } else if lower.contains("multipart") {
        let at = lower.find("boundary=").ok_or(FormError::NoBoundary)?;
        let rest = &text[at + "boundary=".len()..];
        let boundary = if let Some(quoted) = rest.strip_prefix('"') {
            quoted.split('"').next().unwrap_or("")
        } else {
            rest.split([';', ',', ' ', '\t']).next().unwrap_or("")
        };
        if boundary.is_empty() || boundary.len() > 70 {
            return Err(FormError::NoBoundary);
        }
        FormKind::Multipart(boundary.to_string())
    } else if lower.contains("form-urlencoded") {
        FormKind::UrlEncoded
    } else if lower.contains("json") {
        FormKind::Json
    } else {
        return Ok(None);
    };
    // A compressed form cannot be inspected (and some stacks decompress it).
    let encoded = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
            !v.to_str()
                .is_ok_and(|e| e.trim().eq_ignore_ascii_case("identity"))
        });
    if encoded {
        return Err(FormError::Encoded);
    }
    Ok(Some(kind))
}

/// The parameter names `body` carries as `kind` (repeats kept: each is a naming); a
/// multipart or JSON body that does not parse is an error, never "no names".
pub fn field_names(kind: &FormKind, body: &[u8]) -> Result<Vec<String>, FormError> {
    match kind {
        FormKind::UrlEncoded => Ok(body
            .split(|b| *b == b'&' || *b == b';')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                form_urlencoded::parse(p)
                    .next()
                    .map(|(k, _)| k.into_owned())
            })
            .collect()),
        FormKind::Multipart(boundary) => multipart_names(boundary, body),
        FormKind::Json => {
            let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Vec::new());
            }
            match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(serde_json::Value::Object(map)) => Ok(map.keys().cloned().collect()),
                Ok(_) => Ok(Vec::new()),
                // Also deeper than serde_json's 128 levels (PHP reads 512).
                Err(_) => Err(FormError::Malformed),
            }
        }
    }
}

/// The `name` of each part's `Content-Disposition` (RFC 7578), `name*` (RFC 5987) decoded.
/// Read as leniently as PHP reads it: every delimiter counts (also after the closing one),
/// lines may end in CRLF or LF alone, folded header lines are joined, and a `name`
/// parameter counts wherever it stands (also without `form-data;`).
fn multipart_names(boundary: &str, body: &[u8]) -> Result<Vec<String>, FormError> {
    let delimiter = format!("--{boundary}");
    let d = delimiter.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    let mut delimiters = 0;
    while let Some(at) = find(&body[i..], d) {
        delimiters += 1;
        let start = i + at + d.len();
        let rest = &body[start..];
        // The closing delimiter (`--B--`): a lenient parser goes on looking for parts.
        if rest.starts_with(b"--") {
            i = start;
            continue;
        }
        // The part's headers end at the first empty line.
        let head_len = match (find(rest, b"\r\n\r\n"), find(rest, b"\n\n")) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return Err(FormError::Malformed),
        };
        let head = String::from_utf8_lossy(&rest[..head_len]);
        // Unfold: a line starting with a space or tab continues the previous one.
        let mut lines: Vec<String> = Vec::new();
        for line in head.lines() {
            match lines.last_mut() {
                Some(last) if line.starts_with([' ', '\t']) => last.push_str(line),
                _ => lines.push(line.to_string()),
            }
        }
        for line in &lines {
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            if !field.trim().eq_ignore_ascii_case("content-disposition") {
                continue;
            }
            for param in value.split(';') {
                let Some((k, v)) = param.split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"');
                match k.trim().to_ascii_lowercase().as_str() {
                    "name" => names.push(v.to_string()),
                    "name*" => {
                        let encoded = v.splitn(3, '\'').nth(2).unwrap_or(v);
                        names.push(
                            percent_encoding::percent_decode_str(encoded)
                                .decode_utf8_lossy()
                                .into_owned(),
                        );
                    }
                    _ => {}
                }
            }
        }
        i = start + head_len;
    }
    if delimiters == 0 && !body.iter().all(u8::is_ascii_whitespace) {
        return Err(FormError::Malformed);
    }
    Ok(names)
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
    fn kinds_are_read_from_the_content_type_as_leniently_as_frameworks() {
        assert_eq!(form_kind(&http::Method::PUT, &headers(&[])), Ok(None));
        for urlencoded in [
            "Application/X-WWW-Form-Urlencoded ; charset=UTF-8",
            "application/x-www-form-urlencoded,x",
            "application/x-www-form-urlencoded x",
        ] {
            assert_eq!(
                form_kind(&http::Method::PUT, &headers(&[urlencoded])),
                Ok(Some(FormKind::UrlEncoded)),
                "{urlencoded}"
            );
        }
        assert_eq!(
            form_kind(
                &http::Method::PUT,
                &headers(&["multipart/form-data; boundary=\"xyz\""])
            ),
            Ok(Some(FormKind::Multipart("xyz".into())))
        );
        assert_eq!(
            form_kind(
                &http::Method::PUT,
                &headers(&["multipart/form-data, boundary=XX"])
            ),
            Ok(Some(FormKind::Multipart("XX".into())))
        );
        assert_eq!(
            form_kind(&http::Method::PUT, &headers(&["multipart/form-data"])),
            Err(FormError::NoBoundary)
        );
        for json in [
            "application/vnd.api+json",
            "text/json",
            "application/jsonrequest",
            "text/plain; x=/json",
        ] {
            assert_eq!(
                form_kind(&http::Method::PUT, &headers(&[json])),
                Ok(Some(FormKind::Json)),
                "{json}"
            );
        }
        assert_eq!(
            form_kind(&http::Method::PUT, &headers(&["text/plain"])),
            Ok(None)
        );
        assert_eq!(
            form_kind(
                &http::Method::PUT,
                &headers(&["text/plain", "application/x-www-form-urlencoded"])
            ),
            Err(FormError::RepeatedContentType)
        );
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_bytes(b"application/x-www-form-urlencoded; charset=\xe9")
                .unwrap(),
        );
        assert_eq!(
            form_kind(&http::Method::POST, &h),
            Err(FormError::UnreadableContentType)
        );
        let mut h = headers(&["application/x-www-form-urlencoded"]);
        h.insert(http::header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(form_kind(&http::Method::POST, &h), Err(FormError::Encoded));
    }

    #[test]
    fn a_post_without_a_content_type_is_a_form_to_rack() {
        let none = HeaderMap::new();
        assert_eq!(
            form_kind(&http::Method::POST, &none),
            Ok(Some(FormKind::UrlEncoded))
        );
        assert_eq!(
            form_kind(&http::Method::POST, &headers(&[" "])),
            Ok(Some(FormKind::UrlEncoded))
        );
        assert_eq!(form_kind(&http::Method::PUT, &none), Ok(None));
        assert_eq!(form_kind(&http::Method::GET, &none), Ok(None));
    }

    #[test]
    fn multipart_is_read_as_leniently_as_php() {
        let b = |body: &[u8]| field_names(&FormKind::Multipart("XX".into()), body).unwrap();
        // A part after the closing delimiter, also glued to it.
        assert_eq!(
            b(b"--XX\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--XX--\r\n--XX\r\nContent-Disposition: form-data; name=cf\r\n\r\nB\r\n"),
            vec!["a", "cf"]
        );
        assert_eq!(
            b(b"--XX--junk--XX\r\nContent-Disposition: form-data; name=cf\r\n\r\nB\r\n"),
            vec!["cf"]
        );
        // A folded header line, and no `form-data;`.
        assert_eq!(
            b(b"--XX\r\nContent-Disposition: form-data;\r\n name=\"cf\"\r\n\r\nB\r\n--XX--"),
            vec!["cf"]
        );
        assert_eq!(
            b(b"--XX\r\nContent-Disposition: name=\"cf\"\r\n\r\nB\r\n--XX--"),
            vec!["cf"]
        );
        // Only the closing delimiter: no parts, no names.
        assert!(b(b"--XX--\r\n").is_empty());
    }

    #[test]
    fn names_of_each_kind() {
        assert_eq!(
            field_names(&FormKind::UrlEncoded, b"a=1&c%66=2;cf=3&&x&+cf=4").unwrap(),
            vec!["a", "cf", "cf", "x", " cf"]
        );
        let body = b"--B\r\nContent-Disposition: form-data; name=\"titolo\"\r\n\r\nx\r\n--B\r\ncontent-disposition: form-data; name=cf\r\n\r\nRSS\r\n--B\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"a.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--B--\r\n";
        assert_eq!(
            field_names(&FormKind::Multipart("B".into()), body).unwrap(),
            vec!["titolo", "cf", "doc"]
        );
        // LF-only line ends, and an RFC 5987 name.
        let lf = b"--B\nContent-Disposition: form-data; name=\"cf\"\n\nX\n--B\nContent-Disposition: form-data; name*=UTF-8''c%66\n\nY\n--B--\n";
        assert_eq!(
            field_names(&FormKind::Multipart("B".into()), lf).unwrap(),
            vec!["cf", "cf"]
        );
        assert_eq!(
            field_names(&FormKind::Multipart("B".into()), b"no delimiter here"),
            Err(FormError::Malformed)
        );
        assert_eq!(
            field_names(&FormKind::Json, br#"{"cf":"X","n":{"cf":1}}"#).unwrap(),
            vec!["cf", "n"]
        );
        assert_eq!(
            field_names(&FormKind::Json, b"\xef\xbb\xbf{\"cf\":1}").unwrap(),
            vec!["cf"]
        );
        assert!(field_names(&FormKind::Json, b"[1,2]").unwrap().is_empty());
        assert_eq!(
            field_names(&FormKind::Json, b"not json"),
            Err(FormError::Malformed)
        );
        let deep = format!(
            "{{\"cf\":\"B\",\"x\":{}1{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(
            field_names(&FormKind::Json, deep.as_bytes()),
            Err(FormError::Malformed),
            "deeper than serde_json reads, but not than PHP does"
        );
    }
}
