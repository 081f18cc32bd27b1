//! `/metrics`: requests by API, method and status code with their durations, and artifact bytes in and out.

use crate::App;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `mlflow` (the JSON API), `artifacts` (the proxy) or `other`.
    pub api: &'static str,
    pub method: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    pub api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `in` (uploads) or `out` (downloads).
    pub direction: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<ApiLabel, Histogram>,
    pub artifact_bytes: Family<DirectionLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mizzen_registry");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<ApiLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 4.0, 10))
        });
        let artifact_bytes = Family::<DirectionLabel, Counter>::default();
        registry.register("requests", "HTTP requests answered", requests.clone());
        registry.register("request_duration_seconds", "Time to answer a request", duration.clone());
        registry.register(
            "artifact_bytes",
            "Artifact bytes uploaded (in) and served (out)",
            artifact_bytes.clone(),
        );
        Self { registry, requests, duration, artifact_bytes }
    }

    pub fn artifact(&self, direction: &'static str, bytes: u64) {
        self.artifact_bytes.get_or_create(&DirectionLabel { direction }).inc_by(bytes);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn api_of(path: &str) -> &'static str {
    if path.starts_with("/api/2.0/mlflow-artifacts/") {
        "artifacts"
    } else if path.starts_with("/api/2.0/mlflow/") || path.starts_with("/api/3.0/mlflow/") {
        "mlflow"
    } else {
        "other"
    }
}

/// Counts and times every request (a streamed download is timed to its first byte).
pub async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let api = api_of(req.uri().path());
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    let code = response.status().as_u16();
    app.metrics.requests.get_or_create(&RequestLabels { api, method, code }).inc();
    app.metrics.duration.get_or_create(&ApiLabel { api }).observe(start.elapsed().as_secs_f64());
    response
}
