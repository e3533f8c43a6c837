//! The Redis store (`[session] store = "redis"`): sessions, pending logins, the replay
//! cache and the back-channel filings shared by every replica.
//!
//! - Sessions under `<prefix>s:<sid>` — the id's one-way hash, never the id itself (a
//!   reader of Redis cannot take over a session) — with a TTL of the idle timeout,
//!   refreshed by every read (`GETEX`), never past the absolute lifetime (checked on read
//!   from the login time in the value).
//! - Pending logins under `<prefix>p:<key>`, taken once with `GETDEL`; replay records with
//!   `SET NX PX`; filings as sets of sid hashes, ended atomically by a script.
//! - Values are a version byte then JSON (`1{...}`): serde already describes the session,
//!   JSON is readable with `redis-cli` when something goes wrong, and a session is a few
//!   hundred bytes, so the round trip, not the encoding, is the cost. A value that does
//!   not parse (another version, a corrupted key) is no session, never a crash.
//! - No local read cache: every protected request reads Redis (one round trip), so a
//!   logout on one replica is seen by all at once.
//! - Fail closed: a connection or command failure (or timeout) is `StoreError::Unavailable`,
//!   which callers turn into 503; the store reconnects by itself (at most one attempt per
//!   second while Redis is down) and `healthy()` reports the last outcome for readiness.
//!   While Redis is known to be down, one command per 100 ms tries it and the others fail
//!   at once: a request gets its 503 without waiting for the command timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;

use super::{Clock, Limits, PendingLogin, Session, SessionId, SessionStore, StoreError};
use crate::assertion::SessionClaims;

/// `[session.redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://...` (TLS).
    pub url: String,
    /// ACL user (Redis 6+), when not in the URL.
    #[serde(default)]
    pub username: Option<String>,
    /// The password from a file (first line) ...
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    /// ... or from an environment variable.
    #[serde(default)]
    pub password_env: Option<String>,
    /// CA bundle (PEM) for `rediss://`; default the system's roots.
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    /// Prefix of every key (several gateways can share one Redis).
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A command that takes longer fails (and the request gets 503).
    #[serde(default = "default_command_timeout", with = "humantime_serde")]
    pub command_timeout: Duration,
}

fn default_prefix() -> String {
    "varco:".into()
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_command_timeout() -> Duration {
    Duration::from_millis(500)
}

impl RedisConfig {
    pub fn validate(&self, bad: &mut impl FnMut(String, String)) {
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            bad(
                "session.redis.url".into(),
                "must be a redis:// or rediss:// URL".into(),
            );
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            bad(
                "session.redis.password_file".into(),
                "one of password_file and password_env".into(),
            );
        }
        if let Some(f) = &self.password_file
            && !f.is_file()
        {
            bad(
                "session.redis.password_file".into(),
                format!("file `{}` does not exist", f.display()),
            );
        }
        if let Some(v) = &self.password_env
            && std::env::var_os(v).is_none()
        {
            bad(
                "session.redis.password_env".into(),
                format!("the environment variable `{v}` is not set"),
            );
        }
        if let Some(ca) = &self.ca
            && !ca.is_file()
        {
            bad(
                "session.redis.ca".into(),
                format!("file `{}` does not exist", ca.display()),
            );
        }
        if self.key_prefix.is_empty() || self.key_prefix.len() > 64 {
            bad(
                "session.redis.key_prefix".into(),
                "1 to 64 characters".into(),
            );
        }
        for (k, d) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(30) {
                bad(
                    format!("session.redis.{k}"),
                    "must be between 1ms and 30s".into(),
                );
            }
        }
    }
}

/// Why the Redis store could not be set up (a configuration matter; an unreachable Redis
/// is not one of these: the gateway starts and answers 503 until Redis is there).
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("session.redis: {0}")]
    Config(String),
}

const VERSION: u8 = b'1';

/// While Redis is down, how often a command tries it (the others fail at once).
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// Whether `e` means Redis cannot serve at all (connection lost or refused, I/O, loading,
/// a read-only replica after a failover, a cluster or master down), as opposed to one
/// command refused.
fn is_outage(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::AuthenticationFailed
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::NoPerm
                )
        )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Ends the sessions of a filing and the filing, atomically: returns the sid hashes of
