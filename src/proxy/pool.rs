//! Upstream connections: one small pool per upstream per worker thread. Each worker owns
//! its pools, so the lock is never contended and a connection's task runs on the thread
//! that uses it. A pooled connection is reused when hyper says it is ready for the next
//! request (the previous response body finished); closed ones are dropped on the way.
//!
//! A request that hyper hands back unsent (the upstream closed an idle keep-alive
//! connection just as we picked it) is retried once on a fresh connection.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::LimitedBody;

/// Why getting a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// TCP, TLS or HTTP handshake failed.
    Unreachable,
    TimedOut,
}

/// Where and how to connect.
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Present for `https` upstreams.
    pub tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    pub connect_timeout: Duration,
}

struct Pooled {
    sender: http1::SendRequest<LimitedBody>,
    last_used: Instant,
}

/// The connections of one upstream on one worker.
pub struct Pool {
    target: Target,
    conns: Mutex<Vec<Pooled>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// Open connections (idle or busy) are capped; a request waits for a free one within
    /// its request timeout.
    open: Arc<tokio::sync::Semaphore>,
}

/// The outcome of sending on a pooled connection.
pub enum SendError {
    Connect(ConnectFailure),
    /// hyper's error from the exchange.
    Exchange(hyper::Error),
}

impl Pool {
    pub fn new(
        target: Target,
        max_idle: usize,
        idle_timeout: Duration,
        max_connections: usize,
    ) -> Pool {
        Pool {
            target,
            conns: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            open: Arc::new(tokio::sync::Semaphore::new(max_connections.max(1))),
        }
    }

    /// A connection ready for a request, if one is idle.
    fn checkout(&self) -> Option<http1::SendRequest<LimitedBody>> {
        let mut conns = self.conns.lock().ok()?;
        let now = Instant::now();
        let idle_timeout = self.idle_timeout;
        conns.retain(|c| {
            !c.sender.is_closed()
                && (!c.sender.is_ready() || now.duration_since(c.last_used) < idle_timeout)
        });
        let i = conns.iter().position(|c| c.sender.is_ready())?;
        Some(conns.swap_remove(i).sender)
    }

    /// Keeps a connection (busy until its response body ends) for later requests.
    fn checkin(&self, sender: http1::SendRequest<LimitedBody>) {
        if let Ok(mut conns) = self.conns.lock()
            && conns.len() < self.max_idle
        {
            conns.push(Pooled {
                sender,
                last_used: Instant::now(),
            });
        }
        // Otherwise the sender is dropped: the connection closes after its response.
    }

    /// A ready pooled connection or, while under the cap, a new one. At the cap it waits
    /// (within the caller's request timeout) for a connection to become ready or close.
    async fn acquire(
        &self,
        allow_reuse: bool,
    ) -> Result<(http1::SendRequest<LimitedBody>, bool), ConnectFailure> {
        loop {
            if allow_reuse && let Some(s) = self.checkout() {
                return Ok((s, true));
            }
            if let Ok(permit) = self.open.clone().try_acquire_owned() {
                // Boxed: a TLS handshake's future is large, and the future of every
                // request (a reused connection's too) would carry its size.
                return Box::pin(self.connect(permit)).await.map(|s| (s, false));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn connect(
        &self,
        // Held by the connection's task: released when the connection closes.
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<http1::SendRequest<LimitedBody>, ConnectFailure> {
        let t = &self.target;
        let connect = async {
            let tcp = TcpStream::connect((t.host.as_str(), t.port))
                .await
                .map_err(|_| ConnectFailure::Unreachable)?;
            let _ = tcp.set_nodelay(true);
            match &t.tls {
                None => handshake(tcp, permit).await,
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|_| ConnectFailure::Unreachable)?;
                    handshake(tls, permit).await
                }
            }
        };
        tokio::time::timeout(t.connect_timeout, connect)
            .await
            .map_err(|_| ConnectFailure::TimedOut)?
    }

    /// Sends `req` on a pooled or new connection and returns the response head.
    pub async fn send(&self, req: Request<LimitedBody>) -> Result<Response<Incoming>, SendError> {
        let mut req = req;
        // At most one retry, and only for a request hyper did not send.
        for attempt in 0..2 {
            let (mut sender, was_reused) = self
                .acquire(attempt == 0)
                .await
                .map_err(SendError::Connect)?;
            let sent = sender.try_send_request(req).await;
            match sent {
                Ok(resp) => {
                    self.checkin(sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if was_reused => req = unsent,
                    _ => return Err(SendError::Exchange(e.into_error())),
                },
            }
        }
        Err(SendError::Connect(ConnectFailure::Unreachable))
    }
}

async fn handshake<S>(
    io: S,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<http1::SendRequest<LimitedBody>, ConnectFailure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|_| ConnectFailure::Unreachable)?;
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// Shared form for the places that keep a pool behind an `Arc`.
pub type SharedPool = Arc<Pool>;
