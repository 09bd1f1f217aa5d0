use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use breakwater_core::{Outcome, OwnedPermit};
use http::Response;
use pin_project_lite::pin_project;
use tower_http::classify::{ClassifiedResponse, ClassifyResponse};

use super::body::{ResponseBody, Tracker};
use super::on_open::OnOpen;
use crate::classify::WatchEos;
use crate::error::CircuitOpen;

pin_project! {
    /// Response future of [`CircuitBreakerService`](super::CircuitBreakerService).
    pub struct ResponseFuture<F, C: ClassifyResponse, O> {
        #[pin]
        state: State<F, C>,
        _on_open: PhantomData<fn() -> O>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, C: ClassifyResponse> {
        Called {
            #[pin]
            future: F,
            classifier: Option<C>,
            permit: Option<OwnedPermit>,
        },
        Rejected {
            open: Option<CircuitOpen>,
            grpc: bool,
        },
    }
}

impl<F, C: ClassifyResponse, O> ResponseFuture<F, C, O> {
    #[inline(always)]
    pub(crate) fn called(future: F, classifier: C, permit: OwnedPermit) -> Self {
        Self {
            state: State::Called {
                future,
                classifier: Some(classifier),
                permit: Some(permit),
            },
            _on_open: PhantomData,
        }
    }

    pub(crate) fn rejected(open: CircuitOpen, grpc: bool) -> Self {
        Self {
            state: State::Rejected {
                open: Some(open),
                grpc,
            },
            _on_open: PhantomData,
        }
    }
}

impl<F, C, O> std::fmt::Debug for ResponseFuture<F, C, O>
where
    C: ClassifyResponse,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, C, O, B, E> Future for ResponseFuture<F, C, O>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: ClassifyResponse<ClassifyEos: WatchEos>,
    O: OnOpen<E, B, C::ClassifyEos>,
{
    type Output = Result<Response<O::Body>, O::Error>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Rejected { open, grpc } => {
                let open = open.take().expect("polled after completion");
                Poll::Ready(O::rejected(open, *grpc))
            }
            StateProj::Called {
                future,
                classifier,
                permit,
            } => {
                let done = "polled after completion";
                let result = ready!(future.poll(cx));
                let tracker = match &result {
                    Ok(res) => settle(
                        permit.take().expect(done),
                        classifier.take().expect(done),
                        res,
                    ),
                    Err(_) => None,
                };
                Poll::Ready(match result {
                    Ok(res) => Ok(match tracker {
                        None => res.map(O::plain),
                        Some(t) => res.map(|b| O::watched(ResponseBody::tracked(b, t))),
                    }),
                    Err(e) => Err(failed::<O, E, B, C::ClassifyEos>(
                        permit.take().expect(done),
                        e,
                    )),
                })
            }
        }
    }
}

/// Records the outcome of a response whose outcome is known at its head, or hands back the
/// tracker that will record it at the end of the body.
#[inline(always)]
fn settle<C: ClassifyResponse<ClassifyEos: WatchEos>, B>(
    permit: OwnedPermit,
    classifier: C,
    res: &Response<B>,
) -> Option<Tracker<C::ClassifyEos>> {
    // An inner breaker's rejection is not this breaker's failure.
    if CircuitOpen::in_response(res).is_some() {
        permit.ignore();
        return None;
    }
    match classifier.classify_response(res) {
        ClassifiedResponse::Ready(verdict) => {
            permit.record(outcome(verdict.is_ok()));
            None
        }
        ClassifiedResponse::RequiresEos(eos) => {
            if let Some(ok) = eos.head_verdict()
                && !permit.is_timed()
            {
                // Known at the head, and nothing to time: recorded now.
                permit.record(outcome(ok));
                return None;
            }
            let head = if eos.to_end() { None } else { permit.elapsed() };
            Some(Tracker { permit, eos, head })
        }
    }
}

/// A success when `ok`, otherwise a failure.
#[inline(always)]
pub(crate) fn outcome(ok: bool) -> Outcome {
    if ok {
        Outcome::Success
    } else {
        Outcome::Failure
    }
}

/// The inner service failed: a failure, unless it was an inner breaker's rejection.
#[cold]
fn failed<O: OnOpen<E, B, C>, E, B, C>(permit: OwnedPermit, e: E) -> O::Error {
    let (error, inner_open) = O::error(e);
    if inner_open {
        permit.ignore();
    } else {
        permit.record(Outcome::Failure);
    }
    error
}
