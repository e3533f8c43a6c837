//! Process wiring: configuration → gateway → bound listeners → server, with signal
//! handling. `varco serve` and `varco demo` both end up in [`run`].

use std::net::SocketAddr;
use std::sync::Arc;

use crate::assertion::{KeySet, Minter};
use crate::config::{Config, Mode};
use crate::gateway::admin::AdminHandler;
use crate::gateway::{Gateway, Services};
use crate::proxy::Upstreams;
use crate::server::{self, Server, ShutdownHandle};
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Upstream(#[from] crate::proxy::UpstreamSetupError),
    #[error(transparent)]
    Gateway(#[from] crate::gateway::SetupError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error("assertion: {0}")]
    Assertion(#[from] crate::assertion::AssertionError),
    #[error(transparent)]
    Saml(#[from] crate::saml::sp::SpError),
    #[error("directory: {0}")]
    Directory(String),
    #[error("{0}")]
    Oidc(String),
    #[error("{0}")]
    Store(String),
}

/// A gateway whose listeners are bound, ready to run.
pub struct Running {
    pub addrs: Vec<SocketAddr>,
    /// The admin listener's address, when `server.admin_address` is set.
    pub admin_addr: Option<SocketAddr>,
    pub shutdown: ShutdownHandle,
    server: Server<Gateway>,
    admin: Option<Server<AdminHandler>>,
}

/// Builds the gateway and binds its listeners. `/readyz` answers 200 once this returns.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    start_with_clock(cfg, Arc::new(crate::session::SystemClock::default())).await
}

/// [`start`] with a given clock: tests move it forward (the PIN cutoff, a minor's 18th
/// birthday, a telephone PIN's expiry).
pub async fn start_with_clock(
    cfg: Config,
    clock: Arc<crate::session::SystemClock>,
) -> Result<Running, StartError> {
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(Metrics::new());
    let minter = minter(&cfg)?;
    let mut services = Services::with_clock(&cfg, metrics.clone(), minter, clock);
    if let Some(rcfg) = cfg
        .session
        .redis
        .as_ref()
        .filter(|_| cfg.session.store == crate::session::StoreKind::Redis)
    {
        let redis = crate::session::redis_store::RedisStore::new(
            rcfg,
            crate::session::Limits {
                idle: cfg.session.idle_timeout,
                absolute: cfg.session.absolute_timeout,
                capacity: cfg.session.capacity,
            },
            services.clock.clone(),
            &cfg.assertion.issuer,
        )
        .map_err(|e| StartError::Store(e.to_string()))?;
        // Redis down at start does not stop it: protected requests get 503 and readiness
        // stays false until Redis answers.
        if let Err(e) = redis.ping().await {
            tracing::error!(error = %e, "Redis does not answer: protected requests get 503 until it does");
        }
        services.store = Arc::new(crate::session::Store::Redis(redis));
        spawn_store_health(services.store.clone(), metrics.clone());
    }
    if let Some(saml_cfg) = &cfg.saml {
        let now = i64::try_from(services.clock.now_secs()).unwrap_or(i64::MAX);
        let sp = Arc::new(
            crate::saml::sp::ServiceProvider::load(saml_cfg, &cfg.server.reserved_prefix, now)
                .await?,
        );
        for fed in &sp.federations {
            let list = fed.idps();
            tracing::info!(
                federation = %fed.cfg.name,
                idps = list.idps.len(),
                source = list.source,
                "SAML federation loaded"
            );
            let stale = i64::from(list.source == "cache");
            metrics
                .saml_metadata_stale
                .get_or_create(&vec![("federation".into(), fed.cfg.name.clone())])
                .set(stale);
        }
        spawn_metadata_refresh(sp.clone(), metrics.clone());
        services.saml = Some(sp);
    }
    if let Some(ocfg) = &cfg.oidc {
        let rp = Arc::new(
            crate::oidc::provider::RelyingParty::load(
                ocfg,
                &cfg.server.reserved_prefix,
                services.clock.clone(),
            )
            .map_err(StartError::Oidc)?,
        );
        // A provider that cannot be reached does not stop the start: its logins are
        // refused (its chooser entry disabled, with the reason) until a refresh succeeds.
        refresh_providers(&rp, &metrics, services.clock.now_secs()).await;
        spawn_provider_refresh(rp.clone(), metrics.clone(), services.clock.clone());
        services.oidc = Some(rp);
    }
    if let Some(c) = &cfg.cns {
        let store = Arc::new(crate::cns::CnsStore::load(c).map_err(StartError::Directory)?);
        metrics.cns_crl_next_update.set(store.crl_next_update());
        let reloading = store.clone();
        let gauge = metrics.cns_crl_next_update.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(reloading.reload_interval());
            loop {
                ticker.tick().await;
                match reloading.reload_if_changed() {
                    Ok(true) => {
                        gauge.set(reloading.crl_next_update());
                        tracing::info!("CNS authorities and CRLs reloaded");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "CNS files not reloaded: keeping the previous ones")
                    }
                }
            }
        });
        services.cns = Some(store);
    }
    if let Some(dcfg) = &cfg.directory {
        let dir = Arc::new(
            crate::policy::directory::Directory::load(
                dcfg,
                crate::policy::directory::DirectoryMetrics {
                    lookups: metrics.directory_lookups.clone(),
                },
            )
            .map_err(StartError::Directory)?,
        );
        let reloading = dir.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(reloading.reload_interval());
            loop {
                ticker.tick().await;
                reloading.reload_files();
            }
        });
        services.directory = Some(dir);
    }
    if let Some(pcfg) = &cfg.pin {
        let svc = Arc::new(crate::pin::PinService::load(pcfg).map_err(StartError::Directory)?);
        if svc.registry.is_some() {
            let reloading = svc.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    ticker.tick().await;
                    if let Some(r) = &reloading.registry {
                        r.reload_files();
                    }
                }
            });
        }
        services.pin = Some(svc);
    }
    let services = Arc::new(services);
    // One gateway per worker thread: each owns its upstream connection pools.
    let gateways = (0..cfg.worker_count())
        .map(|_| Gateway::new(cfg.clone(), services.clone()).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let listeners = server::bind(&cfg.server).await?;
    let addrs = listeners.iter().map(|l| l.local_addr).collect();
    let methods = gateways
        .first()
        .map(|g| g.login_methods().join(","))
        .unwrap_or_default();
    for l in &listeners {
        tracing::info!(
            address = %l.local_addr,
            tls = l.is_tls(),
            login_methods = %methods,
            "listening"
        );
    }
    // The admin listener: plain HTTP, one worker, the same limits.
    let (admin, admin_addr) = match cfg.server.admin_address {
        Some(address) => {
            let mut admin_cfg = cfg.server.clone();
            admin_cfg.listener = vec![crate::config::ListenerConfig { address, tls: None }];
            let bound = server::bind(&admin_cfg).await?;
            let addr = bound.first().map(|l| l.local_addr);
            if let Some(a) = addr {
                tracing::info!(address = %a, "admin listening");
            }
            let handler = Arc::new(AdminHandler::new(services.clone()));
            (
                Some(Server::new(
                    bound,
                    vec![handler],
                    admin_cfg,
                    metrics.clone(),
                )),
                addr,
            )
        }
        None => (None, None),
    };
    for g in &gateways {
        g.set_ready(true);
    }
    let server = Server::new(listeners, gateways, cfg.server.clone(), metrics);
    let shutdown = server.shutdown_handle();
    Ok(Running {
        addrs,
        admin_addr,
        shutdown,
        server,
        admin,
    })
}

