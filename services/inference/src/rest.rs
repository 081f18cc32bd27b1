//! The REST front end (axum): the Open Inference Protocol v2 with JSON tensors and Triton's binary tensor
//! data extension, health endpoints and `/metrics`. Every error is `{"error": "..."}` with Triton's status.

use crate::error::InferError;
use crate::model::TensorSpec;
use crate::server::{EXTENSIONS, SERVER_NAME, SERVER_VERSION, Server};
use crate::tensor::{Data, DataType, Tensor, element_count};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Clone)]
struct AppState {
    server: Arc<Server>,
    registry: Arc<Registry>,
}

/// The REST routes.
pub fn router(server: Arc<Server>, registry: Registry) -> Router {
    // The body limit is enforced here, before the handler reads anything.
    let limit = server.max_request_bytes;
    let state = AppState { server, registry: Arc::new(registry) };
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata_version))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/versions/{version}/ready", get(model_ready_version))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer_version))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(InferError::not_found("no such endpoint")) })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn error(e: InferError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({ "error": e.message }))).into_response()
}

async fn server_metadata() -> Response {
    axum::Json(json!({ "name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS }))
        .into_response()
}

async fn server_ready(State(s): State<AppState>) -> Response {
    if s.server.is_ready() {
        StatusCode::OK.into_response()
    } else {
        error(InferError::unavailable("the model is loading"))
    }
}

fn specs_json(specs: &[TensorSpec]) -> Value {
    specs.iter().map(|t| json!({ "name": t.name, "datatype": t.datatype.name(), "shape": t.shape })).collect()
}

fn metadata(s: &Server, model: &str, version: &str) -> Response {
    match s.model(model, version) {
        Ok(loaded) => axum::Json(json!({
            "name": loaded.info.name,
            "versions": [loaded.info.version],
            "platform": "onnxruntime_onnx",
            "inputs": specs_json(&loaded.info.inputs),
            "outputs": specs_json(&loaded.info.outputs),
        }))
        .into_response(),
        Err(e) => error(e),
    }
}

async fn model_metadata(State(s): State<AppState>, Path(model): Path<String>) -> Response {
    metadata(&s.server, &model, "")
}

async fn model_metadata_version(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    metadata(&s.server, &model, &version)
}

async fn model_ready(State(s): State<AppState>, Path(model): Path<String>) -> Response {
    match s.server.model(&model, "") {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => error(e),
    }
}

async fn model_ready_version(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    match s.server.model(&model, &version) {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => error(e),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    mizzen_common::metrics::response(&s.registry)
}

#[derive(Debug, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

fn param_bool(p: &Option<Map<String, Value>>, key: &str) -> Option<bool> {
    p.as_ref().and_then(|m| m.get(key)).and_then(Value::as_bool)
}

async fn infer(
    State(s): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_common(&s.server, &model, "", &headers, body).await
}

async fn infer_version(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_common(&s.server, &model, &version, &headers, body).await
}

async fn infer_common(
    server: &Server,
    model: &str,
    version: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut tracker = server.track("rest");
    let result = async {
        let body = body.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                InferError::new(
                    crate::error::Kind::TooLarge,
                    format!("the request body is over the limit of {} bytes", server.max_request_bytes),
                )
            } else {
                InferError::invalid(format!("cannot read the request body: {r}"))
            }
        })?;
        let (request, inputs) = parse_request(headers, &body)?;
        let requested: Vec<String> = request.outputs.iter().flatten().map(|o| o.name.clone()).collect();
        let (info, outputs) = server.infer(model, version, inputs, &requested).await?;
        Ok::<_, InferError>(respond(&info.name, &info.version, &request, outputs))
    }
    .await;
    tracker.finish(&result);
    result.unwrap_or_else(error)
}

/// Splits an infer body into the JSON request and decoded input tensors.
fn parse_request(headers: &HeaderMap, body: &[u8]) -> Result<(InferRequest, Vec<Tensor>), InferError> {
    let (json_part, mut binary) = match headers.get(HEADER_LENGTH) {
        Some(v) => {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| InferError::invalid("Inference-Header-Content-Length must be a number"))?;
            body.split_at_checked(n).ok_or_else(|| {
                InferError::invalid(format!(
                    "Inference-Header-Content-Length {n} is past the body's {} bytes",
                    body.len()
                ))
            })?
        }
        None => (body, &[][..]),
    };
    let request: InferRequest = serde_json::from_slice(json_part)
        .map_err(|e| InferError::invalid(format!("invalid infer request: {e}")))?;
    if request.inputs.is_empty() {
        return Err(InferError::invalid("the request has no inputs"));
    }
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let datatype = DataType::parse(&input.datatype)?;
        let n = element_count(&input.shape)?;
        let binary_size = input.parameters.as_ref().and_then(|p| p.get("binary_data_size"));
        let data = match (binary_size, &input.data) {
            (Some(size), None) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| InferError::invalid("binary_data_size must be a non-negative integer"))?;
                let (raw, rest) = binary.split_at_checked(size).ok_or_else(|| {
                    InferError::invalid(format!(
                        "input {:?}: binary_data_size {size} is past the binary data",
                        input.name
                    ))
                })?;
                binary = rest;
                Data::from_raw(datatype, raw, n)
            }
            (None, Some(data)) => Data::from_json(datatype, data, n),
            (Some(_), Some(_)) => Err(InferError::invalid("an input has both data and binary_data_size")),
            (None, None) => Err(InferError::invalid("an input has neither data nor binary_data_size")),
        }
        .map_err(|e| InferError::new(e.kind, format!("input {:?}: {}", input.name, e.message)))?;
        inputs.push(Tensor { name: input.name.clone(), shape: input.shape.clone(), data });
    }
    if !binary.is_empty() {
        return Err(InferError::invalid(format!(
            "{} bytes of binary data are not claimed by any input",
            binary.len()
        )));
    }
    Ok((request, inputs))
}

