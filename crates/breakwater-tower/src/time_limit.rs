//! A time limit per call, on deadlines shared by the calls that start close together.
//!
//! [`TimeLimitLayer`] does what tower's `Timeout` does, and fails a call over its limit with
//! the same error (`tower::timeout::error::Elapsed`), so the breakers count it as a failure,
//! a fallback's [`on_timeouts`](crate::FallbackLayer::on_timeouts) answers it and the axum
//! forms answer 504 `UPSTREAM_TIMEOUT`. What differs is the timer: tower's registers a tokio
//! timer entry for every call and removes it when the call ends (650 instructions for a call
//! that waits once, `benches/instructions.rs`). Here
//! the calls that start on one thread within one *resolution* (1/64 of the limit in whole
//! milliseconds, between 1 and 50 ms) share one deadline, a single tokio timer behind it; a call that has to wait
//! leaves its waker with that deadline and takes it back when it ends (259 instructions). A call is cancelled between its limit and one resolution later (and tokio's
//! timer's own millisecond), never earlier.
//!
//! Calls must be made within a tokio runtime (as with tower's `Timeout`): a new deadline
//! spawns the task that fires it.
//!
//! ```
//! use std::time::Duration;
//! use breakwater::tower::time_limit::TimeLimitLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(TimeLimitLayer::new(Duration::from_secs(2)))
//!     .service_fn(|_: ()| std::future::pending::<Result<(), std::io::Error>>());
//! let err = svc.oneshot(()).await.unwrap_err();
//! assert!(err.is::<tower::timeout::error::Elapsed>());
//! # }
//! ```

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;
use slab::Slab;
use tokio::time::Instant;
use tower::timeout::error::Elapsed;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::BoxError;

/// The shortest and the longest resolution of a deadline.
const MIN_RESOLUTION: Duration = Duration::from_millis(1);
const MAX_RESOLUTION: Duration = Duration::from_millis(50);

/// Fails calls that take longer than a limit; see the [module](self).
#[derive(Debug, Clone, Copy)]
pub struct TimeLimitLayer {
    limit: Duration,
}

impl TimeLimitLayer {
    /// Calls over `limit` fail with `Elapsed` (a zero limit fails every call that does not
    /// answer at its first poll).
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for TimeLimitLayer {
    type Service = TimeLimit<S>;

    fn layer(&self, inner: S) -> TimeLimit<S> {
        TimeLimit {
            inner,
            limit: self.limit,
        }
    }
}

/// Middleware that fails calls over a time limit; see [`TimeLimitLayer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct TimeLimit<S> {
    inner: S,
    limit: Duration,
}

impl<S> TimeLimit<S> {
    /// `inner` with calls over `limit` failed.
    pub fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit }
    }

    define_inner_service_accessors!();
}

impl<S, Req> Service<Req> for TimeLimit<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = TimeLimitFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        TimeLimitFuture {
            inner: self.inner.call(req),
            wait: Wait {
                deadline: Deadline::shared(self.limit),
                slot: None,
            },
        }
    }
}

pin_project! {
    /// Response future of [`TimeLimit`].
    pub struct TimeLimitFuture<F> {
        #[pin]
        inner: F,
        wait: Wait,
    }
}

