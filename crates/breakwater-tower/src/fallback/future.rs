use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Response, StatusCode};
use pin_project_lite::pin_project;

use super::body::{FallbackBody, Recorder};
use super::cache::{Record, StaleCache};
use super::strategy::{self, Attempt, BoxFuture, Failure, FailureKind, Saved, Shared};
use crate::answer::AnsweredError;
use crate::error::{BoxError, CircuitOpen};

/// What a call carries to its fallbacks.
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) saved: Option<Saved>,
    pub(crate) grpc: bool,
}

pin_project! {
    /// Response future of [`FallbackService`](super::FallbackService).
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Primary {
            #[pin]
            future: F,
            ctx: Option<Ctx>,
        },
        // The inner service failed in `poll_ready`: it was not called.
        NotReady {
            error: Option<BoxError>,
            ctx: Option<Ctx>,
        },
        Fallback {
            future: BoxFuture<Response<FallbackBody<B>>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    #[inline(always)]
    pub(crate) fn new(future: F, ctx: Ctx) -> Self {
        Self {
            state: State::Primary {
                future,
                ctx: Some(ctx),
            },
        }
    }

    pub(crate) fn not_ready(error: BoxError, ctx: Ctx) -> Self {
        Self {
            state: State::NotReady {
                error: Some(error),
                ctx: Some(ctx),
            },
        }
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// What the primary's result calls for.
enum Verdict<B> {
    Answer(Response<FallbackBody<B>>),
    Fallback(Attempt<B>),
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
{
    type Output = Result<Response<FallbackBody<B>>, Infallible>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        const DONE: &str = "polled after completion";
        loop {
            let verdict = match self.as_mut().project().state.project() {
                StateProj::Fallback { future } => return future.as_mut().poll(cx).map(Ok),
                StateProj::Primary { future, ctx } => match ready!(future.poll(cx)) {
                    // A good answer with nothing to record and no marks to look for. (`ctx`
                    // stays with the future: dropped here, it would cost a call.)
                    Ok(res)
                        if ctx.as_ref().is_some_and(|c| {
                            c.saved.is_none()
                                && res.extensions().is_empty()
                                && c.shared.passes_status(res.status())
                        }) =>
                    {
                        return Poll::Ready(Ok(res.map(FallbackBody::inner)));
                    }
                    // Any other good answer (a stale cache's, a hyper client's), judged where
                    // it is and moved once.
                    Ok(res) => match ctx {
                        Some(c) if is_good(&res, c) => return Poll::Ready(Ok(success(res, c))),
                        _ => judge_slow(res, ctx.take().expect(DONE)),
                    },
                    Err(e) => failed(e.into(), ctx.take().expect(DONE)),
                },
                StateProj::NotReady { error, ctx } => {
                    let ctx = ctx.take().expect(DONE);
                    failed(error.take().expect(DONE), ctx)
                }
            };
            match verdict {
                Verdict::Answer(res) => return Poll::Ready(Ok(res)),
                Verdict::Fallback(attempt) => {
                    let future = Box::pin(strategy::run(attempt));
                    self.as_mut()
                        .project()
                        .state
                        .set(State::Fallback { future });
                }
            }
        }
    }
}

/// Whether `res` is the answer as it is: no mark of a refusal or of an answered error (looked
/// for only where one can be, see `CircuitOpen::may_be_in`), and a status the fallback passes.
#[inline(always)]
fn is_good<B>(res: &Response<B>, ctx: &Ctx) -> bool {
    let ext = res.extensions();
    let marked = CircuitOpen::may_be_in(res, ctx.grpc)
        && !ext.is_empty()
        && (ext.get::<CircuitOpen>().is_some() || ext.get::<AnsweredError>().is_some());
    !marked && ctx.shared.passes_status(res.status())
}

#[cold]
fn judge_slow<B>(res: Response<B>, mut ctx: Ctx) -> Verdict<B> {
    let status = res.status();
    if let Some(open) = CircuitOpen::in_response(&res) {
        let failure = Failure::open(open.clone(), Some(status));
        return fallback(failure, Some(res), ctx);
    }
    let shared = &ctx.shared;
    if let Some(answered) = res.extensions().get::<AnsweredError>() {
        // A server-side breaker answered its inner service's error: the failure it was.
        let (kind, applies) = if answered.timeout {
            (FailureKind::Timeout, shared.on_timeouts || shared.on_errors)
        } else {
            (FailureKind::Error, shared.on_errors)
        };
        if applies {
            let failure = Failure::from_error(kind, answered.message.to_string().into());
            return fallback(failure, Some(res), ctx);
        }
    }
    let timeout_status =
        status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::GATEWAY_TIMEOUT;
    if shared.on_timeouts && timeout_status {
        return fallback(
            Failure::response(FailureKind::Timeout, status),
            Some(res),
            ctx,
        );
    }
    if let Some(classifier) = shared.failed_responses
        && super::is_failed_response(classifier, &res)
    {
        let failure = Failure::response(FailureKind::FailedResponse, status);
        return fallback(failure, Some(res), ctx);
    }
    Verdict::Answer(success(res, &mut ctx))
}

/// The answer as it is, its body recorded for the stale cache when it is to be kept.
#[inline(always)]
fn success<B>(res: Response<B>, ctx: &mut Ctx) -> Response<FallbackBody<B>> {
    if let Some(saved) = ctx.saved.take()
        && let Some(record) = saved.cached.and_then(|c| c.record)
        && let Some(cache) = &ctx.shared.stale
        && cache.admits(&res, record.authorized)
    {
        return recorded(res, cache, *record);
    }
    res.map(FallbackBody::inner)
}

/// The answer, its body copied into the stale cache as it streams past.
#[inline(never)]
fn recorded<B>(res: Response<B>, cache: &StaleCache, record: Record) -> Response<FallbackBody<B>> {
    let recorder = Box::new(Recorder {
        cache: cache.clone(),
        key: record.key,
        status: res.status(),
        version: res.version(),
        headers: res.headers().clone(),
        chunks: Vec::new(),
        size: 0,
    });
    res.map(|b| FallbackBody::recorded(b, recorder))
}

/// The inner service failed with `error`.
#[cold]
fn failed<B>(error: BoxError, ctx: Ctx) -> Verdict<B> {
    if let Some(open) = CircuitOpen::in_error(&*error) {
        return fallback(Failure::open(open.clone(), None), None, ctx);
    }
    let shared = &ctx.shared;
    let (kind, applies) = if crate::answer::is_timeout(&*error) {
        (FailureKind::Timeout, shared.on_timeouts || shared.on_errors)
    } else {
        (FailureKind::Error, shared.on_errors)
    };
    let failure = Failure::from_error(kind, error);
    if applies {
        fallback(failure, None, ctx)
    } else {
        shared.stats_unanswered();
        Verdict::Answer(strategy::default_answer(failure, None, ctx.grpc, &[]))
    }
}

fn fallback<B>(failure: Failure, original: Option<Response<B>>, ctx: Ctx) -> Verdict<B> {
    let Ctx {
        shared,
        saved,
        grpc,
    } = ctx;
    Verdict::Fallback(Attempt {
        shared,
        failure,
        saved,
        grpc,
        original,
    })
}
