//! `[pin]`: the switch-off dates, the legacy verifier and form, the exception categories'
//! dedicated services, the registry, rate limits and the telephone PIN.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Category, limiter, registry, telephone};
use crate::identity::{Date, Level};
use crate::routes::RouteConfig;

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

impl PinConfig {
    /// `[pin]`: dates in order, one verifier, sane paths, dedicated routes that exist and
    /// are protected, a registry for the categories only it knows, an authenticated
    /// telephone-PIN verify endpoint.
    pub fn validate(
        &self,
        routes: &[RouteConfig],
        reserved_prefix: &str,
        session_cookie: &str,
        bad: &mut impl FnMut(String, String),
    ) {
        let p = self;
        if p.cutoff < p.issuance_stop {
            bad(
                "pin.cutoff".into(),
                "the cutoff comes before the issuance stop".into(),
            );
        }
        match (&p.verifier_url, &p.verifier_file) {
            (Some(_), Some(_)) | (None, None) => bad(
                "pin.verifier_url".into(),
                "exactly one of verifier_url and verifier_file".into(),
            ),
            (None, Some(f)) if !f.is_file() => bad(
                "pin.verifier_file".into(),
                format!("{} is not a file", f.display()),
            ),
            (Some(u), None) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                bad("pin.verifier_url".into(), "not an http(s) URL".into())
            }
            _ => {}
        }
        let reserved = reserved_prefix;
        let absolute = |key: String, path: &str, bad: &mut dyn FnMut(String, String)| {
            let normalized = crate::routes::normalize_path(path).ok();
            if !path.starts_with('/') || normalized.as_deref() != Some(path) {
                bad(key, "an absolute, normalized path".into());
            } else if path.starts_with(reserved) {
                bad(key, format!("under the reserved prefix {reserved}"));
            }
        };
        if let Some(f) = &p.form_path {
            absolute("pin.form_path".into(), f, bad);
        }
        for (i, b) in p.basic_paths.iter().enumerate() {
            let key = format!("pin.basic_paths[{i}]");
            absolute(key.clone(), b, bad);
            // On a public route a Basic PIN would be forwarded, never checked.
            let route = routes
                .iter()
                .filter(|r| super::under(b, &r.path))
                .max_by_key(|r| r.path.len());
            if route.is_none_or(|r| r.public == Some(true)) {
                bad(key, "must be on a protected route".into());
            }
        }
        if p.basic_cache_ttl > Duration::from_secs(86_400) {
            bad("pin.basic_cache_ttl".into(), "at most 1d".into());
        }
        // The PIN (and who is under guardianship) never crosses a network in clear.
        let clear_remote = |u: &str| {
            u.strip_prefix("http://").is_some_and(|rest| {
                let host = rest.split(['/', '?']).next().unwrap_or("");
                let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
                !(host == "localhost"
                    || host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback()))
            })
        };
        if p.verifier_url.as_deref().is_some_and(clear_remote) {
            bad(
                "pin.verifier_url".into(),
                "plain http only to loopback: use https".into(),
            );
        }
        if p.form_fiscal_code_field.is_empty()
            || p.form_pin_field.is_empty()
            || p.form_fiscal_code_field == p.form_pin_field
        {
            bad(
                "pin.form_pin_field".into(),
                "two different, non-empty field names".into(),
            );
        }
        if let Some(c) = &p.legacy_cookie
            && (c.is_empty()
                || c == session_cookie
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b";=,".contains(&b)))
        {
            bad(
                "pin.legacy_cookie".into(),
                "a cookie name other than the session cookie's".into(),
            );
        }
        for c in Category::ALL {
            for (i, prefix) in p.exceptions.of(c).iter().enumerate() {
                let key = format!("pin.exceptions.{}[{i}]", c.as_str());
                absolute(key.clone(), prefix, bad);
                // A dedicated service is a route of its own: its path at or under the
                // prefix (a broader route, on this host or another, is not dedicated).
                let matching: Vec<&RouteConfig> = routes
                    .iter()
                    .filter(|r| super::under(&r.path, prefix))
                    .collect();
                if matching.is_empty() {
                    bad(
                        key.clone(),
                        "no route has this path (or one below it)".into(),
                    );
                }
                for r in matching {
                    if r.public == Some(true) {
                        bad(
                            key.clone(),
                            "on a public route: nobody logs in there".into(),
                        );
                    } else if r
                        .policy
                        .as_ref()
                        .is_some_and(|pol| !pol.methods.contains(&crate::identity::Method::Pin))
                    {
                        bad(
                            key.clone(),
                            "its route's policy does not accept pin (add \"pin\" to policy.methods)"
                                .into(),
                        );
                    }
                }
            }
            if c != Category::Minor && !p.exceptions.of(c).is_empty() && p.registry.is_none() {
                bad(
                    format!("pin.exceptions.{}", c.as_str()),
                    "this category comes from pin.registry, which is not configured".into(),
                );
            }
        }
        if let Some(r) = &p.registry {
            if r.url.as_deref().is_some_and(clear_remote) {
                bad(
                    "pin.registry.url".into(),
                    "plain http only to loopback: use https".into(),
                );
            }
            if r.cache_ttl > Duration::from_secs(86_400) {
                bad("pin.registry.cache_ttl".into(), "at most 1d".into());
            }
            match (&r.file, &r.url) {
                (Some(f), None) if !f.is_file() => bad(
                    "pin.registry.file".into(),
                    format!("{} is not a file", f.display()),
                ),
                (Some(_), None) | (None, Some(_)) => {}
                _ => bad("pin.registry".into(), "exactly one of file and url".into()),
            }
        }
        let limits = &p.rate_limit;
        if limits.max_failures_per_fiscal_code == 0
            || limits.max_failures_per_address == 0
            || limits.window.is_zero()
            || limits.window > Duration::from_secs(86_400)
        {
            bad(
                "pin.rate_limit".into(),
                "limits above zero, a window between 1s and 1d".into(),
            );
        }
        if let Some(t) = &p.telephone {
            if t.verify_tokens.is_empty() && t.verify_clients.is_empty() {
                bad(
                    "pin.telephone".into(),
                    "the verify endpoint needs verify_tokens or verify_clients".into(),
                );
            }
            if t.verify_tokens.iter().any(|k| k.len() < 32) {
                bad(
                    "pin.telephone.verify_tokens".into(),
                    "each token needs at least 32 characters".into(),
                );
            }
            if let Some(ca) = &t.verify_client_ca
                && !ca.is_file()
            {
                bad(
                    "pin.telephone.verify_client_ca".into(),
                    format!("{} is not a file", ca.display()),
                );
            }
            if !(6..=16).contains(&t.digits) {
                bad("pin.telephone.digits".into(), "between 6 and 16".into());
            }
        }
    }
}
