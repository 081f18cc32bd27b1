//! `/metrics` for every binary: a prometheus-client registry in the OpenMetrics text format.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;

/// The registry encoded as the body of a `/metrics` response (500 with `{"error": ...}` if encoding fails).
pub fn response(registry: &Registry) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
                .into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({ "error": format!("encoding metrics: {e}") })),
        )
            .into_response(),
    }
}
