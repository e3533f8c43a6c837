//! Process wiring: configuration → gateway → bound listeners → server, with signal
//! handling. `varco serve` and `varco demo` both end up in [`run`].

use std::net::SocketAddr;
use std::sync::Arc;

use crate::assertion::{KeySet, Minter};
use crate::config::{Config, Mode};
use crate::gateway::admin::AdminHandler;
use crate::gateway::{Gateway, Reloadable, Services};
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
    #[error("{0}")]
    Cpus(String),
}

/// A gateway whose listeners are bound, ready to run.
pub struct Running {
    pub addrs: Vec<SocketAddr>,
    /// The admin listener's address, when `server.admin_address` is set.
    pub admin_addr: Option<SocketAddr>,
    pub shutdown: ShutdownHandle,
    /// Swaps in a new configuration (SIGHUP, the file watch, or a caller).
    pub reloader: Arc<Reloader>,
    server: Server<Reloadable>,
    admin: Option<Server<AdminHandler>>,
}

/// What outlives a configuration: the metrics, the clock, the session store (sessions,
/// pending logins, replay records survive a reload) and the relayed tunnels.
struct Lasting {
    metrics: Arc<Metrics>,
    clock: Arc<crate::session::SystemClock>,
    store: Arc<crate::session::Store>,
    tunnels: Arc<crate::gateway::tunnels::Tunnels>,
}