impl<F> std::fmt::Debug for TimeLimitFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeLimitFuture")
            .field("at", &self.wait.deadline.at)
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for TimeLimitFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        match this.wait.poll_passed(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed::new().into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A call's place with its deadline: the waker it left there, if any.
struct Wait {
    deadline: Arc<Deadline>,
    slot: Option<usize>,
}

impl Wait {
    /// Ready once the deadline has passed; until then, the call's waker is left with it.
    fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut waiting = self.deadline.lock();
        if waiting.passed {
            // The wakers went when it passed: nothing to take back.
            self.slot = None;
            return Poll::Ready(());
        }
        match self.slot.and_then(|i| waiting.wakers.get_mut(i)) {
            Some(waker) => waker.clone_from(cx.waker()),
            None => self.slot = Some(waiting.wakers.insert(cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let mut waiting = self.deadline.lock();
            if !waiting.passed {
                waiting.wakers.try_remove(i);
            }
        }
    }
}

/// A deadline shared by the calls that started on one thread within one resolution.
struct Deadline {
    at: Instant,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    passed: bool,
    wakers: Slab<Waker>,
}

/// The deadline the calls starting now on this thread share, per limit.
struct Current {
    limit: Duration,
    /// Calls starting before this share `deadline`.
    until: Instant,
    deadline: Arc<Deadline>,
}

thread_local! {
    static CURRENT: RefCell<Vec<Current>> = const { RefCell::new(Vec::new()) };
}

impl Deadline {
    /// The deadline of a call with `limit` starting now.
    fn shared(limit: Duration) -> Arc<Deadline> {
        let now = Instant::now();
        let shared = CURRENT.try_with(|current| {
            let mut current = current.borrow_mut();
            let i = match current.iter().position(|c| c.limit == limit) {
                Some(i) if now < current[i].until => return current[i].deadline.clone(),
                Some(i) => i,
                None => {
                    current.push(Current::start(limit, now));
                    return current[current.len() - 1].deadline.clone();
                }
            };
            current[i] = Current::start(limit, now);
            current[i].deadline.clone()
        });
        // Only while the thread is exiting: a deadline of its own.
        shared.unwrap_or_else(|_| Current::start(limit, now).deadline)
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every call still waiting.
    fn pass(&self) {
        let wakers = {
            let mut waiting = self.lock();
            waiting.passed = true;
            std::mem::take(&mut waiting.wakers)
        };
        for waker in wakers {
            waker.1.wake();
        }
    }
}

impl Current {
    /// A deadline for the calls with `limit` starting from `now` for one resolution, and the
    /// task that passes it.
    fn start(limit: Duration, now: Instant) -> Current {
        // Whole milliseconds, as tokio's timer counts.
        let millis = limit.as_millis().div_ceil(64);
        let resolution = Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
            .clamp(MIN_RESOLUTION, MAX_RESOLUTION);
        let until = now + resolution;
        let deadline = Arc::new(Deadline {
            at: until + limit,
            waiting: Mutex::new(Waiting::default()),
        });
        let passes = deadline.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(passes.at).await;
            passes.pass();
        });
        Current {
            limit,
            until,
            deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a runtime whose clock is paused.
    fn paused(f: impl Future<Output = ()>) {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(f);
    }

    #[test]
    fn resolutions_are_a_64th_of_the_limit_between_1_and_50_ms() {
        paused(async {
            for (limit, resolution) in [
                (Duration::from_millis(10), MIN_RESOLUTION),
                (Duration::from_secs(2), Duration::from_millis(32)),
                (Duration::from_millis(65), Duration::from_millis(2)),
                (Duration::from_secs(60), MAX_RESOLUTION),
            ] {
                let now = Instant::now();
                let current = Current::start(limit, now);
                assert_eq!(current.until, now + resolution);
                assert_eq!(current.deadline.at, now + resolution + limit);
            }
        });
    }

    #[test]
    fn calls_within_a_resolution_share_a_deadline_and_leave_nothing_behind() {
        paused(async {
            let limit = Duration::from_secs(2);
            let a = Deadline::shared(limit);
            tokio::time::advance(Duration::from_millis(30)).await;
            let b = Deadline::shared(limit);
            assert!(Arc::ptr_eq(&a, &b), "within 32 ms: one deadline");
            assert!(!Arc::ptr_eq(&a, &Deadline::shared(Duration::from_secs(3))));
            tokio::time::advance(Duration::from_millis(2)).await;
            let c = Deadline::shared(limit);
            assert!(!Arc::ptr_eq(&a, &c), "past it: a new one");

            // A waiting call's waker is kept until the call ends.
            let mut wait = Wait {
                deadline: c.clone(),
                slot: None,
            };
            let waker = Waker::noop();
            let mut cx = Context::from_waker(waker);
            assert!(wait.poll_passed(&mut cx).is_pending());
            assert!(wait.poll_passed(&mut cx).is_pending());
            assert_eq!(c.lock().wakers.len(), 1, "one waker, however often polled");
            drop(wait);
            assert_eq!(c.lock().wakers.len(), 0);
        });
    }
}
