//! Typed configuration: one TOML file plus `VARCO__SECTION__KEY` environment overrides,
//! loaded with the `config` crate, deserialized with `deny_unknown_fields` so that a
//! misspelt key is an error, and checked by [`Config::validate`], which refuses unsafe
//! states and names the key of every problem it finds.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

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
}

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
    vec![crate::cns::CNS_POLICY.to_string()]
}
fn default_cns_level() -> crate::identity::Level {
    crate::identity::Level::SpidL2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Prefix of the gateway's own endpoints (login, ACS, metrics, health...).
    pub reserved_prefix: String,
    /// Inbound headers whose name starts with this (case-insensitive, `-` or `_`) are
    /// removed before anything else: only the gateway may speak with this voice.
    pub identity_header_prefix: String,
    /// Peers whose `Forwarded`/`X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    pub listener: Vec<ListenerConfig>,
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Time a client has to send a complete request head (HTTP/1): the slowloris guard.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes moving is closed after this.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Total time for one request, from its head to the upstream's response head.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_header_count: usize,
    pub max_body_bytes: u64,
    pub max_connections: usize,
    /// Worker threads (each with its own event loop); 0 = one per CPU.
    pub workers: usize,
    /// A relayed WebSocket ends after this long (on protected routes also when the
    /// session would end).
    #[serde(with = "humantime_serde")]
    pub tunnel_max_lifetime: Duration,
    /// How often a tunnel on a protected route checks that its session still lives (an
    /// idle or absolute expiry ends it within this; a logout here ends it at once).
    #[serde(with = "humantime_serde")]
    pub tunnel_check_interval: Duration,
    /// Bodies the gateway reads itself (login forms, SAML answers, forms it inspects)
    /// must arrive within this, extended by 1 s per `body_min_rate` bytes received, up to
    /// `body_read_max`; a slower client gets 408 and its connection closed.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub body_read_max: Duration,
    /// Bytes per second (see `body_read_timeout`).
    pub body_min_rate: u64,
    /// Form bodies the gateway must read before deciding (a route whose client is named
    /// by a query parameter, or with per-method role rules) are held whole, up to this
    /// (and the route's `max_body_bytes`); larger: 413.
    pub max_inspected_body_bytes: u64,
    /// Peers allowed to read `<reserved_prefix>metrics` on the main listeners.
    pub metrics_allow: Vec<IpNet>,
    /// An admin listener (plain HTTP) serving `/metrics`, `/healthz` and `/readyz` only,
    /// as oauth2-proxy's and Pomerium's metrics addresses. When set, the main listeners
    /// no longer serve metrics (a same-host ingress would otherwise pass them on); who can
    /// reach this address can read them (bind it to loopback or a pod IP behind a
    /// network policy).
    pub admin_address: Option<SocketAddr>,
    /// Route prefixes match ignoring ASCII case. Set it in front of a case-insensitive
    /// backend (IIS, some Java containers): otherwise `/DOMANDE/x` would not be under a
    /// `/domande` route and could fall to a less protected one (a catch-all `/`).
    pub case_insensitive_paths: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            reserved_prefix: "/_varco/".into(),
            identity_header_prefix: "x-varco-".into(),
            trusted_proxies: Vec::new(),
            listener: Vec::new(),
            drain_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            max_header_count: 100,
            max_body_bytes: 10 * 1024 * 1024,
            max_connections: 10_000,
            workers: 0,
            tunnel_max_lifetime: Duration::from_secs(3600),
            tunnel_check_interval: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(10),
            body_read_max: Duration::from_secs(30),
            body_min_rate: 500,
            max_inspected_body_bytes: 1024 * 1024,
            metrics_allow: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            case_insensitive_paths: false,
            admin_address: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM bundle of CAs that client certificates are verified against. When set, a client
    /// certificate is requested but optional; a presented one must verify.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

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
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `varco=debug,info`.
    pub level: String,
    /// One line per request at `info` with target `varco::access`.
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Json,
            level: "info".into(),
            access_log: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port` or `https://host:port`, optionally with a base path.
    pub url: String,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Overrides `server.request_timeout` for this upstream.
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    /// PEM bundle trusted for an `https` upstream instead of the public web roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle_per_host: usize,
    #[serde(default = "default_pool_idle_timeout", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Open connections to this upstream per worker, at most; further requests wait for one
    /// (within the request timeout).
    #[serde(default = "default_upstream_connections")]
    pub max_connections: usize,
    /// Send the client's `Host` to the upstream instead of the upstream's own authority
    /// (the original host is always in `X-Forwarded-Host` and `Forwarded`).
    #[serde(default)]
    pub preserve_host: bool,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_pool_max_idle() -> usize {
    256
}
fn default_upstream_connections() -> usize {
    1024
}
fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(90)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Exact host (`app.example.it`), a wildcard for one label (`*.example.it`), or `*`.
    #[serde(default = "default_host")]
    pub host: String,
    /// Path prefix matched on whole segments: `/app` matches `/app` and `/app/x`, not `/apple`.
    pub path: String,
    pub upstream: String,
    /// Must be said explicitly: a route without login.
    pub public: Option<bool>,
    /// Overrides `server.max_body_bytes` for this route.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Also send plain identity headers (`X-Varco-Fiscal-Code`, ...) for backends that
    /// cannot verify the signed header. Only on protected routes.
    #[serde(default)]
    pub identity_headers: bool,
    /// The least SPID level a session must have here (`SpidL1`..`SpidL3`); a browser
    /// with a lower one is sent to log in again at this level (step-up).
    #[serde(default)]
    pub min_level: Option<crate::identity::Level>,
    /// Authorization on a protected route: methods, level, roles, per-role rules,
    /// delegation (see `policy`).
    #[serde(default)]
    pub policy: Option<crate::policy::PolicyConfig>,
    /// CNS login on the spot: a request here without a session that carries a client
    /// certificate (TLS, or the ingress's `cns.header`) is logged in with the card, no
    /// chooser. Needs `[cns]`.
    #[serde(default)]
    pub cns_login: bool,
}

