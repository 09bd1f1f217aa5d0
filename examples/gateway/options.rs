//! The gateway's flags and their environment variables.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::Uri;

/// What the gateway is started with.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Where the gateway listens (`--listen`, `BREAKWATER_LISTEN`).
    pub(crate) listen: SocketAddr,
    /// Where the ops API listens, if not on the public listener (`--ops-listen`,
    /// `BREAKWATER_OPS_LISTEN`).
    pub(crate) ops_listen: Option<SocketAddr>,
    /// A real upstream; `None` starts the simulation (`--upstream`, `BREAKWATER_UPSTREAM`).
    pub(crate) upstream: Option<Uri>,
    /// The ops API's write token (`--ops-token`, `BREAKWATER_OPS_TOKEN`; generated if unset).
    pub(crate) ops_token: String,
    /// A token the ops API's reads then need (`--ops-read-token`, `BREAKWATER_OPS_READ_TOKEN`).
    pub(crate) ops_read_token: Option<String>,
    /// One time limit for every upstream call, instead of the route groups' own
    /// (`--upstream-timeout-ms`, `BREAKWATER_UPSTREAM_TIMEOUT_MS`).
    pub(crate) upstream_timeout: Option<Duration>,
    /// Longest wait for a request head, and on an idle keep-alive connection
    /// (`--header-timeout-ms`, `BREAKWATER_HEADER_TIMEOUT_MS`; 10 s).
    pub(crate) header_timeout: Duration,
    /// Connections served at once per listener (`--max-connections`,
    /// `BREAKWATER_MAX_CONNECTIONS`; 10,000).
    pub(crate) max_connections: usize,
    /// Largest request body proxied (`--max-body-bytes`, `BREAKWATER_MAX_BODY_BYTES`; 10 MiB).
    pub(crate) max_body_bytes: u64,
    /// OpenTelemetry export, switched on by `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub(crate) otel: Option<Otlp>,
    /// Where alerts are posted, and in which shape (`--alert-webhook`, `--alert-format`,
    /// `--alert-routing-key`; `BREAKWATER_ALERT_WEBHOOK`, `…_FORMAT`, `…_ROUTING_KEY`).
    pub(crate) alert_webhook: Option<(Uri, breakwater::ops::webhook::WebhookFormat)>,
    /// Breaker states shared with the other replicas through Redis (`--redis URL`,
    /// `BREAKWATER_REDIS_URL`, and the flags below).
    pub(crate) redis: Option<Shared>,
    /// Where history, alerts and run-time changes are kept across restarts (`--state-dir`,
    /// `BREAKWATER_STATE_DIR`); without one, history is kept in memory only.
    pub(crate) state_dir: Option<std::path::PathBuf>,
    /// The authentication-failure circuit on `/api/auth/...`.
    pub(crate) auth_guard: AuthGuardOptions,
    /// Per-client rate limits by route group (`reads`, `writes`, `auth`, `catch-all`), in
    /// requests per second: `--rate-limit RPS` (`BREAKWATER_RATE_LIMIT`) for every group,
    /// `--rate-limit-groups reads=100,auth=5` (`BREAKWATER_RATE_LIMIT_GROUPS`) for some.
    pub(crate) rate_limits: Vec<(&'static str, u32)>,
    /// Proxies whose forwarding header names the client (`--trusted-proxies`,
    /// `BREAKWATER_TRUSTED_PROXIES`: addresses and networks, comma-separated), and which
    /// header that is (`--forwarded-header x-forwarded-for|forwarded`; `x-forwarded-for`).
    pub(crate) trusted_proxies: breakwater::guard::TrustedProxies,
}

/// The authentication-failure circuit's settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AuthGuardOptions {
    /// `--auth-failures N` (`BREAKWATER_AUTH_FAILURES`; 10).
    pub(crate) failures: u32,
    /// `--auth-window-s S` (`BREAKWATER_AUTH_WINDOW_S`; 60).
    pub(crate) window: Duration,
    /// `--auth-block-s S` (`BREAKWATER_AUTH_BLOCK_S`; 60).
    pub(crate) block: Duration,
}

/// The route groups a rate limit can be set for.
pub(crate) const GROUPS: [&str; 4] = ["reads", "writes", "auth", "catch-all"];