/// The configuration in force and the services built from it.
struct InForce {
    cfg: Arc<Config>,
    services: Arc<Services>,
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
    server::cpus::check(&cfg.server.login_cpus)
        .map_err(|why| StartError::Cpus(format!("key `server.login_cpus`: {why}")))?;
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(Metrics::new());
    let store = session_store(&cfg, &metrics, &clock).await?;
    let lasting = Lasting {
        metrics: metrics.clone(),
        clock,
        store,
        tunnels: Arc::default(),
    };
    let services = Arc::new(build_services(&cfg, &lasting, None).await?);
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
    let in_force = Arc::new(arc_swap::ArcSwap::from_pointee(InForce {
        cfg: cfg.clone(),
        services: services.clone(),
    }));
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
            let current = in_force.clone();
            let handler = Arc::new(AdminHandler::new(Arc::new(move || {
                current.load().services.clone()
            })));
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
    metrics.config_loaded.set(unix_now());
    let slots: Vec<Arc<Reloadable>> = gateways
        .into_iter()
        .map(|g| Arc::new(Reloadable::new(g)))
        .collect();
    let server = Server::new(listeners, slots.clone(), cfg.server.clone(), metrics);
    let shutdown = server.shutdown_handle();
    Ok(Running {
        addrs,
        admin_addr,
        shutdown,
        reloader: Arc::new(Reloader {
            path: std::sync::OnceLock::new(),
            slots,
            in_force,
            lasting,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }),
        server,
        admin,
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The session store: in memory, or Redis shared by the replicas (with its health loop).
async fn session_store(
    cfg: &Config,
    metrics: &Arc<Metrics>,
    clock: &Arc<crate::session::SystemClock>,
) -> Result<Arc<crate::session::Store>, StartError> {
    let limits = crate::session::Limits {
        idle: cfg.session.idle_timeout,
        absolute: cfg.session.absolute_timeout,
        capacity: cfg.session.capacity,
    };
    if let Some(rcfg) = cfg
        .session
        .redis
        .as_ref()
        .filter(|_| cfg.session.store == crate::session::StoreKind::Redis)
    {
        let redis = crate::session::redis_store::RedisStore::new(
            rcfg,
            limits,
            clock.clone(),
            &cfg.assertion.issuer,
        )
        .map_err(|e| StartError::Store(e.to_string()))?;
        // Redis down at start does not stop it: protected requests get 503 and readiness
        // stays false until Redis answers.
        if let Err(e) = redis.ping().await {
            tracing::error!(error = %e, "Redis does not answer: protected requests get 503 until it does");
        }
        let store = Arc::new(crate::session::Store::Redis(Arc::new(redis)));
        spawn_store_health(store.clone(), metrics.clone());
        return Ok(store);
    }
    let evictions = metrics.store_evictions.clone();
    Ok(Arc::new(crate::session::Store::Memory(
        crate::session::MemoryStore::new(
            limits,
            clock.clone(),
            Some(Arc::new(move |cache: &'static str| {
                evictions
                    .get_or_create(&vec![("cache".into(), cache.into())])
                    .inc();
            })),
        ),
    )))
}

/// The services for `cfg` over what lasts. On a reload (`previous`), what must not be lost
/// carries over: a demo's ephemeral signing key, the OIDC providers' documents when their
/// configuration is the same, the telephone PINs and rate-limit counts. Files (IdP
/// metadata, CA bundles, CRLs, keys, role sources) are read again. Background refresh
/// loops hold their component weakly and end with it.
async fn build_services(
    cfg: &Arc<Config>,
    lasting: &Lasting,
    previous: Option<&InForce>,
) -> Result<Services, StartError> {
    let metrics = &lasting.metrics;
    let previous_cfg = previous.map(|p| &*p.cfg);
    let previous = previous.map(|p| &*p.services);
    let minter = match previous {
        // The demo's ephemeral key carries over, with this configuration's lifetime (keys
        // from files the configuration no longer names do not).
        Some(p)
            if cfg.assertion.key.is_empty()
                && cfg.mode == Mode::Demo
                && previous_cfg.is_some_and(|c| c.assertion.key.is_empty()) =>
        {
            p.minter.as_ref().map(|m| {
                Arc::new(crate::assertion::Minter::new(
                    m.keys().clone(),
                    cfg.assertion.ttl,
                ))
            })
        }
        _ => minter(cfg)?,
    };
    let mut services = Services::with_clock(cfg, metrics.clone(), minter, lasting.clock.clone())
        .with_store(cfg, lasting.store.clone());
    services.tunnels = lasting.tunnels.clone();
    if let Some(p) = previous {
        services.carry_limits_over(p);
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
        spawn_metadata_refresh(&sp, metrics.clone());
        services.saml = Some(sp);
    }
    if let Some(ocfg) = &cfg.oidc {
        let unchanged = previous_cfg.is_some_and(|old| {
            format!("{:?}", old.oidc) == format!("{:?}", cfg.oidc)
                && old.server.reserved_prefix == cfg.server.reserved_prefix
        });
        let same = previous.and_then(|p| p.oidc.as_ref()).filter(|_| unchanged);
        match same {
            Some(rp) => services.oidc = Some(rp.clone()),
            None => {
                let rp = Arc::new(
                    crate::oidc::provider::RelyingParty::load(
                        ocfg,
                        &cfg.server.reserved_prefix,
                        services.clock.clone(),
                    )
                    .map_err(StartError::Oidc)?,
                );
                // A provider that cannot be reached does not stop the start: its logins are
                // refused (its chooser entry disabled, with the reason) until a refresh
                // succeeds.
                refresh_providers(&rp, metrics, services.clock.now_secs()).await;
                spawn_provider_refresh(&rp, metrics.clone(), services.clock.clone());
                services.oidc = Some(rp);
            }
        }
    }
    if let Some(c) = &cfg.cns {
        let store = Arc::new(crate::cns::CnsStore::load(c).map_err(StartError::Directory)?);
        metrics.cns_crl_next_update.set(store.crl_next_update());
        let reloading = Arc::downgrade(&store);
        let gauge = metrics.cns_crl_next_update.clone();
        let interval = store.reload_interval();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                let Some(reloading) = reloading.upgrade() else {
                    return;
                };
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
        let reloading = Arc::downgrade(&dir);
        let interval = dir.reload_interval();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                let Some(reloading) = reloading.upgrade() else {
                    return;
                };
                reloading.reload_files();
            }
        });
        services.directory = Some(dir);
    }
    if let Some(pcfg) = &cfg.pin {
        let svc = Arc::new(
            crate::pin::PinService::load(
                pcfg,
                &services.store,
                previous.and_then(|p| p.pin.as_deref()),
            )
            .map_err(StartError::Directory)?,
        );
        if svc.registry.is_some() {
            let reloading = Arc::downgrade(&svc);
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    ticker.tick().await;
                    let Some(reloading) = reloading.upgrade() else {
                        return;
                    };
                    if let Some(r) = &reloading.registry {
                        r.reload_files();
                    }
                }
            });
        }
        services.pin = Some(svc);
    }
    Ok(services)
}

