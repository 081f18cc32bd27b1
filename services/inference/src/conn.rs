//! Connections: accepting them within a limit, timing out the ones that stall, and closing them all within
//! a grace period on shutdown. Shared by the REST server (hyper HTTP/1.1 under axum's router) and the gRPC
//! server (tonic).
//!
//! Every accepted socket is wrapped in a [`GuardedIo`], which fails a read or write that waits past its
//! deadline: between requests the idle timeout, from a request's first byte to the end of its headers the
//! header timeout, and for a write the client does not take the send timeout. Bodies have their own
//! deadline in the handlers.

use crate::error::InferError;
use crate::limits::{Holding, Limits};
use crate::metrics::{Metrics, ProtocolLabels};
use crate::rest;
use crate::server::Server;
use axum::Router;
use axum::body::Body;
use axum::response::Response;
use futures::FutureExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// hyper's read buffer: the most bytes of headers a client can make it hold. Requests with more are refused
/// by hyper itself (431, no body); below it, the [`Limits`] refuse them with `{"error": ...}`.
const MAX_BUF: usize = 128 << 10;
/// At most this many refused connections are being told so at once; past it they are closed unanswered.
const REFUSALS_IN_FLIGHT: usize = 64;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process's epoch, plus one (0 means "not set").
fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

fn at(ms: u64) -> Instant {
    epoch() + Duration::from_millis(ms.saturating_sub(1))
}

/// What a connection is doing, shared by its socket wrapper and its request handlers.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Requests (HTTP/1.1) or streams (HTTP/2) being handled.
    in_request: AtomicUsize,
    /// When the connection last became idle.
    idle_since: AtomicU64,
    /// When the first byte of the next request's headers arrived (HTTP/1.1; 0: none yet).
    header_from: AtomicU64,
    /// The connection's task, woken when a request ends so a pending read arms the idle deadline.
    reader: futures::task::AtomicWaker,
}

impl ConnState {
    fn new(protocol: Protocol) -> Arc<Self> {
        let now = now_ms();
        Arc::new(Self {
            in_request: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            // A new HTTP/1.1 connection owes its first request's head: it gets the header timeout, not the
            // idle one, so holding a connection slot without a word is cheap for no one.
            header_from: AtomicU64::new(if protocol == Protocol::Http1 { now } else { 0 }),
            reader: futures::task::AtomicWaker::new(),
        })
    }

    /// Marks a request as being handled until the guard drops.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_request.fetch_add(1, Ordering::AcqRel);
        self.header_from.store(0, Ordering::Release);
        Busy(self.clone())
    }
}

/// A request in progress on a connection.
pub struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.store(now_ms(), Ordering::Release);
        if self.0.in_request.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A read that went pending while the request was in progress has no deadline yet.
            self.0.reader.wake();
        }
    }
}

/// The protocol a connection speaks, which decides its read deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Grpc,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "rest",
            Protocol::Grpc => "grpc",
        }
    }
}

/// A client socket with deadlines on reads and writes, counted while open.
pub struct GuardedIo {
    io: TcpStream,
    state: Arc<ConnState>,
    protocol: Protocol,
    limits: Arc<Limits>,
    metrics: Metrics,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    write_stalled_since: Option<Instant>,
    _slot: OwnedSemaphorePermit,
}

impl GuardedIo {
    fn new(
        io: TcpStream,
        protocol: Protocol,
        limits: Arc<Limits>,
        metrics: Metrics,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        let _ = io.set_nodelay(true);
        metrics.connections.get_or_create(&ProtocolLabels { protocol: protocol.label() }).inc();
        Self {
            io,
            state: ConnState::new(protocol),
            protocol,
            limits,
            metrics,
            read_timer: None,
            write_timer: None,
            write_stalled_since: None,
            _slot: slot,
        }
    }

    /// When a pending read must give up, and the reason to count then.
    fn read_deadline(&self) -> Option<(Instant, Option<&'static str>)> {
        let st = &self.state;
        if st.in_request.load(Ordering::Acquire) > 0 {
            // Bodies have their own deadline; a handler that is computing reads nothing.
            return None;
        }
        match self.protocol {
            Protocol::Http1 => match st.header_from.load(Ordering::Acquire) {
                0 => Some((at(st.idle_since.load(Ordering::Acquire)) + self.limits.idle_timeout, None)),
                from => Some((at(from) + self.limits.header_timeout, Some("header_timeout"))),
            },
            // A connection without a call in progress for the idle timeout is closed (clients reconnect);
            // dead peers in the middle of a call are found by the keepalive pings.
            Protocol::Grpc => {
                Some((at(st.idle_since.load(Ordering::Acquire)) + self.limits.idle_timeout, None))
            }
        }
    }
}

