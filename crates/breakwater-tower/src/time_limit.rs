//! A time limit per call, on deadlines shared by the calls that start close together.
//!
//! [`TimeLimitLayer`] does what tower's `Timeout` does, and fails a call over its limit with the
//! same error (`tower::timeout::error::Elapsed`), so the breakers count it as a failure, a
//! fallback's [`on_timeouts`](crate::FallbackLayer::on_timeouts) answers it and the axum forms
//! answer 504 `UPSTREAM_TIMEOUT`. What differs is the timer: tower's registers a tokio timer entry
//! for every call and removes it when the call ends (650 instructions for a call that waits once,
//! `benches/instructions.rs`). Here the calls that start on one thread within one *resolution*
//! (1/64 of the limit rounded up to whole milliseconds, between 1 and 50 ms) share one deadline, a
//! single tokio timer behind it; a call that has to wait leaves its waker with that deadline and
//! takes it back when it ends (331 instructions). A call is cancelled between its limit and one
//! resolution later (and tokio's timer's own millisecond), never earlier.
//!
//! Calls must be made within a tokio runtime with its timer enabled (as with tower's
//! `Timeout`): a new deadline spawns the task that passes it. A runtime that shuts down passes
//! its deadlines as it drops their tasks, so no call is left waiting on one.
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
use tokio::runtime;
use tokio::time::Instant;
use tower::timeout::error::Elapsed;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::BoxError;

/// Longer limits are this one (as tokio's timer does with longer delays): about 30 years.
const MAX_LIMIT: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The shortest and the longest resolution of a deadline.
const MIN_RESOLUTION: Duration = Duration::from_millis(1);
const MAX_RESOLUTION: Duration = Duration::from_millis(50);

/// Fails calls that take longer than a limit; see the [module](self).
#[derive(Debug, Clone, Copy)]
pub struct TimeLimitLayer {
    limit: Duration,
}

impl TimeLimitLayer {
    /// Calls over `limit` fail with `Elapsed` (a zero limit, with every call that has not
    /// answered a millisecond or two later; limits over about 30 years are that).
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
        // A replaced waker is dropped after the lock (dropping one may run the executor's
        // code, which could come back here).
        let replaced = match self.slot.and_then(|i| waiting.wakers.get_mut(i)) {
            Some(waker) if waker.will_wake(cx.waker()) => None,
            Some(waker) => Some(std::mem::replace(waker, cx.waker().clone())),
            None => {
                self.slot = Some(waiting.wakers.insert(cx.waker().clone()));
                None
            }
        };
        drop(waiting);
        drop(replaced);
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let mut waiting = self.deadline.lock();
            let removed = if waiting.passed {
                None
            } else {
                waiting.wakers.try_remove(i)
            };
            drop(waiting);
            drop(removed);
        }
    }
}

/// A deadline shared by the calls that started on one thread, on one runtime, within one
/// resolution.
struct Deadline {
    at: Instant,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    passed: bool,
    wakers: Slab<Waker>,
}

/// The deadline the calls starting now on this thread share, per runtime and limit.
struct Current {
    runtime: runtime::Id,
    limit: Duration,
    /// Calls starting before this share `deadline`.
    until: Instant,
    deadline: Arc<Deadline>,
}

thread_local! {
    static CURRENT: RefCell<Vec<Current>> = const { RefCell::new(Vec::new()) };
}

