//! Breakwater's circuit breakers shared across the replicas of a service through Redis, with
//! nothing added to a call's path: [`RedisStore`] implements the engine's
//! [`StateStore`], and
//! [`Fleet`](breakwater_core::fleet::Fleet) drives it from two background tasks.
//!
//! When a breaker opens on one replica, its open-until time and the next fleet-wide epoch are
//! written in one Lua script and published; every other replica adopts OPEN until that time.
//! Resets and forced states travel the same way, the newest epoch wins, and a late message
//! never undoes a newer state. A replica reads the stored states before it serves. If Redis
//! is slow or down, every replica keeps its own state, counts the errors, reconnects with
//! backoff and reads the states again when Redis is back; every Redis call is bounded by the
//! store's timeout.
//!
//! # Keys
//!
//! Under the namespace `ns` (default `breakwater`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `ns:epoch` | string | the last epoch given out |
//! | `ns:states` | hash | per breaker name: `epoch\|state\|open-until ms\|replica` |
//! | `ns:events` | pub/sub channel | each published state: `epoch\|state\|open-until ms\|replica\|name` |
//! | `ns:votes:<name>` | sorted set | with a quorum: replicas whose own trip is open, scored by its end (ms) |
//! | `ns:window:<name>` | hash | with a shared window: `<second>:c`, `:f`, `:s` (calls, failures, slow calls) |
//!
//! Epochs are the larger of the last one plus one and the publishing replica's clock in µs, so
//! they keep growing when the server restarts empty.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::{Arc, OnceLock};
//! use breakwater::Registry;
//! use breakwater::fleet::Fleet;
//! use breakwater::redis::RedisStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::new();
//! let store = RedisStore::builder("redis://127.0.0.1:6379/")
//!     .namespace("checkout")
//!     .build()?;
//! let fleet = Fleet::builder(&registry, Arc::new(store))
//!     .replica_id("checkout-1")
//!     .start()
//!     .await?;
//! // Serve with `registry`'s breakers; keep `fleet` alive as long as they are shared.
//! # drop(fleet);
//! # Ok(())
//! # }
//! ```

mod scripts;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use breakwater_core::fleet::{
    FleetMessage, FleetState, OutcomeTotals, StateChange, StateStore, StoreError, StoreFuture,
    WindowDelta,
};
use breakwater_core::{ConfigError, State};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script};

/// The namespace of keys when none is given.
pub const DEFAULT_NAMESPACE: &str = "breakwater";
/// The default bound on each Redis call, connecting included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the subscription's connection is checked with a `PING`.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// Builds a [`RedisStore`].
#[derive(Debug)]
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    namespace: String,
    timeout: Duration,
}

impl RedisStoreBuilder {
    /// The prefix of every key and of the channel (default `breakwater`): replicas of one
    /// service share a namespace, other services on the same Redis use their own.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The bound on each Redis call, connecting included (default 500 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The store; nothing connects until it is used, on the fleet's tokio runtime (a Redis
    /// that is down now is not an error). Refuses a URL that is not one, an empty namespace or a zero timeout.
    pub fn build(self) -> Result<RedisStore, ConfigError> {
        let client = Client::open(self.url.as_str())
            .map_err(|e| ConfigError::new("redis_url", format!("not a Redis URL: {e}")))?;
        if self.namespace.is_empty() || self.namespace.chars().any(char::is_whitespace) {
            return Err(ConfigError::new(
                "redis_namespace",
                "must be non-empty, without spaces",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be more than 0"));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let ns = self.namespace;
        Ok(RedisStore {
            client,
            config,
            conn: OnceLock::new(),
            epoch_key: format!("{ns}:epoch"),
            states_key: format!("{ns}:states"),
            channel: format!("{ns}:events"),
            namespace: ns,
            timeout: self.timeout,
            publish: Script::new(scripts::PUBLISH),
            window: Script::new(scripts::WINDOW),
        })
    }
}

/// Breaker states kept and published in Redis: the [`StateStore`] for a
/// [`Fleet`](breakwater_core::fleet::Fleet). See the [crate docs](crate) for the keys.
pub struct RedisStore {
    client: Client,
    config: ConnectionManagerConfig,
    /// Made on first use, on the runtime of the fleet's tasks.
    conn: OnceLock<ConnectionManager>,
    namespace: String,
    epoch_key: String,
    states_key: String,
    channel: String,
    timeout: Duration,
    publish: Script,
    window: Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://host:port/db`, `rediss://` not built in).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The namespace of its keys.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The connection manager (it reconnects by itself, with backoff).
    fn conn(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(conn) = self.conn.get() {
            return Ok(conn.clone());
        }
        let conn =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
                .map_err(store_error)?;
        Ok(self.conn.get_or_init(|| conn).clone())
    }

    fn key(&self, kind: &str, circuit: &str) -> String {
        format!("{}:{kind}:{circuit}", self.namespace)
    }

    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result.map_err(store_error),
            Err(_) => Err(StoreError::timeout(self.timeout)),
        }
    }
}

fn store_error(e: RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::new(format!("redis: timed out: {e}"))
    } else {
        StoreError::new(format!("redis: {e}"))
    }
}