fn default_host() -> String {
    "*".into()
}

impl Config {
    /// `[pin]`: dates in order, one verifier, sane paths, dedicated routes that exist and
    /// are protected, a registry for the categories only it knows, an authenticated
    /// telephone-PIN verify endpoint.
    fn validate_pin(&self, p: &crate::pin::PinConfig, bad: &mut impl FnMut(String, String)) {
        use crate::pin::Category;
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
        let reserved = &self.server.reserved_prefix;
        let absolute = |key: String, path: &str, bad: &mut dyn FnMut(String, String)| {
            let normalized = crate::routes::normalize_path(path).ok();
            if !path.starts_with('/') || normalized.as_deref() != Some(path) {
                bad(key, "an absolute, normalized path".into());
            } else if path.starts_with(reserved.as_str()) {
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
            let route = self
                .route
                .iter()
                .filter(|r| crate::pin::under(b, &r.path))
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
                || c == &self.session.cookie_name
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
                let routes: Vec<&RouteConfig> = self
                    .route
                    .iter()
                    .filter(|r| crate::pin::under(&r.path, prefix))
                    .collect();
                if routes.is_empty() {
                    bad(
                        key.clone(),
                        "no route has this path (or one below it)".into(),
                    );
                }
                for r in routes {
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
                    .with_list_parse_key("server.trusted_proxies"),
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
                reason: e.into_inner().to_string(),
            }
        })
    }

