//! Listeners and connections: plain TCP or rustls TLS, HTTP/1.1 and HTTP/2 on the same
//! port (hyper-util auto), limits from configuration (header bytes and count, header read
//! timeout, idle timeout, connection count), and graceful shutdown: on the shutdown signal
//! the listeners stop accepting, every connection finishes its in-flight requests, and
//! whatever is still open when the drain timeout passes is cut.
//!
//! Threading: one OS thread per worker, each with its own single-threaded tokio runtime
//! accepting on a clone of every listening socket (nginx's model). A request, its upstream
//! connection and its response stay on one thread, so the hot path has no cross-thread
//! wake-ups; each worker gets its own [`Handler`] (and so its own upstream pools).
//!
//! The server knows nothing of routes or identity: it hands each request with its
//! [`ConnInfo`] (peer address, scheme, the verified client certificate chain) to a
//! [`Handler`].

pub mod config;
pub mod cpus;
pub mod framing;
pub mod login_pool;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::proxy::GatewayBody;
use crate::telemetry::Metrics;
use config::ServerConfig;

/// What the server knows of the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's IP address as text (IPv4-mapped IPv6 shown as IPv4), formatted once per
    /// connection for the forwarded headers and the access log.
    pub peer_ip: Arc<str>,
    pub local: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The client certificate chain (leaf first) that rustls verified against the
    /// listener's client CA bundle; `None` when no certificate was presented.
    pub client_chain: Option<Arc<[CertificateDer<'static>]>>,
    pub alpn: Option<Vec<u8>>,
    /// Raised by the framing watch (see [`framing`]) when the connection's byte stream
    /// carried ambiguous HTTP/1 framing.
    framing_violation: Arc<AtomicBool>,
    /// This connection's place in `server.max_connections`, held as long as anything
    /// (the connection, or a WebSocket tunnel made from it) holds this `ConnInfo`.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl ConnInfo {
    fn new(
        peer: SocketAddr,
        local: SocketAddr,
        scheme: &'static str,
        client_chain: Option<Arc<[CertificateDer<'static>]>>,
        alpn: Option<Vec<u8>>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> ConnInfo {
        ConnInfo {
            peer,
            peer_ip: peer.ip().to_canonical().to_string().into(),
            local,
            scheme,
            client_chain,
            alpn,
            framing_violation: Arc::default(),
            _permit: permit,
        }
    }

    /// A plain-HTTP connection from `peer`, for unit tests that drive a handler without
    /// a listener.
    #[cfg(test)]
    pub(crate) fn for_tests(peer: SocketAddr) -> ConnInfo {
        ConnInfo::new(peer, peer, "http", None, None, None)
    }

    /// Whether this connection has sent ambiguous framing (`Content-Length` with
    /// `Transfer-Encoding`, a repeated `Content-Length`): its requests must be refused and
    /// the connection closed.
    pub fn framing_violation(&self) -> bool {
        self.framing_violation.load(Ordering::Acquire)
    }
}

/// Answers requests. Implemented by the gateway, and by tests that look at what the
/// server hands over.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> impl Future<Output = Response<GatewayBody>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("listener {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: tls::TlsSetupError,
    },
}

/// A listening socket, ready to accept.
pub struct BoundListener {
    tcp: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    pub local_addr: SocketAddr,
}