impl Drop for GuardedIo {
    fn drop(&mut self) {
        self.metrics.connections.get_or_create(&ProtocolLabels { protocol: self.protocol.label() }).dec();
    }
}

/// Whether `deadline` has passed, arming `timer` to wake the task at it otherwise.
fn expired(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    if deadline <= Instant::now() {
        return true;
    }
    let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if t.deadline() != deadline {
        t.as_mut().reset(deadline);
    }
    t.as_mut().poll(cx).is_ready()
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let (st, now) = (&this.state, now_ms());
                    if this.protocol == Protocol::Http1 && st.in_request.load(Ordering::Acquire) == 0 {
                        let _ = st.header_from.compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                this.state.reader.register(cx.waker());
                let Some((deadline, reason)) = this.read_deadline() else { return Poll::Pending };
                if expired(&mut this.read_timer, deadline, cx) {
                    if let Some(reason) = reason {
                        this.metrics.reject(this.protocol.label(), reason);
                    }
                    return Poll::Ready(Err(timed_out(reason.unwrap_or("idle timeout"))));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl GuardedIo {
    /// A write the client does not take for the send timeout fails.
    fn stalled<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.write_stalled_since = None;
            return poll;
        }
        let since = *self.write_stalled_since.get_or_insert_with(Instant::now);
        if expired(&mut self.write_timer, since + self.limits.send_timeout, cx) {
            self.metrics.reject(self.protocol.label(), "send_timeout");
            return Poll::Ready(Err(timed_out("send_timeout")));
        }
        Poll::Pending
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.stalled(cx, poll)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.stalled(cx, poll)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.stalled(cx, poll)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What tonic hands every gRPC request of a connection: its state, so streams count as busy.
#[derive(Clone, Debug)]
pub struct GrpcConnInfo {
    pub state: Arc<ConnState>,
}

impl tonic::transport::server::Connected for GuardedIo {
    type ConnectInfo = GrpcConnInfo;
    fn connect_info(&self) -> GrpcConnInfo {
        GrpcConnInfo { state: self.state.clone() }
    }
}

/// Waits after a failed accept: out of file descriptors, the next accept would fail at once in a loop.
async fn accept_failed(e: io::Error, protocol: &str) {
    static LAST_LOG: AtomicU64 = AtomicU64::new(0);
    let now = now_ms();
    let last = LAST_LOG.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 5_000
        && LAST_LOG.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        tracing::warn!(%e, protocol, "cannot accept a connection (logged at most every 5 s)");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves REST on `listener` until `shutdown`, then lets in-flight requests finish for the grace period and
/// closes what is left.
pub async fn serve_rest(
    listener: TcpListener,
    router: Router,
    server: Arc<Server>,
    shutdown: CancellationToken,
) {
    let limits = Arc::new(server.limits.clone());
    let metrics = server.metrics.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // Header and idle deadlines are GuardedIo's, which tells them apart.
        .header_read_timeout(None)
        .max_buf_size(MAX_BUF)
        .max_headers(limits.max_headers.saturating_mul(2).max(limits.max_headers + 1))
        .keep_alive(true);
    loop {
        let stream = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e, "rest").await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.reject("rest", "connection_limit");
            refuse(stream, &refusals, limits.max_connections);
            continue;
        };
        let io = GuardedIo::new(stream, Protocol::Http1, limits.clone(), metrics.clone(), slot);
        let state = io.state.clone();
        let (router, server) = (router.clone(), server.clone());
        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let (router, server, busy) = (router.clone(), server.clone(), state.busy());
            async move {
                let response = front_door(req, router, &server).await;
                // Busy until the response has been sent: a slow download is the send timeout's business.
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| Body::new(Holding { body, held: busy })),
                )
            }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%e, "REST connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("REST connections closed"),
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "closing the REST connections still open after the grace period");
        }
    }
}

