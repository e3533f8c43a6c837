//! The session cookie: `__Host-varco=<id>; Path=/; Secure; HttpOnly; SameSite=Lax`.
//! Reading is strict: a value that is not a well-formed id is no session (never an error
//! page that would tell an attacker anything), and a duplicated cookie is no session.
//!
//! Cookie names are read as user agents and common servers read them (RFC 6265 §5.2 and
//! §5.4): each `name=value` pair of a `Cookie` header, and the first pair of a
//! `Set-Cookie`, with whitespace trimmed around the name and the value. `NAME =v` is the
//! cookie `NAME`. Removal (from requests going upstream, from the upstream's `Set-Cookie`)
//! also ignores ASCII case, as ASP.NET and other servers read names: nothing that any
//! backend or browser could take for the cookie passes.

use http::HeaderMap;
use http::header::COOKIE;

use super::SessionId;

/// RFC 6265's whitespace around names and values.
fn trim(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// The `(name, value)` pairs of every `Cookie` header that is text, names and values
/// trimmed. A pair without `=` is skipped (no server reads it as a named cookie).
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .map(|(n, v)| (trim(n), trim(v)))
}

/// The name a browser stores for a `Set-Cookie` value (RFC 6265bis §5.6): before the
/// first `;`, before the first `=` (none: the name is empty), trimmed.
pub fn set_cookie_name(value: &str) -> &str {
    let pair = value.split(';').next().unwrap_or("");
    match pair.split_once('=') {
        Some((n, _)) => trim(n),
        None => "",
    }
}

/// How the cookie is written.
#[derive(Debug, Clone)]
pub struct CookieSpec {
    pub name: String,
    pub secure: bool,
}

impl CookieSpec {
    /// `Set-Cookie` value for a new session.
    pub fn set(&self, id: &SessionId) -> String {
        format!(
            "{}={}; Path=/;{} HttpOnly; SameSite=Lax",
            self.name,
            id.to_cookie_value(),
            if self.secure { " Secure;" } else { "" }
        )
    }

    /// `Set-Cookie` value that removes the cookie.
    pub fn clear(&self) -> String {
        format!(
            "{}=; Path=/;{} HttpOnly; SameSite=Lax; Max-Age=0",
            self.name,
            if self.secure { " Secure;" } else { "" }
        )
    }

    /// The session id the request carries, if exactly one well-formed one. The name is
    /// matched exactly, as the browser stored it when the gateway set it.
    pub fn read(&self, headers: &HeaderMap) -> Option<SessionId> {
        let mut found: Option<&str> = None;
        for (name, v) in cookie_pairs(headers) {
            if name == self.name {
                if found.is_some() {
                    // Two session cookies (e.g. one planted by a sibling domain): trust neither.
                    return None;
                }
                found = Some(v);
            }
        }
        SessionId::parse(found?)
    }

    /// Whether a cookie name is this cookie to some server or browser: equal ignoring
    /// ASCII case (ASP.NET), and as PHP files cookie names (leading spaces trimmed, `.` and
    /// space as `_`, an array suffix `[...]` dropped: `NAME[]` is `NAME`).
    pub fn is_named(&self, name: &str) -> bool {
        // Compared as the two forms are produced, without building them: this runs for
        // every cookie of every request.
        fn php(name: &str) -> impl Iterator<Item = u8> + '_ {
            let name = name.trim_start_matches(' ');
            let base = match name.find('[') {
                Some(i) if name[i..].contains(']') => &name[..i],
                _ => name,
            };
            base.bytes().map(|c| match c {
                b'.' | b' ' | b'[' => b'_',
                c => c.to_ascii_lowercase(),
            })
        }
        name.eq_ignore_ascii_case(&self.name) || php(name).eq(php(&self.name))
    }

    /// Whether the request carries this cookie under any spelling a server would read.
    pub fn present(&self, headers: &HeaderMap) -> bool {
        cookie_pairs(headers).any(|(n, _)| self.is_named(n))
    }
}