impl BoundListener {
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Binds every configured listener (all or nothing).
pub async fn bind(cfg: &ServerConfig) -> Result<Vec<BoundListener>, ServerError> {
    let mut out = Vec::with_capacity(cfg.listener.len());
    for l in &cfg.listener {
        let tls = match &l.tls {
            Some(t) => Some(TlsAcceptor::from(tls::server_config(t).map_err(
                |source| ServerError::Tls {
                    addr: l.address,
                    source,
                },
            )?)),
            None => None,
        };
        let bind_err = |source| ServerError::Bind {
            addr: l.address,
            source,
        };
        let tcp = TcpListener::bind(l.address)
            .await
            .and_then(|t| t.into_std())
            .map_err(bind_err)?;
        let local_addr = tcp.local_addr().map_err(bind_err)?;
        out.push(BoundListener {
            tcp,
            tls,
            local_addr,
        });
    }
    Ok(out)
}

/// Sends the shutdown signal to a running server.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

struct Shared<H> {
    handler: Arc<H>,
    builder: auto::Builder<TokioExecutor>,
    cfg: ServerConfig,
    metrics: Arc<Metrics>,
    /// Connections open on this worker.
    open: AtomicUsize,
    shutdown: watch::Receiver<bool>,
}

/// A server ready to run on bound listeners.
pub struct Server<H> {
    handlers: Vec<Arc<H>>,
    listeners: Vec<BoundListener>,
    cfg: ServerConfig,
    metrics: Arc<Metrics>,
    shutdown_tx: Arc<watch::Sender<bool>>,
}

fn connection_builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_headers(cfg.max_header_count)
        .max_buf_size((cfg.max_header_bytes + 1024).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    builder
}

impl<H: Handler> Server<H> {
    /// One worker thread per handler.
    pub fn new(
        listeners: Vec<BoundListener>,
        handlers: Vec<Arc<H>>,
        cfg: ServerConfig,
        metrics: Arc<Metrics>,
    ) -> Server<H> {
        let (tx, _rx) = watch::channel(false);
        Server {
            handlers,
            listeners,
            cfg,
            metrics,
            shutdown_tx: Arc::new(tx),
        }
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown_tx.clone())
    }

    /// Starts the workers, accepts until the shutdown signal, then drains. Returns how
    /// many connections were still open (and cut) when the drain timeout passed.
    pub async fn run(self) -> usize {
        let Server {
            handlers,
            listeners,
            cfg,
            metrics,
            shutdown_tx,
        } = self;
        login_pool::configure(cfg.login_threads_nice, cfg.login_cpus.clone());
        // With `login_cpus`, the workers keep off the login threads' CPUs.
        let worker_cpus = if cfg.login_cpus.is_empty() {
            Vec::new()
        } else {
            cpus::workers(&cfg.login_cpus)
        };
        if !worker_cpus.is_empty() && handlers.len() > worker_cpus.len() {
            tracing::warn!(
                workers = handlers.len(),
                cpus = worker_cpus.len(),
                "more request workers than CPUs left to them by server.login_cpus; they share"
            );
        }
        // One budget of connections for the whole process.
        let permits = Arc::new(Semaphore::new(cfg.max_connections));
        let mut done = Vec::new();
        for (w, handler) in handlers.into_iter().enumerate() {
            let mut socks = Vec::new();
            for l in &listeners {
                match l.tcp.try_clone() {
                    Ok(tcp) => socks.push((tcp, l.tls.clone(), l.local_addr)),
                    Err(e) => tracing::error!(error = %e, "cannot share a listening socket"),
                }
            }
            let shared = Arc::new(Shared {
                handler,
                builder: connection_builder(&cfg),
                cfg: cfg.clone(),
                metrics: metrics.clone(),
                open: AtomicUsize::new(0),
                shutdown: shutdown_tx.subscribe(),
            });
            let permits = permits.clone();
            let (tx, rx) = tokio::sync::oneshot::channel::<usize>();
            let worker_cpus = worker_cpus.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("varco-worker-{w}"))
                .spawn(move || {
                    cpus::pin_current_thread(&worker_cpus);
                    let left = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(worker(socks, shared, permits)),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start a worker runtime");
                            0
                        }
                    };
                    let _ = tx.send(left);
                });
            match spawned {
                Ok(_) => done.push(rx),
                Err(e) => tracing::error!(error = %e, "cannot start a worker thread"),
            }
        }
        drop(listeners);
        let mut left = 0;
        for rx in done {
            left += rx.await.unwrap_or(0);
        }
        if left > 0 {
            tracing::warn!(
                connections = left,
                "drain timeout passed; closing the remaining connections"
            );
        } else {
            tracing::info!("all connections drained");
        }
        left
    }
}

