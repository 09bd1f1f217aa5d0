//! How a breaker service decides a call in `poll_ready`: the one `poll_ready` design of the
//! breaker services ([`CircuitBreakerService`](crate::CircuitBreakerService) with one breaker,
//! and [`ResultBreaker`](crate::ResultBreaker)).
//!
//! The next call's permit is taken in `poll_ready`, before the inner service's readiness: a
//! refusal makes the service ready at once (the call then fails fast, and a failing dependency
//! that never gets ready is left alone). While the inner service is not ready, a HALF_OPEN probe
//! permit is kept and a CLOSED one is given back, to be taken again once it is ready (so the
//! call is judged by the state, and timed from, the moment it can go). `call` takes what was
//! decided; a clone starts with nothing decided (readiness is per clone, as in tower's
//! `LoadShed`), and a ready clone dropped without a call gives its permit back.
//!
//! As with any service that reserves capacity in `poll_ready` (tower's `ConcurrencyLimit`), a
//! caller that keeps a service ready without calling it holds the permit meanwhile: a HALF_OPEN
//! probe slot stays taken, and the call is timed from its `poll_ready`.

use std::task::Poll;

use breakwater_core::{CircuitBreaker, OwnedPermit};

use crate::error::{BoxError, CircuitOpen};

/// The next call's permit or refusal, decided in `poll_ready`.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    permit: Option<OwnedPermit>,
    refused: Option<Box<Refusal>>,
}

/// Why the next call will not reach the inner service.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The circuit refused it.
    Open(CircuitOpen),
    /// The inner service failed to get ready (for a service that answers the error).
    Broken(BoxError),
}

impl Admission {
    /// Nothing decided (for a clone).
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether the next call is still to be decided (`poll_ready` then asks its breaker).
    #[inline(always)]
    pub(crate) fn undecided(&self) -> bool {
        self.permit.is_none() && self.refused.is_none()
    }

    /// The inner service failed to get ready: the next call is answered with `error`, and
    /// nothing is held for it (the inner service is not called, the outcome not recorded).
    #[cold]
    pub(crate) fn broke(&mut self, error: BoxError) {
        self.permit = None;
        self.refused = Some(Box::new(Refusal::Broken(error)));
    }

    /// Keeps what the breaker decided for the next call (`None`: the request decides, in
    /// `call`).
    #[inline(always)]
    pub(crate) fn decide(&mut self, acquired: Option<Result<OwnedPermit, CircuitOpen>>) {
        match acquired {
            Some(Ok(permit)) => self.permit = Some(permit),
            Some(Err(open)) => self.refused = Some(Box::new(Refusal::Open(open))),
            None => {}
        }
    }

    /// Whether the next call is refused (or answered for a broken inner service): `poll_ready`
    /// answers ready at once, without the inner service.
    #[inline(always)]
    pub(crate) fn refused(&self) -> bool {
        self.refused.is_some()
    }

    /// The inner service's readiness, passed on; while it is not ready, a permit that holds
    /// nothing back (CLOSED) is given back, to be taken again once it is.
    #[inline(always)]
    pub(crate) fn inner_ready<E>(&mut self, ready: Poll<Result<(), E>>) -> Poll<Result<(), E>> {
        if ready.is_pending()
            && self
                .permit
                .as_ref()
                .is_some_and(|p| p.state().allows_calls())
        {
            self.permit = None;
        }
        ready
    }

    /// Whether `poll_ready` admitted the next call.
    #[inline(always)]
    pub(crate) fn admitted(&self) -> bool {
        self.permit.is_some()
    }

    /// The admitted call's breaker, for the request span: one load until a `tracing`
    /// subscriber is set somewhere in the process.
    #[inline(always)]
    pub(crate) fn trace_admitted(&self) {
        if tracing::dispatcher::has_been_set() {
            self.record_admitted();
        }
    }

    #[cold]
    #[inline(never)]
    fn record_admitted(&self) {
        if let Some(p) = &self.permit {
            crate::span::admitted(p.circuit());
        }
    }

    /// The admitted call's permit.
    #[inline(always)]
    pub(crate) fn take_permit(&mut self) -> Option<OwnedPermit> {
        self.permit.take()
    }

    /// What `poll_ready` decided, or (when it decided nothing: `call` without `poll_ready`)
    /// what `acquire` decides now.
    #[inline(always)]
    pub(crate) fn take_or(
        &mut self,
        acquire: impl FnOnce() -> Result<OwnedPermit, CircuitOpen>,
    ) -> Result<OwnedPermit, Refusal> {
        if let Some(refusal) = self.refused.take() {
            return Err(*refusal);
        }
        match self.permit.take() {
            Some(permit) => Ok(permit),
            None => acquire().map_err(Refusal::Open),
        }
    }
}

/// A permit from `breaker`, or its refusal as a [`CircuitOpen`].
#[inline(always)]
pub(crate) fn permit_of(breaker: &CircuitBreaker) -> Result<OwnedPermit, CircuitOpen> {
    breaker
        .try_acquire_owned()
        .map_err(|r| CircuitOpen::new(breaker, r))
}