/// Settings a running process cannot change: they stay as they were until a restart.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let listeners = |c: &Config| {
        c.server
            .listener
            .iter()
            .map(|l| format!("{l:?}"))
            .collect::<Vec<_>>()
    };
    if listeners(old) != listeners(new) {
        keys.push("server.listener");
    }
    if old.server.admin_address != new.server.admin_address {
        keys.push("server.admin_address");
    }
    if old.worker_count() != new.worker_count() {
        keys.push("server.workers");
    }
    // The connection-level settings the listeners were started with.
    let s = (&old.server, &new.server);
    for (changed, key) in [
        (
            s.0.max_connections != s.1.max_connections,
            "server.max_connections",
        ),
        (
            s.0.drain_timeout != s.1.drain_timeout,
            "server.drain_timeout",
        ),
        (
            s.0.header_read_timeout != s.1.header_read_timeout,
            "server.header_read_timeout",
        ),
        (s.0.idle_timeout != s.1.idle_timeout, "server.idle_timeout"),
        (
            s.0.login_threads_nice != s.1.login_threads_nice,
            "server.login_threads_nice",
        ),
        (s.0.login_cpus != s.1.login_cpus, "server.login_cpus"),
        (
            s.0.max_header_count != s.1.max_header_count,
            "server.max_header_count",
        ),
        (
            s.0.max_header_bytes != s.1.max_header_bytes,
            "server.max_header_bytes (the HTTP parser's; the gateway's own check follows the reload)",
        ),
    ] {
        if changed {
            keys.push(key);
        }
    }
    if format!("{:?}", old.session.store) != format!("{:?}", new.session.store)
        || format!("{:?}", old.session.redis) != format!("{:?}", new.session.redis)
        || old.session.idle_timeout != new.session.idle_timeout
        || old.session.absolute_timeout != new.session.absolute_timeout
        || old.session.capacity != new.session.capacity
    {
        keys.push("session (store and timeouts)");
    }
    if format!("{:?}", old.log) != format!("{:?}", new.log) {
        keys.push("log");
    }
    keys
}