/// the sessions that existed.
const END_INDEXED: &str = r"
local ids = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
local ended = {}
for _, h in ipairs(ids) do
  if redis.call('DEL', ARGV[1] .. h) == 1 then table.insert(ended, h) end
end
return ended
";

/// Counts an attempt in a fixed window that starts with the key's first attempt
/// (`INCR`, and `PEXPIRE` when the count is new): returns the count.
const COUNT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
";

/// Takes one attempt back, never below zero and without extending the window.
const FORGIVE: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n and n > 0 then redis.call('DECR', KEYS[1]) end
return 0
";

pub struct RedisStore {
    client: redis::Client,
    manager: tokio::sync::Mutex<Option<ConnectionManager>>,
    last_attempt: AtomicU64,
    /// While Redis does not answer, one command per [`PROBE_EVERY`] tries it (the probe);
    /// the others fail at once instead of each waiting for the command timeout.
    last_probe: AtomicU64,
    healthy: Arc<AtomicBool>,
    prefix: String,
    cfg: RedisConfig,
    limits: Limits,
    clock: Arc<dyn Clock>,
    /// The identity header's issuer, to rebuild a session's claims after a read.
    issuer: String,
    end_indexed: redis::Script,
    count: redis::Script,
    forgive: redis::Script,
}

fn down(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string().chars().take(200).collect())
}

impl RedisStore {
    /// The store for `cfg` (no connection yet: the first command connects).
    pub fn new(
        cfg: &RedisConfig,
        limits: Limits,
        clock: Arc<dyn Clock>,
        issuer: &str,
    ) -> Result<RedisStore, RedisSetupError> {
        let mut info: redis::ConnectionInfo = cfg
            .url
            .as_str()
            .parse()
            .map_err(|_| RedisSetupError::Config("url: not a Redis URL".into()))?;
        let password = match (&cfg.password_file, &cfg.password_env) {
            (Some(f), _) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| RedisSetupError::Config(format!("password_file: {}", e.kind())))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            (None, Some(v)) => {
                Some(std::env::var(v).map_err(|_| {
                    RedisSetupError::Config(format!("password_env: {v} is not set"))
                })?)
            }
            (None, None) => None,
        };
        let mut redis_info = info.redis_settings().clone();
        if let Some(p) = password {
            redis_info = redis_info.set_password(p);
        }
        if let Some(u) = &cfg.username {
            redis_info = redis_info.set_username(u.clone());
        }
        info = info.set_redis_settings(redis_info);
        let client = match &cfg.ca {
            Some(ca) => {
                let pem = std::fs::read(ca)
                    .map_err(|e| RedisSetupError::Config(format!("ca: {}", e.kind())))?;
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            None => redis::Client::open(info),
        }
        .map_err(|e| RedisSetupError::Config(e.to_string()))?;
        Ok(RedisStore {
            client,
            manager: tokio::sync::Mutex::new(None),
            last_attempt: AtomicU64::new(0),
            last_probe: AtomicU64::new(0),
            healthy: Arc::new(AtomicBool::new(false)),
            prefix: cfg.key_prefix.clone(),
            cfg: cfg.clone(),
            limits,
            clock,
            issuer: issuer.to_string(),
            end_indexed: redis::Script::new(END_INDEXED),
            count: redis::Script::new(COUNT),
            forgive: redis::Script::new(FORGIVE),
        })
    }