impl CookieSpec {
    /// Removes the session cookie from `Cookie` headers before a request goes upstream:
    /// the session id is a bearer credential the backend has no use for. Other cookies stay.
    pub fn strip(&self, headers: &mut HeaderMap) {
        let mut kept: Vec<&str> = Vec::new();
        let mut changed = false;
        for v in headers.get_all(COOKIE) {
            let Ok(text) = v.to_str() else {
                // Not text: cannot be rewritten safely, so it is not forwarded.
                changed = true;
                continue;
            };
            for pair in text.split(';') {
                let pair = pair.trim();
                if pair.is_empty() {
                    continue;
                }
                // RFC 2109 servers also split on `,`: a pair naming the cookie after a
                // comma (`a=1, __Host-varco=...`) goes whole.
                let names_it = pair
                    .split(',')
                    .filter_map(|p| p.split_once('='))
                    .any(|(n, _)| self.is_named(trim(n)));
                if names_it {
                    changed = true;
                } else {
                    kept.push(pair);
                }
            }
        }
        if !changed {
            return;
        }
        let rest = (!kept.is_empty())
            .then(|| http::HeaderValue::from_str(&kept.join("; ")).ok())
            .flatten();
        headers.remove(COOKIE);
        if let Some(v) = rest {
            headers.insert(COOKIE, v);
        }
    }
}

impl CookieSpec {
    /// Removes an upstream's `Set-Cookie` for the session cookie's name: only the gateway
    /// sets it (a backend must not be able to fix a user's session).
    pub fn strip_set_cookie(&self, headers: &mut HeaderMap) {
        // Not text: cannot be read safely, so it is not relayed. A nameless cookie whose
        // value is `NAME=...` (`Set-Cookie: =__Host-varco=x`) is sent back by older
        // browsers as `NAME=...`: ours too.
        let ours = |v: &http::HeaderValue| {
            v.to_str().map_or(true, |s| {
                let name = set_cookie_name(s);
                self.is_named(name)
                    || (name.is_empty()
                        && s.split(';')
                            .next()
                            .and_then(|p| p.split_once('='))
                            .and_then(|(_, v)| v.split_once('='))
                            .is_some_and(|(n, _)| self.is_named(trim(n))))
            })
        };
        if !headers.get_all(http::header::SET_COOKIE).iter().any(ours) {
            return;
        }
        let kept: Vec<http::HeaderValue> = headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter(|v| !ours(v))
            .cloned()
            .collect();
        headers.remove(http::header::SET_COOKIE);
        for v in kept {
            headers.append(http::header::SET_COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn spec() -> CookieSpec {
        CookieSpec {
            name: "__Host-varco".into(),
            secure: true,
        }
    }

    #[test]
    fn the_session_cookie_is_not_forwarded() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; __Host-varco=secret; b=2"),
        );
        h.append(COOKIE, HeaderValue::from_static("c=3"));
        spec().strip(&mut h);
        let all: Vec<&str> = h
            .get_all(COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(all, vec!["a=1; b=2; c=3"]);
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("__Host-varco=secret"));
        spec().strip(&mut h);
        assert!(h.get(COOKIE).is_none());
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        spec().strip(&mut h);
        assert_eq!(h[COOKIE], "a=1");
    }

    #[test]
    fn upstreams_cannot_set_the_session_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::SET_COOKIE,
            HeaderValue::from_static("a=1; Path=/"),
        );
        h.append(
            http::header::SET_COOKIE,
            HeaderValue::from_static("__Host-varco=fixed; Path=/"),
        );
        spec().strip_set_cookie(&mut h);
        let all: Vec<&str> = h
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(all, vec!["a=1; Path=/"]);
        // A browser trims the name: each of these would replace the user's session.
        for sneaky in [
            "__Host-varco =x; Path=/",
            " __Host-varco=x",
            "\t__Host-varco\t=x; Secure",
            "__HOST-VARCO=x; Path=/",
            "=__Host-varco=evil; Path=/",
            " = __Host-varco =evil",
        ] {
            let mut h = HeaderMap::new();
            h.append(
                http::header::SET_COOKIE,
                HeaderValue::from_str(sneaky).unwrap(),
            );
            h.append(http::header::SET_COOKIE, HeaderValue::from_static("b=2"));
            spec().strip_set_cookie(&mut h);
            let all: Vec<&str> = h
                .get_all(http::header::SET_COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(all, vec!["b=2"], "{sneaky:?}");
        }
        // Other cookies whose value mentions the name stay.
        let mut h = HeaderMap::new();
        h.append(
            http::header::SET_COOKIE,
            HeaderValue::from_static("x=__Host-varco=1; Path=/"),
        );
        spec().strip_set_cookie(&mut h);
        assert_eq!(h.get_all(http::header::SET_COOKIE).iter().count(), 1);
    }

