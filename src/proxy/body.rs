//! Body types of the request path. [`LimitedBody`] streams the client's body to the
//! upstream and fails the stream once it passes the route's limit (so a 1 GiB upload
//! passes with flat memory, and an oversized chunked upload is cut off). [`GatewayBody`]
//! is what the client receives: the upstream's streamed body or a page the gateway made,
//! and it carries the access record that is logged when the body is finished or dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::BoxError;

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

pin_project! {
    /// The client's request body, limited to `limit` bytes while streaming (or a body the
    /// gateway already read, sent as it is).
    pub struct LimitedBody {
        #[pin]
        inner: Option<Incoming>,
        buffered: Option<Bytes>,
        limit: u64,
        seen: u64,
        over_limit: Arc<AtomicBool>,
    }
}

impl LimitedBody {
    pub fn new(inner: Incoming, limit: u64) -> LimitedBody {
        LimitedBody {
            inner: Some(inner),
            buffered: None,
            limit,
            seen: 0,
            over_limit: Arc::new(AtomicBool::new(false)),
        }
    }

    /// An empty body (for requests the gateway makes itself).
    pub fn empty() -> LimitedBody {
        LimitedBody {
            inner: None,
            buffered: None,
            limit: 0,
            seen: 0,
            over_limit: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A body the gateway read (within its limit) before forwarding it.
    pub fn buffered(data: Bytes) -> LimitedBody {
        LimitedBody {
            inner: None,
            limit: data.len() as u64,
            buffered: (!data.is_empty()).then_some(data),
            seen: 0,
            over_limit: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set once the limit is passed; the forwarder reads it to tell 413 from 502.
    pub fn over_limit_flag(&self) -> Arc<AtomicBool> {
        self.over_limit.clone()
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(data) = this.buffered.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(None);
        };
        match ready!(inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                let Some(data) = frame.data_ref() else {
                    // Client trailers are not forwarded: they could carry identity-prefixed
                    // fields past the header filter. The body ends here.
                    return Poll::Ready(None);
                };
                *this.seen += data.len() as u64;
                if *this.seen > *this.limit {
                    this.over_limit.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*this.limit)))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_none() && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(b) = &self.buffered {
            return SizeHint::with_exact(b.len() as u64);
        }
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// How fast a body the gateway reads itself (a login form, a SAML answer, a form it must
/// inspect) must arrive: within `timeout`, extended by one second for every `min_rate`
/// bytes received, never beyond `max` (Apache mod_reqtimeout's `body=timeout-max,
/// MinRate=min_rate`). A client trickling bytes cannot hold a connection, or a place in
/// `max_connections`, for longer than that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRate {
    pub timeout: std::time::Duration,
    pub max: std::time::Duration,
    /// Bytes per second; at least 1.
    pub min_rate: u64,
}

impl ReadRate {
    /// The time allowed, from the start of the read, once `received` bytes arrived.
    pub fn allowed(&self, received: u64) -> std::time::Duration {
        let extra =
            std::time::Duration::from_secs_f64(received as f64 / self.min_rate.max(1) as f64);
        (self.timeout + extra).min(self.max)
    }
}

/// Why a body could not be read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body arrived too slowly")]
    TooSlow,
    #[error("the body stream failed")]
    Broken,
}

/// Reads `body` whole, at most `limit` bytes, at the pace `rate` demands. Trailers end it.
pub async fn read_whole<B>(body: B, limit: usize, rate: ReadRate) -> Result<Bytes, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt as _;
    if body.size_hint().lower() > limit as u64 {
        return Err(ReadError::TooLarge(limit));
    }
    let start = tokio::time::Instant::now();
    let mut body = body;
    let mut out = bytes::BytesMut::new();
    loop {
        let deadline = start + rate.allowed(out.len() as u64);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ReadError::TooSlow),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(ReadError::Broken),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            break;
        };
        if out.len() + data.len() > limit {
            return Err(ReadError::TooLarge(limit));
        }
        out.extend_from_slice(&data);
    }
    Ok(out.freeze())
}

/// Called once when a response body is finished or dropped, with the bytes sent.
pub trait OnBodyEnd: Send + Sync + 'static {
    fn finished(&mut self, bytes: u64, complete: bool);
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Upstream { #[pin] body: Incoming },
        Full { data: Option<Bytes> },
    }
}