    /// Whether the last command (or connection attempt) succeeded: readiness.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// `PING`: the health loop's probe (readiness follows Redis without traffic); always
    /// tries Redis, also while it is known to be down.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.last_probe.store(0, Ordering::Relaxed);
        self.run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }

    /// While Redis is known to be down: whether this command may try it (one per
    /// [`PROBE_EVERY`]), or should fail at once (a request then gets its 503 without
    /// waiting for the command timeout, and Redis is not flooded when it comes back).
    fn may_try(&self) -> bool {
        if self.healthy.load(Ordering::Relaxed) {
            return true;
        }
        let now = now_ms();
        let last = self.last_probe.load(Ordering::Relaxed);
        now >= last.saturating_add(PROBE_EVERY.as_millis() as u64)
            && self
                .last_probe
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// A connection, made now if there is none (at most one attempt per second).
    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let mut guard = self.manager.lock().await;
        if let Some(m) = guard.as_ref() {
            return Ok(m.clone());
        }
        let now_ms = now_ms();
        if now_ms
            < self
                .last_attempt
                .load(Ordering::Relaxed)
                .saturating_add(1000)
        {
            return Err(StoreError::Unavailable("Redis is not connected".into()));
        }
        self.last_attempt.store(now_ms, Ordering::Relaxed);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.cfg.connect_timeout))
            .set_response_timeout(Some(self.cfg.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let made = tokio::time::timeout(
            self.cfg.connect_timeout * 2,
            self.client.get_connection_manager_with_config(config),
        )
        .await;
        match made {
            Ok(Ok(m)) => {
                tracing::info!("connected to Redis");
                *guard = Some(m.clone());
                self.check_eviction_policy(m.clone()).await;
                Ok(m)
            }
            Ok(Err(e)) => {
                self.healthy.store(false, Ordering::Relaxed);
                Err(down(e))
            }
            Err(_) => {
                self.healthy.store(false, Ordering::Relaxed);
                Err(StoreError::Unavailable("Redis connection timed out".into()))
            }
        }
    }

    /// Says loudly when Redis may evict keys: rate-limit counters (a PIN's failed attempts)
    /// and sessions have TTLs, so `volatile-*` and `allkeys-*` policies can drop them under
    /// memory pressure — an attacker who fills Redis would get new attempts. varco needs
    /// `maxmemory-policy noeviction` (a full Redis then refuses writes: those requests get
    /// 503, the rest go on).
    async fn check_eviction_policy(&self, mut m: ConnectionManager) {
        let info = tokio::time::timeout(
            self.cfg.command_timeout,
            redis::cmd("INFO")
                .arg("memory")
                .query_async::<String>(&mut m),
        )
        .await;
        let Ok(Ok(info)) = info else { return };
        if let Some(policy) = info
            .lines()
            .find_map(|l| l.strip_prefix("maxmemory_policy:"))
            .map(str::trim)
            && policy != "noeviction"
        {
            tracing::error!(
                policy,
                "Redis may evict keys (maxmemory-policy is not noeviction): rate-limit counts and sessions can be lost under memory pressure; set maxmemory-policy noeviction"
            );
        }
    }

    /// Runs one command against Redis with the command timeout; records the outcome.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.may_try() {
            return Err(StoreError::Unavailable("Redis does not answer".into()));
        }
        let conn = self.conn().await?;
        let outcome = tokio::time::timeout(self.cfg.command_timeout, f(conn)).await;
        let result = match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if !is_outage(&e) => {
                // Redis answered, but refused this command (out of memory under
                // `noeviction`, a key of another type, a script error): this request fails
                // (503), the store stays in service — one client's write must not take
                // the replica out of readiness.
                tracing::warn!(error = %down(&e), "Redis refused a command: this request gets 503");
                return Err(down(e));
            }
            Ok(Err(e)) => Err(down(e)),
            Err(_) => Err(StoreError::Unavailable("Redis command timed out".into())),
        };
        let ok = result.is_ok();
        if self.healthy.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!("Redis answers again: sessions are served");
            } else if let Err(e) = &result {
                tracing::error!(error = %e, "Redis does not answer: protected requests get 503");
            }
        }
        result
    }

    /// The key of a shared value: `<prefix><kind>:<hash of the name>`. Names (fiscal
    /// codes, addresses) are hashed: a reader of Redis sees no personal data in key names.
    fn shared_key(&self, kind: &str, name: &str) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_bytes());
        let mut hex = String::with_capacity(32);
        for b in &digest.as_ref()[..16] {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
        }
        format!("{}{kind}:{hex}", self.prefix)
    }

    /// Counts an attempt under `name` in a window of `window` that began with its first
    /// counted attempt; returns the count including this one (`INCR` + `PEXPIRE`, atomic).
    pub async fn count(&self, name: &str, window: Duration) -> Result<u64, StoreError> {
        let key = self.shared_key("l", name);
        let ms = (window.as_millis() as u64).max(1);
        let script = &self.count;
        self.run(|mut c| async move { script.key(&key).arg(ms).invoke_async(&mut c).await })
            .await
    }

    /// Takes one counted attempt under `name` back (never below zero).
    pub async fn forgive(&self, name: &str) -> Result<(), StoreError> {
        let key = self.shared_key("l", name);
        let script = &self.forgive;
        self.run(|mut c| async move {
            script
                .key(&key)
                .invoke_async::<i64>(&mut c)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Forgets the count under `name`.
    pub async fn reset(&self, name: &str) -> Result<(), StoreError> {
        let key = self.shared_key("l", name);
        self.run(|mut c| async move { c.del::<_, ()>(&key).await })
            .await
    }

    /// Keeps `value` (serialized with the version byte) under `kind`/`name` for `ttl`,
    /// replacing what was there.
    pub async fn put_value<T: serde::Serialize>(
        &self,
        kind: &str,
        name: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.shared_key(kind, name);
        let mut bytes = vec![VERSION];
        serde_json::to_writer(&mut bytes, value)
            .map_err(|_| StoreError::Unavailable("a value could not be encoded".into()))?;
        let ms = (ttl.as_millis() as u64).max(1);
        self.run(|mut c| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(bytes)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// The value under `kind`/`name`; `None` when absent or when it does not parse.
    pub async fn get_value<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        let key = self.shared_key(kind, name);
        let value: Option<Vec<u8>> = self.run(|mut c| async move { c.get(&key).await }).await?;
        Ok(value.as_deref().and_then(|b| {
            let (v, json) = b.split_first()?;
            (*v == VERSION).then(|| serde_json::from_slice(json).ok())?
        }))
    }

    /// A random 32-byte secret under `name` shared by every replica: made by the first
    /// replica that asks (`SET NX`), read by the others.
    pub async fn shared_secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        let key = format!("{}k:{name}", self.prefix);
        let mine: [u8; 32] = rand::random();
        let value: Option<Vec<u8>> = self
            .run(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&key)
                    .arg(&mine[..])
                    .arg("NX")
                    .ignore()
                    .get(&key)
                    .query_async::<(Option<Vec<u8>>,)>(&mut c)
                    .await
                    .map(|(v,)| v)
            })
            .await?;
        value
            .as_deref()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| {
                StoreError::Unavailable(format!("the shared secret `{name}` is not 32 bytes"))
            })
    }

    /// Removes the value under `kind`/`name`; whether there was one.
    pub async fn delete_value(&self, kind: &str, name: &str) -> Result<bool, StoreError> {
        let key = self.shared_key(kind, name);
        let n: i64 = self.run(|mut c| async move { c.del(&key).await }).await?;
        Ok(n > 0)
    }

    fn session_key(&self, id: &SessionId) -> String {
        format!("{}s:{}", self.prefix, id.hash())
    }

    fn encode(session: &Session) -> Result<Vec<u8>, StoreError> {
        let mut out = vec![VERSION];
        serde_json::to_writer(&mut out, session)
            .map_err(|_| StoreError::Unavailable("a session could not be encoded".into()))?;
        Ok(out)
    }

    /// The session in a value, or `None` when it does not parse (another version, a
    /// corrupted value): no session, never a crash.
    fn decode(&self, bytes: &[u8]) -> Option<Session> {
        let (v, json) = bytes.split_first()?;
        if *v != VERSION {
            return None;
        }
        let mut s: Session = serde_json::from_slice(json).ok()?;
        s.claims = SessionClaims::new(&self.issuer, &s.identity, &s.sid).ok();
        Some(s)
    }

    /// Milliseconds a session may still live idle from now: the idle timeout, capped by
    /// what is left of its absolute lifetime; `None` when it has passed that.
    fn ttl_ms(&self, created: u64) -> Option<u64> {
        let now = self.clock.now();
        let end = created.saturating_add(self.limits.absolute.as_secs());
        let left = end.checked_sub(now).filter(|l| *l > 0)?;
        Some(
            left.min(self.limits.idle.as_secs())
                .saturating_mul(1000)
                .max(1),
        )
    }
}

