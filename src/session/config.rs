//! `[session]`: the session cookie and lifetimes.

use std::time::Duration;

use serde::Deserialize;

/// `[session]`: the session cookie and lifetimes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// `__Host-` cookies are bound to this exact host, path `/`, and need `Secure`.
    pub cookie_name: String,
    /// Send the cookie only over HTTPS. Only a local plain-HTTP setup turns this off.
    pub secure: bool,
    /// A session with no request for this long ends.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A session ends this long after login, active or not.
    #[serde(with = "humantime_serde")]
    pub absolute_timeout: Duration,
    /// Sessions kept at most (the oldest unused are evicted first).
    pub capacity: u64,
    /// How long a login may take between leaving for the IdP and coming back.
    #[serde(with = "humantime_serde")]
    pub login_timeout: Duration,
    /// Where sessions, pending logins and replay records live: `memory` (this process;
    /// one replica) or `redis` (shared by every replica, `[session.redis]`).
    pub store: StoreKind,
    pub redis: Option<super::redis_store::RedisConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Memory,
    Redis,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            cookie_name: "__Host-varco".into(),
            secure: true,
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(8 * 3600),
            capacity: 100_000,
            login_timeout: Duration::from_secs(10 * 60),
            store: StoreKind::Memory,
            redis: None,
        }
    }
}

impl SessionConfig {
    /// Problems of `[session]` alone, each with its key.
    pub fn validate(&self, bad: &mut impl FnMut(String, String)) {
        let se = self;
        let cookie_ok = !se.cookie_name.is_empty()
            && se
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !cookie_ok {
            bad(
                "session.cookie_name".into(),
                "letters, digits, `-` and `_` only".into(),
            );
        }
        if se.cookie_name.starts_with("__Host-") && !se.secure {
            bad(
                "session.secure".into(),
                "a `__Host-` cookie must be Secure; rename the cookie for plain HTTP".into(),
            );
        }
        if se.idle_timeout.is_zero() || se.absolute_timeout < se.idle_timeout {
            bad(
                "session.absolute_timeout".into(),
                "must be at least session.idle_timeout, which must be above zero".into(),
            );
        }
        match (se.store, &se.redis) {
            (StoreKind::Redis, None) => bad(
                "session.store".into(),
                "`redis` needs a [session.redis] section with its url".into(),
            ),
            (StoreKind::Memory, Some(_)) => bad(
                "session.redis".into(),
                "is only read with session.store = \"redis\"".into(),
            ),
            (_, Some(r)) => r.validate(bad),
            _ => {}
        }
        if se.capacity == 0 || se.login_timeout.is_zero() {
            bad(
                "session".into(),
                "capacity and login_timeout must be above zero".into(),
            );
        }
    }
}
