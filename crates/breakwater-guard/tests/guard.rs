//! The guards around a real tower service, on a manual clock.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use breakwater::ManualClock;
use breakwater::guard::{
    AuthGuard, AuthGuardLayer, PeerAddr, RateLimit, RateLimitLayer, TrustedProxies, client_ip,
};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt};

fn from(peer: &str, password: &str) -> Request<()> {
    let mut req = Request::post("/auth/login")
        .header("x-password", password)
        .body(())
        .unwrap();
    let peer: IpAddr = peer.parse().unwrap();
    req.extensions_mut()
        .insert(PeerAddr(SocketAddr::new(peer, 40_000)));
    req
}

/// A login that answers 401 unless the password is right.
fn login()
-> impl Service<Request<()>, Response = Response<Bytes>, Error = std::convert::Infallible, Future: Send>
+ Clone {
    tower::service_fn(|req: Request<()>| async move {
        let ok = req
            .headers()
            .get("x-password")
            .is_some_and(|p| p == "right");
        let mut res = Response::new(Bytes::new());
        if !ok {
            *res.status_mut() = StatusCode::UNAUTHORIZED;
        }
        Ok(res)
    })
}

async fn status<S>(svc: &mut S, req: Request<()>) -> (StatusCode, Option<String>)
where
    S: Service<Request<()>, Response = Response<Bytes>, Error = std::convert::Infallible>,
{
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    let retry = res
        .headers()
        .get(http::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    (res.status(), retry)
}

#[tokio::test]
async fn a_client_with_20_bad_logins_is_refused_while_another_still_logs_in() {
    let clock = ManualClock::new();
    let guard = AuthGuard::builder().clock(clock.clone()).build().unwrap();
    let mut svc = AuthGuardLayer::new(guard.clone()).layer(login());
    let mut answers = Vec::new();
    for i in 0..20 {
        answers.push(status(&mut svc, from("203.0.113.66", "wrong")).await);
        if i == 14 {
            // Meanwhile, someone else logs in.
            assert_eq!(
                status(&mut svc, from("203.0.113.7", "right")).await.0,
                StatusCode::OK
            );
        }
    }
    assert!(
        answers[..10]
            .iter()
            .all(|(s, _)| *s == StatusCode::UNAUTHORIZED)
    );
    assert!(
        answers[10..]
            .iter()
            .all(|a| *a == (StatusCode::TOO_MANY_REQUESTS, Some("60".into()))),
        "{answers:?}"
    );
    // Even the right password is refused while blocked; the block ends on time.
    assert_eq!(
        status(&mut svc, from("203.0.113.66", "right")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        status(&mut svc, from("203.0.113.66", "right")).await.0,
        StatusCode::OK
    );
    let c = guard.counts();
    assert_eq!((c.failures, c.blocked, c.refused), (10, 1, 11));
    // Failures spread over more than the window never add up to a block.
    for _ in 0..30 {
        assert_eq!(
            status(&mut svc, from("198.51.100.1", "wrong")).await.0,
            StatusCode::UNAUTHORIZED
        );
        clock.advance(Duration::from_secs(7));
    }
}

#[test]
fn a_million_client_keys_stay_under_the_cap() {
    let clock = ManualClock::new();
    let guard = AuthGuard::builder().clock(clock.clone()).build().unwrap();
    let ip = |n: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
    for n in 0..1_100_000 {
        guard.record(ip(n), true);
    }
    let c = guard.counts();
    assert_eq!(c.clients, 1_000_000);
    assert_eq!(c.untracked, 100_000);
    // Once their windows are over, room is made for new clients.
    clock.advance(Duration::from_secs(61));
    guard.record(ip(2_000_000), true);
    let c = guard.counts();
    assert_eq!(c.clients, 1, "{c:?}");
}

#[tokio::test]
async fn the_rate_limit_holds_at_its_rate_within_5_percent() {
    let clock = ManualClock::new();
    let limit = RateLimit::builder(100)
        .burst(10)
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut svc = RateLimitLayer::new(limit.clone()).layer(login());
    let (mut permitted, mut first_refusal) = (0u32, None);
    // One request a millisecond for 10 s: ten times the rate.
    for _ in 0..10_000 {
        match status(&mut svc, from("192.0.2.1", "right")).await {
            (StatusCode::OK, _) => permitted += 1,
            (StatusCode::TOO_MANY_REQUESTS, retry) => {
                first_refusal.get_or_insert(retry);
            }
            other => panic!("{other:?}"),
        }
        clock.advance(Duration::from_millis(1));
    }
    let expected = 100.0 * 10.0;
    let off = (f64::from(permitted) - expected).abs() / expected;
    assert!(off <= 0.05, "{permitted} permitted for {expected}");
    assert_eq!(first_refusal, Some(Some("1".to_owned())));
    // Another client has its own allowance.
    assert_eq!(
        status(&mut svc, from("192.0.2.2", "right")).await.0,
        StatusCode::OK
    );
    let c = limit.counts();
    assert_eq!(c.permitted, u64::from(permitted) + 1);
    assert_eq!(c.limited, 10_000 - u64::from(permitted));
}

#[test]
fn the_client_is_the_peer_unless_a_trusted_proxy_names_it() {
    let trusted = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8").unwrap();
    let req = |peer: &str, headers: &[(&'static str, &str)]| {
        let mut r = Request::get("/").body(()).unwrap();
        for (k, v) in headers {
            r.headers_mut().append(*k, v.parse().unwrap());
        }
        r.extensions_mut()
            .insert(PeerAddr(SocketAddr::new(peer.parse().unwrap(), 1)));
        r
    };
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    // Through two trusted proxies: the nearest untrusted address, read from the right.
    let r = req(
        "127.0.0.1",
        &[("x-forwarded-for", "198.51.100.9, 203.0.113.5, 10.1.1.1")],
    );
    assert_eq!(client_ip(&r, &trusted), ip("203.0.113.5"));
    // An untrusted peer's header is not believed.
    let r = req("192.0.2.8", &[("x-forwarded-for", "203.0.113.5")]);
    assert_eq!(client_ip(&r, &trusted), ip("192.0.2.8"));
    // `Forwarded`, IPv6 with a port, when that is the proxies' header (and only then).
    let r = req(
        "127.0.0.1",
        &[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")],
    );
    assert_eq!(client_ip(&r, &trusted), ip("127.0.0.1"));
    let rfc = trusted
        .clone()
        .header(breakwater::guard::ForwardedHeader::Forwarded);
    assert_eq!(client_ip(&r, &rfc), ip("2001:db8::1"));
    let r = req(
        "127.0.0.1",
        &[
            ("forwarded", "for=192.0.2.60"),
            ("x-forwarded-for", "6.6.6.6"),
        ],
    );
    assert_eq!(
        client_ip(&r, &rfc),
        ip("192.0.2.60"),
        "the other header is not read"
    );
    // Garbage: the peer.
    let r = req("127.0.0.1", &[("x-forwarded-for", "not-an-ip")]);
    assert_eq!(client_ip(&r, &trusted), ip("127.0.0.1"));
    // A hop the proxy wrote that is not an address: what the client wrote beyond it is not
    // believed (the walk stops at the last trusted hop).
    let r = req("127.0.0.1", &[("x-forwarded-for", "6.6.6.6, unknown")]);
    assert_eq!(client_ip(&r, &trusted), ip("127.0.0.1"));
    let r = req(
        "127.0.0.1",
        &[("x-forwarded-for", "6.6.6.6, 10.0.0.9, unknown")],
    );
    assert_eq!(client_ip(&r, &trusted), ip("127.0.0.1"));
    // `ip:port` hops.
    let r = req("127.0.0.1", &[("x-forwarded-for", "203.0.113.5:5555")]);
    assert_eq!(client_ip(&r, &trusted), ip("203.0.113.5"));
    assert_eq!(
        client_ip(&Request::get("/").body(()).unwrap(), &trusted),
        None
    );
    assert!(TrustedProxies::parse("10.0.0.0/40").is_err());
}

#[test]
fn zero_settings_are_refused_naming_the_field() {
    assert_eq!(
        AuthGuard::builder()
            .failures(0)
            .build()
            .unwrap_err()
            .field(),
        "failures"
    );
    assert_eq!(
        RateLimit::builder(0).build().unwrap_err().field(),
        "per_second"
    );
    assert_eq!(
        RateLimit::builder(5).burst(0).build().unwrap_err().field(),
        "burst"
    );
}