/// Answers a connection over the limit with a 503 and closes it, without holding the accept loop.
fn refuse(stream: TcpStream, refusals: &Arc<Semaphore>, max: usize) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else { return };
    tokio::spawn(async move {
        let body = format!(
            r#"{{"error":"the server has {max} connections open, its limit (--max-connections); retry later"}}"#
        );
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
            body.len()
        );
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream.write_all(response.as_bytes()).await?;
            stream.shutdown().await?;
            // Read what the client sent, so closing does not reset the connection before it reads the 503.
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
        drop(permit);
    });
}

/// Everything a REST request meets before the router: limits on the request line and headers that answer
/// with `{"error": ...}`, the bodies of requests that are not inferences (drained or the connection closed),
/// and a panic turned into a 500.
async fn front_door(req: hyper::Request<hyper::body::Incoming>, router: Router, server: &Server) -> Response {
    let limits = &server.limits;
    let (parts, body) = req.into_parts();
    let body = Body::new(body);
    let expects_continue = rest::expects_continue(&parts.headers);
    let settle = |mut response: Response, body| async move {
        if expects_continue {
            response.extensions_mut().insert(rest::ExpectsContinue);
        }
        rest::settle(response, body, limits).await
    };
    let refuse = |status: u16, reason: &'static str, message: String| {
        server.metrics.reject("rest", reason);
        let mut r = rest::error(InferError::invalid(message));
        *r.status_mut() =
            axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
        r
    };
    let target = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    let header_bytes: usize = parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    let refused = if target > limits.max_uri_bytes {
        Some(refuse(
            414,
            "uri_too_long",
            format!("the request target is over {} bytes", limits.max_uri_bytes),
        ))
    } else if parts.headers.len() > limits.max_headers {
        Some(refuse(431, "headers_too_large", format!("more than {} header fields", limits.max_headers)))
    } else if header_bytes > limits.max_header_bytes {
        Some(refuse(
            431,
            "headers_too_large",
            format!("the headers are over {} bytes", limits.max_header_bytes),
        ))
    } else {
        None
    };
    if let Some(response) = refused {
        return settle(response, Some(body)).await;
    }
    let infer = rest::is_infer(&parts.method, parts.uri.path());
    let routed = async {
        if infer {
            router.oneshot(axum::http::Request::from_parts(parts, body)).await.map(|r| (r, None))
        } else {
            let request = axum::http::Request::from_parts(parts, Body::empty());
            router.oneshot(request).await.map(|r| (r, Some(body)))
        }
    };
    match std::panic::AssertUnwindSafe(routed).catch_unwind().await {
        Ok(Ok((response, None))) => response,
        Ok(Ok((response, body))) => settle(response, body).await,
        Ok(Err(never)) => match never {},
        Err(_) => {
            tracing::error!("a REST handler panicked");
            server.metrics.reject("rest", "panic");
            let mut r = rest::error(InferError::internal("the server failed on this request"));
            rest::close(&mut r);
            r
        }
    }
}

/// The gRPC connections: accepted within the limit (past it closed at once), each a [`GuardedIo`].
pub fn grpc_incoming(
    listener: TcpListener,
    server: &Server,
) -> impl futures::Stream<Item = io::Result<GuardedIo>> + use<> {
    let limits = Arc::new(server.limits.clone());
    let metrics = server.metrics.clone();
    let slots = Arc::new(Semaphore::new(limits.grpc_max_connections));
    futures::stream::unfold(listener, move |listener| {
        let (limits, metrics, slots) = (limits.clone(), metrics.clone(), slots.clone());
        async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            let io = GuardedIo::new(stream, Protocol::Grpc, limits, metrics, slot);
                            return Some((Ok(io), listener));
                        }
                        Err(_) => {
                            metrics.reject("grpc", "connection_limit");
                            drop(stream);
                        }
                    },
                    Err(e) => accept_failed(e, "grpc").await,
                }
            }
        }
    })
}

/// Runs `serve` until it ends, or until the grace period after `shutdown` has passed.
pub async fn with_grace<F: std::future::Future<Output = Result<(), E>>, E>(
    serve: F,
    shutdown: CancellationToken,
    grace: Duration,
    what: &str,
) -> Result<(), E> {
    tokio::select! {
        r = serve => r,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, what, "closing the connections still open after the grace period");
            Ok(())
        }
    }
}
