//! Path normalization, done once per request before routing and policy: percent-encoded
//! unreserved characters are decoded, other escapes are upper-cased (and never decoded,
//! so `%2F` stays data, not a separator), runs of `/` are merged, and dot-segments are
//! resolved (RFC 3986 §5.2.4). The result is what the route table matches and what the
//! upstream receives, so the gateway and the backend see the same path.

use std::borrow::Cow;

/// Why a request path is refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with `/`")]
    NotAbsolute,
    #[error("the path has a malformed percent-escape")]
    BadEscape,
    #[error("the path has a character that is not allowed in a URL path")]
    BadCharacter,
    #[error("the path has an encoded slash, backslash or NUL")]
    EncodedSeparator,
    #[error("the path has a segment that backends read differently (`..;`, trailing `.`)")]
    AmbiguousSegment,
    #[error("the path is percent-encoded twice (`%25` before hex digits)")]
    DoubleEncoding,
    #[error("the path's escapes hold an overlong UTF-8 sequence")]
    Overlong,
}

/// Characters that Unicode normalization (NFKC) or Windows' best-fit mapping turn into `.`,
/// `/` or `\`: a backend that applies either would see dot-segments or separators.
const LOOKALIKES: [char; 12] = [
    '\u{2024}', '\u{2025}', '\u{2026}', '\u{FE52}', '\u{FF0E}', '\u{FF0F}', '\u{2215}', '\u{2044}',
    '\u{FE68}', '\u{FF3C}', '\u{2216}', '\u{29F8}',
];

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True when `path` is already in normal form: the common case costs one scan, no copy.
fn is_normal(path: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b'\\' | b';' => return false,
            // A segment ending in `.` needs the full check.
            b'.' if matches!(path.get(i + 1), None | Some(b'/')) => return false,
            b'/' if prev == b'/' => return false,
            b'.' if prev == b'/' => {
                // "/." followed by end, "/" or "." starts a dot-segment.
                match path.get(i + 1) {
                    None | Some(b'/') | Some(b'.') => return false,
                    _ => {}
                }
            }
            0..=0x20 | 0x7f.. => return false,
            _ => {}
        }
        prev = b;
    }
    true
}

