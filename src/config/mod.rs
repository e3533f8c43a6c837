//! Typed configuration: one TOML file plus `VARCO__SECTION__KEY` environment overrides,
//! loaded with the `config` crate, deserialized with `deny_unknown_fields` so that a
//! misspelt key is an error, and checked by [`Config::validate`], which refuses unsafe
//! states and names the key of every problem it finds. Each section's type and checks
//! live in the module it configures (`server::config`, `routes::config`, ...); this
//! module holds the aggregate, loading, environment overrides and the checks across
//! sections.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

// Each section's type lives in the module it configures; here for the aggregate.
pub use crate::cns::CnsConfig;
pub use crate::proxy::UpstreamConfig;
pub use crate::routes::RouteConfig;
pub use crate::server::config::{ListenerConfig, ServerConfig, TlsConfig};
pub use crate::session::SessionConfig;
pub use crate::telemetry::{LogConfig, LogFormat};

/// What went wrong while loading the configuration. Every variant names the file and,
/// where there is one, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the configuration: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
    #[error("{file}: {} problem(s):\n{}", problems.len(), Problems(problems))]
    Unsafe {
        file: String,
        problems: Vec<Problem>,
    },
}

/// One problem found by [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.message)
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// `serve` for production; `demo` enables the embedded development pieces (dev IdP,
/// dev login) which are refused in any other mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Serve,
    Demo,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub session: SessionConfig,
    /// The signed identity header (see `assertion`).
    #[serde(default)]
    pub assertion: crate::assertion::AssertionConfig,
    #[serde(default)]
    pub upstream: BTreeMap<String, UpstreamConfig>,
    #[serde(default)]
    pub route: Vec<RouteConfig>,
    /// SPID/CIE over SAML 2.0 (see `saml`).
    #[serde(default)]
    pub saml: Option<crate::saml::config::SamlConfig>,
    /// Where roles and delegations come from (see `policy::directory`).
    #[serde(default)]
    pub directory: Option<crate::policy::directory::DirectoryConfig>,
    /// CNS smart-card login (see `cns`).
    #[serde(default)]
    pub cns: Option<CnsConfig>,
    /// The legacy PIN switch-off and the telephone PIN (see `pin`).
    #[serde(default)]
    pub pin: Option<crate::pin::PinConfig>,
    /// OpenID Connect providers (see `oidc`).
    #[serde(default)]
    pub oidc: Option<crate::oidc::config::OidcConfig>,
}

