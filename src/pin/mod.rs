//! The legacy INPS PIN switch-off (spec "Legacy INPS PIN", seeds/inps-pin-to-spid-2020.txt).
//!
//! From `issuance_stop` no new PIN is issued except to the exception categories (minors,
//! people without an Italian identity document, people under guardianship), and those PINs
//! are valid only on the services dedicated to them. PINs issued before keep working until
//! `cutoff`; after it only the exception categories keep a PIN, on their dedicated
//! services. Every date, category and dedicated route is configuration.
//!
//! The decisions are pure functions of dates and categories ([`may_log_in`], [`admit`]);
//! the verifier, the exception registry, the rate limiter and the telephone PIN store are
//! the I/O edges. A PIN is never logged, stored in clear or put in an error.

mod config;
pub mod limiter;
pub mod registry;
pub mod telephone;
pub mod verifier;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::identity::{Date, FiscalCode};

pub use config::{ExceptionRoutes, PinConfig};

/// Who may keep a PIN after the switch-off, on the services dedicated to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Under 18 (from the fiscal code's birth date, or the date of birth when known).
    Minor,
    /// People without an Italian identity document (from the exception registry).
    NoItalianDocument,
    /// People under guardianship, curatorship or support administration (registry).
    Guardianship,
}

impl Category {
    pub const ALL: [Category; 3] = [
        Category::Minor,
        Category::NoItalianDocument,
        Category::Guardianship,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Minor => "minor",
            Category::NoItalianDocument => "no_italian_document",
            Category::Guardianship => "guardianship",
        }
    }
}

impl std::str::FromStr for Category {
    type Err = ();
    fn from_str(s: &str) -> Result<Category, ()> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(())
    }
}

/// Whether `path` is `prefix` or below it, as the router reads paths (whole segments, a
/// segment also ending at `;`).
pub fn under(path: &str, prefix: &str) -> bool {
    crate::routes::prefix_matches(prefix, path, false)
}

pub use crate::civil::italian_date;

/// A well-formed argon2id hash that matches nothing anyone types: checked where there is
/// no real hash, so that the time taken does not tell whether there was one.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$zYqAQbwDVdIyRtgHo0YPwhm4zFRSSD+s2PpQb0GpuVQ";

/// At most this many argon2 computations (19 MiB each) at once: a flood of PIN attempts
/// queues here instead of exhausting memory.
static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Runs an argon2 job on the login threads within [`ARGON2_SLOTS`].
pub async fn argon2_job<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _slot = ARGON2_SLOTS.acquire().await.ok()?;
    crate::server::login_pool::spawn(job).await.ok()
}

/// The switch-off dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub issuance_stop: Date,
    pub cutoff: Date,
}

impl Switch {
    /// Whether a PIN issued on `issued` is, on `today`, a general credential (usable on
    /// every route that accepts PIN): issued before the stop and the cutoff not reached.
    pub fn general(&self, today: Date, issued: Date) -> bool {
        today < self.cutoff && issued < self.issuance_stop
    }
}

/// What the legacy verifier knows of a PIN holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// When the PIN was issued (or last renewed).
    pub issued: Date,
    #[serde(default)]
    pub date_of_birth: Option<Date>,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub family_name: Option<String>,
}

/// The PIN facts of a session (or of one Basic-authenticated request), re-checked on
/// every request: the cutoff may pass and a minor may turn 18 while it lives.
pub use crate::session::PinGrant;

/// Whether `subject` is under 18 on `today`: from the date of birth when known, otherwise
/// from the fiscal code (whose two-digit year is put in the most recent century).
pub fn is_minor(subject: &FiscalCode, date_of_birth: Option<Date>, today: Date) -> bool {
    let born = date_of_birth.or_else(|| subject.birth_date(today));
    born.is_some_and(|b| b.plus_years(18) > today)
}

/// The categories `subject` holds on `today`.
pub fn categories(
    subject: &FiscalCode,
    date_of_birth: Option<Date>,
    registered: &[Category],
    today: Date,
) -> Vec<Category> {
    let mut out: Vec<Category> = registered
        .iter()
        .copied()
        .filter(|c| *c != Category::Minor)
        .collect();
    if is_minor(subject, date_of_birth, today) {
        out.push(Category::Minor);
    }
    out.sort();
    out.dedup();
    out
}