/// One worker: accept on every listener until shutdown, then drain this worker's
/// connections. Returns how many were cut at the drain deadline.
async fn worker<H: Handler>(
    socks: Vec<(std::net::TcpListener, Option<TlsAcceptor>, SocketAddr)>,
    shared: Arc<Shared<H>>,
    permits: Arc<Semaphore>,
) -> usize {
    crate::telemetry::access::buffer_this_thread();
    let flusher = tokio::spawn(crate::telemetry::access::flusher());
    let mut accept_tasks = Vec::new();
    for (tcp, tls, local_addr) in socks {
        let listener = tcp
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(tcp));
        match listener {
            Ok(tcp) => accept_tasks.push(tokio::spawn(accept_loop(
                BoundWorkerListener {
                    tcp,
                    tls,
                    local_addr,
                },
                shared.clone(),
                permits.clone(),
            ))),
            Err(e) => tracing::error!(error = %e, "cannot register a listening socket"),
        }
    }
    let mut rx = shared.shutdown.clone();
    let _ = rx.wait_for(|&v| v).await;
    for t in accept_tasks {
        let _ = t.await;
    }
    let deadline = tokio::time::Instant::now() + shared.cfg.drain_timeout;
    while shared.open.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flusher.abort();
    crate::telemetry::access::flush();
    shared.open.load(Ordering::Acquire)
}

struct BoundWorkerListener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    local_addr: SocketAddr,
}

async fn accept_loop<H: Handler>(
    listener: BoundWorkerListener,
    shared: Arc<Shared<H>>,
    permits: Arc<Semaphore>,
) {
    let mut stop = shared.shutdown.clone();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.wait_for(|&v| v) => break,
        };
        let accepted = tokio::select! {
            r = listener.tcp.accept() => r,
            _ = stop.wait_for(|&v| v) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = listener.tls.clone();
        let local = listener.local_addr;
        shared.open.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            shared.metrics.open_connections.inc();
            let permit = Some(permit);
            match tls {
                None => {
                    let info = ConnInfo::new(peer, local, "http", None, None, permit);
                    serve_connection(tcp, Arc::new(info), &shared).await;
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(shared.cfg.header_read_timeout, acceptor.accept(tcp))
                            .await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            let (_, conn) = stream.get_ref();
                            let client_chain = conn
                                .peer_certificates()
                                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
                            let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
                            let info =
                                ConnInfo::new(peer, local, "https", client_chain, alpn, permit);
                            serve_connection(stream, Arc::new(info), &shared).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                }
            }
            shared.metrics.open_connections.dec();
            shared.open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Per-connection activity, read by the idle watchdog.
#[derive(Default)]
struct Activity {
    touched: AtomicBool,
    in_flight: AtomicUsize,
}

struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touched.store(true, Ordering::Release);
    }
}

async fn serve_connection<S, H>(stream: S, info: Arc<ConnInfo>, shared: &Arc<Shared<H>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
        framing: Some(framing::FramingWatch::new()),
        framing_violation: info.framing_violation.clone(),
    });
    let handler = shared.handler.clone();
    let svc_activity = activity.clone();
    let svc = service_fn(move |req| {
        let handler = handler.clone();
        let info = info.clone();
        let guard = InFlight::enter(&svc_activity);
        async move {
            let resp = handler.handle(req, info).await;
            drop(guard);
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = shared.builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);

    let idle = shared.cfg.idle_timeout;
    let tick = (idle / 4).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_for = Duration::ZERO;
    let mut draining = false;
    let mut stop = shared.shutdown.clone();
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop.wait_for(|&v| v), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = ticker.tick(), if !draining => {
                let busy = activity.in_flight.load(Ordering::Acquire) > 0;
                if activity.touched.swap(false, Ordering::AcqRel) || busy {
                    idle_for = Duration::ZERO;
                } else {
                    idle_for += tick;
                    if idle_for >= idle {
                        tracing::debug!("closing idle connection");
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

pin_project! {
    /// A stream that records that bytes moved (for the idle watchdog) and shows what it
    /// reads to the framing watch.
    struct Tracked<S> {
        #[pin]
        inner: S,
        activity: Arc<Activity>,
        framing: Option<framing::FramingWatch>,
        framing_violation: Arc<AtomicBool>,
    }
}

impl<S: AsyncRead> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touched.store(true, Ordering::Relaxed);
            if let Some(watch) = this.framing.as_mut() {
                if watch.feed(&buf.filled()[before..]) {
                    this.framing_violation.store(true, Ordering::Release);
                }
                if !watch.active() {
                    *this.framing = None;
                }
            }
        }
        r
    }
}

impl<S: AsyncWrite> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touched.store(true, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touched.store(true, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
