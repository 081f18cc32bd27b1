//! mizzen-registry: model versions, aliases, runs and artifacts, spoken in MLflow's REST API so that the
//! `mlflow` client (and notebooks and CI scripts written for it) works against it unchanged.
//!
//! Metadata lives in an embedded transactional store ([`store`]), artifacts in content-addressed files
//! ([`artifacts`]). Every JSON endpoint reads its parameters one way ([`params`]) and answers MLflow's
//! shapes and errors ([`error`]).

pub mod artifacts;
pub mod error;
pub mod filter;
pub mod metrics;
pub mod onnx;
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
    pub metrics: metrics::Metrics,
    /// How long an upload's body may send nothing before it is refused (a stalled or abandoned client
    /// would otherwise hold its task and temporary file for ever).
    pub upload_stall: std::time::Duration,
}

/// The default of [`App::upload_stall`].
pub const UPLOAD_STALL: std::time::Duration = std::time::Duration::from_secs(60);

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
        Self::open_with(data_dir, max_artifact_bytes, token, UPLOAD_STALL)
    }

    /// [`App::open`] with an upload stall limit other than [`UPLOAD_STALL`].
    pub fn open_with(
        data_dir: PathBuf,
        max_artifact_bytes: u64,
        token: Option<String>,
        upload_stall: std::time::Duration,
    ) -> Result<Arc<Self>, ApiError> {
        let io = |e: std::io::Error| ApiError::internal(format!("{}: {e}", data_dir.display()));
        std::fs::create_dir_all(data_dir.join("blobs")).map_err(io)?;
        let tmp = data_dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io)?;
        }
        std::fs::create_dir_all(&tmp).map_err(io)?;
        let store = store::Store::open(&data_dir.join("registry.redb"))?;
        let metrics = metrics::Metrics::new();
        let app = Arc::new(Self { store, data_dir, max_artifact_bytes, token, metrics, upload_stall });
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

pub type Handler = fn(&App, &Params) -> Result<Value, ApiError>;

/// The JSON endpoints under `/api/2.0/mlflow/`: methods, path, handler and what it does (the OpenAPI
/// description is made from this table, so it cannot drift from what is served).
pub const ENDPOINTS: &[(&[&str], &str, Handler, &str)] = {
    use registry as r;
    use tracking as t;
    &[
        (&["POST"], "experiments/create", t::create_experiment, "Create an experiment"),
        (&["GET"], "experiments/get", t::get_experiment, "Get an experiment by id"),
        (&["GET"], "experiments/get-by-name", t::get_experiment_by_name, "Get an experiment by name"),
        (&["POST", "GET"], "experiments/search", t::search_experiments, "Search experiments"),
        (&["POST"], "runs/create", t::create_run, "Start a run"),
        (&["GET"], "runs/get", t::get_run, "Get a run with its params, metrics and tags"),
        (&["POST"], "runs/update", t::update_run, "Update a run's status, end time or name"),
        (&["POST"], "runs/log-metric", t::log_metric, "Log a metric"),
        (&["POST"], "runs/log-parameter", t::log_param, "Log a param"),
        (&["POST"], "runs/set-tag", t::set_tag, "Set a run tag"),
        (&["POST"], "runs/log-batch", t::log_batch, "Log metrics, params and tags at once"),
        (&["POST", "GET"], "runs/search", t::search_runs, "Search runs"),
        (
            &["POST"],
            "logged-models/search",
            |_, _| Ok(serde_json::json!({"models": []})),
            "Logged models (none)",
        ),
        (&["POST"], "registered-models/create", r::create_model, "Create a registered model"),
        (&["GET"], "registered-models/get", r::get_model, "Get a registered model"),
        (&["POST"], "registered-models/rename", r::rename_model, "Rename a registered model"),
        (&["PATCH"], "registered-models/update", r::update_model, "Update a model's description"),
        (&["DELETE"], "registered-models/delete", r::delete_model, "Delete a registered model"),
        (&["GET"], "registered-models/search", r::search_models, "Search registered models"),
        (&["POST"], "registered-models/set-tag", r::set_model_tag, "Set a model tag"),
        (&["DELETE"], "registered-models/delete-tag", r::delete_model_tag, "Delete a model tag"),
        (
            &["POST"],
            "registered-models/alias",
            r::set_alias,
            "Point an alias at a version (a move, atomically)",
        ),
        (&["DELETE"], "registered-models/alias", r::delete_alias, "Delete an alias"),
        (&["GET"], "registered-models/alias", r::get_by_alias, "Get the version an alias names"),
        (&["POST", "GET"], "registered-models/get-latest-versions", r::latest_versions, "Newest versions"),
        (&["POST"], "model-versions/create", r::create_version, "Register a version from a source"),
        (&["GET"], "model-versions/get", r::get_version, "Get a version"),
        (&["PATCH"], "model-versions/update", r::update_version, "Update a version's description"),
        (
            &["DELETE"],
            "model-versions/delete",
            r::delete_version,
            "Delete a version (not one an alias names)",
        ),
        (&["GET"], "model-versions/search", r::search_versions, "Search versions"),
        (&["GET"], "model-versions/get-download-uri", r::download_uri, "A version's artifact URI"),
        (&["POST"], "model-versions/set-tag", r::set_version_tag, "Set a version tag"),
        (&["DELETE"], "model-versions/delete-tag", r::delete_version_tag, "Delete a version tag"),
    ]
};

