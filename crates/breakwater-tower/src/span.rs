//! Fields the layers record on the current request span, so a request's trace shows which
//! breaker let it through or refused it, and which fallback answered.
//!
//! `tracing` records a field only if the span declared it when it was created: declare the ones
//! you want on your request span, with [`tracing::field::Empty`] as their value. Their names are
//! dotted as OpenTelemetry's attributes are, so `tracing-opentelemetry` carries them over as they
//! are.
//!
//! | field | recorded |
//! |---|---|
//! | `circuit_breaker.name` | on every call a breaker lets through, and on a refusal; with breakers stacked each writes its name in turn (a span keeps the last value written), and a refusing breaker writes last |
//! | `circuit_breaker.state` | on a refusal: the state that refused (`OPEN`, `HALF_OPEN`, `FORCED_OPEN`) |
//! | `fallback.strategy` | when a fallback answered: `fixed`, `function`, `stale` or `backup` |
//!
//! ```
//! use breakwater::tower::span;
//!
//! let request_span = tracing::info_span!(
//!     "request",
//!     circuit_breaker.name = tracing::field::Empty,
//!     circuit_breaker.state = tracing::field::Empty,
//!     fallback.strategy = tracing::field::Empty,
//! );
//! assert!(request_span.is_none() || request_span.has_field(span::CIRCUIT_BREAKER_NAME));
//! ```

use tracing::Span;
use tracing::span::Record;

/// The breaker's name.
pub const CIRCUIT_BREAKER_NAME: &str = "circuit_breaker.name";
/// The state that refused a call.
pub const CIRCUIT_BREAKER_STATE: &str = "circuit_breaker.state";
/// The fallback strategy that answered.
pub const FALLBACK_STRATEGY: &str = "fallback.strategy";

/// A breaker saw the call. The current span is looked at without taking a handle to it (which
/// would count a reference in the subscriber), and written to only if it declared the field.
pub(crate) fn admitted(name: &str) {
    tracing::dispatcher::get_default(|dispatch| {
        let current = dispatch.current_span();
        if let (Some(id), Some(meta)) = (current.id(), current.metadata())
            && let Some(field) = meta.fields().field(CIRCUIT_BREAKER_NAME)
        {
            let value: &dyn tracing::Value = &name;
            let values = [(&field, Some(value))];
            dispatch.record(id, &Record::new(&meta.fields().value_set(&values)));
        }
    });
}

/// A breaker refused the call.
#[cold]
pub(crate) fn refused(name: &str, state: &str) {
    let span = Span::current();
    span.record(CIRCUIT_BREAKER_NAME, name);
    span.record(CIRCUIT_BREAKER_STATE, state);
}

/// A fallback answered.
#[cold]
pub(crate) fn fallback(strategy: &str) {
    Span::current().record(FALLBACK_STRATEGY, strategy);
}
