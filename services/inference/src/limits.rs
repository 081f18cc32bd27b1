//! What keeps one client from exhausting the server: the limits on connections, time and size, and the
//! memory budget every request's bytes are counted against before they are allocated.

use crate::error::InferError;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Every limit the front ends enforce. The defaults are the command line's (see `main.rs` and the README's
/// "Limits" table).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body (after decompression) or gRPC message.
    pub max_request_bytes: usize,
    /// The memory budget: bytes of requests in flight (bodies, decoded tensors, responses being encoded).
    pub max_inflight_bytes: usize,
    /// Open REST connections; past it a new connection gets a 503 and is closed.
    pub max_connections: usize,
    /// Open gRPC connections; past it a new connection is closed at once.
    pub grpc_max_connections: usize,
    /// From a request's first byte to the end of its headers.
    pub header_timeout: Duration,
    /// From a request's headers to the end of its body.
    pub body_timeout: Duration,
    /// How long a connection may sit idle between requests (REST), or without a byte from the client (gRPC).
    pub idle_timeout: Duration,
    /// How long a write to a client that reads nothing may stall.
    pub send_timeout: Duration,
    /// Longest an inference may take from its arrival, queue included.
    pub request_timeout: Duration,
    /// After SIGTERM: how long in-flight requests may finish before the remaining connections are closed.
    pub shutdown_grace: Duration,
    /// gRPC: the server's keepalive ping interval (the client must answer within `idle_timeout`).
    pub grpc_keepalive: Duration,
    /// gRPC: concurrent streams on one connection.
    pub grpc_max_concurrent_streams: u32,
    /// gRPC: a connection is asked to go away after this long (clients reconnect on their own).
    pub grpc_max_connection_age: Duration,
    /// REST: longest request target (path and query).
    pub max_uri_bytes: usize,
    /// REST: most header fields, and most bytes of headers.
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 64 << 20,
            max_inflight_bytes: 256 << 20,
            max_connections: 1024,
            grpc_max_connections: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
            grpc_keepalive: Duration::from_secs(20),
            grpc_max_concurrent_streams: 128,
            grpc_max_connection_age: Duration::from_secs(30 * 60),
            max_uri_bytes: 8 << 10,
            max_headers: 100,
            max_header_bytes: 32 << 10,
        }
    }
}

/// Longest a request that already holds part of the memory budget waits for more.
pub const HOLDING_WAIT: Duration = Duration::from_secs(1);

/// Heap a BYTES element may take on its way to ONNX Runtime beyond its own bytes (a `Vec<u8>`, the `String`,
/// the `CString` ONNX Runtime's API needs and its `std::string`, with the allocator's headers), and how many
/// copies of its bytes exist at once. Used to charge BYTES tensors against the budget before decoding.
pub const BYTES_ELEMENT_OVERHEAD: usize = 160;
pub const BYTES_COPIES: usize = 4;

/// The memory budget: a count of bytes that requests reserve before they allocate, and release when done.
pub struct Budget {
    capacity: usize,
    used: AtomicUsize,
    freed: Notify,
    gauge: Gauge,
}

impl Budget {
    pub fn new(capacity: usize, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self { capacity, used: AtomicUsize::new(0), freed: Notify::new(), gauge })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let Some(after) = used.checked_add(n).filter(|&a| a <= self.capacity) else { return false };
            match self.used.compare_exchange_weak(used, after, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    self.gauge.set(after as i64);
                    return true;
                }
                Err(now) => used = now,
            }
        }
    }

    fn give_back(&self, n: usize) {
        if n > 0 {
            let before = self.used.fetch_sub(n, Ordering::AcqRel);
            self.gauge.set(before.saturating_sub(n) as i64);
            self.freed.notify_waiters();
        }
    }

    /// An empty reservation, to grow as the request's size becomes known.
    pub fn start(self: &Arc<Self>) -> Reservation {
        Reservation { budget: self.clone(), bytes: 0 }
    }

    fn too_large(&self, n: usize) -> InferError {
        InferError::too_large(format!(
            "the request needs {n} bytes of memory, more than the server's whole budget of {} bytes \
             (--max-inflight-bytes); send less at once, or send tensors in binary",
            self.capacity
        ))
        .counted_as("over_budget")
    }
}