/// Why a reload was refused (the previous configuration stays in force).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no configuration file to reload from")]
    NoFile,
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// A setting a reload must not change at all: a browser's session cookie or the
    /// gateway's own paths would be forwarded to the upstream, or the health probes break.
    #[error("`{0}` cannot change without a restart")]
    Fixed(&'static str),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Reloads the configuration: routes, policies, upstreams, IdP metadata, CA bundles and
/// CRLs, signing keys. A new configuration is checked and built whole before anything
/// changes; then each worker's gateway is swapped (requests in flight finish on the one
/// they started with). A configuration that does not load or build is refused, with the
/// reason in the log, and the previous one stays.
pub struct Reloader {
    path: std::sync::OnceLock<std::path::PathBuf>,
    slots: Vec<Arc<Reloadable>>,
    in_force: Arc<arc_swap::ArcSwap<InForce>>,
    lasting: Lasting,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// Reloads read `path` from now on.
    pub fn set_path(&self, path: std::path::PathBuf) {
        let _ = self.path.set(path);
    }

    /// Loads the configuration file again and, if it is valid and builds, puts it in force.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let outcome = self.try_reload().await;
        let label = if outcome.is_ok() { "ok" } else { "failed" };
        self.lasting
            .metrics
            .config_reloads
            .get_or_create(&vec![("outcome".into(), label.into())])
            .inc();
        match &outcome {
            Ok(()) => {
                self.lasting.metrics.config_loaded.set(unix_now());
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration not reloaded: the previous one stays in force");
            }
        }
        outcome
    }

    async fn try_reload(&self) -> Result<(), ReloadError> {
        let _one = self.one_at_a_time.lock().await;
        let path = self.path.get().ok_or(ReloadError::NoFile)?;
        let cfg = Arc::new(Config::load(path)?);
        let old = self.in_force.load_full();
        if cfg.mode != old.cfg.mode {
            return Err(ReloadError::Fixed("mode"));
        }
        if cfg.session.cookie_name != old.cfg.session.cookie_name {
            return Err(ReloadError::Fixed("session.cookie_name"));
        }
        if cfg.server.reserved_prefix != old.cfg.server.reserved_prefix {
            return Err(ReloadError::Fixed("server.reserved_prefix"));
        }
        if cfg.server.identity_header_prefix != old.cfg.server.identity_header_prefix {
            return Err(ReloadError::Fixed("server.identity_header_prefix"));
        }
        let kept = restart_only(&old.cfg, &cfg);
        let services = Arc::new(build_services(&cfg, &self.lasting, Some(&old)).await?);
        let gateways = self
            .slots
            .iter()
            .map(|_| Gateway::new(cfg.clone(), services.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartError::from)?;
        for g in &gateways {
            g.set_ready(true);
        }
        for (slot, g) in self.slots.iter().zip(gateways) {
            slot.replace(g);
        }
        self.in_force.store(Arc::new(InForce {
            cfg: cfg.clone(),
            services,
        }));
        if !kept.is_empty() {
            tracing::warn!(
                settings = %kept.join(", "),
                "configuration reloaded, but these settings change only with a restart: the running values stay"
            );
        }
        tracing::info!(
            routes = cfg.route.len(),
            upstreams = cfg.upstream.len(),
            "configuration reloaded"
        );
        Ok(())
    }

    /// Reloads on SIGHUP, and (with `watch`) when the file's content changes, checked
    /// every `every`.
    pub fn spawn_triggers(self: &Arc<Self>, watch: Option<std::time::Duration>) {
        #[cfg(unix)]
        {
            let me = self.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut hup) = signal(SignalKind::hangup()) else {
                    tracing::error!("cannot listen for SIGHUP: reload by restarting");
                    return;
                };
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = me.reload().await;
                }
            });
        }
        if let Some(every) = watch {
            let me = Arc::downgrade(self);
            tokio::spawn(async move {
                let digest = |p: &std::path::Path| {
                    std::fs::read(p).ok().map(|b| {
                        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &b)
                            .as_ref()
                            .to_vec()
                    })
                };
                // A reload that failed (say a ConfigMap that names a Secret not mounted
                // yet) is tried again every `RETRY` until it succeeds or the file changes.
                const RETRY: std::time::Duration = std::time::Duration::from_secs(10);
                let mut seen = None;
                let mut failed_at: Option<tokio::time::Instant> = None;
                let mut ticker = tokio::time::interval(every);
                loop {
                    ticker.tick().await;
                    let Some(me) = me.upgrade() else { return };
                    let Some(path) = me.path.get() else { continue };
                    let now = digest(path);
                    if seen.is_none() {
                        seen = now;
                        continue;
                    }
                    let changed = now.is_some() && now != seen;
                    let retry = failed_at.is_some_and(|t| t.elapsed() >= RETRY);
                    if changed || retry {
                        seen = now;
                        if changed {
                            tracing::info!("the configuration file changed: reloading");
                        } else {
                            tracing::info!("trying the failed reload again");
                        }
                        failed_at = match me.reload().await {
                            Ok(()) => None,
                            Err(_) => Some(tokio::time::Instant::now()),
                        };
                    }
                }
            });
        }
    }
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

/// Everything `check-config` can find beyond `validate()`: unreadable TLS files,
/// upstreams that cannot be set up, login CPUs this process may not run on.
pub fn deep_check(cfg: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    // Judged on this machine, by this process's CPUs: run it where the gateway runs.
    if let Err(why) = server::cpus::check(&cfg.server.login_cpus) {
        problems.push(format!("key `server.login_cpus`: {why}"));
    }
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
fn spawn_metadata_refresh(sp: &Arc<crate::saml::sp::ServiceProvider>, metrics: Arc<Metrics>) {
    let Some(interval) = sp
        .federations
        .iter()
        .filter(|f| f.cfg.metadata_url.is_some())
        .map(|f| f.cfg.refresh_interval)
        .min()
    else {
        return;
    };
    let sp = Arc::downgrade(sp);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            // Replaced by a reload: this loop ends with it.
            let Some(sp) = sp.upgrade() else { return };
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
    rp: &Arc<crate::oidc::provider::RelyingParty>,
    metrics: Arc<Metrics>,
    clock: Arc<crate::session::SystemClock>,
) {
    let interval = rp.refresh_interval();
    let rp = Arc::downgrade(rp);
    tokio::spawn(async move {
        let mut since = std::time::Duration::ZERO;
        let tick = std::time::Duration::from_secs(30);
        loop {
            tokio::time::sleep(tick).await;
            since += tick;
            // Replaced by a reload: this loop ends with it.
            let Some(rp) = rp.upgrade() else { return };
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
