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
use crate::admission::Refusal;
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
            // Whether an error is answered in gRPC's form (server forms only).
            grpc: bool,
        },
        // Refused, or made after the inner service failed to get ready (server forms).
        Rejected {
            refusal: Option<Refusal>,
            grpc: bool,
        },
    }
}

impl<F, C: ClassifyResponse, O> ResponseFuture<F, C, O> {
    #[inline(always)]
    pub(crate) fn called(future: F, classifier: C, permit: OwnedPermit, grpc: bool) -> Self {
        Self {
            state: State::Called {
                future,
                classifier: Some(classifier),
                permit: Some(permit),
                grpc,
            },
            _on_open: PhantomData,
        }
    }

    pub(crate) fn rejected(refusal: Refusal, grpc: bool) -> Self {
        Self {
            state: State::Rejected {
                refusal: Some(refusal),
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
            StateProj::Rejected { refusal, grpc } => {
                Poll::Ready(match refusal.take().expect("polled after completion") {
                    Refusal::Open(open) => {
                        // Recorded when polled, after every layer's `call`: the refusing
                        // breaker's name is the one the span keeps.
                        crate::span::refused(open.name(), open.state().as_str());
                        O::rejected(open, *grpc)
                    }
                    Refusal::Broken(error) => O::broken(error, *grpc),
                })
            }
            StateProj::Called {
                future,
                classifier,
                permit,
                grpc,
            } => {
                let done = "polled after completion";
                let res = match ready!(future.poll(cx)) {
                    Ok(res) => res,
                    Err(e) => {
                        let permit = permit.take().expect(done);
                        return Poll::Ready(failed::<O, E, B, C::ClassifyEos>(permit, e, *grpc));
                    }
                };
                let tracker = settle(
                    permit.take().expect(done),
                    classifier.take().expect(done),
                    &res,
                    // The client form does not tell gRPC calls apart: any answer is looked at.
                    *grpc || !O::ANSWERS,
                );
                Poll::Ready(Ok(match tracker {
                    None => res.map(O::plain),
                    Some(t) => res.map(|b| O::watched(ResponseBody::tracked(b, t))),
                }))
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
    grpc: bool,
) -> Option<Tracker<C::ClassifyEos>> {
    // An inner breaker's rejection is not this breaker's failure.
    if CircuitOpen::may_be_in(res, grpc) && CircuitOpen::in_response(res).is_some() {
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
#[inline(never)]
fn failed<O: OnOpen<E, B, C>, E, B, C>(
    permit: OwnedPermit,
    e: E,
    grpc: bool,
) -> Result<Response<O::Body>, O::Error> {
    let (result, inner_open) = O::error(e, grpc);
    if inner_open {
        permit.ignore();
    } else {
        permit.record(Outcome::Failure);
    }
    result
}
