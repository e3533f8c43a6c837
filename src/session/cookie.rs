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
