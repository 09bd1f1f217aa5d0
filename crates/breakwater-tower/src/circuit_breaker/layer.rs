use std::marker::PhantomData;

use crate::admission::Admission;
use breakwater_core::{CircuitBreaker, KeyedFamily};
use tower_http::classify::SharedClassifier;
use tower_layer::Layer;

use super::keyed::{Keyed, Single};
use super::on_open::{ErrorOnOpen, RespondOnOpen};
use super::service::CircuitBreakerService;
use crate::classify::{HttpFailures, Watch};

/// Layer that applies [`CircuitBreakerService`]: one breaker for the service
/// ([`new`](Self::new)) or one per endpoint ([`keyed`](Self::keyed)).
///
/// As built, it is in its client form (a refused call is a [`CircuitOpen`](crate::CircuitOpen)
/// error). In an axum app call [`for_axum`](Self::for_axum): axum needs a service that never
/// fails, and without it `Router::layer` reports that
/// `Infallible: From<Box<dyn Error + Send + Sync>>` is not satisfied. On a tonic or hyper
/// server, call [`respond_when_open`](Self::respond_when_open). See the
/// [module docs](crate::circuit_breaker) for examples.
#[derive(Debug, Clone)]
#[must_use]
pub struct CircuitBreakerLayer<K = Single, M = SharedClassifier<HttpFailures>, O = ErrorOnOpen> {
    source: K,
    make_classifier: M,
    _on_open: PhantomData<fn() -> O>,
}

impl CircuitBreakerLayer {
    /// Every request goes through `breaker`; 5xx and errors are failures; a refused call fails
    /// with [`CircuitOpen`](crate::CircuitOpen).
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self::with_source(Single(breaker))
    }
}

impl<F> CircuitBreakerLayer<Keyed<F>> {
    /// Each request goes through the breaker of its key in `family` (see
    /// [`KeyFn`](super::KeyFn)).
    pub fn keyed(family: KeyedFamily, key: F) -> Self {
        Self::with_source(Keyed::new(family, key))
    }
}

impl<K> CircuitBreakerLayer<K> {
    fn with_source(source: K) -> Self {
        Self {
            source,
            make_classifier: HttpFailures::new().make_classifier(),
            _on_open: PhantomData,
        }
    }
}

impl<K, M, O> CircuitBreakerLayer<K, M, O> {
    /// Decides failures with `make_classifier` (e.g. [`grpc_failures`](crate::grpc_failures)).
    pub fn classifier<M2>(self, make_classifier: M2) -> CircuitBreakerLayer<K, M2, O> {
        CircuitBreakerLayer {
            source: self.source,
            make_classifier,
            _on_open: PhantomData,
        }
    }

    /// Server side: answer every call, never fail: a refusal 503 JSON (gRPC UNAVAILABLE), an
    /// inner error 504 `UPSTREAM_TIMEOUT` for a timeout, else 502 `UPSTREAM_ERROR` (see
    /// [`RespondOnOpen`](super::RespondOnOpen)). In an axum app, [`for_axum`](Self::for_axum)
    /// does the same without a second box around each response body.
    pub fn respond_when_open(self) -> CircuitBreakerLayer<K, M, RespondOnOpen> {
        self.on_open()
    }

    /// Server side in an axum app: as [`respond_when_open`](Self::respond_when_open), and the
    /// responses have axum's own `Body`, so axum has no body of another type to box (see
    /// [`ForAxum`](super::ForAxum)).
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use breakwater::{CircuitBreaker, Config};
    /// use breakwater::tower::CircuitBreakerLayer;
    ///
    /// let breaker = CircuitBreaker::new("api", Config::default());
    /// let app: Router = Router::new()
    ///     .route("/items", get(|| async { "[]" }))
    ///     .layer(CircuitBreakerLayer::new(breaker).for_axum());
    /// ```
    #[cfg(feature = "axum")]
    pub fn for_axum(self) -> CircuitBreakerLayer<K, M, super::ForAxum> {
        self.on_open()
    }

    fn on_open<O2>(self) -> CircuitBreakerLayer<K, M, O2> {
        CircuitBreakerLayer {
            source: self.source,
            make_classifier: self.make_classifier,
            _on_open: PhantomData,
        }
    }

    /// When `on`, time calls to the end of the response body instead of its head (for slow
    /// calls): while the breaker times calls (a slow-call policy is set), every response body
    /// is watched to its end and the call's outcome is recorded there; otherwise outcomes known
    /// at the head are recorded at the head, as without it. Wraps the classifier in [`Watch`].
    pub fn measure_to_end_of_body(self, on: bool) -> CircuitBreakerLayer<K, Watch<M>, O> {
        CircuitBreakerLayer {
            source: self.source,
            make_classifier: Watch::to_end_of_body(self.make_classifier, on),
            _on_open: PhantomData,
        }
    }
}

impl<S, K: Clone, M: Clone, O> Layer<S> for CircuitBreakerLayer<K, M, O> {
    type Service = CircuitBreakerService<S, K, M, O>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            source: self.source.clone(),
            make_classifier: self.make_classifier.clone(),
            admission: Admission::new(),
            _on_open: PhantomData,
        }
    }
}
