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

pub mod limiter;
pub mod registry;
pub mod telephone;
pub mod verifier;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::identity::{Date, FiscalCode, Level};

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

/// `[pin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinConfig {
    /// From this date no new PIN is issued but to the exception categories: a PIN issued
    /// on or after it is valid only on its holder's dedicated services.
    pub issuance_stop: Date,
    /// From this date (Italian time) a PIN login is refused, but for the exception
    /// categories on their dedicated services: the day after the last valid day (INPS:
    /// `2021-10-01`, PINs valid until 30 September 2021).
    pub cutoff: Date,
    /// The level of a PIN session: `Legacy` (below SpidL1) by default, so a route accepts
    /// PIN only when its policy lists `pin` among its methods.
    #[serde(default = "default_level")]
    pub level: Level,
    /// The legacy login form: a POST to this path with the fields below is a PIN login
    /// (the gateway's own form at `<prefix>pin/login` always is).
    #[serde(default)]
    pub form_path: Option<String>,
    #[serde(default = "default_cf_field")]
    pub form_fiscal_code_field: String,
    #[serde(default = "default_pin_field")]
    pub form_pin_field: String,
    /// Path prefixes where `Authorization: Basic <fiscal code:PIN>` is a PIN login for the
    /// request (legacy API clients). The header is never forwarded there.
    #[serde(default)]
    pub basic_paths: Vec<String>,
    /// The legacy session cookie: after the cutoff it earns the PIN refusal page instead
    /// of a login redirect; it is never forwarded to a protected route.
    #[serde(default)]
    pub legacy_cookie: Option<String>,
    /// The legacy verifier: `POST` JSON `{"fiscal_code", "pin"}` → `{"valid", "issued",
    /// "date_of_birth"?, "given_name"?, "family_name"?}`.
    #[serde(default)]
    pub verifier_url: Option<String>,
    /// Or a file (tests, demo): CSV `fiscal_code,issued,date_of_birth,argon2id PHC hash`.
    #[serde(default)]
    pub verifier_file: Option<PathBuf>,
    /// CA for an https verifier or registry (default: the public web roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The dedicated services of each exception category (path prefixes, whole segments).
    #[serde(default)]
    pub exceptions: ExceptionRoutes,
    /// Where the non-minor categories come from.
    #[serde(default)]
    pub registry: Option<registry::RegistryConfig>,
    #[serde(default)]
    pub rate_limit: limiter::RateLimitConfig,
    /// The contact-centre telephone PIN, when configured.
    #[serde(default)]
    pub telephone: Option<telephone::TelephoneConfig>,
    /// How long a verified Basic credential is remembered (as a keyed hash).
    #[serde(default = "default_basic_cache", with = "humantime_serde")]
    pub basic_cache_ttl: Duration,
}

fn default_level() -> Level {
    Level::Legacy
}
fn default_cf_field() -> String {
    "codice_fiscale".into()
}
fn default_pin_field() -> String {
    "pin".into()
}
fn default_basic_cache() -> Duration {
    Duration::from_secs(60)
}

/// `[pin.exceptions]`: category → dedicated path prefixes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionRoutes {
    #[serde(default)]
    pub minor: Vec<String>,
    #[serde(default)]
    pub no_italian_document: Vec<String>,
    #[serde(default)]
    pub guardianship: Vec<String>,
}

impl ExceptionRoutes {
    pub fn of(&self, c: Category) -> &[String] {
        match c {
            Category::Minor => &self.minor,
            Category::NoItalianDocument => &self.no_italian_document,
            Category::Guardianship => &self.guardianship,
        }
    }

    /// The categories whose dedicated services include `path` (`fold_case`:
    /// `server.case_insensitive_paths`).
    pub fn dedicated_to(&self, path: &str, fold_case: bool) -> Vec<Category> {
        Category::ALL
            .into_iter()
            .filter(|c| {
                self.of(*c)
                    .iter()
                    .any(|p| crate::routes::prefix_matches(p, path, fold_case))
            })
            .collect()
    }
}