impl Running {
    /// Serves until SIGTERM or SIGINT (or [`ShutdownHandle::shutdown`]), then drains.
    pub async fn run_until_signal(self) {
        let handle = self.shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; draining");
            handle.shutdown();
        });
        self.run().await;
    }

    /// Serves until the shutdown signal, then drains; the admin listener stops with the
    /// main ones.
    pub async fn run(self) {
        let admin = self.admin.map(|a| {
            let stop = a.shutdown_handle();
            (tokio::spawn(a.run()), stop)
        });
        self.server.run().await;
        if let Some((task, stop)) = admin {
            stop.shutdown();
            let _ = task.await;
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The identity-header minter: the configured keys, or in demo mode without keys a fresh
/// development key (tokens from it verify only against this process's JWKS).
fn minter(cfg: &Config) -> Result<Option<Arc<Minter>>, StartError> {
    let a = &cfg.assertion;
    let keys = if !a.key.is_empty() {
        KeySet::load(a)?
    } else if cfg.mode == Mode::Demo {
        KeySet::ephemeral("demo-ephemeral")?
    } else {
        return Ok(None);
    };
    Ok(Some(Arc::new(Minter::new(Arc::new(keys), a.ttl))))
}

/// Everything `check-config` can find beyond `validate()`: unreadable TLS files and
/// upstreams that cannot be set up.
pub fn deep_check(cfg: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, l) in cfg.server.listener.iter().enumerate() {
        if let Some(tls) = &l.tls
            && let Err(e) = server::tls::server_config(tls)
        {
            problems.push(format!("key `server.listener[{i}].tls`: {e}"));
        }
    }
    if let Err(e) = Upstreams::new(&cfg.upstream, cfg.server.request_timeout) {
        problems.push(e.to_string());
    }
    if !cfg.assertion.key.is_empty()
        && let Err(e) = KeySet::load(&cfg.assertion)
    {
        problems.push(format!("key `assertion.key`: {e}"));
    }
    problems
}

/// Refreshes URL-sourced IdP metadata on each federation's interval (the shortest one),
/// keeping the last good copy when a fetch fails.
fn spawn_metadata_refresh(sp: Arc<crate::saml::sp::ServiceProvider>, metrics: Arc<Metrics>) {
    let Some(interval) = sp
        .federations
        .iter()
        .filter(|f| f.cfg.metadata_url.is_some())
        .map(|f| f.cfg.refresh_interval)
        .min()
    else {
        return;
    };
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            for (federation, outcome) in sp.refresh_all(now).await {
                let label = |k: &str, v: &str| {
                    vec![
                        ("federation".to_string(), federation.clone()),
                        (k.to_string(), v.to_string()),
                    ]
                };
                let ok = outcome.is_ok();
                metrics
                    .saml_metadata_fetches
                    .get_or_create(&label("outcome", if ok { "ok" } else { "failed" }))
                    .inc();
                metrics
                    .saml_metadata_stale
                    .get_or_create(&vec![("federation".into(), federation.clone())])
                    .set(i64::from(!ok));
            }
        }
    });
}

