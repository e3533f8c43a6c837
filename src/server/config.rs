//! `[server]`: listeners and TLS, the reserved prefix and identity-header prefix, trusted
//! proxies, timeouts and limits of the connections the gateway accepts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

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
    /// How many steps of nice (0–19) below the process the login threads run: the pool
    /// that does a login's cryptography off the workers (SAML signatures and their
    /// verification, PIN hashes) and nothing else. At 19, the default, a proxied request
    /// waiting for a core goes before a login's signature; 0 runs them as the workers.
    /// Linux only (a per-thread nice value).
    pub login_threads_nice: u8,
    /// CPUs the login threads run on, and the request workers do not (`taskset -c`
    /// numbering); empty, the default, pins nothing. With `workers = 0` there is one
    /// worker per CPU left. Linux only. One number stands for a list of one (so that
    /// `VARCO__SERVER__LOGIN_CPUS=3` works as `=3,4` does).
    #[serde(deserialize_with = "cpu_list")]
    pub login_cpus: Vec<usize>,
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

/// A CPU number, or a list of them.
fn cpu_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<usize>, D::Error> {
    struct Cpus;
    impl<'de> serde::de::Visitor<'de> for Cpus {
        type Value = Vec<usize>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a CPU number or a list of CPU numbers")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            usize::try_from(v)
                .map(|c| vec![c])
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            usize::try_from(v)
                .map(|c| vec![c])
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut cpus = Vec::new();
            while let Some(One(c)) = seq.next_element()? {
                cpus.push(c);
            }
            Ok(cpus)
        }
    }
    /// One CPU number, strictly: not a float, a boolean, a list or a word that the config
    /// crate would convert to one. Digits in a string count (a list from the environment
    /// arrives as strings).
    struct One(usize);
    struct Number;
    impl serde::de::Visitor<'_> for Number {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a CPU number")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<usize, E> {
            usize::try_from(v)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<usize, E> {
            usize::try_from(v)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<usize, E> {
            let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
            digits
                .then(|| v.parse().ok())
                .flatten()
                .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
        }
    }
    impl<'de> serde::Deserialize<'de> for One {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Number).map(One)
        }
    }
    d.deserialize_any(Cpus)
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
            login_threads_nice: 19,
            login_cpus: Vec::new(),
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

impl ServerConfig {
    /// Problems of `[server]` alone, each with its key (see `Config::validate`).
    pub fn validate(&self, bad: &mut impl FnMut(String, String)) {
        let s = self;
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
        if s.login_threads_nice > 19 {
            bad(
                "server.login_threads_nice".into(),
                "must be between 0 (as the workers) and 19 (the lowest priority)".into(),
            );
        }
        // Against the CPUs this process may run on: at start and by `check-config`
        // (`cpus::check`), not on a reload, which keeps the CPUs the gateway started with.
        if let Some(cpu) = s
            .login_cpus
            .iter()
            .enumerate()
            .find_map(|(i, c)| s.login_cpus[..i].contains(c).then_some(c))
        {
            bad(
                "server.login_cpus".into(),
                format!("CPU {cpu} is listed twice"),
            );
        }
        if s.max_connections == 0 {
            bad(
                "server.max_connections".into(),
                "must be greater than zero".into(),
            );
        }
    }

    /// Number of worker threads to run.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            // One per CPU, within the process's CPU budget (a quota counts); with
            // login CPUs, one per CPU left to the workers.
            0 => {
                let budget = std::thread::available_parallelism().map_or(1, |n| n.get());
                if self.login_cpus.is_empty() {
                    budget
                } else {
                    budget
                        .min(super::cpus::workers(&self.login_cpus).len())
                        .max(1)
                }
            }
            n => n,
        }
    }

    /// Whether a TLS listener asks clients for certificates (CNS needs one, or an ingress).
    pub fn requests_client_certificates(&self) -> bool {
        self.listener
            .iter()
            .any(|l| l.tls.as_ref().is_some_and(|t| t.client_ca.is_some()))
    }
}
