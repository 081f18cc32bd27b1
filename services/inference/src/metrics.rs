//! The server's Prometheus metrics, all labelled with the model's name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub protocol: &'static str,
    pub outcome: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    pub protocol: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ]
    .into_iter()
}

#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<ProtocolLabels, Histogram>,
    pub queue_duration: Histogram,
    pub compute_duration: Histogram,
    pub batch_size: Histogram,
    pub inflight: Gauge,
    pub queue_depth: Gauge,
    pub model_load_seconds: Gauge<f64, AtomicU64>,
    /// Requests and connections refused before they reach the model (bad route, limits, timeouts).
    pub rejections: Family<RejectionLabels, Counter>,
    pub connections: Family<ProtocolLabels, Gauge>,
    /// Bytes of the memory budget held by requests in flight.
    pub inflight_bytes: Gauge,
}

impl Metrics {
    /// Counts one refusal.
    pub fn reject(&self, protocol: &'static str, reason: &'static str) {
        self.rejections.get_or_create(&RejectionLabels { protocol, reason }).inc();
    }

    /// Creates the metrics and registers them under `mizzen_inference_`, labelled `model=NAME`.
    pub fn new(model: &str) -> (Self, Registry) {
        let mut registry = Registry::with_prefix_and_labels(
            "mizzen_inference",
            [("model".into(), model.to_string().into())].into_iter(),
        );
        let m = Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            queue_duration: Histogram::new(latency_buckets()),
            compute_duration: Histogram::new(latency_buckets()),
            batch_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
            inflight: Gauge::default(),
            queue_depth: Gauge::default(),
            model_load_seconds: Gauge::default(),
            rejections: Family::default(),
            connections: Family::default(),
            inflight_bytes: Gauge::default(),
        };
        registry.register(
            "requests",
            "Inference requests by protocol, outcome and reason",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response",
            m.request_duration.clone(),
        );
        registry.register(
            "queue_duration_seconds",
            "Time a request waits for its batch",
            m.queue_duration.clone(),
        );
        registry.register(
            "compute_duration_seconds",
            "ONNX Runtime time per batch",
            m.compute_duration.clone(),
        );
        registry.register("batch_size", "Rows per ONNX Runtime run", m.batch_size.clone());
        registry.register(
            "inflight_requests",
            "Requests being served now (the autoscaling signal)",
            m.inflight.clone(),
        );
        registry.register("queue_depth", "Requests waiting for a batch", m.queue_depth.clone());
        registry.register(
            "model_load_seconds",
            "Time to fetch, load and warm up the model",
            m.model_load_seconds.clone(),
        );
        registry.register(
            "rejections",
            "Requests and connections refused before reaching the model, by protocol and reason",
            m.rejections.clone(),
        );
        registry.register("connections", "Open client connections", m.connections.clone());
        registry.register(
            "inflight_request_bytes",
            "Bytes of the memory budget held by requests in flight",
            m.inflight_bytes.clone(),
        );
        (m, registry)
    }
}
