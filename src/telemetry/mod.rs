//! Logs, access log, Prometheus metrics and audit events. Logs go through `tracing`
//! (JSON by default, pretty on request) on a non-blocking writer so that a slow stdout
//! never stalls a request. Metrics are registered once at start-up; the request path only
//! increments them.

pub mod access;
mod config;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

pub use config::{LogConfig, LogFormat};

/// Keeps the background log writer alive; dropping it flushes the remaining lines.
pub struct LogGuard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
/// Returns `None` when a subscriber was already installed (e.g. by a test).
pub fn init_logging(cfg: &LogConfig, force_pretty: bool) -> Option<LogGuard> {
    access::set_format(if force_pretty {
        LogFormat::Pretty
    } else {
        cfg.format
    });
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // Buffered: the writer thread flushes once per batch of lines, not per line.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = if force_pretty || cfg.format == LogFormat::Pretty {
        builder.with_target(true).try_init().is_ok()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
            .is_ok()
    };
    installed.then_some(LogGuard(guard))
}

/// A cheap-to-clone label value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label(pub Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: Label,
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: Label,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub upstream: Label,
    pub kind: &'static str,
}

/// One route's metrics, resolved once so the request path does no label hashing.
pub struct RouteMetrics {
    pub label: Label,
    duration: Histogram,
    requests: Family<RequestLabels, Counter>,
    /// Counters by status seen so far on this route (a handful), found by a linear scan.
    by_status: std::sync::Mutex<Vec<(u16, Counter)>>,
}

impl RouteMetrics {
    pub fn record(&self, status: u16, seconds: f64) {
        self.duration.observe(seconds);
        let counter = match self.by_status.lock() {
            Ok(mut cache) => match cache.iter().find(|(s, _)| *s == status) {
                Some((_, c)) => c.clone(),
                None => {
                    let c = self.requests_for(status);
                    cache.push((status, c.clone()));
                    c
                }
            },
            // A poisoned cache only costs the fast path.
            Err(_) => self.requests_for(status),
        };
        counter.inc();
    }

    fn requests_for(&self, status: u16) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                route: self.label.clone(),
                status,
            })
            .clone()
    }
}