/// How the gateway shares its breakers with other replicas.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shared {
    /// `--redis`: `redis://host:port/db`.
    pub(crate) url: String,
    /// `--redis-namespace` (`BREAKWATER_REDIS_NAMESPACE`; `breakwater`): the prefix of the
    /// keys, one per service.
    pub(crate) namespace: String,
    /// `--replica-id` (`BREAKWATER_REPLICA_ID`; the host name and the process id).
    pub(crate) replica_id: Option<String>,
    /// `--redis-quorum K` (`BREAKWATER_REDIS_QUORUM`): a breaker's own trip opens the fleet
    /// only once K replicas tripped.
    pub(crate) quorum: Option<u32>,
    /// `--redis-shared-window-s S` (`BREAKWATER_REDIS_SHARED_WINDOW_S`): also judge the
    /// rates over every replica's calls of the last S seconds.
    pub(crate) shared_window: Option<Duration>,
}

/// Where and how metrics and traces are exported over OTLP, from OpenTelemetry's standard
/// variables.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Otlp {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector's base URL (`/v1/metrics` and `/v1/traces`
    /// are added to it).
    pub(crate) endpoint: String,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` (the default) or `http/json`.
    pub(crate) json: bool,
    /// `OTEL_SERVICE_NAME` (default `breakwater-gateway`).
    pub(crate) service_name: String,
    /// `OTEL_METRIC_EXPORT_INTERVAL`, in ms (default 60,000).
    pub(crate) interval: Duration,
}

impl Otlp {
    fn from_env(env: &impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let Some(endpoint) = env("OTEL_EXPORTER_OTLP_ENDPOINT") else {
            return Ok(None);
        };
        let uri: Uri = endpoint
            .parse()
            .map_err(|e| format!("invalid OTEL_EXPORTER_OTLP_ENDPOINT `{endpoint}`: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s)://host:port URL, not `{endpoint}`"
            ));
        }
        let json = match env("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            None | Some("http/protobuf") => false,
            Some("http/json") => true,
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not supported: \
                     use http/protobuf or http/json"
                ));
            }
        };
        let interval = match env("OTEL_METRIC_EXPORT_INTERVAL") {
            Some(v) => millis("OTEL_METRIC_EXPORT_INTERVAL", &v)?,
            None => Duration::from_secs(60),
        };
        Ok(Some(Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            json,
            service_name: env("OTEL_SERVICE_NAME").unwrap_or_else(|| "breakwater-gateway".into()),
            interval,
        }))
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ops_listen: None,
            upstream: None,
            ops_token: generate_token(),
            ops_read_token: None,
            upstream_timeout: None,
            header_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_body_bytes: 10 << 20,
            otel: None,
            alert_webhook: None,
            redis: None,
            state_dir: None,
            auth_guard: AuthGuardOptions {
                failures: 10,
                window: Duration::from_secs(60),
                block: Duration::from_secs(60),
            },
            rate_limits: Vec::new(),
            trusted_proxies: breakwater::guard::TrustedProxies::none(),
        }
    }
}

const USAGE: &str = "usage: gateway [--listen ADDR] [--ops-listen ADDR] [--upstream URL] \
[--ops-token T] [--ops-read-token T] [--upstream-timeout-ms MS] [--header-timeout-ms MS] \
[--max-connections N] [--max-body-bytes N] [--alert-webhook URL] \
[--alert-format generic|slack|pagerduty] [--alert-routing-key KEY] [--redis URL] \
[--redis-namespace NS] [--replica-id ID] [--redis-quorum K] [--redis-shared-window-s S] \
[--state-dir DIR] [--auth-failures N] [--auth-window-s S] [--auth-block-s S] \
[--rate-limit RPS] [--rate-limit-groups GROUP=RPS,...] [--trusted-proxies LIST] \
[--forwarded-header x-forwarded-for|forwarded]";

impl Options {
    /// From the command line and the environment (a flag wins), with the defaults.
    pub(crate) fn from_args() -> Result<Self, String> {
        Self::parse(std::env::args().skip(1), |k| {
            std::env::var(k).ok().filter(|v| !v.is_empty())
        })
    }

    /// From `args` and the variables `env` finds.
    pub(crate) fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        // (flag, variable): the variable's value, replaced by the flag's.
        let known = [
            ("--listen", "BREAKWATER_LISTEN"),
            ("--ops-listen", "BREAKWATER_OPS_LISTEN"),
            ("--upstream", "BREAKWATER_UPSTREAM"),
            ("--ops-token", "BREAKWATER_OPS_TOKEN"),
            ("--ops-read-token", "BREAKWATER_OPS_READ_TOKEN"),
            ("--upstream-timeout-ms", "BREAKWATER_UPSTREAM_TIMEOUT_MS"),
            ("--header-timeout-ms", "BREAKWATER_HEADER_TIMEOUT_MS"),
            ("--max-connections", "BREAKWATER_MAX_CONNECTIONS"),
            ("--max-body-bytes", "BREAKWATER_MAX_BODY_BYTES"),
            ("--alert-webhook", "BREAKWATER_ALERT_WEBHOOK"),
            ("--alert-format", "BREAKWATER_ALERT_FORMAT"),
            ("--alert-routing-key", "BREAKWATER_ALERT_ROUTING_KEY"),
            ("--redis", "BREAKWATER_REDIS_URL"),
            ("--redis-namespace", "BREAKWATER_REDIS_NAMESPACE"),
            ("--replica-id", "BREAKWATER_REPLICA_ID"),
            ("--redis-quorum", "BREAKWATER_REDIS_QUORUM"),
            (
                "--redis-shared-window-s",
                "BREAKWATER_REDIS_SHARED_WINDOW_S",
            ),
            ("--state-dir", "BREAKWATER_STATE_DIR"),
            ("--auth-failures", "BREAKWATER_AUTH_FAILURES"),
            ("--auth-window-s", "BREAKWATER_AUTH_WINDOW_S"),
            ("--auth-block-s", "BREAKWATER_AUTH_BLOCK_S"),
            ("--rate-limit", "BREAKWATER_RATE_LIMIT"),
            ("--rate-limit-groups", "BREAKWATER_RATE_LIMIT_GROUPS"),
            ("--trusted-proxies", "BREAKWATER_TRUSTED_PROXIES"),
            ("--forwarded-header", "BREAKWATER_FORWARDED_HEADER"),
        ];
        let mut values: Vec<Option<String>> = known.iter().map(|(_, var)| env(var)).collect();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.into());
            }
            let Some(i) = known.iter().position(|(f, _)| *f == flag) else {
                return Err(format!("unknown flag `{flag}` (try --help)"));
            };
            values[i] = Some(
                args.next()
                    .ok_or_else(|| format!("`{flag}` needs a value"))?,
            );
        }
        let value = |flag: &str| {
            let i = known
                .iter()
                .position(|(f, _)| *f == flag)
                .expect("a known flag");
            values[i].clone()
        };
        let mut o = Self::default();
        if let Some(v) = value("--listen") {
            o.listen = addr("--listen", &v)?;
        }
        if let Some(v) = value("--ops-listen") {
            o.ops_listen = Some(addr("--ops-listen", &v)?);
        }
        if let Some(u) = value("--upstream") {
            let uri: Uri = u
                .parse()
                .map_err(|e| format!("invalid --upstream `{u}`: {e}"))?;
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                return Err(format!(
                    "--upstream must be an http://host:port URL, not `{u}`"
                ));
            }
            o.upstream = Some(uri);
        }
        if let Some(t) = value("--ops-token") {
            o.ops_token = t;
        }
        o.ops_read_token = value("--ops-read-token");
        if let Some(v) = value("--upstream-timeout-ms") {
            o.upstream_timeout = Some(millis("--upstream-timeout-ms", &v)?);
        }
        if let Some(v) = value("--header-timeout-ms") {
            o.header_timeout = millis("--header-timeout-ms", &v)?;
        }
        if let Some(v) = value("--max-connections") {
            o.max_connections = positive("--max-connections", &v)? as usize;
        }
        if let Some(v) = value("--max-body-bytes") {
            o.max_body_bytes = positive("--max-body-bytes", &v)?;
        }
        o.otel = Otlp::from_env(&env)?;
        o.alert_webhook = alert_webhook(
            value("--alert-webhook"),
            value("--alert-format"),
            value("--alert-routing-key"),
        )?;
        o.state_dir = value("--state-dir").map(std::path::PathBuf::from);
        if let Some(v) = value("--auth-failures") {
            o.auth_guard.failures = positive("--auth-failures", &v)?.min(u32::MAX.into()) as u32;
        }
        if let Some(v) = value("--auth-window-s") {
            o.auth_guard.window = Duration::from_secs(positive("--auth-window-s", &v)?);
        }
        if let Some(v) = value("--auth-block-s") {
            o.auth_guard.block = Duration::from_secs(positive("--auth-block-s", &v)?);
        }
        o.rate_limits = rate_limits(value("--rate-limit"), value("--rate-limit-groups"))?;
        if let Some(v) = value("--trusted-proxies") {
            o.trusted_proxies = breakwater::guard::TrustedProxies::parse(&v)
                .map_err(|e| format!("invalid --trusted-proxies: {e}"))?;
        }
        if let Some(v) = value("--forwarded-header") {
            use breakwater::guard::ForwardedHeader;
            let header = match v.to_ascii_lowercase().as_str() {
                "x-forwarded-for" => ForwardedHeader::XForwardedFor,
                "forwarded" => ForwardedHeader::Forwarded,
                _ => {
                    return Err(format!(
                        "invalid --forwarded-header `{v}`: expected x-forwarded-for or forwarded"
                    ));
                }
            };
            o.trusted_proxies = o.trusted_proxies.header(header);
        }
        o.redis = match value("--redis") {
            Some(url) => Some(Shared {
                url,
                namespace: value("--redis-namespace")
                    .unwrap_or_else(|| breakwater::redis::DEFAULT_NAMESPACE.into()),
                replica_id: value("--replica-id"),
                quorum: value("--redis-quorum")
                    .map(|v| positive("--redis-quorum", &v).map(|k| k.min(u32::MAX.into()) as u32))
                    .transpose()?,
                shared_window: value("--redis-shared-window-s")
                    .map(|v| positive("--redis-shared-window-s", &v).map(Duration::from_secs))
                    .transpose()?,
            }),
            None => {
                for flag in [
                    "--redis-namespace",
                    "--replica-id",
                    "--redis-quorum",
                    "--redis-shared-window-s",
                ] {
                    if value(flag).is_some() {
                        return Err(format!("{flag} needs --redis"));
                    }
                }
                None
            }
        };
        Ok(o)
    }
}

fn alert_webhook(
    url: Option<String>,
    format: Option<String>,
    routing_key: Option<String>,
) -> Result<Option<(Uri, breakwater::ops::webhook::WebhookFormat)>, String> {
    use breakwater::ops::webhook::WebhookFormat;
    let Some(url) = url else {
        if format.is_some() || routing_key.is_some() {
            return Err("--alert-format and --alert-routing-key need --alert-webhook".into());
        }
        return Ok(None);
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid --alert-webhook `{url}`: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!(
            "--alert-webhook must be an http:// URL (put a TLS proxy in front for https), not `{url}`"
        ));
    }
    let format = match (format.as_deref().unwrap_or("generic"), routing_key) {
        ("generic", None) => WebhookFormat::Generic,
        ("slack", None) => WebhookFormat::Slack,
        ("pagerduty", Some(routing_key)) => WebhookFormat::PagerDuty { routing_key },
        ("pagerduty", None) => {
            return Err("--alert-format pagerduty needs --alert-routing-key".into());
        }
        ("generic" | "slack", Some(_)) => {
            return Err("--alert-routing-key is for --alert-format pagerduty".into());
        }
        (other, _) => {
            return Err(format!(
                "invalid --alert-format `{other}`: expected generic, slack or pagerduty"
            ));
        }
    };
    Ok(Some((uri, format)))
}

/// Each group's rate: `all` for every group, then the groups `spec` names.
fn rate_limits(
    all: Option<String>,
    spec: Option<String>,
) -> Result<Vec<(&'static str, u32)>, String> {
    let rps = |flag: &str, v: &str| positive(flag, v).map(|n| n.min(u32::MAX.into()) as u32);
    let mut limits: Vec<(&'static str, u32)> = match all {
        Some(v) => {
            let n = rps("--rate-limit", &v)?;
            GROUPS.iter().map(|g| (*g, n)).collect()
        }
        None => Vec::new(),
    };
    for item in spec
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (group, v) = item
            .split_once('=')
            .ok_or_else(|| format!("invalid --rate-limit-groups `{item}`: expected GROUP=RPS"))?;
        let Some(group) = GROUPS.iter().find(|g| **g == group.trim()) else {
            return Err(format!(
                "invalid --rate-limit-groups: unknown group `{group}` (reads, writes, auth, catch-all)"
            ));
        };
        let n = rps("--rate-limit-groups", v.trim())?;
        limits.retain(|(g, _)| g != group);
        limits.push((group, n));
    }
    Ok(limits)
}

fn addr(flag: &str, v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|e| format!("invalid {flag} `{v}`: {e} (expected IP:PORT)"))
}

fn positive(flag: &str, v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid {flag} `{v}`: expected a whole number above 0"
        )),
    }
}

fn millis(flag: &str, v: &str) -> Result<Duration, String> {
    positive(flag, v).map(Duration::from_millis)
}

/// 128 random bits from the operating system, as hex.
fn generate_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