impl SessionStore for RedisStore {
    async fn get(&self, id: &SessionId) -> Result<Option<Arc<Session>>, StoreError> {
        let key = self.session_key(id);
        let idle_ms = self.limits.idle.as_millis() as u64;
        let value: Option<Vec<u8>> = self
            .run(|mut c| {
                let key = key.clone();
                async move {
                    redis::cmd("GETEX")
                        .arg(&key)
                        .arg("PX")
                        .arg(idle_ms)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        let Some(session) = value.as_deref().and_then(|b| self.decode(b)) else {
            return Ok(None);
        };
        match self.ttl_ms(session.created) {
            Some(ttl) => {
                // Never past the absolute lifetime.
                if ttl < idle_ms {
                    self.run(|mut c| async move { c.pexpire::<_, ()>(&key, ttl as i64).await })
                        .await?;
                }
                Ok(Some(Arc::new(session)))
            }
            None => {
                self.run(|mut c| async move { c.del::<_, ()>(&key).await })
                    .await?;
                Ok(None)
            }
        }
    }

    async fn alive(&self, id: &SessionId) -> Result<bool, StoreError> {
        let key = self.session_key(id);
        let value: Option<Vec<u8>> = self.run(|mut c| async move { c.get(&key).await }).await?;
        Ok(value
            .as_deref()
            .and_then(|b| self.decode(b))
            .is_some_and(|s| self.ttl_ms(s.created).is_some()))
    }

    async fn put(&self, id: &SessionId, session: Session) -> Result<(), StoreError> {
        let Some(ttl) = self.ttl_ms(session.created.max(self.clock.now().saturating_sub(1))) else {
            return Ok(());
        };
        let key = self.session_key(id);
        let value = Self::encode(&session)?;
        self.run(|mut c| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(ttl)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let key = self.session_key(id);
        self.run(|mut c| async move { c.del::<_, ()>(&key).await })
            .await
    }

    async fn put_pending(
        &self,
        key: &str,
        pending: PendingLogin,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = format!("{}p:{key}", self.prefix);
        let mut value = vec![VERSION];
        serde_json::to_writer(&mut value, &pending)
            .map_err(|_| StoreError::Unavailable("a pending login could not be encoded".into()))?;
        let ms = (ttl.as_millis() as u64).max(1);
        self.run(|mut c| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn take_pending(&self, key: &str) -> Result<Option<PendingLogin>, StoreError> {
        let key = format!("{}p:{key}", self.prefix);
        let value: Option<Vec<u8>> = self
            .run(|mut c| async move { redis::cmd("GETDEL").arg(&key).query_async(&mut c).await })
            .await?;
        Ok(value.as_deref().and_then(|b| {
            let (v, json) = b.split_first()?;
            (*v == VERSION).then(|| serde_json::from_slice(json).ok())?
        }))
    }

    async fn insert_if_absent(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = format!("{}r:{key}", self.prefix);
        let ms = (ttl.as_millis() as u64).max(1);
        let set: Option<String> = self
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    async fn index(&self, key: &str, id: &SessionId, ttl: Duration) -> Result<(), StoreError> {
        let key = format!("{}i:{key}", self.prefix);
        let sid = id.hash();
        let ms = (ttl.as_millis() as i64).max(1);
        self.run(|mut c| async move {
            redis::pipe()
                .atomic()
                .sadd(&key, sid)
                .ignore()
                .pexpire(&key, ms)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn end_indexed(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let key = format!("{}i:{key}", self.prefix);
        let sessions = format!("{}s:", self.prefix);
        let script = &self.end_indexed;
        self.run(|mut c| async move { script.key(&key).arg(&sessions).invoke_async(&mut c).await })
            .await
    }
}
