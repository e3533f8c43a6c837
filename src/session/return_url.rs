//! The `return` parameter of the login and logout endpoints: where to send the user
//! afterwards. Only a relative path on this host is accepted — never `//host`, `/\host`,
//! `https:...`, a backslash, control characters, empty or dot segments, or any of these hidden behind
//! percent-encoding — so the gateway can never be used as an open redirect.

/// `<prefix>pin-telefonico`: a user page under the reserved prefix.
pub const TELEPHONE_PIN_PAGE: &str = "pin-telefonico";

/// The longest return URL kept.
const MAX_LEN: usize = 2048;

fn is_safe_shape(s: &str) -> bool {
    let b = s.as_bytes();
    let path = s.split(['?', '#']).next().unwrap_or(s);
    // No empty or dot segments: `/.//evil` and `/x/..//evil` would resolve to `//evil`.
    let plain_segments =
        !path.contains("//") && !path.split('/').any(|seg| seg == "." || seg == "..");
    b.first() == Some(&b'/')
        && !matches!(b.get(1), Some(b'/') | Some(b'\\'))
        && !s.contains('\\')
        && !s.bytes().any(|c| c < 0x21 || c == 0x7f)
        && plain_segments
}

/// The validated return path, or `None` when `raw` (already form-decoded) is not a
/// same-host relative URL. Paths under `reserved_prefix` are refused too (no loops).
pub fn safe_return(raw: &str, reserved_prefix: &str) -> Option<String> {
    if raw.is_empty() || raw.len() > MAX_LEN || !is_safe_shape(raw) {
        return None;
    }
    // Decode repeatedly (bounded): whatever a later hop might decode must be safe too.
    let mut text = raw.to_string();
    for _ in 0..3 {
        let decoded = percent_encoding::percent_decode_str(&text)
            .decode_utf8()
            .ok()?
            .into_owned();
        if !is_safe_shape(&decoded) {
            return None;
        }
        if decoded == text {
            break;
        }
        text = decoded;
    }
    let path = raw.split(['?', '#']).next().unwrap_or(raw);
    let normalized = crate::routes::normalize_path(path).ok()?;
    // The one page of the gateway's own a login may come back to.
    if normalized.starts_with(reserved_prefix)
        && normalized.strip_prefix(reserved_prefix) != Some(TELEPHONE_PIN_PAGE)
    {
        return None;
    }
    Some(raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/_varco/";

    #[test]
    fn relative_paths_are_kept() {
        for ok in [
            "/",
            "/fascicolo/RSSMRA80A01H501U",
            "/domande?stato=aperte&p=2",
            "/a/b#frag",
            "/caf%C3%A8",
        ] {
            assert_eq!(safe_return(ok, P).as_deref(), Some(ok), "{ok}");
        }
    }

    /// The open-redirect corpus: each must be refused.
    #[test]
    fn open_redirect_corpus_is_refused() {
        for bad in [
            "",
            "//evil.example",
            "//evil.example/path",
            "/.//evil.example",
            "/x/..//evil.example",
            "/%2e//evil.example",
            "/a/./b",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example",
            "http:evil.example",
            "javascript:alert(1)",
            "evil.example",
            "/%2Fevil.example",
            "/%2f%2fevil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "/%252F%252Fevil.example",
            "/%09/evil.example",
            "/\t/evil.example",
            "/ /evil.example",
            "/\r\nLocation: https://evil.example",
            "/%0d%0aSet-Cookie:x=1",
            "/a\\b",
            "/_varco/logout",
            "/x/../_varco/login",
            "/%ff%fe",
        ] {
            assert_eq!(safe_return(bad, P), None, "{bad:?} was accepted");
        }
        let long = format!("/{}", "a".repeat(3000));
        assert_eq!(safe_return(&long, P), None);
    }
}
