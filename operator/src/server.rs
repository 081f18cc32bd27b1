//! The operator's HTTP endpoints: `/metrics`, `/health` and `/ready`. The server never holds the client.

use axum::{Router, extract::State as AxumState, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What the controllers share with the web server.
#[derive(Clone)]
pub struct State {
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
    /// Waiting for the leader election's lease, which another replica holds.
    standby: Arc<AtomicBool>,
    /// The last watch error, while the watches fail.
    watch_error: Arc<Mutex<Option<String>>>,
}

impl State {
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(registry),
            ready: Arc::new(AtomicBool::new(false)),
            standby: Arc::new(AtomicBool::new(false)),
            watch_error: Arc::default(),
        }
    }

    /// Records that a watch failed (the API server unreachable, say): `/ready` fails until [`watches_ok`].
    ///
    /// [`watches_ok`]: State::watches_ok
    pub fn watch_failed(&self, error: String) {
        *self.watch_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    /// Records that the watches work again.
    pub fn watches_ok(&self) {
        self.watch_error.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The last watch error, while the watches fail.
    pub fn watch_error(&self) -> Option<String> {
        self.watch_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Marks the operator ready: CRDs installed and caches synced.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the replica a standby (another holds the lease) or not. A standby is ready: it is a healthy
    /// replica waiting to take over, and a rolling update must be able to count it.
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::Release);
    }
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .with_state(state)
}

async fn metrics(AxumState(state): AxumState<State>) -> axum::response::Response {
    mizzen_common::metrics::response(&state.registry)
}

async fn ready(AxumState(state): AxumState<State>) -> impl IntoResponse {
    if state.standby.load(Ordering::Acquire) {
        return (StatusCode::OK, "standby: another replica holds the lease".to_string());
    }
    if !state.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "waiting for the mizzen.dev CRDs and caches".to_string());
    }
    match state.watch_error() {
        Some(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("the watches fail: {error}")),
        None => (StatusCode::OK, "ready".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(state: &State, path: &str) -> (StatusCode, String) {
        let res =
            router(state.clone()).oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn ready_is_503_until_set() {
        let state = State::new(Registry::default());
        assert_eq!(get(&state, "/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get(&state, "/health").await.0, StatusCode::OK);
        state.set_ready(true);
        assert_eq!(get(&state, "/ready").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_standby_is_ready_and_says_so() {
        let state = State::new(Registry::default());
        state.set_standby(true);
        assert_eq!(
            get(&state, "/ready").await,
            (StatusCode::OK, "standby: another replica holds the lease".into())
        );
        state.set_standby(false);
        assert_eq!(get(&state, "/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn ready_fails_while_the_watches_fail_and_health_does_not() {
        let state = State::new(Registry::default());
        state.set_ready(true);
        state.watch_failed("connection refused".into());
        let (status, body) = get(&state, "/ready").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "the watches fail: connection refused")
        );
        assert_eq!(get(&state, "/health").await.0, StatusCode::OK);
        state.watches_ok();
        assert_eq!(get(&state, "/ready").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let mut registry = Registry::with_prefix("mizzen_operator");
        let metrics = crate::metrics::Metrics::default().register(&mut registry);
        drop(metrics.reconcile_started("ModelDeployment"));
        metrics.reconcile_failed("ModelDeployment", "apply_service");
        let (status, body) = get(&State::new(registry), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("mizzen_operator_reconciles_total{kind=\"ModelDeployment\"} 1"), "{body}");
        assert!(body.contains(
            "mizzen_operator_reconcile_failures_total{kind=\"ModelDeployment\",error=\"apply_service\"} 1"
        ));
        assert!(
            body.contains("mizzen_operator_reconcile_duration_seconds_count{kind=\"ModelDeployment\"} 1")
        );
    }
}
