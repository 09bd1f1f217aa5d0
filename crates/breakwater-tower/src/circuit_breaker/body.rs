use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use breakwater_core::{Outcome, OwnedPermit};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_http::classify::ClassifyEos;

use super::future::outcome;

/// Records the outcome when the stream ends: the end-of-stream classifier's verdict, or failure
/// if the body errors. Dropped unfinished (the caller stopped reading), it records nothing.
pub(crate) struct Tracker<C> {
    pub(crate) permit: OwnedPermit,
    pub(crate) eos: C,
    /// Time to the response head, when the call is timed to the head.
    pub(crate) head: Option<Duration>,
}

impl<C: ClassifyEos> Tracker<C> {
    /// The stream ended (with `trailers`, if any): the end-of-stream classifier decides.
    fn end(self, trailers: Option<&HeaderMap>) {
        let Tracker { permit, eos, head } = self;
        record(permit, head, outcome(eos.classify_eos(trailers).is_ok()));
    }

    fn fail(self) {
        record(self.permit, self.head, Outcome::Failure);
    }
}

fn record(permit: OwnedPermit, head: Option<Duration>, outcome: Outcome) {
    match head {
        Some(d) => permit.record_with_duration(outcome, d),
        None => permit.record(outcome),
    }
}

pin_project! {
    /// Response body of [`CircuitBreakerService`](super::CircuitBreakerService): the inner body,
    /// watched to its end when the outcome is only known then (e.g. gRPC trailers), or the body
    /// of a rejection.
    pub struct ResponseBody<B, C> {
        #[pin]
        kind: Kind<B, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B, C> {
        Inner {
            #[pin]
            body: B,
            tracker: Option<Tracker<C>>,
        },
        Full {
            data: Option<Bytes>,
        },
    }
}

impl<B, C> ResponseBody<B, C> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner {
                body,
                tracker: None,
            },
        }
    }

    pub(crate) fn tracked(body: B, tracker: Tracker<C>) -> Self {
        Self {
            kind: Kind::Inner {
                body,
                tracker: Some(tracker),
            },
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

impl<B, C> std::fmt::Debug for ResponseBody<B, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { tracker, .. } if tracker.is_some() => "tracked",
            Kind::Inner { .. } => "inner",
            Kind::Full { .. } => "full",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}

impl<B, C> Body for ResponseBody<B, C>
where
    B: Body<Data = Bytes>,
    C: ClassifyEos,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Inner { body, tracker } => {
                let frame = ready!(body.poll_frame(cx));
                match &frame {
                    Some(Ok(f)) => {
                        if let Some(trailers) = f.trailers_ref()
                            && let Some(t) = tracker.take()
                        {
                            t.end(Some(trailers));
                        }
                    }
                    Some(Err(_)) => {
                        if let Some(t) = tracker.take() {
                            t.fail();
                        }
                    }
                    None => {
                        if let Some(t) = tracker.take() {
                            t.end(None);
                        }
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            // While the outcome is pending, ask to be polled to the end.
            Kind::Inner { body, tracker } => tracker.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Inner { body, .. } => body.size_hint(),
        }
    }
}
