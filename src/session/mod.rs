//! Sessions: an opaque 256-bit random id in a cookie, the session itself server-side
//! behind [`SessionStore`]. The embedded store ([`MemoryStore`]) uses moka; a Redis store
//! can implement the same trait (scale-out). Besides sessions the store keeps short-lived
//! pending-login state (request ids, PKCE verifiers, nonces, return URL), consumed once,
//! and the replay cache.
//!
//! Timeouts (idle, absolute) are decided here from the session's own timestamps and an
//! injected [`Clock`], so they are exact and testable; the cache's own expiry only bounds
//! memory. Every store error is "unavailable": callers fail closed on it.

mod config;
pub mod cookie;
pub mod redis_store;
pub mod return_url;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::assertion::SessionClaims;
use crate::identity::Identity;

pub use config::{SessionConfig, StoreKind};

/// A session id: 32 random bytes. Its text form is 43 base64url characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 32]);

impl SessionId {
    pub fn random() -> SessionId {
        SessionId(rand::random())
    }

    /// Parses the cookie form; anything else is no session.
    pub fn parse(text: &str) -> Option<SessionId> {
        if text.len() != 43 {
            return None;
        }
        // Decoded on the stack (this runs for every protected request).
        let mut buf = [0u8; 48];
        let n = URL_SAFE_NO_PAD.decode_slice(text, &mut buf).ok()?;
        Some(SessionId(buf.get(..n)?.try_into().ok()?))
    }

    pub fn to_cookie_value(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// A one-way handle for logs and the `sid` claim: never the id itself.
    pub fn hash(&self) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.0);
        URL_SAFE_NO_PAD.encode(&d.as_ref()[..16])
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the id: it is a bearer credential.
        write!(f, "SessionId({})", self.hash())
    }
}

/// Seconds since the Unix epoch, from a clock tests can move.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> u64;
}

/// The real clock, with an offset tests can move forward.
#[derive(Default)]
pub struct SystemClock {
    offset: AtomicI64,
}

impl SystemClock {
    pub fn advance(&self, by: Duration) {
        self.offset.fetch_add(by.as_secs() as i64, Ordering::AcqRel);
    }
}

impl SystemClock {
    /// `now()` without importing the trait.
    pub fn now_secs(&self) -> u64 {
        Clock::now(self)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as i64;
        (real + self.offset.load(Ordering::Acquire)).max(0) as u64
    }
}

/// A logged-in user's session. Immutable once created (a new login makes a new session
/// under a new id); the store tracks when it was last used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub identity: Identity,
    /// When the login happened (seconds since the epoch).
    pub created: u64,
    /// `sid` claim: hash of the session id.
    pub sid: String,
    /// Claims constant for the session, encoded once (rebuilt after a store round trip).
    #[serde(skip)]
    pub claims: Option<SessionClaims>,
    /// What the login method keeps about the login (see [`SessionLink`]).
    #[serde(default)]
    pub link: SessionLink,
}

impl Session {
    /// A session for `identity` not (yet) in the store: a login made on the spot, before
    /// it is authorized and stored (then it gets its id and `sid`), or one that lives for
    /// a single request (legacy PIN credentials in `Authorization`). Its claims are
    /// encoded for `sid` when one is given.
    pub fn unstored(identity: Identity, link: SessionLink, issuer: &str, sid: String) -> Session {
        let claims = (!sid.is_empty())
            .then(|| SessionClaims::new(issuer, &identity, &sid).ok())
            .flatten();
        Session {
            created: identity.auth_time,
            identity,
            sid,
            claims,
            link,
        }
    }
}

/// What a login method keeps on the session about the login itself, beyond the identity:
/// one variant per method that needs something later (Single Logout, the PIN's per-request
/// checks, an OIDC logout). Methods that need nothing use `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionLink {
    #[default]
    None,
    /// A SAML login: what Single Logout needs.
    Saml(SamlLink),
    /// A legacy PIN login: what the switch-off re-checks on every request.
    Pin(PinGrant),
    /// An OpenID Connect login: what RP-initiated and back-channel logout need.
    Oidc(OidcLink),
}

/// The OpenID Connect facts of a session, for logout.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcLink {
    /// The provider's configured name.
    pub provider: String,
    pub sub: String,
    /// The provider's session id (`sid` of the ID token), when it sent one.
    pub sid: Option<String>,
    /// The ID token, as `id_token_hint` of the RP-initiated logout.
    pub id_token: String,
}

