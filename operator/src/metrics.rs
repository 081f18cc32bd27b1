//! The operator's Prometheus metrics, served as text on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use prometheus_client::registry::Registry;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub kind: &'static str,
    pub error: &'static str,
}

/// Reconcile counters and latency, labelled by kind.
#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Family<KindLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub duration: Family<KindLabels, Histogram>,
    /// Watch errors (the API server unreachable, a list refused): how an outage shows.
    pub watch_errors: Family<KindLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0])
            }),
            watch_errors: Family::default(),
        }
    }
}

impl Metrics {
    /// Registers the metrics under the `mizzen_operator` prefix.
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register("reconciles", "Reconciles started", self.reconciles.clone());
        registry.register("reconcile_failures", "Reconciles that returned an error", self.failures.clone());
        registry.register("reconcile_duration_seconds", "Time spent in one reconcile", self.duration.clone());
        registry.register(
            "watch_errors",
            "Watch errors of a controller's watches",
            self.watch_errors.clone(),
        );
        self
    }

    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub fn reconcile_started(&self, kind: &'static str) -> ReconcileTimer {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.get_or_create(&KindLabels { kind }).clone(),
        }
    }

    pub fn reconcile_failed(&self, kind: &'static str, error: &'static str) {
        self.failures.get_or_create(&FailureLabels { kind, error }).inc();
    }

    pub fn watch_failed(&self, kind: &'static str) {
        self.watch_errors.get_or_create(&KindLabels { kind }).inc();
    }
}

/// Records the time since a reconcile started when it goes out of scope.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}
