//! The operator's HTTP endpoints: `/metrics`, `/health` and `/ready`. The server never holds the client.

use axum::{Router, extract::State as AxumState, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the controllers share with the web server.
#[derive(Clone)]
pub struct State {
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
}

impl State {
    pub fn new(registry: Registry) -> Self {
        Self { registry: Arc::new(registry), ready: Arc::new(AtomicBool::new(false)) }
    }

    /// Marks the operator ready: CRDs installed and caches synced.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
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
    if state.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for the mizzen.dev CRDs and caches")
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