/// Normalizes the path part of a request target (no query). See the module docs.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    // 1. Decode unreserved escapes, upper-case the others.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = h * 16 + l;
                if is_unreserved(v) {
                    decoded.push(v);
                } else if matches!(v, b'/' | b'\\' | 0) {
                    return Err(PathError::EncodedSeparator);
                } else {
                    decoded.push(b'%');
                    decoded.push(bytes[i + 1].to_ascii_uppercase());
                    decoded.push(bytes[i + 2].to_ascii_uppercase());
                }
                i += 3;
            }
            b'\\' | 0..=0x20 | 0x7f.. => return Err(PathError::BadCharacter),
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    // A backend that decodes twice would read `%2561` as `a` and `%252F` as `/`: the
    // escaped percent followed by hex digits (after step 1, so `%252%66` counts too).
    if decoded
        .windows(5)
        .any(|w| w.starts_with(b"%25") && hex(w[3]).is_some() && hex(w[4]).is_some())
    {
        return Err(PathError::DoubleEncoding);
    }
    // Decoded once more, the escapes hold no overlong UTF-8 (`%C0%AE` is `.` to lax
    // decoders), no control characters (`..%09`) and no lookalikes of `.` and `/`. Other
    // bytes (Latin-1 `%E9` of legacy applications) stay data.
    let fully: Vec<u8> = percent_encoding::percent_decode(&decoded).collect();
    let overlong = fully.windows(2).any(|w| {
        matches!(w[0], 0xC0 | 0xC1)
            || (w[0] == 0xE0 && (0x80..=0x9F).contains(&w[1]))
            || (w[0] == 0xF0 && (0x80..=0x8F).contains(&w[1]))
    }) || fully.last().is_some_and(|b| matches!(b, 0xC0 | 0xC1));
    if overlong {
        return Err(PathError::Overlong);
    }
    if fully.iter().any(|b| *b < 0x20 || *b == 0x7F) {
        return Err(PathError::BadCharacter);
    }
    if String::from_utf8_lossy(&fully)
        .chars()
        .any(|c| LOOKALIKES.contains(&c))
    {
        return Err(PathError::AmbiguousSegment);
    }
    // 2. Merge slashes and resolve dot-segments.
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    for seg in decoded[1..].split(|&b| b == b'/') {
        // The part before any path parameter (`;...`, also as `%3B`).
        let bare_end = seg
            .windows(3)
            .position(|w| w == b"%3B")
            .into_iter()
            .chain(seg.iter().position(|&b| b == b';'))
            .min()
            .unwrap_or(seg.len());
        let bare = &seg[..bare_end];
        if bare_end < seg.len() && matches!(bare, b"." | b"..") {
            return Err(PathError::AmbiguousSegment);
        }
        // Windows, IIS and some Java containers trim trailing dots and spaces: `/a.` and
        // `/a%20` are `/a` there.
        if (bare.ends_with(b".") && !matches!(bare, b"." | b"..")) || bare.ends_with(b"%20") {
            return Err(PathError::AmbiguousSegment);
        }
        // Nor a segment ending in Unicode whitespace (`%C2%A0`, `%E3%80%80`...), which .NET's
        // Trim() and Python's strip() remove.
        if bare.contains(&b'%')
            && String::from_utf8_lossy(&percent_encoding::percent_decode(bare).collect::<Vec<u8>>())
                .ends_with(|c: char| c.is_whitespace())
        {
            return Err(PathError::AmbiguousSegment);
        }
        match seg {
            b"" => trailing_slash = true,
            b"." => trailing_slash = true,
            b".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        // Only ASCII bytes survive step 1 (escapes stay escaped), so this cannot fail.
        out.push_str(std::str::from_utf8(s).map_err(|_| PathError::BadCharacter)?);
    }
    if segments.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize_path(p).unwrap().into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a", "/a/b/", "/a.b/c..d", "/.well-known/x"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_are_resolved() {
        assert_eq!(n("/a/../admin"), "/admin");
        assert_eq!(n("/a/./b"), "/a/b");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/."), "/a/");
        assert_eq!(n("/.."), "/");
    }

    #[test]
    fn escapes_of_unreserved_characters_are_decoded() {
        assert_eq!(n("/%61dmin"), "/admin");
        assert_eq!(n("/x/%2e%2e/admin"), "/admin");
        assert_eq!(n("/x/%2E%2e/admin"), "/admin");
        assert_eq!(n("/x/.%2e/admin"), "/admin");
        assert_eq!(n("/%7euser"), "/~user");
    }

    #[test]
    fn encoded_separators_and_ambiguous_segments_are_refused() {
        for p in ["/a%2fb", "/a%2F..%2Fadmin", "/a%5Cb", "/a%00b"] {
            assert_eq!(normalize_path(p), Err(PathError::EncodedSeparator), "{p}");
        }
        for p in [
            "/pub/..;/admin",
            "/pub/.;x/admin",
            "/pub/..%3B/admin",
            "/pub/..%3b/admin",
            "/admin./x",
            "/admin../x",
            "/a/...",
            "/a.",
            "/a./x",
            "/x/ab.",
            "/a.;x/y",
        ] {
            assert_eq!(normalize_path(p), Err(PathError::AmbiguousSegment), "{p}");
        }
        // Escaped twice: a backend decoding again reads other characters (or a separator).
        for p in [
            "/%2561dmin",
            "/a/%252F../admin",
            "/%252e%252e/x",
            "/%252%66x",
            "/%25%36%31",
        ] {
            assert_eq!(normalize_path(p), Err(PathError::DoubleEncoding), "{p}");
        }
        // Trailing spaces (Windows trims them), lookalikes of `.` and `/`.
        for p in [
            "/domande%20/x",
            "/domande.%20/x",
            "/a%20",
            "/%E2%80%A4%E2%80%A4/x",
            "/x/%EF%BC%8E%EF%BC%8E/admin",
            "/a%EF%BC%8Fb",
            "/a%C2%A0/b",
            "/a%E3%80%80",
            "/a%E2%80%A8/b",
            "/a%C2%85",
        ] {
            assert_eq!(normalize_path(p), Err(PathError::AmbiguousSegment), "{p}");
        }
        // Overlong UTF-8 and encoded control characters.
        for p in [
            "/pub/%c0%ae%c0%ae/x",
            "/..%c0%af/x",
            "/%e0%80%ae",
            "/%f0%80%80%ae",
        ] {
            assert_eq!(normalize_path(p), Err(PathError::Overlong), "{p}");
        }
        // Latin-1 escapes of legacy applications are data.
        assert_eq!(n("/citt%E0/x%FF"), "/citt%E0/x%FF");
        for p in ["/..%09/x", "/a%0d%0a", "/x%7f", "/x%01y"] {
            assert_eq!(normalize_path(p), Err(PathError::BadCharacter), "{p}");
        }
        // Spaces inside a segment and real UTF-8 stay.
        assert_eq!(n("/a%20b"), "/a%20b");
        assert_eq!(n("/citt%C3%A0"), "/citt%C3%A0");
        // A literal percent not followed by two hex digits stays data.
        assert_eq!(n("/100%25"), "/100%25");
        assert_eq!(n("/100%25x"), "/100%25x");
        // Ordinary escapes and path parameters on ordinary segments are kept.
        assert_eq!(n("/%20x"), "/%20x");
        assert_eq!(n("/app;jsessionid=1/x"), "/app;jsessionid=1/x");
        assert_eq!(n("/a.b/c.d"), "/a.b/c.d");
    }

    #[test]
    fn slashes_are_merged() {
        assert_eq!(n("//admin"), "/admin");
        assert_eq!(n("/a//b///c"), "/a/b/c");
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(normalize_path("a"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("/%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/%2"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a\\b"), Err(PathError::BadCharacter));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Normal form is a fixed point, has no dot-segments and no empty segments.
        #[test]
        fn normalization_is_idempotent(s in "/[a-zA-Z0-9./%_~-]{0,40}") {
            if let Ok(n) = normalize_path(&s) {
                let again = normalize_path(&n).unwrap();
                prop_assert_eq!(&again, &n);
                prop_assert!(!n.contains("//"));
                prop_assert!(!n.split('/').any(|seg| seg == "." || seg == ".."));
            }
        }

        /// An encoded slash never becomes a separator: such paths are refused.
        #[test]
        fn encoded_slashes_never_become_separators(a in "[a-z]{1,5}", b in "[a-z]{1,5}") {
            let p = format!("/{a}%2F..%2F{b}");
            prop_assert_eq!(normalize_path(&p), Err(PathError::EncodedSeparator));
        }
    }
}
