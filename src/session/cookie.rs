//! The session cookie: `__Host-varco=<id>; Path=/; Secure; HttpOnly; SameSite=Lax`.
//! Reading is strict: a value that is not a well-formed id is no session (never an error
//! page that would tell an attacker anything), and a duplicated cookie is no session.

use http::HeaderMap;
use http::header::COOKIE;

use super::SessionId;

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

    /// The session id the request carries, if exactly one well-formed one.
    pub fn read(&self, headers: &HeaderMap) -> Option<SessionId> {
        let mut found: Option<&str> = None;
        for value in headers.get_all(COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for pair in value.split(';') {
                let Some((name, v)) = pair.trim().split_once('=') else {
                    continue;
                };
                if name == self.name {
                    if found.is_some() {
                        // Two session cookies (e.g. one planted by a sibling domain): trust neither.
                        return None;
                    }
                    found = Some(v.trim());
                }
            }
        }
        SessionId::parse(found?)
    }
}

impl CookieSpec {
    /// Removes the session cookie from `Cookie` headers before a request goes upstream:
    /// the session id is a bearer credential the backend has no use for. Other cookies stay.
    pub fn strip(&self, headers: &mut HeaderMap) {
        let values: Vec<http::HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
        if values.is_empty() {
            return;
        }
        let prefix = format!("{}=", self.name);
        let mut kept: Vec<String> = Vec::new();
        let mut changed = false;
        for v in &values {
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
                if pair.starts_with(&prefix) {
                    changed = true;
                } else {
                    kept.push(pair.to_string());
                }
            }
        }
        if !changed {
            return;
        }
        headers.remove(COOKIE);
        if !kept.is_empty()
            && let Ok(v) = http::HeaderValue::from_str(&kept.join("; "))
        {
            headers.insert(COOKIE, v);
        }
    }
}

impl CookieSpec {
    /// Removes an upstream's `Set-Cookie` for the session cookie's name: only the gateway
    /// sets it (a backend must not be able to fix a user's session).
    pub fn strip_set_cookie(&self, headers: &mut HeaderMap) {
        let prefix = format!("{}=", self.name);
        let ours = |v: &http::HeaderValue| {
            v.to_str()
                .map_or(true, |s| s.trim_start().starts_with(&prefix))
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