impl StateStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn publish(&self, change: StateChange) -> StoreFuture<'_, Option<u64>> {
        Box::pin(async move {
            let mut conn = self.conn()?;
            // `|` separates the fields of a record; a replica id cannot carry one.
            let replica = change.replica.replace('|', "_");
            let mut call = self.publish.prepare_invoke();
            call.key(&self.epoch_key)
                .key(&self.states_key)
                .key(self.key("votes", &change.circuit))
                .key(&self.channel)
                .arg(&*change.circuit)
                .arg(change.state.as_str())
                .arg(change.open_until.unwrap_or(0))
                .arg(replica)
                .arg(change.at)
                .arg(change.quorum.unwrap_or(0));
            let epoch: u64 = self.bounded(call.invoke_async(&mut conn)).await?;
            Ok((epoch != 0).then_some(epoch))
        })
    }

    fn load(&self) -> StoreFuture<'_, Vec<FleetState>> {
        Box::pin(async move {
            let mut conn = self.conn()?;
            let all: Vec<(String, String)> = self
                .bounded(
                    redis::cmd("HGETALL")
                        .arg(&self.states_key)
                        .query_async(&mut conn),
                )
                .await?;
            Ok(all
                .into_iter()
                .filter_map(|(circuit, record)| parse_record(&record, circuit.into()))
                .collect())
        })
    }

    fn listen(&self, feed: async_channel::Sender<FleetMessage>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut pubsub = self.bounded(self.client.get_async_pubsub()).await?;
            self.bounded(pubsub.subscribe(&self.channel)).await?;
            let (mut sink, mut stream) = pubsub.split();
            if feed.send(FleetMessage::Subscribed).await.is_err() {
                return Ok(());
            }
            let mut ping = tokio::time::interval(PING_INTERVAL);
            ping.tick().await;
            loop {
                tokio::select! {
                    message = stream.next() => {
                        let Some(message) = message else {
                            return Err(StoreError::new("redis: subscription closed"));
                        };
                        let Ok(payload) = message.get_payload::<String>() else { continue };
                        let Some(state) = parse_message(&payload) else { continue };
                        if feed.send(FleetMessage::State(state)).await.is_err() {
                            return Ok(());
                        }
                    }
                    _ = ping.tick() => {
                        self.bounded(sink.ping::<redis::Value>()).await?;
                    }
                }
            }
        })
    }

    fn add_window(
        &self,
        deltas: Vec<WindowDelta>,
        window: Duration,
        now: u64,
    ) -> StoreFuture<'_, Vec<OutcomeTotals>> {
        Box::pin(async move {
            let mut conn = self.conn()?;
            let mut call = self.window.prepare_invoke();
            call.arg(now).arg(window.as_millis() as u64);
            for d in &deltas {
                call.key(self.key("window", &d.circuit))
                    .arg(d.counts.calls)
                    .arg(d.counts.failures)
                    .arg(d.counts.slow)
                    .arg(d.since);
            }
            let sums: Vec<(u64, u64, u64)> = self.bounded(call.invoke_async(&mut conn)).await?;
            Ok(sums
                .into_iter()
                .map(|(calls, failures, slow)| OutcomeTotals {
                    calls,
                    failures,
                    slow,
                })
                .collect())
        })
    }
}

/// `epoch|state|until|replica` (a value of `ns:states`).
fn parse_record(record: &str, circuit: Arc<str>) -> Option<FleetState> {
    let mut parts = record.splitn(4, '|');
    let epoch = parts.next()?.parse().ok()?;
    let state = State::parse(parts.next()?)?;
    let until: u64 = parts.next()?.parse().ok()?;
    let replica = parts.next()?.into();
    Some(FleetState {
        circuit,
        state,
        open_until: (until != 0).then_some(until),
        epoch,
        replica,
    })
}

/// `epoch|state|until|replica|circuit` (a message on `ns:events`).
fn parse_message(message: &str) -> Option<FleetState> {
    let mut parts = message.splitn(5, '|');
    let record = [parts.next()?, parts.next()?, parts.next()?, parts.next()?].join("|");
    let circuit = parts.next()?;
    parse_record(&record, circuit.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_messages_parse_and_refuse_garbage() {
        let s = parse_message("17|OPEN|1700000030000|a-1|api:GET /x|y").unwrap();
        assert_eq!(&*s.circuit, "api:GET /x|y");
        assert_eq!(
            (s.epoch, s.state, s.open_until),
            (17, State::Open, Some(1_700_000_030_000))
        );
        assert_eq!(&*s.replica, "a-1");
        let c = parse_record("18|CLOSED|0|b", "db".into()).unwrap();
        assert_eq!((c.state, c.open_until), (State::Closed, None));
        for bad in [
            "",
            "x|OPEN|0|a|c",
            "1|AJAR|0|a|c",
            "1|OPEN|-3|a|c",
            "1|OPEN|0|a",
        ] {
            assert!(parse_message(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn invalid_settings_are_refused_naming_the_field() {
        let e = RedisStore::builder("http://nope").build().unwrap_err();
        assert_eq!(e.field(), "redis_url");
        let e = RedisStore::builder("redis://127.0.0.1:1/")
            .namespace("a b")
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "redis_namespace");
        let e = RedisStore::builder("redis://127.0.0.1:1/")
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "timeout");
    }
}