impl Config {
    /// Loads `file` (TOML) with `VARCO__SECTION__KEY` environment overrides, then validates.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let cfg = Self::load_unvalidated(file)?;
        let problems = cfg.validate();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Unsafe {
                file: file.display().to_string(),
                problems,
            })
        }
    }

    /// Parses without the safety checks: `check-config` uses it to list every problem.
    pub fn load_unvalidated(file: &Path) -> Result<Config, ConfigError> {
        let name = file.display().to_string();
        if !file.is_file() {
            return Err(ConfigError::Read {
                file: name,
                reason: "no such file".into(),
            });
        }
        let source = config::File::from(file).format(config::FileFormat::Toml);
        Self::from_sources(&name, source)
    }

    /// Parses a TOML text (used for the embedded demo configuration and tests), with the
    /// same environment overrides.
    pub fn from_toml(name: &str, text: &str) -> Result<Config, ConfigError> {
        let source = config::File::from_str(text, config::FileFormat::Toml);
        let cfg = Self::from_sources(name, source)?;
        let problems = cfg.validate();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Unsafe {
                file: name.into(),
                problems,
            })
        }
    }

    fn from_sources<S>(name: &str, source: S) -> Result<Config, ConfigError>
    where
        S: config::Source + Send + Sync + 'static,
    {
        let built = config::Config::builder()
            .add_source(source)
            .add_source(
                config::Environment::with_prefix("VARCO")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("server.trusted_proxies")
                    .with_list_parse_key("server.login_cpus"),
            )
            .build()
            .map_err(|e| ConfigError::Read {
                file: name.into(),
                reason: e.to_string(),
            })?;
        serde_path_to_error::deserialize(built).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid {
                file: name.into(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                reason: type_reason(e.into_inner()),
            }
        })
    }

    /// Every unsafe or inconsistent state, each with the key that causes it. Empty = valid.
    /// Each section checks itself (its module's `validate`); what follows are the checks
    /// across sections.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad = |key: String, message: String| problems.push(Problem { key, message });
        let s = &self.server;
        s.validate(&mut bad);
        for (name, u) in &self.upstream {
            u.validate(name, &mut bad);
        }
        self.session.validate(&mut bad);
        crate::routes::config::validate(&self.route, &s.reserved_prefix, &mut bad);
        let session_bound = self.route.iter().any(|r| {
            r.public != Some(true)
                && r.header_binding.unwrap_or(self.assertion.binding)
                    == crate::assertion::HeaderBinding::Session
        });
        if session_bound && self.assertion.ttl > std::time::Duration::from_secs(60) {
            bad(
                "assertion.ttl".into(),
                "at most 60s when a route's header is session-bound (it is reused until then)"
                    .into(),
            );
        }
        for (i, r) in self.route.iter().enumerate() {
            // The route's binding, or the default of [assertion].
            if r.session_binding_unsafe_methods
                && r.header_binding.unwrap_or(self.assertion.binding)
                    != crate::assertion::HeaderBinding::Session
            {
                bad(
                    format!("route[{i}].session_binding_unsafe_methods"),
                    "only on a session-bound route (header_binding = \"session\", or \
                     [assertion] binding = \"session\")"
                        .into(),
                );
            }
            if !self.upstream.contains_key(&r.upstream) {
                bad(
                    format!("route[{i}].upstream"),
                    format!("no upstream named `{}` in [upstream]", r.upstream),
                );
            }
            if r.cns_login && (self.cns.is_none() || r.public == Some(true)) {
                bad(
                    format!("route[{i}].cns_login"),
                    "needs [cns] and a protected route".into(),
                );
            }
            let needs_directory = r.policy.as_ref().is_some_and(|p| p.needs_directory());
            if needs_directory && self.directory.is_none() && self.mode != Mode::Demo {
                bad(
                    format!("route[{i}].policy"),
                    "roles and delegations need a [directory] (role and delegation sources)".into(),
                );
            }
        }
        if let Some(saml) = &self.saml {
            saml.validate(&mut bad);
            if saml.browser_binding && !self.session.secure {
                bad(
                    "saml.browser_binding".into(),
                    "its SameSite=None cookie needs session.secure = true (browsers drop it \
                     otherwise); for plain HTTP set browser_binding = false explicitly"
                        .into(),
                );
            }
        }
        if let Some(c) = &self.cns {
            c.validate(&mut bad);
            if !s.requests_client_certificates() && c.header.is_none() {
                bad(
                    "cns".into(),
                    "a TLS listener must request client certificates (tls.client_ca), or an ingress must pass them in cns.header".into(),
                );
            }
            if c.header.is_some() && s.trusted_proxies.is_empty() {
                bad(
                    "cns.header".into(),
                    "the certificate header is only accepted from server.trusted_proxies, which is empty".into(),
                );
            }
        }
        if let Some(p) = &self.pin {
            p.validate(
                &self.route,
                &s.reserved_prefix,
                &self.session.cookie_name,
                &mut bad,
            );
        }
        if let Some(d) = &self.directory {
            d.validate(&mut bad);
        }
        if let Some(o) = &self.oidc {
            o.validate(&mut bad);
        }
        self.assertion.validate(&mut bad);
        let id_prefix = s.identity_header_prefix.as_str();
        let header = self.assertion_header();
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            bad("assertion.header".into(), "not a valid header name".into());
        } else if !crate::proxy::headers::IdentityPrefix::new(id_prefix).matches(&header) {
            bad(
                "assertion.header".into(),
                format!(
                    "must start with server.identity_header_prefix `{id_prefix}`, so that a client can never send it"
                ),
            );
        }
        let protected = self.route.iter().any(|r| r.public == Some(false));
        if protected && self.assertion.key.is_empty() && self.mode != Mode::Demo {
            bad(
                "assertion.key".into(),
                "protected routes need a signing key for the identity header".into(),
            );
        }
        problems
    }

    /// The identity header's name (lower case).
    pub fn assertion_header(&self) -> String {
        match &self.assertion.header {
            Some(h) => h.to_ascii_lowercase(),
            None => format!(
                "{}assertion",
                self.server.identity_header_prefix.to_ascii_lowercase()
            ),
        }
    }

    /// Number of worker threads to run.
    pub fn worker_count(&self) -> usize {
        self.server.worker_count()
    }

    /// Effective request timeout for an upstream.
    pub fn upstream_request_timeout(&self, upstream: &UpstreamConfig) -> Duration {
        upstream.request_timeout_or(self.server.request_timeout)
    }
}