/// Fetches every provider's discovery document and JWKS once, with metrics and a log line
/// per provider.
async fn refresh_providers(rp: &crate::oidc::provider::RelyingParty, metrics: &Metrics, now: u64) {
    for (provider, outcome) in rp.refresh_all(now).await {
        let ok = outcome.is_ok();
        let handle = rp.provider(&provider);
        let federated =
            handle.is_some_and(|p| p.cfg.profile != crate::oidc::config::ProviderProfile::Generic);
        let document = if federated {
            "trust_chain"
        } else {
            "discovery"
        };
        match &outcome {
            Ok(()) => {
                tracing::info!(provider = %provider, document, "OIDC provider metadata and keys loaded")
            }
            Err(e) => {
                tracing::error!(provider = %provider, document, error = %e, "OIDC provider metadata could not be loaded: keeping the last good copy, if any")
            }
        }
        metrics
            .oidc_fetches
            .get_or_create(&vec![
                ("provider".into(), provider.clone()),
                ("document".into(), document.into()),
                ("outcome".into(), if ok { "ok" } else { "failed" }.into()),
            ])
            .inc();
        let unavailable = handle.is_some_and(|p| p.current().is_err());
        if let Some(expires) = handle
            .and_then(|p| p.current().ok())
            .and_then(|c| c.expires)
        {
            metrics
                .oidc_trust_chain_expiry
                .get_or_create(&vec![("provider".into(), provider.clone())])
                .set(i64::try_from(expires).unwrap_or(i64::MAX));
        }
        metrics
            .oidc_provider_unavailable
            .get_or_create(&vec![("provider".into(), provider)])
            .set(i64::from(unavailable));
    }
}

/// Refreshes the providers on the shortest configured interval; while one has never
/// loaded, every 30 seconds.
fn spawn_provider_refresh(
    rp: Arc<crate::oidc::provider::RelyingParty>,
    metrics: Arc<Metrics>,
    clock: Arc<crate::session::SystemClock>,
) {
    tokio::spawn(async move {
        let interval = rp.refresh_interval();
        let mut since = std::time::Duration::ZERO;
        let tick = std::time::Duration::from_secs(30);
        loop {
            tokio::time::sleep(tick).await;
            since += tick;
            // A provider without good documents, or whose trust chain expires before the
            // next tick, is asked again now.
            let now = clock.now_secs();
            let missing = rp.providers.iter().any(|p| match p.current() {
                Err(_) => true,
                Ok(c) => c.expires.is_some_and(|e| e <= now + 2 * tick.as_secs()),
            });
            if missing || since >= interval {
                since = std::time::Duration::ZERO;
                refresh_providers(&rp, &metrics, now).await;
            }
        }
    });
}

/// Pings the shared store every 2 s, so readiness and `varco_store_up` follow it without
/// traffic (and the store reconnects by itself when it returns).
fn spawn_store_health(store: Arc<crate::session::Store>, metrics: Arc<Metrics>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            ticker.tick().await;
            if let crate::session::Store::Redis(r) = &*store {
                let up = r.ping().await.is_ok();
                metrics.store_up.set(i64::from(up));
            }
        }
    });
}