pin_project! {
    /// The response body sent to the client.
    pub struct GatewayBody {
        #[pin]
        kind: Kind,
        bytes: u64,
        complete: bool,
        on_end: Option<Box<dyn OnBodyEnd>>,
    }

    impl PinnedDrop for GatewayBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(mut on_end) = this.on_end.take() {
                let ended = *this.complete || this.kind.ended();
                on_end.finished(*this.bytes, ended);
            }
        }
    }
}

impl Kind {
    fn ended(&self) -> bool {
        match self {
            Kind::Upstream { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }
}

impl GatewayBody {
    pub fn upstream(body: Incoming) -> GatewayBody {
        GatewayBody {
            kind: Kind::Upstream { body },
            bytes: 0,
            complete: false,
            on_end: None,
        }
    }

    pub fn full(data: impl Into<Bytes>) -> GatewayBody {
        let data: Bytes = data.into();
        GatewayBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
            bytes: 0,
            complete: false,
            on_end: None,
        }
    }

    pub fn empty() -> GatewayBody {
        GatewayBody::full(Bytes::new())
    }

    pub fn with_on_end(mut self, on_end: Box<dyn OnBodyEnd>) -> GatewayBody {
        self.on_end = Some(on_end);
        self
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = match this.kind.project() {
            KindProj::Upstream { body } => match ready!(body.poll_frame(cx)) {
                Some(Ok(f)) => Some(Ok(f)),
                Some(Err(e)) => Some(Err(Box::new(e) as BoxError)),
                None => None,
            },
            KindProj::Full { data } => data.take().map(|d| Ok(Frame::data(d))),
        };
        match &frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    *this.bytes += d.len() as u64;
                }
            }
            None => *this.complete = true,
            Some(Err(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.kind.ended()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_allowed_time_grows_with_the_bytes_up_to_the_maximum() {
        let r = ReadRate {
            timeout: Duration::from_secs(10),
            max: Duration::from_secs(30),
            min_rate: 500,
        };
        assert_eq!(r.allowed(0), Duration::from_secs(10));
        assert_eq!(r.allowed(5_000), Duration::from_secs(20));
        assert_eq!(r.allowed(400_000), Duration::from_secs(30));
    }

    type Frames = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>> + Send>,
    >;

    /// A body of `chunks` frames, one every `gap`.
    fn trickle(chunks: usize, size: usize, gap: Duration) -> http_body_util::StreamBody<Frames> {
        let s = futures_util::stream::unfold(0usize, move |i| async move {
            if i == chunks {
                return None;
            }
            tokio::time::sleep(gap).await;
            Some((Ok(Frame::data(Bytes::from(vec![b'a'; size]))), i + 1))
        });
        http_body_util::StreamBody::new(Box::pin(s))
    }

    #[tokio::test]
    async fn slow_bodies_are_cut_and_fast_ones_read() {
        let rate = ReadRate {
            timeout: Duration::from_millis(200),
            max: Duration::from_millis(600),
            min_rate: 100,
        };
        // One byte every 500 ms: cut at the initial timeout.
        let start = tokio::time::Instant::now();
        let r = read_whole(trickle(10, 1, Duration::from_millis(500)), 1000, rate).await;
        assert_eq!(r, Err(ReadError::TooSlow));
        assert!(
            start.elapsed() < Duration::from_millis(450),
            "{:?}",
            start.elapsed()
        );
        // Fast enough per byte but endless: cut at the maximum.
        let start = tokio::time::Instant::now();
        let r = read_whole(
            trickle(1000, 50, Duration::from_millis(10)),
            1_000_000,
            rate,
        )
        .await;
        assert_eq!(r, Err(ReadError::TooSlow));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(600) && took < Duration::from_secs(3),
            "{took:?}"
        );
        // A normal body.
        let r = read_whole(trickle(4, 100, Duration::from_millis(10)), 1000, rate).await;
        assert_eq!(r.unwrap().len(), 400);
        // Too large.
        let r = read_whole(trickle(4, 100, Duration::from_millis(10)), 300, rate).await;
        assert_eq!(r, Err(ReadError::TooLarge(300)));
    }
}