/// Whether `path` is `prefix` or below it, as the router reads paths (whole segments, a
/// segment also ending at `;`).
pub fn under(path: &str, prefix: &str) -> bool {
    crate::routes::prefix_matches(prefix, path, false)
}

/// The civil date in Italy (CET/CEST: UTC+1, UTC+2 from the last Sunday of March to the
/// last Sunday of October, switching at 01:00 UTC) at `secs` since the epoch: cutoffs and
/// 18th birthdays take effect at Italian midnight.
pub fn italian_date(secs: u64) -> Date {
    let utc_days = i64::try_from(secs / 86_400).unwrap_or(0);
    let year = Date::from_days_since_epoch(utc_days).year;
    // Days since the epoch of the last Sunday of `month` in `year` (1970-01-01: Thursday).
    let last_sunday = |month: u8| -> i64 {
        let mut d = days_since_epoch(Date {
            year,
            month,
            day: 31,
        });
        while (d + 4).rem_euclid(7) != 0 {
            d -= 1;
        }
        d
    };
    let t = i64::try_from(secs).unwrap_or(i64::MAX);
    let summer_start = last_sunday(3) * 86_400 + 3600;
    let summer_end = last_sunday(10) * 86_400 + 3600;
    let offset = if (summer_start..summer_end).contains(&t) {
        7200
    } else {
        3600
    };
    Date::from_days_since_epoch(t.saturating_add(offset).div_euclid(86_400))
}

/// Days from 1970-01-01 to `d` (inverse of `Date::from_days_since_epoch`).
fn days_since_epoch(d: Date) -> i64 {
    let y = i64::from(d.year) - i64::from(d.month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(d.month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d.day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A well-formed argon2id hash that matches nothing anyone types: checked where there is
/// no real hash, so that the time taken does not tell whether there was one.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$zYqAQbwDVdIyRtgHo0YPwhm4zFRSSD+s2PpQb0GpuVQ";

/// At most this many argon2 computations (19 MiB each) at once: a flood of PIN attempts
/// queues here instead of exhausting memory.
static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Runs an argon2 job on the blocking pool within [`ARGON2_SLOTS`].
pub async fn argon2_job<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _slot = ARGON2_SLOTS.acquire().await.ok()?;
    tokio::task::spawn_blocking(job).await.ok()
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinGrant {
    pub issued: Date,
    /// From the verifier, when it knows (better than the fiscal code's century guess).
    #[serde(default)]
    pub date_of_birth: Option<Date>,
}

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
pub struct CredentialKey(aws_lc_rs::hmac::Key);

impl CredentialKey {
    pub fn random() -> CredentialKey {
        let bytes: [u8; 32] = rand::random();
        CredentialKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            &bytes,
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
    /// Verified Basic credentials by keyed hash (never the PIN), briefly.
    basic_cache: moka::sync::Cache<[u8; 32], Holder>,
}

impl PinService {
    pub fn load(cfg: &PinConfig) -> Result<PinService, String> {
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
            let certs = crate::server::tls::load_certs(p)
                .map_err(|e| format!("pin.telephone.verify_client_ca: {e}"))?;
            for c in &certs {
                telephone_anchors.push(
                    webpki::anchor_from_trusted_cert(c)
                        .map_err(|e| format!("pin.telephone.verify_client_ca: {e}"))?
                        .to_owned(),
                );
            }
        }
        Ok(PinService {
            switch: Switch {
                issuance_stop: cfg.issuance_stop,
                cutoff: cfg.cutoff,
            },
            verifier,
            registry,
            limiter: limiter::PinLimits::new(&cfg.rate_limit),
            telephone: cfg.telephone.as_ref().map(telephone::TelephonePins::new),
            telephone_anchors,
            key: CredentialKey::random(),
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

    /// An anti-forgery token for the telephone-PIN form of session `sid`.
    pub fn form_token(&self, sid: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.key.tag(&[b"telephone-form", sid.as_bytes()]))
    }
}