impl std::fmt::Debug for OidcLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a bearer credential at some providers: never printed.
        f.debug_struct("OidcLink")
            .field("provider", &self.provider)
            .field("sub", &self.sub)
            .field("sid", &self.sid)
            .field("id_token", &"<redacted>")
            .finish()
    }
}

impl SessionLink {
    pub fn saml(&self) -> Option<&SamlLink> {
        match self {
            SessionLink::Saml(l) => Some(l),
            _ => None,
        }
    }

    pub fn oidc(&self) -> Option<&OidcLink> {
        match self {
            SessionLink::Oidc(l) => Some(l),
            _ => None,
        }
    }

    pub fn pin(&self) -> Option<&PinGrant> {
        match self {
            SessionLink::Pin(g) => Some(g),
            _ => None,
        }
    }
}

/// The SAML facts of a session, for Single Logout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamlLink {
    pub federation: String,
    pub idp: String,
    pub name_id: String,
    pub name_qualifier: String,
    pub session_index: Option<String>,
}

/// What a PIN login was granted on (see `pin`): the PIN's issue date, checked again on
/// every request against the switch-off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinGrant {
    pub issued: crate::identity::Date,
    /// From the verifier, when it knows (better than the fiscal code's century guess).
    #[serde(default)]
    pub date_of_birth: Option<crate::identity::Date>,
}

/// Login state kept between sending the user to an IdP and the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    /// Where to send the user afterwards (a validated relative URL).
    pub return_to: String,
    /// Protocol-specific state (request id, PKCE verifier, nonce...).
    pub data: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot answer (Redis down, ...). Callers refuse the request.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
}

/// Timeouts and bounds of a store.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub idle: Duration,
    pub absolute: Duration,
    pub capacity: u64,
}

