//! `/metrics`: lookups and their latency, rows written and refused, entities online, and the age of the
//! values served (staleness).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Endpoint {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Status {
    /// Feast's field status: `PRESENT`, `NULL_VALUE`, `NOT_FOUND`, `OUTSIDE_MAX_AGE`.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct To {
    /// `online`, `offline` or `online_and_offline`.
    pub to: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<Endpoint, Counter>,
    pub refused: Family<Endpoint, Counter>,
    pub duration: Family<Endpoint, Histogram>,
    pub values: Family<Status, Counter>,
    pub value_age: Histogram,
    pub rows: Family<To, Counter>,
    pub entities: Gauge,
}

impl Metrics {
    pub fn new(feature_set: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "mizzen_features",
            [(std::borrow::Cow::Borrowed("feature_set"), std::borrow::Cow::Owned(feature_set.to_string()))]
                .into_iter(),
        );
        let requests = Family::<Endpoint, Counter>::default();
        let refused = Family::<Endpoint, Counter>::default();
        let duration = Family::<Endpoint, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
        });
        let values = Family::<Status, Counter>::default();
        let value_age = Histogram::new(exponential_buckets(1.0, 4.0, 12));
        let rows = Family::<To, Counter>::default();
        let entities = Gauge::default();
        registry.register("requests", "Requests answered, by endpoint", requests.clone());
        registry.register("refused", "Requests refused as invalid (4xx), by endpoint", refused.clone());
        registry.register("request_duration_seconds", "Time to answer a request", duration.clone());
        registry.register("values", "Feature values looked up online, by status", values.clone());
        registry.register(
            "value_age_seconds",
            "Age (now minus event time) of the values served online: staleness",
            value_age.clone(),
        );
        registry.register("rows_written", "Rows written, by where they went", rows.clone());
        registry.register("online_entities", "Entities in the online store", entities.clone());
        Self { registry, requests, refused, duration, values, value_age, rows, entities }
    }
}