/// Why a PIN is refused: stable codes for the page, the JSON and the audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The cutoff has passed and the holder is in no exception category.
    AfterCutoff,
    /// The PIN was issued after the issuance stop, for an exception the holder no longer
    /// has (or never had).
    IssuedAfterStop,
    /// An exception PIN used outside its holder's dedicated services.
    NotDedicated,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::AfterCutoff => "pin_no_longer_accepted",
            Refusal::IssuedAfterStop => "pin_not_valid_for_holder",
            Refusal::NotDedicated => "pin_only_for_dedicated_services",
        }
    }

    pub fn message(self) -> (&'static str, &'static str) {
        match self {
            Refusal::AfterCutoff => (
                "Il PIN INPS non è più accettato: accedi con SPID, CIE o CNS. Resta valido solo per i servizi dedicati a minori, persone sotto tutela o senza documento italiano: se ne hai diritto, controlla codice fiscale e PIN.",
                "The INPS PIN is no longer accepted: please log in with SPID, CIE or CNS. It stays valid only for the services dedicated to minors, people under guardianship or without an Italian document: if that is you, check your fiscal code and PIN.",
            ),
            Refusal::IssuedAfterStop => (
                "Questo PIN vale solo per i servizi dedicati a minori, persone senza documento italiano o sotto tutela. Accedi con SPID, CIE o CNS.",
                "This PIN is valid only for the services dedicated to minors, people without an Italian document or under guardianship. Please log in with SPID, CIE or CNS.",
            ),
            Refusal::NotDedicated => (
                "Il tuo PIN vale solo per i servizi a te dedicati. Per questo servizio accedi con SPID, CIE o CNS.",
                "Your PIN is valid only for the services dedicated to you. For this service please log in with SPID, CIE or CNS.",
            ),
        }
    }
}

/// At login: whether a PIN (issued on `issued`) of a holder with `held` categories may
/// start a session on `today`. Decided before the PIN is checked where it can be (no
/// exception category after the cutoff: the legacy verifier is not even asked).
pub fn may_log_in(
    switch: &Switch,
    today: Date,
    issued: Option<Date>,
    held: &[Category],
) -> Result<(), Refusal> {
    if !held.is_empty() {
        return Ok(());
    }
    match issued {
        _ if today >= switch.cutoff => Err(Refusal::AfterCutoff),
        Some(i) if !switch.general(today, i) => Err(Refusal::IssuedAfterStop),
        _ => Ok(()),
    }
}

/// Per request: what a PIN credential may do on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// A general PIN on a route that does not accept PIN: log in with SPID, CIE or CNS.
    NotAccepted,
    Refuse(Refusal),
}

/// `held`: the holder's categories today; `dedicated_here`: the categories the route is
/// dedicated to; `route_accepts_pin`: the route's policy lists `pin`.
pub fn admit(
    switch: &Switch,
    today: Date,
    issued: Date,
    held: &[Category],
    dedicated_here: &[Category],
    route_accepts_pin: bool,
) -> Admission {
    if held.iter().any(|c| dedicated_here.contains(c)) {
        return Admission::Admit;
    }
    if switch.general(today, issued) {
        return if route_accepts_pin {
            Admission::Admit
        } else {
            Admission::NotAccepted
        };
    }
    Admission::Refuse(if !held.is_empty() {
        Refusal::NotDedicated
    } else if today >= switch.cutoff {
        Refusal::AfterCutoff
    } else {
        Refusal::IssuedAfterStop
    })
}

/// A keyed hash of (fiscal code, PIN) for remembering verified Basic credentials without
/// holding the PIN: HMAC-SHA256 under a key that lives only in this process.
#[derive(Clone)]
pub struct CredentialKey(aws_lc_rs::hmac::Key);

impl CredentialKey {
    pub fn random() -> CredentialKey {
        let bytes: [u8; 32] = rand::random();
        CredentialKey::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> CredentialKey {
        CredentialKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            bytes,
        ))
    }

    pub fn tag(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.0);
        for p in parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

/// A PIN as typed: never printed (its `Debug` says `[redacted]`), compared in constant
/// time by the verifiers.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(String);

impl Pin {
    /// A plausible PIN: 4 to 64 printable ASCII characters.
    pub fn new(text: &str) -> Option<Pin> {
        let ok = (4..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Pin(text.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin([redacted])")
    }
}

/// `fiscal code:PIN` from an `Authorization: Basic` value.
pub fn basic_credentials(value: &str) -> Option<(FiscalCode, Pin)> {
    use base64::Engine as _;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pin) = text.split_once(':')?;
    Some((
        FiscalCode::parse(&user.to_ascii_uppercase()).ok()?,
        Pin::new(pin)?,
    ))
}

/// Argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes) in PHC string form.
pub fn hash_secret(secret: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("argon2: {e}"))
}

/// Whether `secret` matches the argon2id PHC string `phc` (constant time inside argon2).
/// A malformed hash never matches.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(phc) {
        Ok(h) if h.algorithm == argon2::Algorithm::Argon2id.ident() => argon2::Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok(),
        _ => false,
    }
}