    #[test]
    fn names_are_read_as_browsers_and_servers_read_them() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; LEGACY =v ;b=2"));
        let legacy = CookieSpec {
            name: "LEGACY".into(),
            secure: true,
        };
        assert!(legacy.present(&h));
        let pairs: Vec<(&str, &str)> = cookie_pairs(&h).collect();
        assert_eq!(pairs, vec![("a", "1"), ("LEGACY", "v"), ("b", "2")]);
        let mut h2 = HeaderMap::new();
        h2.append(COOKIE, HeaderValue::from_static("legacy=v"));
        assert!(legacy.present(&h2), "ASP.NET reads names ignoring case");
        for php in ["LEGACY[]=x", "LEGACY[a]=x"] {
            let mut h = HeaderMap::new();
            h.append(COOKIE, HeaderValue::from_str(php).unwrap());
            assert!(legacy.present(&h), "PHP files {php} under LEGACY");
        }
        let underscored = CookieSpec {
            name: "INPS_SESSION".into(),
            secure: true,
        };
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("INPS.SESSION=x"));
        assert!(underscored.present(&h), "PHP reads `.` as `_`");
        // Stripped in every spelling, the rest kept.
        let mut h3 = HeaderMap::new();
        h3.append(
            COOKIE,
            HeaderValue::from_static("a=1; LEGACY =v; Legacy=w; b=2"),
        );
        legacy.strip(&mut h3);
        assert_eq!(h3[COOKIE], "a=1; b=2");
        // After a comma (RFC 2109 parsers split there): the pair goes whole.
        let mut h6 = HeaderMap::new();
        h6.append(COOKIE, HeaderValue::from_static("a=1, LEGACY=v; b=2"));
        legacy.strip(&mut h6);
        assert_eq!(h6[COOKIE], "b=2");
        assert_eq!(set_cookie_name("n = v; Path=/"), "n");
        assert_eq!(set_cookie_name("novalue"), "");
        // The session cookie is read with its exact name, spaces trimmed.
        let id = SessionId::random();
        let mut h4 = HeaderMap::new();
        h4.insert(
            COOKIE,
            HeaderValue::from_str(&format!("__Host-varco = {}", id.to_cookie_value())).unwrap(),
        );
        assert_eq!(spec().read(&h4), Some(id));
        let mut h5 = HeaderMap::new();
        h5.insert(COOKIE, HeaderValue::from_static("__Host-varco =x"));
        spec().strip(&mut h5);
        assert!(h5.get(COOKIE).is_none());
    }

    #[test]
    fn set_cookie_has_the_host_prefix_attributes() {
        let id = SessionId::random();
        let c = spec().set(&id);
        assert!(c.starts_with("__Host-varco="));
        for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(!c.contains("Domain"));
    }

    #[test]
    fn reads_only_one_well_formed_id() {
        let id = SessionId::random();
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=b; __Host-varco={}; c=d", id.to_cookie_value()))
                .unwrap(),
        );
        assert_eq!(spec().read(&h), Some(id.clone()));
        // Tampered: one character changed, too short, junk, duplicated.
        let mut v = id.to_cookie_value();
        v.pop();
        for bad in [
            format!("__Host-varco={v}"),
            format!("__Host-varco={v}!"),
            "__Host-varco=../../etc".to_string(),
            format!("__Host-varco={0}; __Host-varco={0}", id.to_cookie_value()),
        ] {
            let mut h = HeaderMap::new();
            h.insert(COOKIE, HeaderValue::from_str(&bad).unwrap());
            assert_eq!(spec().read(&h), None, "{bad}");
        }
    }
}
