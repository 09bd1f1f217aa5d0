//! A circuit breaker for any tower [`Service`], judged by its `Result`: `Ok` is a success, an
//! error a failure (or whatever a classifier says). For services that do not speak HTTP (a
//! database client, a queue producer); HTTP and gRPC services get status-aware classification
//! from [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
//!
//! # Example
//!
//! ```
//! use breakwater::{CircuitBreaker, Config};
//! use breakwater::tower::{CircuitOpen, ResultBreakerLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let breaker = CircuitBreaker::new("db", Config::builder().consecutive_failures(1).build().unwrap());
//! let svc = ServiceBuilder::new()
//!     .layer(ResultBreakerLayer::new(breaker))
//!     .service_fn(|_query: &'static str| async { Err::<u32, _>("connection refused") });
//!
//! let first = svc.clone().oneshot("select 1").await.unwrap_err();
//! assert_eq!(first.to_string(), "connection refused");
//! let second = svc.clone().oneshot("select 1").await.unwrap_err();
//! assert!(second.is::<CircuitOpen>());
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use breakwater_core::{CircuitBreaker, Outcome, OwnedPermit};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::admission::{Admission, Refusal, permit_of};
use crate::error::{BoxError, CircuitOpen};

/// Decides the outcome of a result: `Ok` → success, an inner circuit's rejection → ignored, any
/// other error → failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAsFailures;

/// Decides the [`Outcome`] of a call from its result.
pub trait ClassifyResult<T>: Clone {
    /// The outcome of `result`.
    fn classify(&self, result: &Result<T, BoxError>) -> Outcome;
}

impl<T> ClassifyResult<T> for ErrorsAsFailures {
    #[inline]
    fn classify(&self, result: &Result<T, BoxError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) if CircuitOpen::in_error(&**e).is_some() => Outcome::Ignored,
            Err(_) => Outcome::Failure,
        }
    }
}

impl<T, F> ClassifyResult<T> for F
where
    F: Fn(&Result<T, BoxError>) -> Outcome + Clone,
{
    fn classify(&self, result: &Result<T, BoxError>) -> Outcome {
        self(result)
    }
}

/// Layer that applies [`ResultBreaker`]. See the [module docs](crate::result).
#[derive(Debug, Clone)]
#[must_use]
pub struct ResultBreakerLayer<C = ErrorsAsFailures> {
    breaker: CircuitBreaker,
    classify: C,
}

impl ResultBreakerLayer {
    /// Every call goes through `breaker`; errors are failures.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classify: ErrorsAsFailures,
        }
    }
}

impl<C> ResultBreakerLayer<C> {
    /// Decides outcomes with `classify` (e.g. to ignore some errors).
    pub fn classify<C2>(self, classify: C2) -> ResultBreakerLayer<C2> {
        ResultBreakerLayer {
            breaker: self.breaker,
            classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for ResultBreakerLayer<C> {
    type Service = ResultBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ResultBreaker {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
            admission: Admission::new(),
        }
    }
}

/// Middleware that sends every call through one circuit breaker and records its result; an open
/// circuit fails the call with [`CircuitOpen`] without calling the inner service (and without
/// waiting for its readiness).
///
/// The next call's permit is taken in `poll_ready`, as in
/// [`CircuitBreakerService`](crate::CircuitBreakerService): a HALF_OPEN probe permit is kept
/// while the inner service is not ready, a CLOSED one is given back and taken again once it is.
#[must_use]
pub struct ResultBreaker<S, C = ErrorsAsFailures> {
    inner: S,
    breaker: CircuitBreaker,
    classify: C,
    /// The next call's permit or refusal, decided in `poll_ready` (per clone).
    admission: Admission,
}

impl<S: fmt::Debug, C> fmt::Debug for ResultBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, C: Clone> Clone for ResultBreaker<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
            admission: Admission::new(),
        }
    }
}

impl<S, C> ResultBreaker<S, C> {
    define_inner_service_accessors!();
}

impl<S, C, Req> Service<Req> for ResultBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: ClassifyResult<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResultFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.admission.undecided() {
            self.admission.decide(Some(permit_of(&self.breaker)));
        }
        if self.admission.refused() {
            return Poll::Ready(Ok(()));
        }
        let ready = self.inner.poll_ready(cx).map_err(Into::into);
        self.admission.inner_ready(ready)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let breaker = &self.breaker;
        match self.admission.take_or(|| permit_of(breaker)) {
            Ok(permit) => ResultFuture {
                inner: Some(self.inner.call(req)),
                permit: Some(permit),
                classify: self.classify.clone(),
                refused: None,
            },
            Err(Refusal::Open(open)) => {
                ResultFuture::refused(Box::new(open), self.classify.clone())
            }
            Err(Refusal::Broken(_)) => unreachable!("readiness errors are returned, not kept"),
        }
    }
}

pin_project! {
    /// Response future of [`ResultBreaker`].
    pub struct ResultFuture<F, C> {
        #[pin]
        inner: Option<F>,
        permit: Option<OwnedPermit>,
        classify: C,
        refused: Option<Box<CircuitOpen>>,
    }
}

impl<F, C> ResultFuture<F, C> {
    fn refused(open: Box<CircuitOpen>, classify: C) -> Self {
        Self {
            inner: None,
            permit: None,
            classify,
            refused: Some(open),
        }
    }
}

impl<F, C> fmt::Debug for ResultFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultFuture").finish_non_exhaustive()
    }
}

impl<F, C, T, E> Future for ResultFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: ClassifyResult<T>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            let open: BoxError = this.refused.take().expect("polled after completion");
            return Poll::Ready(Err(open));
        };
        let result = ready!(inner.poll(cx)).map_err(Into::into);
        if let Some(permit) = this.permit.take() {
            permit.record(this.classify.classify(&result));
        }
        Poll::Ready(result)
    }
}
