use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower_service::Service;

use super::body::FallbackBody;
use super::cache::{Cached, StaleCache};
use super::future::{Ctx, ResponseFuture};
use super::strategy::{BoxFuture, Kept, NoReplay, Saved, Shared};
use crate::circuit_breaker::is_grpc;
use crate::error::BoxError;

/// Request bodies are not buffered: only requests without a body can fail over to a backup
/// (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBodyReplay;

/// Request bodies of a known size up to a limit are buffered before the call, so any request
/// within it can fail over to a backup; larger or streamed bodies pass through unbuffered. See
/// [`FallbackLayer::replay_bodies`](super::FallbackLayer::replay_bodies).
#[derive(Debug, Clone, Copy)]
pub struct ReplayBodies {
    pub(crate) limit: usize,
}

/// Middleware that answers for a failed or refused dependency; see
/// [`FallbackLayer`](super::FallbackLayer).
#[must_use]
pub struct FallbackService<S, R = NoBodyReplay> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
    pub(crate) replay: R,
    /// The inner service's `poll_ready` failed: the next call answers from this error.
    pub(crate) not_ready: Option<BoxError>,
}

impl<S: Clone, R: Clone> Clone for FallbackService<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            replay: self.replay.clone(),
            not_ready: None,
        }
    }
}

impl<S: std::fmt::Debug, R: std::fmt::Debug> std::fmt::Debug for FallbackService<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackService")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

impl<S, R> FallbackService<S, R> {
    define_inner_service_accessors!();

    #[inline]
    fn poll_inner<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        if self.not_ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            // Ready to answer: the call gets a fallback (or the error's answer).
            Poll::Ready(Err(e)) => self.store_not_ready(e.into()),
        }
    }

    #[cold]
    fn store_not_ready(&mut self, e: BoxError) -> Poll<Result<(), Infallible>> {
        self.not_ready = Some(e);
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn ctx(&self, saved: Option<Saved>, grpc: bool) -> Ctx {
        Ctx {
            shared: self.shared.clone(),
            saved,
            grpc,
        }
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn is_empty<B: Body>(body: &B) -> bool {
    body.is_end_stream() || body.size_hint().exact() == Some(0)
}

impl Shared {
    /// Whether keeping what the strategies need splits the request: a strategy keeps its head
    /// (function, backup), or the cache's key function reads it. Else the cache key is read in
    /// place.
    #[inline]
    fn splits(&self) -> bool {
        self.keep_parts || self.stale.as_ref().is_some_and(StaleCache::has_key_fn)
    }
}

/// What the stale cache needs after the call, read from the request in place (when the
/// request is not split: [`Shared::splits`]).
#[inline]
fn saved_in_place<B>(shared: &Shared, req: &Request<B>) -> Saved {
    let cached = (shared.stale.as_ref()).and_then(|c| c.look_up(req.method(), req.uri()));
    saved(cached, req.headers(), None)
}

/// What the strategies need after the call, the request split for it. `replay` is the
/// buffered body, or why there is none; `None` when the body was not looked at (then only an
/// empty one replays).
fn prepare_split<B: Body>(
    shared: &Shared,
    req: Request<B>,
    replay: Option<Result<Bytes, NoReplay>>,
) -> (Request<B>, Saved) {
    let (parts, body) = req.into_parts();
    let cached = shared.stale.as_ref().and_then(|c| c.look_up_parts(&parts));
    let replay = shared.has_backup().then(|| match replay {
        Some(r) => r,
        None if !is_empty(&body) => Err(NoReplay::BodyNotBuffered),
        None if is_idempotent(&parts.method) => Ok(Bytes::new()),
        None => Err(NoReplay::NotIdempotent),
    });
    let kept = shared.keep_parts.then(|| {
        Box::new(Kept {
            parts: parts.clone(),
            replay,
        })
    });
    let saved = saved(cached, &parts.headers, kept);
    (Request::from_parts(parts, body), saved)
}

/// What a call keeps (whether the request carried credentials only when its answer is to be
/// recorded).
fn saved(mut cached: Option<Cached>, headers: &http::HeaderMap, kept: Option<Box<Kept>>) -> Saved {
    if let Some(record) = cached.as_mut().and_then(|c| c.record.as_mut()) {
        record.authorized = headers.contains_key(header::AUTHORIZATION);
    }
    Saved { cached, kept }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for FallbackService<S, NoBodyReplay>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ReqBody: Body,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<FallbackBody<ResBody>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.poll_inner::<Request<ReqBody>>(cx)
    }

    #[inline(always)]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let grpc = is_grpc(&req);
        if self.not_ready.is_none() && !self.shared.saves() {
            // The common case: nothing to keep, the request goes straight in.
            return ResponseFuture::new(self.inner.call(req), self.ctx(None, grpc));
        }
        let shared = &*self.shared;
        let mut req = req;
        // Read in place, the request stays where it is (moving it is a copy).
        let saved = match shared.saves() {
            false => None,
            true if shared.splits() => {
                let (split, saved) = prepare_split(shared, req, None);
                req = split;
                Some(saved)
            }
            true => Some(saved_in_place(shared, &req)),
        };
        if let Some(e) = self.not_ready.take() {
            return ResponseFuture::not_ready(e, self.ctx(saved, grpc));
        }
        let future = self.inner.call(req);
        ResponseFuture::new(future, self.ctx(saved, grpc))
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for FallbackService<S, ReplayBodies>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ReqBody: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<FallbackBody<ResBody>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<FallbackBody<ResBody>>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.poll_inner::<Request<ReqBody>>(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The ready service goes with the future, which calls it once the body is in.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let not_ready = self.not_ready.take();
        let ctx = self.ctx(None, is_grpc(&req));
        let limit = self.replay.limit;
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let (body, replay) = if is_empty(&body) {
                (body, None)
            } else if body.size_hint().upper().is_some_and(|n| n <= limit as u64) {
                match Limited::new(body, limit).collect().await {
                    Ok(collected) => {
                        let bytes = collected.to_bytes();
                        (ReqBody::from(bytes.clone()), Some(Ok(bytes)))
                    }
                    Err(e) => {
                        // The caller's own body failed: 400, the dependency untouched.
                        let message = format!("the request body could not be read: {e}");
                        let res = crate::answer::unreadable_body(&message, ctx.grpc);
                        return Ok(res.map(FallbackBody::full));
                    }
                }
            } else {
                (body, Some(Err(NoReplay::BodyTooLarge(limit))))
            };
            let req = Request::from_parts(parts, body);
            let (req, saved) = match ctx.shared.saves() {
                false => (req, None),
                true => {
                    let (req, saved) = prepare_split(&ctx.shared, req, replay);
                    (req, Some(saved))
                }
            };
            let ctx = Ctx { saved, ..ctx };
            match not_ready {
                Some(e) => ResponseFuture::<S::Future, _>::not_ready(e, ctx).await,
                None => ResponseFuture::new(inner.call(req), ctx).await,
            }
        })
    }
}
