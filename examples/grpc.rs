//! A tonic client and server with a circuit breaker on each side, on the generated gRPC health
//! service.
//!
//! Run with:
//!
//! ```text
//! cargo run --example grpc --features full
//! ```
//!
//! The server's dependency goes down for a while (its calls answer UNAVAILABLE): the client's
//! breaker opens and stops calling; an operator then forces the server's own breaker open, and
//! the server answers UNAVAILABLE itself without running the handler.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use breakwater::tower::{CircuitBreakerLayer, DEFAULT_GRPC_FAILURE_CODES, grpc_failures};
use breakwater::{CircuitBreaker, Config, State};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::InterceptorLayer;
use tonic::transport::{Channel, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::builder()
        .no_failure_rate_threshold()
        .consecutive_failures(3)
        .wait_in_open(Duration::from_millis(300))
        .permitted_calls_in_half_open(1)
        .success_threshold(1)
        .build()?;

    // The server: the health service behind a breaker; `down` simulates a failing dependency.
    let down = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(AtomicUsize::new(0));
    let server_breaker = CircuitBreaker::new("server", config.clone());
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("inventory", ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (d, h) = (down.clone(), handled.clone());
    let interceptor = move |req: tonic::Request<()>| {
        h.fetch_add(1, Ordering::SeqCst);
        if d.load(Ordering::SeqCst) {
            Err(tonic::Status::unavailable("database unreachable"))
        } else {
            Ok(req)
        }
    };
    let server_layer = CircuitBreakerLayer::new(server_breaker.clone())
        .classifier(grpc_failures(&DEFAULT_GRPC_FAILURE_CODES))
        .respond_when_open();
    tokio::spawn(async move {
        let _reporter = reporter;
        Server::builder()
            .layer(server_layer)
            .layer(InterceptorLayer::new(interceptor))
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
    });

    // The client: a channel behind its own breaker.
    let client_breaker = CircuitBreaker::new("client", config);
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = HealthClient::new(
        ServiceBuilder::new()
            .layer(
                CircuitBreakerLayer::new(client_breaker.clone())
                    .classifier(grpc_failures(&DEFAULT_GRPC_FAILURE_CODES)),
            )
            .service(channel),
    );

    for i in 0..24 {
        if i == 4 {
            println!("-- the server's database goes down");
            down.store(true, Ordering::SeqCst);
        }
        if i == 12 {
            println!("-- the database is back; waiting out the client's open circuit");
            down.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(350)).await;
        }
        if i == 18 {
            println!("-- an operator forces the server's breaker open");
            server_breaker.force_open();
        }
        let req = HealthCheckRequest {
            service: "inventory".into(),
        };
        let result = match client.check(req).await {
            Ok(res) => format!("OK (serving status {})", res.into_inner().status),
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        };
        println!(
            "call {i:>2}: {result:<70} client {:<9} server {:<11} handled {}",
            client_breaker.state(),
            server_breaker.state(),
            handled.load(Ordering::SeqCst)
        );
    }
    assert_eq!(server_breaker.state(), State::ForcedOpen);
    Ok(())
}
