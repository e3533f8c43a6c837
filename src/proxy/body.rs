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
    /// The client's request body, limited to `limit` bytes while streaming.
    pub struct LimitedBody {
        #[pin]
        inner: Option<Incoming>,
        limit: u64,
        seen: u64,
        over_limit: Arc<AtomicBool>,
    }
}

impl LimitedBody {
    pub fn new(inner: Incoming, limit: u64) -> LimitedBody {
        LimitedBody {
            inner: Some(inner),
            limit,
            seen: 0,
            over_limit: Arc::new(AtomicBool::new(false)),
        }
    }

    /// An empty body (for requests the gateway makes itself).
    pub fn empty() -> LimitedBody {
        LimitedBody {
            inner: None,
            limit: 0,
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
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
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