/// Bytes one request holds of the budget; released when dropped.
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds `n` bytes, waiting until `deadline` while other requests hold the budget: 503 past it, 413 when
    /// the request alone would need more than the whole budget. A request that already holds part of the
    /// budget waits at most [`HOLDING_WAIT`]: requests holding bytes while waiting for each other's would
    /// otherwise all wait out their deadlines.
    pub async fn grow(&mut self, n: usize, deadline: Instant) -> Result<(), InferError> {
        let total = self.bytes.saturating_add(n);
        if total > self.budget.capacity {
            return Err(self.budget.too_large(total));
        }
        let deadline = if self.bytes > 0 { deadline.min(Instant::now() + HOLDING_WAIT) } else { deadline };
        loop {
            let freed = self.budget.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.budget.try_take(n) {
                self.bytes += n;
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(InferError::unavailable(format!(
                    "the server's memory budget for requests in flight ({} bytes) stayed in use; retry later",
                    self.budget.capacity
                ))
                .counted_as("budget_exhausted"));
            }
        }
    }

    /// Adds `n` bytes now or fails with 503 (413 when more than the whole budget).
    pub fn try_grow(&mut self, n: usize) -> Result<(), InferError> {
        let total = self.bytes.saturating_add(n);
        if total > self.budget.capacity {
            return Err(self.budget.too_large(total));
        }
        if !self.budget.try_take(n) {
            return Err(InferError::unavailable(format!(
                "the server's memory budget for requests in flight ({} bytes) is in use; retry later",
                self.budget.capacity
            ))
            .counted_as("budget_exhausted"));
        }
        self.bytes += n;
        Ok(())
    }

    /// Moves everything this reservation holds into a new one (which then gives it back when dropped).
    pub fn split(&mut self) -> Reservation {
        Reservation { budget: self.budget.clone(), bytes: std::mem::take(&mut self.bytes) }
    }

    /// Grows to hold a buffer of `capacity` bytes growing to `wanted` (at least; up to `limit`): reserves
    /// the new buffer while the old one still exists, and returns the new capacity to allocate.
    pub async fn grow_buffer(
        &mut self,
        capacity: usize,
        wanted: usize,
        limit: usize,
        deadline: Instant,
    ) -> Result<usize, InferError> {
        let new = wanted.max(capacity.saturating_mul(2)).max(64 << 10).min(limit.max(wanted));
        // Old and new buffers exist together while the data moves.
        self.grow(new, deadline).await?;
        self.shrink(capacity);
        Ok(new)
    }

    /// Gives back `n` bytes (at most what is held).
    pub fn shrink(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.bytes -= n;
        self.budget.give_back(n);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// A body that holds something (a reservation, a connection's busy mark) until it has been sent.
pub struct Holding<B, T> {
    pub body: B,
    pub held: T,
}

impl<B: http_body::Body + Unpin, T: Unpin> http_body::Body for Holding<B, T> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_share_the_budget_and_wait_for_each_other() {
        let budget = Budget::new(100, Gauge::default());
        let mut a = budget.start();
        a.grow(60, Instant::now() + Duration::from_secs(1)).await.unwrap();
        let mut b = budget.start();
        // Over the whole budget: refused at once as too large.
        assert_eq!(b.grow(101, Instant::now()).await.unwrap_err().http_status(), 413);
        // Over what is left: 503 once the deadline passes.
        let err = b.try_grow(50).unwrap_err();
        assert_eq!((err.http_status(), err.reason()), (503, "budget_exhausted"));
        let soon = Instant::now() + Duration::from_millis(10);
        assert_eq!(b.grow(50, soon).await.unwrap_err().http_status(), 503);
        // A waiter gets its bytes as soon as another request gives them back.
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut c = budget.start();
                c.grow(50, Instant::now() + Duration::from_secs(10)).await.map(|()| c.bytes())
            })
        };
        a.shrink(20);
        assert_eq!(budget.used(), 40);
        drop(a);
        assert_eq!(waiter.await.unwrap().unwrap(), 50);
        assert_eq!(budget.used(), 0, "every reservation was given back");
    }
}