    /// Every unsafe or inconsistent state, each with the key that causes it. Empty = valid.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad = |key: String, message: String| problems.push(Problem { key, message });
        let s = &self.server;
        if !s.reserved_prefix.starts_with('/') || !s.reserved_prefix.ends_with('/') {
            bad(
                "server.reserved_prefix".into(),
                "must start and end with `/`, e.g. `/_varco/`".into(),
            );
        }
        if s.reserved_prefix == "/" {
            bad(
                "server.reserved_prefix".into(),
                "cannot be `/`: it would reserve every path".into(),
            );
        }
        let id_prefix = s.identity_header_prefix.as_str();
        if id_prefix.len() < 3
            || !id_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bad(
                "server.identity_header_prefix".into(),
                "must be at least 3 characters of letters, digits, `-` or `_`".into(),
            );
        }
        if s.listener.is_empty() {
            bad(
                "server.listener".into(),
                "at least one listener is needed".into(),
            );
        }
        if let Some(admin) = s.admin_address
            && admin.port() != 0
            && s.listener.iter().any(|l| l.address == admin)
        {
            bad(
                "server.admin_address".into(),
                "must differ from every server.listener address".into(),
            );
        }
        for (i, l) in s.listener.iter().enumerate() {
            if let Some(tls) = &l.tls {
                for (k, p) in [("cert", Some(&tls.cert)), ("key", Some(&tls.key))]
                    .into_iter()
                    .chain([("client_ca", tls.client_ca.as_ref())])
                {
                    if let Some(p) = p
                        && !p.is_file()
                    {
                        bad(
                            format!("server.listener[{i}].tls.{k}"),
                            format!("file `{}` does not exist", p.display()),
                        );
                    }
                }
            }
        }
        for (key, v) in [
            ("server.drain_timeout", s.drain_timeout),
            ("server.header_read_timeout", s.header_read_timeout),
            ("server.idle_timeout", s.idle_timeout),
            ("server.request_timeout", s.request_timeout),
            ("server.tunnel_check_interval", s.tunnel_check_interval),
        ] {
            if v.is_zero() {
                bad(key.into(), "must be greater than zero".into());
            }
        }
        if s.body_read_timeout.is_zero()
            || s.body_read_max < s.body_read_timeout
            || s.body_min_rate == 0
        {
            bad(
                "server.body_read_timeout".into(),
                "above zero, at most body_read_max, with body_min_rate above zero".into(),
            );
        }
        if !(1024..=1024 * 1024).contains(&s.max_header_bytes) {
            bad(
                "server.max_header_bytes".into(),
                "must be between 1024 and 1048576".into(),
            );
        }
        if !(8..=1000).contains(&s.max_header_count) {
            bad(
                "server.max_header_count".into(),
                "must be between 8 and 1000".into(),
            );
        }
        if s.workers > 1024 {
            bad(
                "server.workers".into(),
                "must be at most 1024 (0 = one per CPU)".into(),
            );
        }
        if s.max_connections == 0 {
            bad(
                "server.max_connections".into(),
                "must be greater than zero".into(),
            );
        }
        for (name, u) in &self.upstream {
            let key = format!("upstream.{name}.url");
            match u.url.parse::<http::Uri>() {
                Ok(uri) => {
                    let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
                    if !scheme_ok || uri.host().is_none() {
                        bad(key, "must be an absolute http:// or https:// URL".into());
                    } else if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                        bad(key, "must not carry credentials (user:password@)".into());
                    } else if uri.query().is_some() {
                        bad(key, "must not carry a query".into());
                    }
                }
                Err(e) => bad(key, format!("not a URL: {e}")),
            }
            if u.max_connections == 0 {
                bad(
                    format!("upstream.{name}.max_connections"),
                    "must be greater than zero".into(),
                );
            }
            if u.connect_timeout.is_zero() {
                bad(
                    format!("upstream.{name}.connect_timeout"),
                    "must be greater than zero".into(),
                );
            }
            if let Some(ca) = &u.ca
                && !ca.is_file()
            {
                bad(
                    format!("upstream.{name}.ca"),
                    format!("file `{}` does not exist", ca.display()),
                );
            }
        }
        let se = &self.session;
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
        if se.capacity == 0 || se.login_timeout.is_zero() {
            bad(
                "session".into(),
                "capacity and login_timeout must be above zero".into(),
            );
        }
        for (i, r) in self.route.iter().enumerate() {
            if r.identity_headers && r.public == Some(true) {
                bad(
                    format!("route[{i}].identity_headers"),
                    "only protected routes have an identity to send".into(),
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
        for (i, r) in self.route.iter().enumerate() {
            if r.cns_login && (self.cns.is_none() || r.public == Some(true)) {
                bad(
                    format!("route[{i}].cns_login"),
                    "needs [cns] and a protected route".into(),
                );
            }
        }
        if let Some(c) = &self.cns {
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
            let requests_certs = s
                .listener
                .iter()
                .any(|l| l.tls.as_ref().is_some_and(|t| t.client_ca.is_some()));
            if !requests_certs && c.header.is_none() {
                bad(
                    "cns".into(),
                    "a TLS listener must request client certificates (tls.client_ca), or an ingress must pass them in cns.header".into(),
                );
            }
            if let Some(h) = &c.header {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    bad("cns.header".into(), "not a header name".into());
                }
                if s.trusted_proxies.is_empty() {
                    bad(
                        "cns.header".into(),
                        "the certificate header is only accepted from server.trusted_proxies, which is empty".into(),
                    );
                }
            }
        }
        if let Some(p) = &self.pin {
            self.validate_pin(p, &mut bad);
        }
        if let Some(d) = &self.directory {
            for (k, v) in [("cache_ttl", d.cache_ttl), ("negative_ttl", d.negative_ttl)] {
                if v > Duration::from_secs(86_400) {
                    bad(format!("directory.{k}"), "at most 1d".into());
                }
            }
            for (k, p) in [
                ("roles_file", &d.roles_file),
                ("delegations_file", &d.delegations_file),
            ] {
                if let Some(p) = p
                    && !p.is_file()
                {
                    bad(
                        format!("directory.{k}"),
                        format!("{} is not a file", p.display()),
                    );
                }
            }
            if d.roles_file.is_some() && d.roles_url.is_some() {
                bad(
                    "directory.roles_url".into(),
                    "roles_file or roles_url, not both".into(),
                );
            }
            if d.delegations_file.is_some() && d.delegations_url.is_some() {
                bad(
                    "directory.delegations_url".into(),
                    "delegations_file or delegations_url, not both".into(),
                );
            }
        }
        for (i, r) in self.route.iter().enumerate() {
            if let Some(p) = &r.policy {
                if r.public == Some(true) {
                    bad(
                        format!("route[{i}].policy"),
                        "a public route has no user to authorize".into(),
                    );
                }
                if r.min_level.is_some() && p.min_level.is_some() {
                    bad(
                        format!("route[{i}].min_level"),
                        "give the level once, in route.policy.min_level".into(),
                    );
                }
                if let Err((k, m)) = p.compile() {
                    bad(format!("route[{i}].policy.{k}"), m);
                }
                let needs_directory = p
                    .delegation
                    .as_ref()
                    .is_some_and(|d| !d.required_for.is_empty())
                    || p.rule.iter().any(|r| r.role != crate::policy::CITIZEN)
                    || p.roles.iter().any(|r| r != crate::policy::CITIZEN);
                if needs_directory && self.directory.is_none() && self.mode != Mode::Demo {
                    bad(
                        format!("route[{i}].policy"),
                        "roles and delegations need a [directory] (role and delegation sources)"
                            .into(),
                    );
                }
            }
            if r.min_level.is_some() && r.public == Some(true) {
                bad(
                    format!("route[{i}].min_level"),
                    "a public route has no login to require a level of".into(),
                );
            }
        }
        let a = &self.assertion;
        if a.ttl.is_zero() || a.ttl > Duration::from_secs(300) {
            bad("assertion.ttl".into(), "must be between 1s and 300s".into());
        }
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
        let mut kids = std::collections::HashSet::new();
        for (i, k) in a.key.iter().enumerate() {
            if k.kid.is_empty() || !kids.insert(k.kid.as_str()) {
                bad(
                    format!("assertion.key[{i}].kid"),
                    "must be present and unique".into(),
                );
            }
            if !k.private_key.is_file() {
                bad(
                    format!("assertion.key[{i}].private_key"),
                    format!("file `{}` does not exist", k.private_key.display()),
                );
            }
        }
        match &a.active_kid {
            Some(kid) if !a.key.iter().any(|k| &k.kid == kid) => bad(
                "assertion.active_kid".into(),
                format!("no key with kid `{kid}` in assertion.key"),
            ),
            None if a.key.len() > 1 => bad(
                "assertion.active_kid".into(),
                "must name the signing key when several keys are configured".into(),
            ),
            _ => {}
        }
        let protected = self.route.iter().any(|r| r.public == Some(false));
        if protected && a.key.is_empty() && self.mode != Mode::Demo {
            bad(
                "assertion.key".into(),
                "protected routes need a signing key for the identity header".into(),
            );
        }
        if self.route.is_empty() {
            bad("route".into(), "at least one route is needed".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, r) in self.route.iter().enumerate() {
            if !self.upstream.contains_key(&r.upstream) {
                bad(
                    format!("route[{i}].upstream"),
                    format!("no upstream named `{}` in [upstream]", r.upstream),
                );
            }
            if let Err(e) = crate::routes::check_route_path(&r.path) {
                bad(format!("route[{i}].path"), e);
            } else if r.path.starts_with(s.reserved_prefix.trim_end_matches('/')) {
                bad(
                    format!("route[{i}].path"),
                    format!("is inside the reserved prefix `{}`", s.reserved_prefix),
                );
            }
            if let Err(e) = crate::routes::check_host_pattern(&r.host) {
                bad(format!("route[{i}].host"), e);
            }
            if r.public.is_none() {
                bad(
                    format!("route[{i}].public"),
                    "must be said explicitly: `public = true` (no login) or `public = false`"
                        .into(),
                );
            }
            if !seen.insert((r.host.to_ascii_lowercase(), r.path.clone())) {
                bad(
                    format!("route[{i}]"),
                    format!("duplicates host `{}` path `{}`", r.host, r.path),
                );
            }
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
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Effective request timeout for an upstream.
    pub fn upstream_request_timeout(&self, upstream: &UpstreamConfig) -> Duration {
        upstream
            .request_timeout
            .unwrap_or(self.server.request_timeout)
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

    #[test]
    fn wrong_type_is_named() {
        let text = MINIMAL.replace(
            "[[server.listener]]",
            "[server]\nidle_timeout = \"soon\"\n[[server.listener]]",
        );
        let err = Config::from_toml("t.toml", &text).unwrap_err().to_string();
        assert!(err.contains("server.idle_timeout"), "{err}");
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
