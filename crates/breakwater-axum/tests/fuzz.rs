//! No input makes the ops API panic or answer anything but its documented statuses, and
//! requests without the token change nothing. `PROPTEST_CASES=N` runs more cases.

use breakwater_axum::{OpsApi, not_found};
use breakwater_core::{Config, FamilyOptions, Registry};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::ServiceExt;

/// `PROPTEST_CASES` if set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Any JSON value, nested a few levels, with the config's own field names among the keys.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![Just(0u64), Just(1), Just(100), Just(u64::MAX)].prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
    ];
    let key = prop_oneof![
        Just("failureRateThreshold".to_owned()),
        Just("slowCallRateThreshold".to_owned()),
        Just("slowCallDurationThresholdMs".to_owned()),
        Just("consecutiveFailures".to_owned()),
        Just("slidingWindowType".to_owned()),
        Just("slidingWindowSize".to_owned()),
        Just("minimumNumberOfCalls".to_owned()),
        Just("permittedCallsInHalfOpen".to_owned()),
        Just("successThreshold".to_owned()),
        Just("waitInOpenMs".to_owned()),
        Just("maxWaitInOpenMs".to_owned()),
        Just("waitInOpenMultiplier".to_owned()),
        Just("waitInOpenJitter".to_owned()),
        Just("health".to_owned()),
        "[a-zA-Z]{0,10}",
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("v1".to_owned()),
        Just("circuit-breaker".to_owned()),
        Just("metrics".to_owned()),
        Just("reset".to_owned()),
        Just("force-open".to_owned()),
        Just("config".to_owned()),
        Just("events".to_owned()),
        Just("stream".to_owned()),
        Just("alerts".to_owned()),
        Just("probes".to_owned()),
        Just("health".to_owned()),
        Just("db".to_owned()),
        Just("fam%3AGET%20%2Fx".to_owned()),
        Just("%FF%00".to_owned()),
        Just("..".to_owned()),
        "[a-zA-Z0-9%._~-]{0,12}",
    ]
}

fn request() -> impl Strategy<Value = (Method, String, Option<String>, Option<String>, Vec<u8>)> {
    (
        prop::sample::select(vec![
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::HEAD,
            Method::OPTIONS,
        ]),
        prop::collection::vec(segment(), 0..6).prop_map(|s| format!("/{}", s.join("/"))),
        prop::option::of(prop_oneof![
            Just("Bearer secret".to_owned()),
            Just("Bearer wrong".to_owned()),
            Just("bearer secret".to_owned()),
            Just("Basic c2VjcmV0".to_owned()),
            "[ -~]{0,20}",
        ]),
        prop::option::of(prop_oneof![
            Just("application/json".to_owned()),
            Just("text/plain".to_owned()),
            "[ -~]{0,20}",
        ]),
        prop_oneof![
            Just(b"{}".to_vec()),
            Just(b"{\"failureRateThreshold\": 10}".to_vec()),
            Just(b"{\"intervalMs\": 0}".to_vec()),
            Just(b"[1,2,3]".to_vec()),
            Just(b"null".to_vec()),
            prop::collection::vec(any::<u8>(), 0..64),
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn any_request_gets_a_documented_answer((method, path, auth, ct, body) in request()) {
        let registry = Registry::new();
        let db = registry.breaker_with("db", Config::default());
        registry.family("fam", FamilyOptions::new(Config::default())).get("GET /x");
        let router = OpsApi::new(&registry).token("secret").router().fallback(not_found);
        let Ok(uri) = path.parse::<http::Uri>() else { return Ok(()) };
        let mut req = Request::builder().method(method.clone()).uri(uri);
        let authorized = auth.as_deref() == Some("Bearer secret") || auth.as_deref() == Some("bearer secret");
        if let Some(a) = auth.as_deref().and_then(|a| http::HeaderValue::from_str(a).ok()) {
            req = req.header(header::AUTHORIZATION, a);
        }
        if let Some(c) = ct.as_deref().and_then(|c| http::HeaderValue::from_str(c).ok()) {
            req = req.header(header::CONTENT_TYPE, c);
        }
        let req = req.body(axum::body::Body::from(Bytes::from(body))).unwrap();
        let before = (db.state(), db.config(), db.generation());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (status, content_type, bytes) = rt.block_on(async {
            let res = router.oneshot(req).await.unwrap();
            let status = res.status();
            let ct = res.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("").to_owned());
            // The event stream never ends: read only its head.
            let bytes = if ct.as_deref() == Some("text/event-stream") {
                Bytes::new()
            } else {
                res.into_body().collect().await.unwrap().to_bytes()
            };
            (status, ct, bytes)
        });
        prop_assert!(
            [200, 400, 401, 404, 405, 413, 415, 503].contains(&status.as_u16()),
            "{method} {path}: {status}"
        );
        if !status.is_success() && status != StatusCode::SERVICE_UNAVAILABLE && method != Method::HEAD {
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("errors are JSON");
            prop_assert!(v["code"].as_str().is_some_and(|c| c.chars().all(|c| c.is_ascii_uppercase() || c == '_')));
            prop_assert!(v["message"].is_string());
            prop_assert!(content_type.is_some());
        }
        if !authorized {
            prop_assert_eq!((db.state(), db.config(), db.generation()), before);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn any_config_change_is_applied_whole_or_refused_whole(body in json()) {
        let registry = Registry::new();
        let db = registry.breaker_with("db", Config::default());
        let router = OpsApi::new(&registry).token("secret").router().fallback(not_found);
        let before = db.config();
        let req = Request::put("/v1/circuit-breaker/db/config")
            .header(header::AUTHORIZATION, "Bearer secret")
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (status, bytes) = rt.block_on(async {
            let res = router.oneshot(req).await.unwrap();
            (res.status(), res.into_body().collect().await.unwrap().to_bytes())
        });
        let answer: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON answer");
        match status.as_u16() {
            200 => {
                // The change took as a whole: the breaker's config is the one answered, valid.
                let view: breakwater_core::ConfigView =
                    serde_json::from_value(answer["config"].clone()).expect("a config view");
                prop_assert_eq!(view.to_config().expect("valid"), db.config());
            }
            400 => {
                prop_assert!(
                    ["INVALID_CONFIG", "BAD_REQUEST"].contains(&answer["code"].as_str().unwrap_or("")),
                    "{answer}"
                );
                prop_assert_eq!(db.config(), before, "a refused change changes nothing");
            }
            other => prop_assert!(false, "status {other}: {answer}"),
        }
    }
}