/// The gateway's metrics, served at `<reserved_prefix>metrics`.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RouteLabel, Histogram>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub open_connections: Gauge<i64, AtomicI64>,
    /// SAML logins by outcome (`ok` or the refusal code).
    pub saml_logins: Family<Vec<(String, String)>, Counter>,
    /// IdP metadata fetches by federation and outcome (`ok`, `failed`).
    pub saml_metadata_fetches: Family<Vec<(String, String)>, Counter>,
    /// 1 while a federation serves a last good copy because its fetch failed.
    pub saml_metadata_stale: Family<Vec<(String, String)>, Gauge>,
    /// Role and delegation lookups by source and outcome (`hit`, `miss`, `error`).
    pub directory_lookups: Family<Vec<(String, String)>, Counter>,
    /// The earliest nextUpdate (Unix seconds) of the loaded CNS CRLs: alert before it.
    pub cns_crl_next_update: Gauge<i64, AtomicI64>,
    /// PIN attempts by kind (`form`, `basic`, `telephone`) and outcome (`ok`, `wrong`,
    /// `refused`, `rate_limited`).
    pub pin_attempts: Family<Vec<(String, String)>, Counter>,
    /// Entries the embedded session store dropped for room, by cache (`sessions`,
    /// `pending`, `replay`): raise `session.capacity` when these grow.
    pub store_evictions: Family<Vec<(String, String)>, Counter>,
    /// OpenID Connect logins by provider and outcome (`ok` or the refusal code).
    pub oidc_logins: Family<Vec<(String, String)>, Counter>,
    /// Discovery and JWKS fetches by provider, document and outcome (`ok`, `failed`).
    pub oidc_fetches: Family<Vec<(String, String)>, Counter>,
    /// 1 while a provider is unusable (no good discovery document or JWKS yet).
    pub oidc_provider_unavailable: Family<Vec<(String, String)>, Gauge>,
    /// Back-channel logout tokens by outcome (`ok` or the refusal code).
    pub oidc_backchannel_logouts: Family<Vec<(String, String)>, Counter>,
    /// When each federation provider's resolved trust chain expires (Unix seconds).
    pub oidc_trust_chain_expiry: Family<Vec<(String, String)>, Gauge>,
    /// 1 while the session store answers (always, for the embedded one).
    pub store_up: Gauge<i64, AtomicI64>,
    /// Configuration reloads by outcome (`ok`, `failed`).
    pub config_reloads: Family<Vec<(String, String)>, Counter>,
    /// When the configuration in force was loaded (Unix seconds): at start, then at each
    /// successful reload.
    pub config_loaded: Gauge<i64, AtomicI64>,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("varco");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<RouteLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        let open_connections = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "requests",
            "Requests answered, by route and HTTP status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by route",
            duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed upstream exchanges, by upstream and kind (connect, timeout, protocol)",
            upstream_errors.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections currently open",
            open_connections.clone(),
        );
        let saml_logins = Family::<Vec<(String, String)>, Counter>::default();
        let saml_metadata_fetches = Family::<Vec<(String, String)>, Counter>::default();
        let saml_metadata_stale = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "saml_logins",
            "SAML logins at the assertion consumer service, by outcome",
            saml_logins.clone(),
        );
        registry.register(
            "saml_metadata_fetches",
            "IdP metadata fetches, by federation and outcome",
            saml_metadata_fetches.clone(),
        );
        registry.register(
            "saml_metadata_stale",
            "1 while a federation keeps its last good IdP metadata after a failed fetch",
            saml_metadata_stale.clone(),
        );
        let directory_lookups = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "directory_lookups",
            "Role and delegation lookups, by source and outcome (hit, miss, error)",
            directory_lookups.clone(),
        );
        let cns_crl_next_update = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "cns_crl_next_update_timestamp_seconds",
            "The earliest nextUpdate of the loaded CNS CRLs (after it, cards of that issuer are refused)",
            cns_crl_next_update.clone(),
        );
        let pin_attempts = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "pin_attempts",
            "Legacy and telephone PIN attempts, by kind and outcome",
            pin_attempts.clone(),
        );
        let store_evictions = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "store_evictions",
            "Entries the embedded store evicted for room (least recently used first), by cache",
            store_evictions.clone(),
        );
        let oidc_logins = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "oidc_logins",
            "OpenID Connect logins at the callback, by provider and outcome",
            oidc_logins.clone(),
        );
        let oidc_fetches = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "oidc_fetches",
            "Provider discovery and JWKS fetches, by provider, document and outcome",
            oidc_fetches.clone(),
        );
        let oidc_provider_unavailable = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "oidc_provider_unavailable",
            "1 while a provider has no good discovery document or JWKS (its logins are refused)",
            oidc_provider_unavailable.clone(),
        );
        let oidc_backchannel_logouts = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "oidc_backchannel_logouts",
            "Back-channel logout tokens received, by outcome",
            oidc_backchannel_logouts.clone(),
        );
        let oidc_trust_chain_expiry = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "oidc_trust_chain_expiry_timestamp_seconds",
            "When a federation provider's resolved trust chain expires (it is resolved again before)",
            oidc_trust_chain_expiry.clone(),
        );
        let store_up = Gauge::<i64, AtomicI64>::default();
        store_up.set(1);
        registry.register(
            "store_up",
            "1 while the session store answers (Redis); 0: protected requests get 503",
            store_up.clone(),
        );
        let config_reloads = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "config_reload",
            "Configuration reloads (SIGHUP or file watch), by outcome: ok, failed (the previous configuration stays)",
            config_reloads.clone(),
        );
        let config_loaded = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration in force was loaded (at start, then at each successful reload)",
            config_loaded.clone(),
        );
        Metrics {
            config_reloads,
            config_loaded,
            store_up,
            oidc_trust_chain_expiry,
            oidc_logins,
            oidc_fetches,
            oidc_provider_unavailable,
            oidc_backchannel_logouts,
            store_evictions,
            cns_crl_next_update,
            pin_attempts,
            directory_lookups,
            registry,
            requests,
            duration,
            upstream_errors,
            open_connections,
            saml_logins,
            saml_metadata_fetches,
            saml_metadata_stale,
        }
    }

    /// The per-route metrics handle for `route` (a route id, `internal` or `none`).
    pub fn route(&self, route: &Arc<str>) -> RouteMetrics {
        let label = Label(route.clone());
        let duration = self
            .duration
            .get_or_create(&RouteLabel {
                route: label.clone(),
            })
            .clone();
        RouteMetrics {
            label,
            duration,
            requests: self.requests.clone(),
            by_status: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            let _ = writeln!(out, "# metrics encoding failed");
        }
        out
    }
}
