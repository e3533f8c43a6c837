//! `[cns]`: CNS smart-card login.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[cns]`: which authorities issue CNS cards, their CRLs, the accepted policies, and the
/// level a CNS login gets. A TLS listener must request client certificates (`client_ca`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnsConfig {
    /// PEM bundle of the CNS certification authorities (e.g. AgID's list).
    pub ca: PathBuf,
    /// CRLs (PEM or DER files); when given, a card whose issuer has no CRL is refused.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    #[serde(default = "default_cns_policies")]
    pub policies: Vec<String>,
    #[serde(default = "default_cns_level")]
    pub level: crate::identity::Level,
    /// Behind an ingress that terminates TLS: the header carrying the client certificate
    /// as URL-encoded PEM (nginx `$ssl_client_escaped_cert`), accepted only from
    /// `server.trusted_proxies`; from anyone else it is removed.
    #[serde(default)]
    pub header: Option<String>,
    /// How often the CA bundle and the CRL files are checked for changes.
    #[serde(default = "default_cns_reload", with = "humantime_serde")]
    pub reload_interval: Duration,
}

fn default_cns_reload() -> Duration {
    Duration::from_secs(60)
}

fn default_cns_policies() -> Vec<String> {
    vec![super::CNS_POLICY.to_string()]
}
fn default_cns_level() -> crate::identity::Level {
    crate::identity::Level::SpidL2
}

impl CnsConfig {
    /// Problems of `[cns]` alone, each with its key (the listener and trusted-proxy checks
    /// are `Config::validate`'s).
    pub fn validate(&self, bad: &mut impl FnMut(String, String)) {
        let c = self;
        if c.crls.is_empty() {
            bad(
                "cns.crls".into(),
                "at least one CRL: revocation is always checked".into(),
            );
        }
        if c.reload_interval.is_zero() {
            bad("cns.reload_interval".into(), "must be above zero".into());
        }
        for (k, p) in std::iter::once(("ca".to_string(), &c.ca)).chain(
            c.crls
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("crls[{i}]"), p)),
        ) {
            if !p.is_file() {
                bad(format!("cns.{k}"), format!("{} is not a file", p.display()));
            }
        }
        if let Some(h) = &c.header
            && http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            bad("cns.header".into(), "not a header name".into());
        }
    }
}