impl Deadline {
    /// The deadline of a call with `limit` starting now, on the current runtime (panics
    /// outside one, as tower's `Timeout` does).
    fn shared(limit: Duration) -> Arc<Deadline> {
        let limit = limit.min(MAX_LIMIT);
        let runtime = runtime::Handle::current().id();
        let now = Instant::now();
        let shared = CURRENT.try_with(|current| {
            let mut current = current.borrow_mut();
            let found = current
                .iter()
                .position(|c| c.runtime == runtime && c.limit == limit);
            if let Some(i) = found
                && now < current[i].until
            {
                return current[i].deadline.clone();
            }
            // Past deadlines' entries go: the list holds the limits of the last resolution.
            current.retain(|c| c.runtime == runtime && now < c.until);
            let new = Current::start(runtime, limit, now);
            let deadline = new.deadline.clone();
            current.push(new);
            deadline
        });
        // Only while the thread is exiting: a deadline of its own.
        shared.unwrap_or_else(|_| Current::start(runtime, limit, now).deadline)
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

/// Passes its deadline when dropped: when its time comes, or when its runtime drops the task
/// (shutting down), so that no call waits on a deadline nothing will pass.
struct PassOnDrop(Arc<Deadline>);

impl Drop for PassOnDrop {
    fn drop(&mut self) {
        self.0.pass();
    }
}

impl Current {
    /// A deadline for the calls with `limit` starting from `now` for one resolution, and the
    /// task that passes it.
    fn start(runtime: runtime::Id, limit: Duration, now: Instant) -> Current {
        // Whole milliseconds, as tokio's timer counts.
        let millis = limit.as_millis().div_ceil(64);
        let resolution = Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
            .clamp(MIN_RESOLUTION, MAX_RESOLUTION);
        let until = now + resolution;
        let deadline = Arc::new(Deadline {
            at: until + limit,
            waiting: Mutex::new(Waiting::default()),
        });
        // Made here, so that a runtime without a timer panics in the caller, as tower's does.
        let sleep = tokio::time::sleep_until(deadline.at);
        let passes = PassOnDrop(deadline.clone());
        tokio::spawn(async move {
            sleep.await;
            drop(passes);
        });
        Current {
            runtime,
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
            let runtime = runtime::Handle::current().id();
            for (limit, resolution) in [
                (Duration::from_millis(10), MIN_RESOLUTION),
                (Duration::from_secs(2), Duration::from_millis(32)),
                (Duration::from_millis(65), Duration::from_millis(2)),
                (Duration::from_secs(60), MAX_RESOLUTION),
                (Duration::ZERO, MIN_RESOLUTION),
            ] {
                let now = Instant::now();
                let current = Current::start(runtime, limit, now);
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

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(Default::default()));
        (count.clone(), Waker::from(count))
    }

    fn wakes(count: &Count) -> usize {
        count.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn the_last_waker_polled_is_the_one_woken_and_a_passed_deadline_keeps_nothing() {
        paused(async {
            let deadline = Deadline::shared(Duration::from_secs(1));
            let mut wait = Wait {
                deadline: deadline.clone(),
                slot: None,
            };
            let (a, waker_a) = counting();
            let (b, waker_b) = counting();
            assert!(
                wait.poll_passed(&mut Context::from_waker(&waker_a))
                    .is_pending()
            );
            assert!(
                wait.poll_passed(&mut Context::from_waker(&waker_b))
                    .is_pending()
            );
            assert_eq!(deadline.lock().wakers.len(), 1);
            deadline.pass();
            assert_eq!((wakes(&a), wakes(&b)), (0, 1));
            assert!(
                wait.poll_passed(&mut Context::from_waker(&waker_b))
                    .is_ready()
            );
            drop(wait);
            assert!(deadline.lock().wakers.is_empty());
        });
    }

    #[test]
    fn the_longest_limits_do_not_overflow() {
        paused(async {
            let deadline = Deadline::shared(Duration::MAX);
            assert!(deadline.at > Instant::now() + Duration::from_secs(86_400 * 365 * 29));
        });
    }

    #[test]
    fn each_runtime_on_a_thread_has_its_own_deadlines() {
        let limit = Duration::from_secs(2);
        let mut first = None;
        for _ in 0..2 {
            paused(async {
                let deadline = Deadline::shared(limit);
                if let Some(first) = first.replace(deadline.clone()) {
                    assert!(!Arc::ptr_eq(&first, &deadline));
                }
            });
        }
    }

    #[test]
    fn a_call_waiting_when_its_runtime_shuts_down_is_not_left_waiting() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (count, waker) = counting();
        let entered = rt.enter();
        let mut svc = TimeLimit::new(
            tower::service_fn(|()| std::future::pending::<Result<(), BoxError>>()),
            Duration::from_secs(3600),
        );
        let mut call = Box::pin(svc.call(()));
        drop(entered);
        let mut cx = Context::from_waker(&waker);
        assert!(call.as_mut().poll(&mut cx).is_pending());
        drop(rt);
        assert_eq!(
            wakes(&count),
            1,
            "woken as the runtime dropped the deadline's task"
        );
        match call.as_mut().poll(&mut cx) {
            Poll::Ready(Err(e)) => assert!(e.is::<Elapsed>()),
            _ => panic!("the call was left waiting"),
        }
    }
}
