//! The admin HTTP server against real clients on loopback: mutating routes
//! are off (403) without a token and need the bearer token with one; a
//! client that sends its header too slowly is cut off; no more than the
//! configured connections are served at once.

#![allow(clippy::unwrap_used)] // test helpers: a failed call fails the test

use axum::routing::post;
use axum::Router;
use shared::admin::{protected, serve_with, ServeLimits};
use shared::config::Secret;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

struct Server {
    port: u16,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(router: Router, limits: ServeLimits) -> Self {
        let listener = shared::admin::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve_with(listener, router, cancel.clone(), limits));
        Self { port, cancel, task }
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

fn routes(token: Option<&str>) -> Router {
    let mutating = Router::new().route("/streams/x/restart", post(|| async { "restarted\n" }));
    Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .merge(protected(mutating, token.map(Secret::new)))
}

/// Sends `head` (plus an empty line) and reads the whole answer.
async fn request(port: u16, head: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

#[tokio::test]
async fn mutating_routes_are_off_without_a_token_and_need_it_with_one() {
    let off = Server::start(routes(None), ServeLimits::default()).await;
    let (code, body) = request(
        off.port,
        "POST /streams/x/restart HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nAuthorization: Bearer anything",
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("set admin.token to enable them"), "{body}");
    let (code, _) = request(off.port, "GET /healthz HTTP/1.1\r\nHost: a").await;
    assert_eq!(code, 200, "read-only routes stay on");
    off.stop().await;

    let on = Server::start(routes(Some("s3cret-t0ken")), ServeLimits::default()).await;
    let post = "POST /streams/x/restart HTTP/1.1\r\nHost: a\r\nContent-Length: 0";
    assert_eq!(request(on.port, post).await.0, 401);
    let wrong = format!("{post}\r\nAuthorization: Bearer s3cret-t0keN");
    assert_eq!(request(on.port, &wrong).await.0, 401);
    let right = format!("{post}\r\nAuthorization: Bearer s3cret-t0ken");
    let (code, body) = request(on.port, &right).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.ends_with("restarted\n"), "{body}");
    on.stop().await;
}

/// Opens a connection and sends the start of a header, never its end.
async fn slow_client(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    s
}

/// Waits until the server closes `s` (EOF or reset); the time it took.
async fn closed_after(mut s: TcpStream, started: Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0_u8; 512];
    let read = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    read.ok().map(|()| started.elapsed())
}

#[tokio::test]
async fn a_client_that_sends_its_header_too_slowly_is_cut_off() {
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs(1),
        max_connections: 8,
    };
    let server = Server::start(routes(None), limits).await;
    let started = Instant::now();
    let mut slow = slow_client(server.port).await;
    // Trickle a byte now and then, as slowloris does: it does not help.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = slow.write_all(b"x").await;
    }
    let took = closed_after(slow, started, Duration::from_secs(10))
        .await
        .expect("the slow connection is closed by the server");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}, the header timeout is 1 s"
    );
    // An idle connection that sends nothing at all is closed too.
    let started = Instant::now();
    let idle = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let took = closed_after(idle, started, Duration::from_secs(10))
        .await
        .expect("the idle connection is closed by the server");
    assert!(took < Duration::from_secs(5), "{took:?}");
    server.stop().await;
}

#[tokio::test]
async fn no_more_than_max_connections_are_served_at_once() {
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs(2),
        max_connections: 2,
    };
    let server = Server::start(routes(None), limits).await;
    let held = [
        slow_client(server.port).await,
        slow_client(server.port).await,
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third client waits for a free slot: the two slow ones hold both
    // until the header timeout closes them.
    let started = Instant::now();
    let (code, _) = tokio::time::timeout(
        Duration::from_secs(10),
        request(server.port, "GET /healthz HTTP/1.1\r\nHost: a"),
    )
    .await
    .expect("served once a slot is free");
    let waited = started.elapsed();
    assert_eq!(code, 200);
    assert!(
        waited >= Duration::from_millis(1500),
        "served after {waited:?}: the limit of 2 connections did not hold"
    );
    drop(held);
    // With the slots free again, a request is served at once.
    let started = Instant::now();
    assert_eq!(
        request(server.port, "GET /healthz HTTP/1.1\r\nHost: a")
            .await
            .0,
        200
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    server.stop().await;
}