fn handler(method: &Method, op: &str) -> Option<Handler> {
    ENDPOINTS
        .iter()
        .find(|(methods, path, _, _)| *path == op && methods.contains(&method.as_str()))
        .map(|e| e.2)
}

/// The OpenAPI 3.1 description of the HTTP API, made from [`ENDPOINTS`] and the artifact proxy's routes.
pub fn openapi() -> Value {
    let error = serde_json::json!({"description": "MLflow's error: {\"error_code\", \"message\"}",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let json_body = serde_json::json!({"content": {"application/json": {"schema": {"type": "object"}}}});
    let mut paths = serde_json::Map::new();
    for (methods, op, _, summary) in ENDPOINTS {
        let entry = paths.entry(format!("/api/2.0/mlflow/{op}")).or_insert_with(|| serde_json::json!({}));
        for m in *methods {
            let mut operation = serde_json::json!({
                "summary": summary,
                "operationId": format!("{}-{}", m.to_ascii_lowercase(), op.replace('/', "-")),
                "responses": {"200": {"description": "MLflow's answer", "content": {"application/json": {"schema": {"type": "object"}}}},
                              "400": error, "404": error, "401": error},
            });
            if *m == "GET" {
                operation["parameters"] = serde_json::json!([{"name": "params", "in": "query", "style": "form",
                    "explode": true, "schema": {"type": "object", "additionalProperties": {"type": "string"}}}]);
            } else {
                operation["requestBody"] = json_body.clone();
            }
            entry[m.to_ascii_lowercase()] = operation;
        }
    }
    let file =
        serde_json::json!({"name": "path", "in": "path", "required": true, "schema": {"type": "string"}});
    paths.insert("/api/2.0/mlflow-artifacts/artifacts/{path}".into(), serde_json::json!({
        "put": {"summary": "Upload an artifact (streamed; sha256 computed on the way in)", "operationId": "put-artifact",
                "parameters": [file], "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {"200": {"description": "stored"}, "400": error, "401": error, "413": error}},
        "get": {"summary": "Download an artifact (streamed)", "operationId": "get-artifact", "parameters": [file],
                "responses": {"200": {"description": "the bytes", "content": {"application/octet-stream": {}}}, "404": error}},
    }));
    paths.insert("/api/2.0/mlflow-artifacts/artifacts".into(), serde_json::json!({
        "get": {"summary": "List artifacts under ?path=", "operationId": "list-artifacts",
                "parameters": [{"name": "path", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "{\"files\": [{\"path\", \"is_dir\", \"file_size\"}]}"}}},
    }));
    for (path, summary) in [
        ("/health", "The process answers"),
        ("/ready", "Ready to serve"),
        ("/metrics", "Prometheus metrics"),
        ("/version", "The version"),
    ] {
        paths.insert(
            path.into(),
            serde_json::json!({"get": {"summary": summary, "operationId": path.trim_start_matches('/'),
            "responses": {"200": {"description": "OK"}}}}),
        );
    }
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "mizzen-registry", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Mizzen's model registry: the part of MLflow's REST API the MLflow client uses for tracking, the model registry and the artifact proxy. Writes need `Authorization: Bearer TOKEN` when the registry has a token."},
        "paths": paths,
        "components": {"schemas": {"Error": {"type": "object", "required": ["error_code", "message"],
            "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}}}}},
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

/// Whether `given` is `secret`, in a time that does not depend on where they differ.
fn same_secret(given: &str, secret: &str) -> bool {
    let (given, secret) = (given.as_bytes(), secret.as_bytes());
    given.len() == secret.len() && given.iter().zip(secret).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

/// With a token configured, every request but a read needs it.
async fn authorize(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    if let Some(token) = &app.token
        && !read
    {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !given.and_then(|g| g.strip_prefix("Bearer ")).is_some_and(|g| same_secret(g, token)) {
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
        .route("/openapi.json", get(|| async { axum::Json(openapi()) }))
        .route("/metrics", get(|State(app): State<Arc<App>>| async move { mizzen_common::metrics::response(&app.metrics.registry) }))
        .route("/health", get(|| async { "OK" }))
        .route("/ready", get(|| async { "OK" }))
        .route("/version", get(|| async { env!("CARGO_PKG_VERSION") }))
        .fallback(|method: Method, uri: axum::http::Uri| async move { not_found(&method, uri.path()) })
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .layer(middleware::from_fn_with_state(app.clone(), metrics::observe))
        .with_state(app)
}

/// A registry on a loopback port, for tests (here and in the crates that talk to it).
pub mod testing {
    use std::sync::Arc;

    /// Serves `app` on a free loopback port from the current runtime; its base URL.
    pub async fn serve(app: Arc<super::App>) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, super::router(app)).await });
        Ok(url)
    }

    /// A registry with an empty store in a temporary directory, served from its own runtime (for tests
    /// that are not async) until dropped.
    pub struct Background {
        pub url: String,
        pub rt: tokio::runtime::Runtime,
        pub dir: tempfile::TempDir,
    }

    impl Background {
        /// Panics when it cannot start: this is for tests.
        pub fn start() -> Self {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let app = super::App::open(dir.path().join("data"), 1 << 30, None).expect("a registry store");
            let url = rt.block_on(serve(app)).expect("a loopback port");
            Self { url, rt, dir }
        }
    }
}