/// Builds the response: JSON, or JSON + binary tensors when the request asked for binary outputs.
fn respond(model: &str, version: &str, request: &InferRequest, outputs: Vec<Tensor>) -> Response {
    let all_binary = param_bool(&request.parameters, "binary_data_output").unwrap_or(false);
    let wants_binary = |name: &str| {
        request
            .outputs
            .iter()
            .flatten()
            .find(|o| o.name == name)
            .and_then(|o| param_bool(&o.parameters, "binary_data"))
            .unwrap_or(all_binary)
    };
    let mut binary = Vec::new();
    let outs: Vec<Value> = outputs
        .iter()
        .map(|t| {
            let mut o = json!({ "name": t.name, "datatype": t.datatype().name(), "shape": t.shape });
            if wants_binary(&t.name) {
                let raw = t.data.to_raw();
                o["parameters"] = json!({ "binary_data_size": raw.len() });
                binary.extend_from_slice(&raw);
            } else {
                o["data"] = t.data.to_json();
            }
            o
        })
        .collect();
    let mut body = json!({ "model_name": model, "model_version": version, "outputs": outs });
    if let Some(id) = &request.id {
        body["id"] = Value::String(id.clone());
    }
    let json_bytes = serde_json::to_vec(&body).unwrap_or_default();
    if binary.is_empty() {
        return ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json_bytes)
            .into_response();
    }
    let json_len = json_bytes.len();
    let mut all = json_bytes;
    all.extend_from_slice(&binary);
    let mut response =
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))], all).into_response();
    response.headers_mut().insert(HEADER_LENGTH, HeaderValue::from(json_len));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(n: Option<usize>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(n) = n {
            h.insert(HEADER_LENGTH, HeaderValue::from(n));
        }
        h
    }

    #[test]
    fn parses_json_and_binary_inputs() {
        let body = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#;
        let (_, inputs) = parse_request(&headers(None), body).unwrap();
        assert_eq!(inputs[0].data, Data::F32(vec![1.0, 2.0]));

        let json = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&Data::I32(vec![7, -1]).to_raw());
        let (_, inputs) = parse_request(&headers(Some(json.len())), &body).unwrap();
        assert_eq!(inputs[0].data, Data::I32(vec![7, -1]));
    }

    #[test]
    fn refuses_malformed_requests_with_reasons() {
        let bad = |h: HeaderMap, b: &[u8]| parse_request(&h, b).unwrap_err().to_string();
        assert!(bad(headers(None), b"{").contains("invalid infer request"));
        assert!(bad(headers(None), br#"{"inputs":[]}"#).contains("no inputs"));
        assert!(
            bad(headers(None), br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP99","data":[1]}]}"#)
                .contains("unknown datatype")
        );
        assert!(
            bad(headers(None), br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#)
                .contains("neither")
        );
        assert!(
            bad(headers(None), br#"{"inputs":[{"name":"x","shape":[-2],"datatype":"FP32","data":[]}]}"#)
                .contains("negative")
        );
        assert!(bad(headers(Some(999)), b"{}").contains("past the body"));
        let json =
            br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&[0; 4]);
        assert!(bad(headers(Some(json.len())), &body).contains("past the binary data"));
    }
}