/// Where sessions, pending logins and the replay cache live. All methods are async so
/// a networked store fits; "absent" is `Ok(None)`/`Ok(false)`, never an error.
pub trait SessionStore: Send + Sync + 'static {
    /// The session if it exists and has neither idled out nor passed its absolute
    /// lifetime; refreshes its idle timer.
    fn get(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<Arc<Session>>, StoreError>> + Send;
    /// Whether the session still exists and is within both timeouts, without counting
    /// as activity (a relayed tunnel checks its session so).
    fn alive(&self, id: &SessionId) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn put(
        &self,
        id: &SessionId,
        session: Session,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Keeps pending-login state under `key` for `ttl`.
    fn put_pending(
        &self,
        key: &str,
        pending: PendingLogin,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Returns and removes the pending state: a second call gets `None`.
    fn take_pending(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<PendingLogin>, StoreError>> + Send;
    /// Remembers `key` for `ttl`; `true` if it was not there (first use), `false` on replay.
    fn insert_if_absent(
        &self,
        key: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Files session `id` under `key` (a provider's session id or subject) for `ttl`, so a
    /// back-channel logout, which carries no cookie, can find the sessions it ends.
    fn index(
        &self,
        key: &str,
        id: &SessionId,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Ends every session filed under `key` and forgets the filing; returns the `sid`
    /// (hash) of each session that still existed, so its tunnels can be closed. A store
    /// that keeps the filing elsewhere than the sessions never holds the ids themselves.
    fn end_indexed(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

#[derive(Clone)]
struct Expiring<T> {
    value: T,
    expires: u64,
}

struct SessionEntry {
    session: Arc<Session>,
    last_seen: std::sync::atomic::AtomicU64,
}

/// Counts entries the embedded store had to drop for room (by cache: `sessions`,
/// `pending`, `replay`), for `varco_store_evictions_total`.
pub type EvictionCounter = Arc<dyn Fn(&'static str) + Send + Sync>;

/// A size-bounded cache that always admits a new entry: LRU eviction (moka's default
/// TinyLFU admission may refuse a new key under pressure, which would silently lose a
/// fresh login or make the replay cache forget what it was just told). Size evictions are
/// counted.
fn bounded<K, V>(
    name: &'static str,
    capacity: u64,
    evicted: &Option<EvictionCounter>,
) -> moka::sync::CacheBuilder<K, V, moka::sync::Cache<K, V>>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let mut b = moka::sync::Cache::builder()
        .max_capacity(capacity)
        .eviction_policy(moka::policy::EvictionPolicy::lru());
    if let Some(count) = evicted.clone() {
        b = b.eviction_listener(move |_k, _v, cause| {
            if cause == moka::notification::RemovalCause::Size {
                count(name);
            }
        });
    }
    b
}

/// The embedded store: moka caches bounded by capacity (LRU: the least recently used
/// entry makes room, a new one is always kept), timeouts from the clock.
pub struct MemoryStore {
    sessions: moka::sync::Cache<SessionId, Arc<SessionEntry>>,
    pending: moka::sync::Cache<String, Expiring<PendingLogin>>,
    replay: moka::sync::Cache<String, u64>,
    /// Sessions by a provider's session id or subject (bounded like `pending`).
    index: moka::sync::Cache<String, Expiring<Vec<SessionId>>>,
    limits: Limits,
    clock: Arc<dyn Clock>,
}

impl MemoryStore {
    pub fn new(
        limits: Limits,
        clock: Arc<dyn Clock>,
        evicted: Option<EvictionCounter>,
    ) -> MemoryStore {
        // The cache's own expiry only frees memory; validity is decided in `get`.
        let sessions: moka::sync::Cache<SessionId, Arc<SessionEntry>> =
            bounded("sessions", limits.capacity, &evicted)
                .time_to_idle(limits.idle + Duration::from_secs(60))
                .time_to_live(limits.absolute + Duration::from_secs(60))
                .build();
        // Each session is filed under at most two keys; a filing evicted for room takes
        // its sessions with it (a session a logout token could not find must not exist).
        let filed = sessions.clone();
        let counted = evicted.clone();
        let index = moka::sync::Cache::builder()
            .max_capacity(limits.capacity.saturating_mul(2))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .time_to_live(limits.absolute + Duration::from_secs(60))
            .eviction_listener(move |_k, v: Expiring<Vec<SessionId>>, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    for id in &v.value {
                        filed.invalidate(id);
                    }
                    if let Some(count) = &counted {
                        count("index");
                    }
                }
            })
            .build();
        MemoryStore {
            sessions,
            pending: bounded("pending", limits.capacity, &evicted)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            replay: bounded("replay", limits.capacity.saturating_mul(4), &evicted)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
            index,
            limits,
            clock,
        }
    }

    /// Runs the caches' pending maintenance (evictions) now; moka otherwise does it on
    /// later operations. For tests and for exact entry counts.
    pub fn run_pending_tasks(&self) {
        self.sessions.run_pending_tasks();
        self.pending.run_pending_tasks();
        self.replay.run_pending_tasks();
        self.index.run_pending_tasks();
    }

    fn valid(&self, e: &SessionEntry, now: u64) -> bool {
        let last_seen = e.last_seen.load(Ordering::Acquire);
        now < e
            .session
            .created
            .saturating_add(self.limits.absolute.as_secs())
            && now < last_seen.saturating_add(self.limits.idle.as_secs())
    }
}

impl SessionStore for MemoryStore {
    async fn get(&self, id: &SessionId) -> Result<Option<Arc<Session>>, StoreError> {
        let now = self.clock.now();
        let Some(e) = self.sessions.get(id) else {
            return Ok(None);
        };
        if !self.valid(&e, now) {
            self.sessions.invalidate(id);
            return Ok(None);
        }
        e.last_seen.fetch_max(now, Ordering::AcqRel);
        Ok(Some(e.session.clone()))
    }

    async fn alive(&self, id: &SessionId) -> Result<bool, StoreError> {
        let now = self.clock.now();
        Ok(self.sessions.get(id).is_some_and(|e| self.valid(&e, now)))
    }

    async fn put(&self, id: &SessionId, session: Session) -> Result<(), StoreError> {
        let last_seen = std::sync::atomic::AtomicU64::new(session.created.max(self.clock.now()));
        self.sessions.insert(
            id.clone(),
            Arc::new(SessionEntry {
                session: Arc::new(session),
                last_seen,
            }),
        );
        Ok(())
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.sessions.invalidate(id);
        Ok(())
    }

    async fn put_pending(
        &self,
        key: &str,
        pending: PendingLogin,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let expires = self.clock.now().saturating_add(ttl.as_secs());
        self.pending.insert(
            key.to_string(),
            Expiring {
                value: pending,
                expires,
            },
        );
        Ok(())
    }

    async fn take_pending(&self, key: &str) -> Result<Option<PendingLogin>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .pending
            .remove(key)
            .filter(|e| now < e.expires)
            .map(|e| e.value))
    }

    async fn insert_if_absent(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let expires = now.saturating_add(ttl.as_secs());
        // `entry().or_insert_with` is atomic per key: two racing inserts cannot both win.
        let entry = self
            .replay
            .entry(key.to_string())
            .or_insert_with(|| expires);
        if entry.is_fresh() {
            return Ok(true);
        }
        if *entry.value() <= now {
            // The remembered key has expired: this use is a first use again.
            self.replay.insert(key.to_string(), expires);
            return Ok(true);
        }
        Ok(false)
    }

    async fn index(&self, key: &str, id: &SessionId, ttl: Duration) -> Result<(), StoreError> {
        /// Sessions kept per key: a subject logged in from many browsers keeps the newest.
        const MAX_PER_KEY: usize = 64;
        let now = self.clock.now();
        let expires = now.saturating_add(ttl.as_secs());
        let mut dropped = None;
        self.index.entry(key.to_string()).and_upsert_with(|old| {
            let mut ids: Vec<SessionId> = old
                .filter(|e| now < e.value().expires)
                .map(|e| e.into_value().value)
                .unwrap_or_default();
            ids.retain(|i| i != id);
            if ids.len() >= MAX_PER_KEY {
                dropped = Some(ids.remove(0));
            }
            ids.push(id.clone());
            Expiring {
                value: ids,
                expires,
            }
        });
        // The oldest session of a subject with too many is ended rather than left where a
        // logout token cannot reach it.
        if let Some(old) = dropped {
            self.sessions.invalidate(&old);
        }
        Ok(())
    }

    async fn end_indexed(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let now = self.clock.now();
        let ids = self
            .index
            .remove(key)
            .filter(|e| now < e.expires)
            .map(|e| e.value)
            .unwrap_or_default();
        let mut ended = Vec::new();
        for id in ids {
            if self.sessions.remove(&id).is_some() {
                ended.push(id.hash());
            }
        }
        Ok(ended)
    }
}

/// The configured store. Callers hold this type: the embedded one, or Redis shared by
/// the replicas.
// One per process, behind an `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    Memory(MemoryStore),
    Redis(Arc<redis_store::RedisStore>),
}

impl Store {
    /// The Redis store when the replicas share one: rate-limit counters and telephone PINs
    /// live there too.
    pub fn shared(&self) -> Option<Arc<redis_store::RedisStore>> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(r) => Some(r.clone()),
        }
    }

    /// Whether the store answers (the embedded one always does): readiness.
    pub fn healthy(&self) -> bool {
        match self {
            Store::Memory(_) => true,
            Store::Redis(r) => r.healthy(),
        }
    }
}

impl SessionStore for Store {
    async fn get(&self, id: &SessionId) -> Result<Option<Arc<Session>>, StoreError> {
        match self {
            Store::Memory(m) => m.get(id).await,
            Store::Redis(r) => r.get(id).await,
        }
    }

    async fn alive(&self, id: &SessionId) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => m.alive(id).await,
            Store::Redis(r) => r.alive(id).await,
        }
    }

    async fn put(&self, id: &SessionId, session: Session) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => m.put(id, session).await,
            Store::Redis(r) => r.put(id, session).await,
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => m.delete(id).await,
            Store::Redis(r) => r.delete(id).await,
        }
    }

    async fn put_pending(
        &self,
        key: &str,
        pending: PendingLogin,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => m.put_pending(key, pending, ttl).await,
            Store::Redis(r) => r.put_pending(key, pending, ttl).await,
        }
    }

    async fn take_pending(&self, key: &str) -> Result<Option<PendingLogin>, StoreError> {
        match self {
            Store::Memory(m) => m.take_pending(key).await,
            Store::Redis(r) => r.take_pending(key).await,
        }
    }

    async fn insert_if_absent(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => m.insert_if_absent(key, ttl).await,
            Store::Redis(r) => r.insert_if_absent(key, ttl).await,
        }
    }
    async fn index(&self, key: &str, id: &SessionId, ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => m.index(key, id, ttl).await,
            Store::Redis(r) => r.index(key, id, ttl).await,
        }
    }

    async fn end_indexed(&self, key: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Memory(m) => m.end_indexed(key).await,
            Store::Redis(r) => r.end_indexed(key).await,
        }
    }
}

#[cfg(test)]
mod tests;
