//! Serving an axum router over HTTP/1.1 to clients that may be slow or hostile: a connection must send a
//! request's headers within the header timeout (which also closes a keep-alive connection that sends
//! nothing), at most `max_connections` are open at once (more are closed as they come), and on shutdown the
//! open connections finish their requests within the grace period. `axum::serve` has none of these: one
//! client holding thousands of half-sent requests would hold as many tasks and sockets forever.

use axum::Router;
use axum::body::Body;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// What a connection may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From a request's first byte (or the end of the previous response) to the end of its headers.
    pub header_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// How long in-flight requests may take to finish once shutdown begins.
    pub grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            max_connections: 4096,
            grace: Duration::from_secs(20),
        }
    }
}

/// The flags of [`Limits`], for a binary's arguments (`#[command(flatten)]`).
#[derive(clap::Args, Clone, Debug)]
pub struct LimitArgs {
    /// Seconds a connection may take to send a request's headers (and may stay idle between requests).
    #[arg(long, env = "MIZZEN_HEADER_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_seconds: u64,
    /// Connections open at once; more are closed as they arrive.
    #[arg(long, env = "MIZZEN_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(self.header_timeout_seconds),
            max_connections: self.max_connections as usize,
            ..Limits::default()
        }
    }
}

/// Serves `app` on `listener` until `shutdown` fires, then lets open requests finish within the grace
/// period.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken, limits: Limits) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(%e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(max = limits.max_connections, "too many connections: closing a new one");
            continue;
        };
        // Answers go out at once, not held back to be merged with later writes.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            app.clone().oneshot(request.map(Body::new))
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%e, "connection ended");
            }
            drop(permit);
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.grace) => tracing::warn!("requests still in flight at the end of the grace period"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn started(
        limits: Limits,
    ) -> (std::net::SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app, stop.clone(), limits));
        (addr, stop, task)
    }

    /// Reads until the server closes the connection (or 10 s pass): what it sent.
    async fn until_closed(conn: &mut tokio::net::TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A keep-alive request on a new connection: the connection (if answered) and the answer's head.
    async fn ask(addr: std::net::SocketAddr) -> (tokio::net::TcpStream, String) {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .ok()
            .and_then(Result::ok);
        (conn, String::from_utf8_lossy(&buf[..n.unwrap_or(0)]).into_owned())
    }

    /// Opens answered connections until one is closed unanswered (at most `max` tries): those held, and
    /// whether one was refused.
    async fn hold_until_refused(
        addr: std::net::SocketAddr,
        max: usize,
    ) -> (Vec<tokio::net::TcpStream>, bool) {
        let mut held = Vec::new();
        for _ in 0..max {
            let (conn, answer) = ask(addr).await;
            if answer.is_empty() {
                return (held, true);
            }
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            held.push(conn);
        }
        (held, false)
    }

    /// A request answered within `limit` (a closed connection is tried again: the server frees its slots as
    /// it notices connections go).
    async fn answered_within(addr: std::net::SocketAddr, limit: Duration) -> String {
        let started = std::time::Instant::now();
        loop {
            let (_, answer) = ask(addr).await;
            if !answer.is_empty() || started.elapsed() > limit {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn slow_headers_and_extra_connections_are_closed_and_requests_are_served() {
        let limits = Limits {
            header_timeout: Duration::from_millis(500),
            max_connections: 2,
            grace: Duration::from_secs(1),
        };
        let (addr, stop, task) = started(limits).await;
        // A client that never finishes its headers is cut off after the header timeout.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let started = std::time::Instant::now();
        until_closed(&mut slow).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
            "closed after {waited:?}"
        );

        // Connections held open (each answered once, so the server holds it): past two, a new one is closed
        // unanswered; once one goes, a new one is served again.
        let (held, refused) = hold_until_refused(addr, 5).await;
        assert!(refused && held.len() <= 2, "{} held, refused: {refused}", held.len());
        drop(held);
        let answer = answered_within(addr, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"), "{answer}");

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops within the grace").unwrap();
    }
}
