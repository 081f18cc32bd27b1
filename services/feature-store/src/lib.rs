//! mizzen-features: one FeatureSet's feature store, spoken in Feast's feature-server REST API.
//!
//! Online lookups (`POST /get-online-features`) read the latest value of each feature per entity, with ttl
//! enforced (`OUTSIDE_MAX_AGE`, where Feast serves stale values as `PRESENT`); writes (`POST /push`,
//! `POST /write-to-online-store`) are durable when acknowledged; `POST /get-historical-features` joins
//! entity rows with the values as of each row's time (point-in-time correct), from the offline log.

pub mod api;
pub mod export;
pub mod ingest;
pub mod materialize;
pub mod metrics;
pub mod pit;
pub mod schema;
pub mod store;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// An error with the HTTP status it is answered with: 4xx for the client's mistakes, never a 5xx for them
/// (Feast's SDK retries those).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub status: StatusCode,
    pub message: String,
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into() }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into() }
    }
    pub fn db(e: impl std::fmt::Display) -> Self {
        Self::internal(format!("the online store: {e}"))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(error = %self.message, "request failed");
        }
        (self.status, axum::Json(serde_json::json!({"error": self.message}))).into_response()
    }
}

/// The served FeatureSet: its schema, its store and its metrics.
pub struct App {
    pub store: store::Store,
    pub metrics: metrics::Metrics,
}

impl App {
    /// Opens the store of FeatureSet `name` (`spec`) under `data_dir`.
    pub fn open(
        data_dir: &std::path::Path,
        name: &str,
        spec: &mizzen_api::v1alpha1::feature_set::FeatureSetSpec,
        cache_bytes: u64,
    ) -> Result<Arc<Self>, Error> {
        let schema = Arc::new(schema::Schema::new(name, spec).map_err(Error::invalid)?);
        let store = store::Store::open(data_dir, schema, cache_bytes)?;
        let metrics = metrics::Metrics::new(name);
        metrics.entities.set(store.entity_count()? as i64);
        Ok(Arc::new(Self { store, metrics }))
    }
}

pub use api::router;

/// Reads a FeatureSet (a whole object, as `kubectl get -o yaml` prints it, or only its spec with a
/// `name`), in YAML or JSON: its name and spec.
pub fn read_feature_set(
    text: &str,
) -> Result<(String, mizzen_api::v1alpha1::feature_set::FeatureSetSpec), String> {
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| format!("not YAML or JSON: {e}"))?;
    let name = value["metadata"]["name"]
        .as_str()
        .or_else(|| value["name"].as_str())
        .ok_or("the FeatureSet has no metadata.name")?
        .to_string();
    let spec = if value.get("spec").is_some() { value["spec"].clone() } else { value };
    let spec = serde_json::from_value(spec).map_err(|e| format!("the FeatureSet's spec: {e}"))?;
    Ok((name, spec))
}
