//! mizzen-registry: model versions, aliases, runs and artifacts, spoken in MLflow's REST API so that the
//! `mlflow` client (and notebooks and CI scripts written for it) works against it unchanged.
//!
//! Metadata lives in an embedded transactional store ([`store`]), artifacts in content-addressed files
//! ([`artifacts`]). Every JSON endpoint reads its parameters one way ([`params`]) and answers MLflow's
//! shapes and errors ([`error`]).

pub mod artifacts;
pub mod error;
pub mod filter;
pub mod params;
pub mod registry;
pub mod store;
pub mod tracking;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, RawQuery, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use error::ApiError;
use params::Params;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// The registry's state: its metadata store and where its files go.
pub struct App {
    pub store: store::Store,
    pub data_dir: PathBuf,
    pub max_artifact_bytes: u64,
    /// When set, writes need `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
}

/// The largest JSON request body.
const MAX_JSON_BYTES: usize = 4 << 20;

impl App {
    /// Opens the registry under `data_dir` (created if needed): `registry.redb`, `blobs/`, `tmp/` (emptied:
    /// uploads a crash cut short).
    pub fn open(
        data_dir: PathBuf,
        max_artifact_bytes: u64,
        token: Option<String>,
    ) -> Result<Arc<Self>, ApiError> {
        let io = |e: std::io::Error| ApiError::internal(format!("{}: {e}", data_dir.display()));
        std::fs::create_dir_all(data_dir.join("blobs")).map_err(io)?;
        let tmp = data_dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io)?;
        }
        std::fs::create_dir_all(&tmp).map_err(io)?;
        let store = store::Store::open(&data_dir.join("registry.redb"))?;
        let app = Arc::new(Self { store, data_dir, max_artifact_bytes, token });
        tracking::init(&app)?;
        Ok(app)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One page of a search: `max_results` items from the offset its `page_token` carries.
pub struct Page {
    offset: usize,
    max: usize,
}

impl Page {
    pub fn from(p: &Params, default_max: usize) -> Result<Self, ApiError> {
        let max = p.opt_int("max_results")?.unwrap_or(default_max as i64);
        if !(1..=50_000).contains(&max) {
            return Err(ApiError::invalid(format!("max_results must be between 1 and 50000, got {max}")));
        }
        let offset = match p.opt_str("page_token")?.filter(|t| !t.is_empty()) {
            None => 0,
            Some(t) => t
                .strip_prefix("offset-")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| ApiError::invalid(format!("invalid page_token {t:?}")))?,
        };
        Ok(Self { offset, max: max as usize })
    }

    /// This page of `all`, and the token of the next page (none after the last).
    pub fn cut<T>(&self, all: Vec<T>) -> (Vec<T>, Option<String>) {
        let total = all.len();
        let end = self.offset.saturating_add(self.max).min(total);
        let items = all.into_iter().skip(self.offset).take(self.max).collect();
        (items, (end < total).then(|| format!("offset-{end}")))
    }
}

type Handler = fn(&App, &Params) -> Result<Value, ApiError>;

/// The JSON endpoints under `/api/2.0/mlflow/`, by method and path.
fn handler(method: &Method, op: &str) -> Option<Handler> {
    use registry as r;
    use tracking as t;
    let m = method.as_str();
    Some(match (m, op) {
        ("POST", "experiments/create") => t::create_experiment,
        ("GET", "experiments/get") => t::get_experiment,
        ("GET", "experiments/get-by-name") => t::get_experiment_by_name,
        ("POST" | "GET", "experiments/search") => t::search_experiments,
        ("POST", "runs/create") => t::create_run,
        ("GET", "runs/get") => t::get_run,
        ("POST", "runs/update") => t::update_run,
        ("POST", "runs/log-metric") => t::log_metric,
        ("POST", "runs/log-parameter") => t::log_param,
        ("POST", "runs/set-tag") => t::set_tag,
        ("POST", "runs/log-batch") => t::log_batch,
        ("POST" | "GET", "runs/search") => t::search_runs,
        ("POST", "logged-models/search") => |_, _| Ok(serde_json::json!({"models": []})),
        ("POST", "registered-models/create") => r::create_model,
        ("GET", "registered-models/get") => r::get_model,
        ("POST", "registered-models/rename") => r::rename_model,
        ("PATCH", "registered-models/update") => r::update_model,
        ("DELETE", "registered-models/delete") => r::delete_model,
        ("GET", "registered-models/search") => r::search_models,
        ("POST", "registered-models/set-tag") => r::set_model_tag,
        ("DELETE", "registered-models/delete-tag") => r::delete_model_tag,
        ("POST", "registered-models/alias") => r::set_alias,
        ("DELETE", "registered-models/alias") => r::delete_alias,
        ("GET", "registered-models/alias") => r::get_by_alias,
        ("POST" | "GET", "registered-models/get-latest-versions") => r::latest_versions,
        ("POST", "model-versions/create") => r::create_version,
        ("GET", "model-versions/get") => r::get_version,
        ("PATCH", "model-versions/update") => r::update_version,
        ("DELETE", "model-versions/delete") => r::delete_version,
        ("GET", "model-versions/search") => r::search_versions,
        ("GET", "model-versions/get-download-uri") => r::download_uri,
        ("POST", "model-versions/set-tag") => r::set_version_tag,
        ("DELETE", "model-versions/delete-tag") => r::delete_version_tag,
        _ => return None,
    })
}

async fn dispatch(
    State(app): State<Arc<App>>,
    method: Method,
    UrlPath(op): UrlPath<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let Some(handler) = handler(&method, &op) else {
        return not_found(&method, &format!("/api/2.0/mlflow/{op}"));
    };
    let params = if method == Method::GET {
        Ok(Params::from_query(&query.unwrap_or_default()))
    } else {
        Params::from_body(&body)
    };
    let result = match params {
        Ok(p) => tokio::task::spawn_blocking(move || handler(&app, &p))
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(e.to_string()))),
        Err(e) => Err(e),
    };
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn not_found(method: &Method, path: &str) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "ENDPOINT_NOT_FOUND", format!("no endpoint {method} {path}"))
        .into_response()
}

/// With a token configured, every request but a read needs it.
async fn authorize(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    if let Some(token) = &app.token
        && !read
    {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given.and_then(|g| g.strip_prefix("Bearer ")) != Some(token.as_str()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "writes need Authorization: Bearer TOKEN",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// The registry's HTTP API.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/2.0/mlflow/{*op}", any(dispatch).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/api/2.0/mlflow-artifacts/artifacts", get(artifacts::list))
        .route(
            "/api/2.0/mlflow-artifacts/artifacts/{*path}",
            put(artifacts::upload).get(artifacts::download).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/3.0/mlflow/server-info",
            get(|| async {
                axum::Json(serde_json::json!({"multipart_uploads_enabled": false, "multipart_downloads_enabled": false}))
            }),
        )
        .route("/health", get(|| async { "OK" }))
        .route("/ready", get(|| async { "OK" }))
        .route("/version", get(|| async { env!("CARGO_PKG_VERSION") }))
        .fallback(|method: Method, uri: axum::http::Uri| async move { not_found(&method, uri.path()) })
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .with_state(app)
}
