//! The contact-centre telephone PIN (seeds: "PIN TELEFONICO"): a user logged in with SPID,
//! CIE or CNS generates a temporary PIN valid one day, one week, one month or three months.
//! It is shown once; only its argon2id hash is kept, with its expiry, one per user (a new
//! one replaces the old), revocable. The contact-centre backend checks a (fiscal code,
//! PIN) pair through an authenticated endpoint.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use serde::{Deserialize, Serialize};

use crate::identity::FiscalCode;
use crate::session::redis_store::RedisStore;
use crate::session::{Store, StoreError};

/// `[pin.telephone]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelephoneConfig {
    /// Bearer tokens the contact-centre backend presents to the verify endpoint (give them
    /// through `VARCO__PIN__TELEPHONE__VERIFY_TOKENS` rather than in the file).
    #[serde(default)]
    pub verify_tokens: Vec<String>,
    /// Or mTLS: client certificates (verified by a listener's `client_ca`) whose subject CN
    /// or DNS name is one of these.
    #[serde(default)]
    pub verify_clients: Vec<String>,
    /// With `verify_clients`: the CA (PEM) that must have issued the contact centre's
    /// certificate, when the listener's `client_ca` also trusts others (CNS authorities).
    #[serde(default)]
    pub verify_client_ca: Option<std::path::PathBuf>,
    /// Digits of a generated PIN.
    #[serde(default = "default_digits")]
    pub digits: usize,
}

fn default_digits() -> usize {
    8
}

/// How long a telephone PIN is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lifetime {
    #[serde(rename = "1d")]
    Day,
    #[serde(rename = "1w")]
    Week,
    #[serde(rename = "1m")]
    Month,
    #[serde(rename = "3m")]
    ThreeMonths,
}

impl Lifetime {
    pub const ALL: [Lifetime; 4] = [
        Lifetime::Day,
        Lifetime::Week,
        Lifetime::Month,
        Lifetime::ThreeMonths,
    ];

    /// A month is 30 days; three months 90.
    pub fn duration(self) -> Duration {
        const DAY: u64 = 86_400;
        Duration::from_secs(match self {
            Lifetime::Day => DAY,
            Lifetime::Week => 7 * DAY,
            Lifetime::Month => 30 * DAY,
            Lifetime::ThreeMonths => 90 * DAY,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lifetime::Day => "1d",
            Lifetime::Week => "1w",
            Lifetime::Month => "1m",
            Lifetime::ThreeMonths => "3m",
        }
    }

    pub fn parse(s: &str) -> Option<Lifetime> {
        Lifetime::ALL.into_iter().find(|l| l.as_str() == s)
    }

    pub fn label(self) -> (&'static str, &'static str) {
        match self {
            Lifetime::Day => ("1 giorno", "1 day"),
            Lifetime::Week => ("1 settimana", "1 week"),
            Lifetime::Month => ("1 mese", "1 month"),
            Lifetime::ThreeMonths => ("3 mesi", "3 months"),
        }
    }
}

/// One active telephone PIN: its hash and its validity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub hash: String,
    pub created: u64,
    pub expires: u64,
}

/// Where the active PINs live: in this process (entries leave at the longest lifetime),
/// or in Redis shared by the replicas (each expiring with its PIN), so a PIN generated or
/// revoked on one replica is known to all at once.
#[derive(Clone)]
enum Pins {
    Local(Cache<String, Arc<Entry>>),
    Shared(Arc<RedisStore>),
}

/// The kind of the shared values (`<prefix>t:<hash of the fiscal code>`).
const SHARED_KIND: &str = "t";

/// The active PINs by fiscal code.
pub struct TelephonePins {
    entries: Pins,
    digits: usize,
}

/// What the verify endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Valid { expires: u64 },
    Invalid,
}

impl TelephonePins {
    /// PINs kept in `store` when it is shared by the replicas, else in this process.
    pub fn new(cfg: &TelephoneConfig, store: &Store) -> TelephonePins {
        TelephonePins {
            entries: match store.shared() {
                Some(redis) => Pins::Shared(redis),
                None => Pins::Local(
                    Cache::builder()
                        .max_capacity(10_000_000)
                        .time_to_live(
                            Lifetime::ThreeMonths.duration() + Duration::from_secs(86_400),
                        )
                        .build(),
                ),
            },
            digits: cfg.digits.clamp(6, 16),
        }
    }

    /// Keeps `previous`'s PINs (a reload): the same cache, or the same Redis.
    pub fn keep_entries_of(&mut self, previous: &TelephonePins) {
        if matches!(
            (&self.entries, &previous.entries),
            (Pins::Local(_), Pins::Local(_))
        ) {
            self.entries = previous.entries.clone();
        }
    }

    /// The active PIN's entry of `subject`, if any and not expired at `now`.
    pub async fn active(
        &self,
        subject: &FiscalCode,
        now: u64,
    ) -> Result<Option<Arc<Entry>>, StoreError> {
        let entry = match &self.entries {
            Pins::Local(cache) => cache.get(subject.as_str()),
            Pins::Shared(redis) => redis
                .get_value::<Entry>(SHARED_KIND, subject.as_str())
                .await?
                .map(Arc::new),
        };
        Ok(entry.filter(|e| now < e.expires))
    }

    /// Generates a new PIN for `subject` (replacing any other) and returns it: the only
    /// time it exists in clear.
    pub async fn generate(
        &self,
        subject: &FiscalCode,
        lifetime: Lifetime,
        now: u64,
    ) -> Result<(String, Arc<Entry>), GenerateError> {
        let pin: String = {
            use rand::Rng as _;
            let mut rng = rand::rng();
            (0..self.digits)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect()
        };
        let secret = pin.clone();
        let hash = super::argon2_job(move || super::hash_secret(&secret))
            .await
            .ok_or(GenerateError::Hash)?
            .map_err(|_| GenerateError::Hash)?;
        let entry = Arc::new(Entry {
            hash,
            created: now,
            expires: now.saturating_add(lifetime.duration().as_secs()),
        });
        match &self.entries {
            Pins::Local(cache) => cache.insert(subject.as_str().to_string(), entry.clone()),
            Pins::Shared(redis) => {
                redis
                    .put_value(SHARED_KIND, subject.as_str(), &*entry, lifetime.duration())
                    .await?
            }
        }
        Ok((pin, entry))
    }

    /// Revokes `subject`'s PIN; whether there was an active one.
    pub async fn revoke(&self, subject: &FiscalCode) -> Result<bool, StoreError> {
        match &self.entries {
            Pins::Local(cache) => Ok(cache.remove(subject.as_str()).is_some()),
            Pins::Shared(redis) => redis.delete_value(SHARED_KIND, subject.as_str()).await,
        }
    }

    /// Checks a (fiscal code, PIN) pair at `now`.
    pub async fn check(
        &self,
        subject: &FiscalCode,
        pin: &super::Pin,
        now: u64,
    ) -> Result<Check, StoreError> {
        let Some(entry) = self.active(subject, now).await? else {
            return Ok(Check::Invalid);
        };
        let pin = pin.clone();
        let hash = entry.hash.clone();
        let ok = super::argon2_job(move || super::verify_secret(pin.expose(), &hash))
            .await
            .unwrap_or(false);
        Ok(if ok {
            Check::Valid {
                expires: entry.expires,
            }
        } else {
            Check::Invalid
        })
    }
}

/// Why a PIN could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the PIN could not be hashed")]
    Hash,
    #[error(transparent)]
    Store(#[from] StoreError),
}