/// The config crate's reason without the key and the file it appends (the error names both
/// already, the file by the name the operator gave); a value that came from the environment
/// (`VARCO__...`) says so.
fn type_reason(e: config::ConfigError) -> String {
    let from = |origin: Option<&str>| match origin {
        Some("the environment") => " (from the environment)",
        _ => "",
    };
    match e {
        config::ConfigError::Type {
            origin,
            unexpected,
            expected,
            ..
        } => format!(
            "invalid type: {unexpected}, expected {expected}{}",
            from(origin.as_deref())
        ),
        config::ConfigError::At { error, origin, .. } => {
            let inner = type_reason(*error);
            let from = from(origin.as_deref());
            if inner.ends_with(from) {
                inner
            } else {
                format!("{inner}{from}")
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[server.listener]]
        address = "127.0.0.1:0"
        [upstream.app]
        url = "http://127.0.0.1:9000"
        [[route]]
        path = "/"
        upstream = "app"
        public = true
    "#;

    #[test]
    fn minimal_config_is_valid_with_defaults() {
        let cfg = Config::from_toml("t.toml", MINIMAL).unwrap();
        assert_eq!(cfg.server.reserved_prefix, "/_varco/");
        assert_eq!(cfg.server.idle_timeout, Duration::from_secs(60));
        assert_eq!(cfg.mode, Mode::Serve);
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("public = true", "public = true\npubic = 1");
        let err = Config::from_toml("t.toml", &text).unwrap_err().to_string();
        assert!(err.contains("route[0]"), "{err}");
        assert!(err.contains("pubic"), "{err}");
        assert!(err.starts_with("t.toml"), "{err}");
    }

    /// MINIMAL with these lines in its `[server]` table.
    fn with_server(lines: &str) -> String {
        MINIMAL.replace(
            "[[server.listener]]",
            &format!("[server]\n{lines}\n[[server.listener]]"),
        )
    }

    #[test]
    fn wrong_type_is_named() {
        let text = with_server("idle_timeout = \"soon\"");
        let err = Config::from_toml("t.toml", &text).unwrap_err().to_string();
        assert!(err.contains("server.idle_timeout"), "{err}");
    }

    #[test]
    fn login_cpus_take_a_number_or_a_list() {
        let with = |v: &str| {
            let text = with_server(&format!("login_cpus = {v}"));
            Config::from_toml("t.toml", &text).map(|c| c.server.login_cpus)
        };
        // Parsed only, without `validate`.
        let parse = |v: &str| {
            let text = with_server(&format!("login_cpus = {v}"));
            let source = config::File::from_str(&text, config::FileFormat::Toml);
            Config::from_sources("t.toml", source).map(|c| c.server.login_cpus)
        };
        assert_eq!(parse("3").unwrap(), vec![3]);
        assert_eq!(parse("[0, 2]").unwrap(), vec![0, 2]);
        assert_eq!(parse("[]").unwrap(), Vec::<usize>::new());
        // Digits in a string count (the environment's lists are strings).
        assert_eq!(parse("[\"1\", 2]").unwrap(), vec![1, 2]);
        // Nothing the config crate would convert: floats, booleans, words, nested lists,
        // taskset's ranges.
        for bad in [
            "-1", "\"a\"", "[-1]", "1.6", "[1.6]", "true", "[true]", "[[1]]", "\"6-7\"",
            "[\"on\"]", "[\"\"]",
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("server.login_cpus"), "{bad}: {err}");
        }
        // Whether this machine has the CPUs is asked at start and by `check-config`, not
        // here (a reload keeps the CPUs the gateway started with); a repeat is refused.
        assert_eq!(with("4095").unwrap(), vec![4095]);
        assert!(
            with("[1, 1]")
                .unwrap_err()
                .to_string()
                .contains("listed twice")
        );
    }

    #[test]
    fn a_negative_count_is_a_type_error_naming_the_key_once() {
        let text = with_server("login_threads_nice = -1");
        let err = Config::from_toml("t.toml", &text).unwrap_err().to_string();
        assert!(
            err.starts_with("t.toml: key `server.login_threads_nice`: invalid type:"),
            "{err}"
        );
        assert!(
            err.contains("`-1`") && err.contains("expected an unsigned"),
            "{err}"
        );
        assert_eq!(err.matches("login_threads_nice").count(), 1, "{err}");
        assert!(!err.contains(" in "), "the file again: {err}");
    }

    #[test]
    fn every_problem_is_listed() {
        let text = r#"
            [server]
            reserved_prefix = "varco"
            [upstream.app]
            url = "ftp://x"
            [[route]]
            path = "/a"
            upstream = "nope"
        "#;
        let err = Config::from_toml("t.toml", text).unwrap_err();
        let ConfigError::Unsafe { problems, .. } = err else {
            panic!("expected Unsafe, got {err}")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "server.reserved_prefix",
            "server.listener",
            "upstream.app.url",
            "route[0].upstream",
            "route[0].public",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn route_inside_reserved_prefix_is_refused() {
        let text = MINIMAL.replace("path = \"/\"", "path = \"/_varco/x\"");
        let err = Config::from_toml("t.toml", &text).unwrap_err().to_string();
        assert!(err.contains("route[0].path"), "{err}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_annotated_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/varco.example.toml");
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.server.max_header_bytes, 16384);
        assert_eq!(cfg.route.len(), 1);
    }

    /// The patronato example: every route of issue 5, valid once its files exist.
    #[test]
    fn the_patronato_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/patronato.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut replaced = text.clone();
        for p in [
            "/etc/varco/tls/chain.pem",
            "/etc/varco/tls/key.pem",
            "/etc/varco/keys/2026-11.pem",
            "/etc/varco/patronato/ruoli.csv",
            "/etc/varco/patronato/deleghe.csv",
            "/etc/varco/inps-ca.pem",
        ] {
            let f = dir.path().join(p.rsplit('/').next().unwrap());
            std::fs::write(&f, "x").unwrap();
            replaced = replaced.replace(p, &f.display().to_string());
        }
        let cfg = Config::from_toml("patronato", &replaced).unwrap();
        assert_eq!(cfg.route.len(), 5);
        for r in &cfg.route {
            if let Some(p) = &r.policy {
                p.compile().unwrap();
            }
        }
    }

    /// The PIN switch-off example: every key of `[pin]`, valid once its files exist.
    #[test]
    fn the_pin_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pin.example.toml");
        let mut text = std::fs::read_to_string(path).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for p in [
            "/etc/varco/tls/chain.pem",
            "/etc/varco/tls/key.pem",
            "/etc/varco/tls/clients-ca.pem",
            "/etc/varco/pin/contact-centre-ca.pem",
            "/etc/varco/keys/2026-11.pem",
            "/etc/varco/inps-ca.pem",
        ] {
            let f = dir.path().join(p.rsplit('/').next().unwrap());
            std::fs::write(&f, "x").unwrap();
            text = text.replace(p, &f.display().to_string());
        }
        let cfg = Config::from_toml("pin", &text).unwrap();
        let pin = cfg.pin.unwrap();
        assert_eq!(pin.cutoff.to_string(), "2021-10-01");
        assert_eq!(pin.level, crate::identity::Level::Legacy);
        assert_eq!(pin.exceptions.dedicated_to("/minori/x", false).len(), 1);
    }

    /// config/oidc.example.toml, with its placeholder files, is a valid configuration.
    #[test]
    fn the_oidc_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/oidc.example.toml");
        let mut text = std::fs::read_to_string(path).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for p in [
            "/etc/varco/tls/chain.pem",
            "/etc/varco/tls/key.pem",
            "/etc/varco/keys/2026-11.pem",
            "/etc/varco/oidc/rp-2026-11.pem",
            "/etc/varco/oidc/regione.secret",
            "/etc/varco/oidc/rp-enc-2026-11.pem",
            "/etc/varco/oidc/fed-2026-11.pem",
            "/etc/varco/oidc/spid-ta-jwks.json",
            "/etc/varco/oidc/our-trust-mark.jwt",
        ] {
            let f = dir.path().join(p.rsplit('/').next().unwrap());
            std::fs::write(&f, "x").unwrap();
            text = text.replace(p, &f.display().to_string());
        }
        let cfg = Config::from_toml("oidc", &text).unwrap();
        let oidc = cfg.oidc.unwrap();
        assert_eq!(oidc.provider.len(), 3);
        let by_name = |n: &str| oidc.provider.iter().find(|p| p.name == n).unwrap();
        assert_eq!(
            by_name("spid-example-op").method(),
            crate::identity::Method::Spid
        );
        let fed = oidc.federation.as_ref().unwrap();
        assert_eq!(fed.trust_anchor.len(), 1);
        assert_eq!(fed.configuration_ttl.as_secs(), 86_400);
        let regione = by_name("regione");
        assert_eq!(regione.method(), crate::identity::Method::Oidc);
        assert_eq!(
            regione.acr_map().absent,
            Some(crate::identity::Level::SpidL1)
        );
        assert_eq!(regione.claim_map().roles.as_deref(), Some("groups"));
        assert_eq!(
            by_name("entra").client_auth,
            crate::oidc::config::ClientAuth::PrivateKeyJwt
        );
    }

    /// Each bad `[oidc]` key is named.
    #[test]
    fn bad_oidc_configs_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "x").unwrap();
        let base = format!(
            "[[server.listener]]\naddress = \"127.0.0.1:0\"\n[upstream.app]\nurl = \"http://127.0.0.1:1\"\n\
[[route]]\npath = \"/\"\nupstream = \"app\"\npublic = true\n[oidc]\nbase_url = \"https://gw.example\"\n\
[[oidc.provider]]\nname = \"kc\"\nissuer = \"https://kc.example/realms/x\"\nclient_id = \"varco\"\n\
client_secret_file = \"{}\"\n",
            secret.display()
        );
        if let Err(e) = Config::from_toml("ok", &base) {
            panic!("{e}");
        }
        let problems = |extra: &str, edit: &dyn Fn(String) -> String| {
            let text = edit(format!("{base}{extra}"));
            match Config::from_toml("t", &text) {
                Err(ConfigError::Unsafe { problems, .. }) => {
                    problems.into_iter().map(|p| p.key).collect::<Vec<_>>()
                }
                Err(e) => vec![format!("parse: {e}")],
                Ok(_) => vec![],
            }
        };
        let same = |t: String| t;
        assert_eq!(
            problems("profile = \"spid\"\n", &same),
            ["oidc.provider[0].client_auth"]
        );
        assert_eq!(
            problems("client_auth = \"private_key_jwt\"\n", &same),
            [
                "oidc.provider[0].client_auth",
                "oidc.provider[0].client_secret_file"
            ]
        );
        assert_eq!(
            problems("acr_absent = \"Legacy\"\n", &same),
            ["oidc.provider[0].acr"]
        );
        assert_eq!(
            problems("refresh_interval = \"5s\"\n", &same),
            ["oidc.provider[0].refresh_interval"]
        );
        let http = |t: String| t.replace("https://kc.example", "http://kc.example");
        assert_eq!(problems("", &http), ["oidc.provider[0].issuer"]);
        let path = |t: String| t.replace("https://gw.example", "https://gw.example/x");
        assert_eq!(problems("", &path), ["oidc.base_url"]);
        let name = |t: String| t.replace("name = \"kc\"", "name = \"K C\"");
        assert_eq!(problems("", &name), ["oidc.provider[0].name"]);
        let missing = |t: String| t.replace(&secret.display().to_string(), "/nonexistent/secret");
        assert_eq!(
            problems("", &missing),
            ["oidc.provider[0].client_secret_file"]
        );
        // An unknown key is a parse error naming it.
        assert!(problems("client_secrett = \"x\"\n", &same)[0].contains("client_secrett"));
    }

    /// `[cns]` without a CRL would check no revocation: refused.
    #[test]
    fn cns_needs_a_crl() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let text = format!(
            "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[[server.listener]]\naddress = \"127.0.0.1:0\"\n[cns]\nca = \"{}\"\nheader = \"X-Cert\"\n",
            ca.display()
        );
        let cfg =
            Config::from_sources("t", config::File::from_str(&text, config::FileFormat::Toml))
                .unwrap();
        assert!(cfg.validate().iter().any(|p| p.key == "cns.crls"));
    }

    /// Each unsafe `[pin]` names its key.
    #[test]
    fn bad_pin_configs_name_their_key() {
        let base = |pin: &str, routes: &str| {
            format!(
                "[[server.listener]]\naddress = \"127.0.0.1:0\"\n[upstream.a]\nurl = \"http://127.0.0.1:1\"\n{routes}\n[pin]\nissuance_stop = \"2020-10-01\"\ncutoff = \"2021-09-30\"\n{pin}\n"
            )
        };
        let route = "[[route]]\npath = \"/minori\"\nupstream = \"a\"\npublic = false\n";
        let public = "[[route]]\npath = \"/minori\"\nupstream = \"a\"\npublic = true\n";
        let policy = "[[route]]\npath = \"/minori\"\nupstream = \"a\"\npublic = false\n[route.policy]\nmethods = [\"spid\"]\n";
        let url = "verifier_url = \"http://127.0.0.1:1/v\"";
        for (pin, routes, key) in [
            ("", route, "pin.verifier_url"),
            (
                &format!("{url}\nverifier_file = \"/nonexistent\""),
                route,
                "pin.verifier_url",
            ),
            (
                "verifier_file = \"/nonexistent/pins.csv\"",
                route,
                "pin.verifier_file",
            ),
            (
                &format!("{url}\nform_path = \"/_varco/x\""),
                route,
                "pin.form_path",
            ),
            (
                &format!("{url}\nform_path = \"relative\""),
                route,
                "pin.form_path",
            ),
            (
                &format!("{url}\nbasic_paths = [\"/a/../b\"]"),
                route,
                "pin.basic_paths[0]",
            ),
            (
                &format!("{url}\nlegacy_cookie = \"a;b\""),
                route,
                "pin.legacy_cookie",
            ),
            (
                &format!("{url}\n[pin.exceptions]\nminor = [\"/altro\"]"),
                route,
                "pin.exceptions.minor[0]",
            ),
            (
                &format!("{url}\n[pin.exceptions]\nminor = [\"/minori\"]"),
                public,
                "pin.exceptions.minor[0]",
            ),
            (
                &format!("{url}\n[pin.exceptions]\nminor = [\"/minori\"]"),
                policy,
                "pin.exceptions.minor[0]",
            ),
            (
                &format!("{url}\n[pin.exceptions]\nguardianship = [\"/minori\"]"),
                route,
                "pin.exceptions.guardianship",
            ),
            (
                &format!("{url}\n[pin.rate_limit]\nwindow = \"0s\""),
                route,
                "pin.rate_limit",
            ),
            (
                &format!("{url}\n[pin.telephone]\ndigits = 8"),
                route,
                "pin.telephone",
            ),
            (
                &format!("{url}\n[pin.telephone]\nverify_tokens = [\"short\"]"),
                route,
                "pin.telephone.verify_tokens",
            ),
        ] {
            let text = base(pin, routes);
            let cfg =
                Config::from_sources("t", config::File::from_str(&text, config::FileFormat::Toml))
                    .unwrap_or_else(|e| panic!("{key}: {e}"));
            let problems = cfg.validate();
            assert!(
                problems.iter().any(|p| p.key == key),
                "{key} not reported: {problems:?}"
            );
        }
        // The cutoff before the stop; an unknown key.
        let text = base(url, route).replace("2021-09-30", "2019-01-01");
        let cfg =
            Config::from_sources("t", config::File::from_str(&text, config::FileFormat::Toml))
                .unwrap();
        assert!(cfg.validate().iter().any(|p| p.key == "pin.cutoff"));
        let text = base(&format!("{url}\ncutof = \"2021-01-01\""), route);
        let err =
            Config::from_sources("t", config::File::from_str(&text, config::FileFormat::Toml))
                .unwrap_err();
        assert!(err.to_string().contains("cutof"), "{err}");
    }

    /// The commented `[saml]` block of the example, uncommented with real files, is a
    /// valid configuration: every documented key exists.
    #[test]
    fn the_annotated_saml_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/varco.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let block = text
            .split("# --- saml ---")
            .nth(1)
            .and_then(|b| b.split("# --- end saml ---").next())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, "x").unwrap();
            p.display().to_string()
        };
        let uncommented: String = block
            .lines()
            .filter(|l| {
                l.starts_with("# ")
                    && !l.starts_with("# # ")
                    && !l.starts_with("# SPID")
                    && !l.starts_with("# saml/")
                    && !l.starts_with("# `varco")
            })
            .map(|l| format!("{}\n", &l[2..]))
            .collect::<String>()
            .replace("/etc/varco/saml/sp.pem", &file("sp.pem"))
            .replace("/etc/varco/saml/sp-key.pem", &file("sp-key.pem"))
            .replace("/etc/varco/saml/agid-registry.pem", &file("registry.pem"))
            .replace("/etc/varco/saml/cie-idp.xml", &file("cie.xml"));
        let body = text.split("# --- saml ---").next().unwrap();
        let cfg = Config::from_toml("example+saml", &format!("{body}{uncommented}")).unwrap();
        let saml = cfg.saml.unwrap();
        assert_eq!(saml.federation.len(), 2);
        assert_eq!(saml.federation[0].refresh_interval.as_secs(), 6 * 3600);
        assert!(!saml.contact.public);
    }
}