/// Everything the gateway needs for `[pin]`, built at start-up.
pub struct PinService {
    pub cfg: PinConfig,
    pub switch: Switch,
    pub verifier: verifier::Verifier,
    pub registry: Option<registry::Registry>,
    pub limiter: limiter::PinLimits,
    pub telephone: Option<telephone::TelephonePins>,
    /// `pin.telephone.verify_client_ca`, loaded.
    pub telephone_anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
    key: CredentialKey,
    /// With replicas sharing Redis: where the key of the telephone-PIN form's token is,
    /// the same on every replica (a page from one replica may be posted to another). Read
    /// at each use, never cached: if Redis loses it, the replicas agree on the next one.
    shared_form_key: Option<std::sync::Arc<crate::session::redis_store::RedisStore>>,
    /// Verified Basic credentials by keyed hash (never the PIN), briefly.
    basic_cache: moka::sync::Cache<[u8; 32], Holder>,
}

impl PinService {
    /// The service for `cfg`; its rate-limit counters and telephone PINs live in `store`
    /// when that is shared by the replicas. On a reload, `previous`'s telephone PINs,
    /// counts and form key carry over (in memory they would otherwise be lost).
    pub fn load(
        cfg: &PinConfig,
        store: &crate::session::Store,
        previous: Option<&PinService>,
    ) -> Result<PinService, String> {
        let verifier = verifier::Verifier::load(
            cfg.verifier_url.as_deref(),
            cfg.verifier_file.as_deref(),
            cfg.ca.as_deref(),
        )?;
        let registry = match &cfg.registry {
            Some(r) => Some(registry::Registry::load(r)?),
            None => None,
        };
        let mut telephone_anchors = Vec::new();
        if let Some(p) = cfg
            .telephone
            .as_ref()
            .and_then(|t| t.verify_client_ca.as_ref())
        {
            let certs = crate::pem::load_certs(p)
                .map_err(|e| format!("pin.telephone.verify_client_ca: {e}"))?;
            for c in &certs {
                telephone_anchors.push(
                    webpki::anchor_from_trusted_cert(c)
                        .map_err(|e| format!("pin.telephone.verify_client_ca: {e}"))?
                        .to_owned(),
                );
            }
        }
        let mut limiter = limiter::PinLimits::in_store(&cfg.rate_limit, store);
        let mut telephone = cfg
            .telephone
            .as_ref()
            .map(|t| telephone::TelephonePins::new(t, store));
        let mut key = CredentialKey::random();
        if let Some(p) = previous {
            limiter = limiter.carried_over_from(&p.limiter);
            if let (Some(new), Some(old)) = (&mut telephone, &p.telephone) {
                new.keep_entries_of(old);
            }
            key = p.key.clone();
        }
        Ok(PinService {
            switch: Switch {
                issuance_stop: cfg.issuance_stop,
                cutoff: cfg.cutoff,
            },
            verifier,
            registry,
            limiter,
            telephone,
            telephone_anchors,
            key,
            shared_form_key: store.shared(),
            basic_cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cfg.basic_cache_ttl)
                .build(),
            cfg: cfg.clone(),
        })
    }

    /// The registered categories of `subject` (none without a registry).
    pub async fn registered(
        &self,
        subject: &FiscalCode,
        today: Date,
    ) -> Result<Vec<Category>, registry::RegistryDown> {
        match &self.registry {
            Some(r) => r.categories(subject, today).await,
            None => Ok(Vec::new()),
        }
    }

    /// A Basic credential verified within `basic_cache_ttl`.
    pub fn remembered(&self, subject: &FiscalCode, pin: &Pin) -> Option<Holder> {
        self.basic_cache.get(
            &self
                .key
                .tag(&[subject.as_str().as_bytes(), pin.expose().as_bytes()]),
        )
    }

    pub fn remember(&self, subject: &FiscalCode, pin: &Pin, holder: &Holder) {
        self.basic_cache.insert(
            self.key
                .tag(&[subject.as_str().as_bytes(), pin.expose().as_bytes()]),
            holder.clone(),
        );
    }

    /// An anti-forgery token for the telephone-PIN form of session `sid` (the same on
    /// every replica); `Err` when the shared store does not answer.
    pub async fn form_token(&self, sid: &str) -> Result<String, crate::session::StoreError> {
        use base64::Engine as _;
        let shared = match &self.shared_form_key {
            None => None,
            Some(redis) => Some(CredentialKey::from_bytes(
                &redis.shared_secret("telephone-form").await?,
            )),
        };
        let key = shared.as_ref().unwrap_or(&self.key);
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(key.tag(&[b"telephone-form", sid.as_bytes()])))
    }
}
