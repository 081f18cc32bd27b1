//! The REST front end (axum): the Open Inference Protocol v2 with JSON tensors and Triton's binary tensor
//! data extension, health endpoints and `/metrics`. Every error is `{"error": "..."}` with Triton's status.
//!
//! An infer request is read in this order, so nothing is allocated from what a client merely declares:
//! the model is looked up; the body's declared size is checked against the limit and reserved from the
//! memory budget; the body is read against its deadline (and inflated when compressed, counted again); the
//! JSON envelope is parsed without its data; each input's name, datatype and shape are checked against the
//! model and its decoded size against the bytes actually sent; that size is reserved; only then are the
//! elements decoded, straight into typed vectors.

use crate::error::{InferError, shown};
use crate::limits::{Holding, Limits, Reservation};
use crate::model::{ModelInfo, TensorSpec};
use crate::server::{EXTENSIONS, Loaded, SERVER_NAME, SERVER_VERSION, Server};
use crate::tensor::{Data, DataType, Tensor, decoded_bytes};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;
use tokio::time::Instant;

const HEADER_LENGTH: &str = "inference-header-content-length";
/// Most inputs or requested outputs in one request, and most dimensions in one shape.
const MAX_TENSORS: usize = 1024;
const MAX_DIMS: usize = 64;
/// Bodies past this size are parsed off the async worker threads.
const BLOCKING_PARSE_BYTES: usize = 1 << 20;

#[derive(Clone)]
struct AppState {
    server: Arc<Server>,
    registry: Arc<Registry>,
}

/// The REST routes. Bodies are read by the handlers themselves (see [`crate::conn`] for the rest of the
/// connection's hygiene).
pub fn router(server: Arc<Server>, registry: Registry) -> Router {
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
        .fallback(|State(s): State<AppState>| async move {
            s.server.metrics.reject("rest", "no_such_endpoint");
            error(InferError::not_found("no such endpoint"))
        })
        .method_not_allowed_fallback(|State(s): State<AppState>| async move {
            s.server.metrics.reject("rest", "method_not_allowed");
            error(InferError::new(crate::error::Kind::Invalid, "method not allowed on this endpoint"))
                .map_status(StatusCode::METHOD_NOT_ALLOWED)
        })
        .with_state(state)
}

/// Whether a request goes to an infer handler, which reads its body itself.
pub fn is_infer(method: &axum::http::Method, path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    method == axum::http::Method::POST
        && match segments[..] {
            ["", "v2", "models", model, "infer"] => !model.is_empty(),
            ["", "v2", "models", model, "versions", version, "infer"] => {
                !model.is_empty() && !version.is_empty()
            }
            _ => false,
        }
}

/// `{"error": message}` with the error's status.
pub fn error(e: InferError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({ "error": e.message }))).into_response()
}

trait MapStatus {
    fn map_status(self, status: StatusCode) -> Self;
}

impl MapStatus for Response {
    fn map_status(mut self, status: StatusCode) -> Self {
        *self.status_mut() = status;
        self
    }
}

/// Marks a response as the connection's last.
pub fn close(response: &mut Response) {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
}

fn path_error(s: &Server, rejection: PathRejection) -> Response {
    s.metrics.reject("rest", "bad_path");
    error(InferError::invalid(format!("bad path: {}", rejection.body_text())))
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

fn specs_json(specs: &[TensorSpec]) -> serde_json::Value {
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

async fn model_metadata(State(s): State<AppState>, model: Result<Path<String>, PathRejection>) -> Response {
    match model {
        Ok(Path(model)) => metadata(&s.server, &model, ""),
        Err(r) => path_error(&s.server, r),
    }
}

async fn model_metadata_version(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    match path {
        Ok(Path((model, version))) => metadata(&s.server, &model, &version),
        Err(r) => path_error(&s.server, r),
    }
}

fn ready(s: &Server, model: &str, version: &str) -> Response {
    match s.model(model, version) {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => error(e),
    }
}

async fn model_ready(State(s): State<AppState>, model: Result<Path<String>, PathRejection>) -> Response {
    match model {
        Ok(Path(model)) => ready(&s.server, &model, ""),
        Err(r) => path_error(&s.server, r),
    }
}

async fn model_ready_version(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    match path {
        Ok(Path((model, version))) => ready(&s.server, &model, &version),
        Err(r) => path_error(&s.server, r),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    mizzen_common::metrics::response(&s.registry)
}

async fn infer(
    State(s): State<AppState>,
    model: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match model {
        Ok(Path(model)) => infer_common(&s.server, &model, "", &headers, body).await,
        Err(r) => refuse_unread(&s.server, &headers, path_error(&s.server, r), body).await,
    }
}

/// An answer to an infer request whose body was not read.
async fn refuse_unread(server: &Server, headers: &HeaderMap, mut response: Response, body: Body) -> Response {
    if expects_continue(headers) {
        response.extensions_mut().insert(ExpectsContinue);
    }
    settle(response, Some(body), &server.limits).await
}

async fn infer_version(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match path {
        Ok(Path((model, version))) => infer_common(&s.server, &model, &version, &headers, body).await,
        Err(r) => refuse_unread(&s.server, &headers, path_error(&s.server, r), body).await,
    }
}

async fn infer_common(
    server: &Server,
    model: &str,
    version: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let mut body = Some(body);
    let mut broken = false;
    // A request counts as in flight (and holds back the inline fast path and batch waits) once it has
    // arrived, not while a client is still uploading it.
    let result = match receive(server, model, version, headers, &mut body, &mut broken).await {
        Ok((loaded, raw, reservation)) => {
            let mut tracker = server.track("rest");
            let result = process(server, loaded, headers, raw, reservation).await;
            tracker.finish(&result);
            result
        }
        Err(e) => {
            server.track("rest").finish(&Err::<(), _>(e.clone()));
            Err(e)
        }
    };
    let mut response = result.unwrap_or_else(error);
    if broken {
        close(&mut response);
    }
    if expects_continue(headers) {
        response.extensions_mut().insert(ExpectsContinue);
    }
    settle(response, body, &server.limits).await
}

/// After an answer given before the body was read: reads and drops the body (without keeping it) so the
/// client sees the answer and the connection can carry the next request. The connection is closed instead
/// when the client waits for `100 Continue` (it has sent nothing), when the body is over the size limit,
/// or when it does not arrive within the body timeout.
pub async fn settle(mut response: Response, body: Option<Body>, limits: &Limits) -> Response {
    let Some(mut body) = body else { return response };
    if http_body::Body::is_end_stream(&body) {
        return response;
    }
    let declared = http_body::Body::size_hint(&body).lower();
    let expects_continue = response.extensions().get::<ExpectsContinue>().is_some();
    if expects_continue || declared > limits.max_request_bytes as u64 {
        close(&mut response);
        return response;
    }
    let drained = tokio::time::timeout(limits.body_timeout, async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > limits.max_request_bytes {
                return false;
            }
        }
        true
    });
    if !drained.await.unwrap_or(false) {
        close(&mut response);
    }
    response
}

/// Marks a response to a request that carried `Expect: 100-continue`.
#[derive(Clone, Copy, Debug)]
pub struct ExpectsContinue;

/// Whether the request waits for `100 Continue` before sending its body.
pub fn expects_continue(headers: &HeaderMap) -> bool {
    headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// How the body is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Self, InferError> {
        let Some(v) = headers.get(header::CONTENT_ENCODING) else { return Ok(Encoding::Identity) };
        match v.to_str().unwrap_or("").trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(Encoding::Identity),
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            "deflate" => Ok(Encoding::Deflate),
            other => Err(InferError::new(
                crate::error::Kind::Unsupported,
                format!("unsupported Content-Encoding {other:?}; send gzip, deflate or identity"),
            )),
        }
    }
}

fn content_length(headers: &HeaderMap) -> Result<Option<usize>, InferError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| InferError::invalid("Content-Length must be a number"))
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        })
        .transpose()
}

fn over_limit(limit: usize, what: &str) -> InferError {
    InferError::too_large(format!(
        "the request {what} is over the limit of {limit} bytes (--max-request-bytes)"
    ))
    .counted_as("too_large")
}

/// Finds the model and reads the body (inflated), reserving it from the budget as it arrives.
async fn receive<'s>(
    server: &'s Server,
    model: &str,
    version: &str,
    headers: &HeaderMap,
    body: &mut Option<Body>,
    broken: &mut bool,
) -> Result<(&'s Loaded, Bytes, Reservation), InferError> {
    let limits = &server.limits;
    let body_deadline = Instant::now() + limits.body_timeout;
    let loaded = server.model(model, version)?;
    let encoding = Encoding::of(headers)?;
    let declared = content_length(headers)?;
    if declared.is_some_and(|n| n > limits.max_request_bytes) {
        return Err(over_limit(limits.max_request_bytes, "body"));
    }
    let mut reservation = server.budget.start();
    let Some(stream) = body.take() else { return Err(InferError::internal("the body was read twice")) };
    // From here on a failure leaves part of the body unread: the connection cannot carry another request.
    *broken = true;
    let raw = read_body(stream, limits, declared, &mut reservation, body_deadline).await?;
    *broken = false;
    let raw = inflate(encoding, raw, limits.max_request_bytes, &mut reservation, body_deadline).await?;
    Ok((loaded, raw, reservation))
}

/// Parses, infers and answers a received request.
async fn process(
    server: &Server,
    loaded: &Loaded,
    headers: &HeaderMap,
    raw: Bytes,
    mut reservation: Reservation,
) -> Result<Response, InferError> {
    let deadline = Instant::now() + server.limits.request_timeout;
    let may_join = |rows| loaded.batcher.may_join(rows);
    let request = parse_request(headers, &raw, &loaded.info, &may_join, &mut reservation, deadline).await?;
    let raw_len = raw.len();
    drop(raw);
    reservation.shrink(raw_len);
    let outputs = server.infer(loaded, request.inputs, &request.outputs, &mut reservation, deadline).await?;
    respond(loaded, &request.reply, outputs, reservation, deadline).await
}

/// Reads the body before `deadline`, at most `limits.max_request_bytes`, into one buffer whose growth is
/// reserved before it happens: what a client holds of the budget is what it has sent, not what it declared.
async fn read_body(
    mut body: Body,
    limits: &Limits,
    declared: Option<usize>,
    reservation: &mut Reservation,
    deadline: Instant,
) -> Result<Bytes, InferError> {
    let limit = limits.max_request_bytes;
    let timed_out = || {
        InferError::new(
            crate::error::Kind::Timeout,
            format!("the request body did not arrive within {:?} (--body-timeout-ms)", limits.body_timeout),
        )
    };
    let mut whole: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(timed_out()),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(InferError::invalid(format!("cannot read the request body: {e}")));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        let wanted = whole.len().saturating_add(data.len());
        if wanted > limit {
            return Err(over_limit(limit, "body"));
        }
        if wanted > whole.capacity() {
            // Up to the declared length at once when the data comes that far; doubling otherwise.
            let most = declared.unwrap_or(limit).min(limit);
            // Waiting for the budget is the server's doing: past the deadline that is a 503, not a 408.
            let grown = reservation.grow_buffer(whole.capacity(), wanted, most, deadline).await?;
            whole.reserve_exact(grown - whole.len());
        }
        whole.extend_from_slice(&data);
    }
    Ok(whole.into())
}

/// Inflates a gzip or deflate body, counting the inflated bytes against the size limit and the budget.
async fn inflate(
    encoding: Encoding,
    raw: Bytes,
    limit: usize,
    reservation: &mut Reservation,
    deadline: Instant,
) -> Result<Bytes, InferError> {
    let mut reader: Box<dyn Read + Send + '_> = match encoding {
        Encoding::Identity => return Ok(raw),
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&raw[..])),
        // HTTP's deflate is zlib; some clients send raw deflate.
        Encoding::Deflate
            if raw.len() >= 2
                && raw[0] & 0x0f == 8
                && u16::from_be_bytes([raw[0], raw[1]]).is_multiple_of(31) =>
        {
            Box::new(flate2::read::ZlibDecoder::new(&raw[..]))
        }
        Encoding::Deflate => Box::new(flate2::read::DeflateDecoder::new(&raw[..])),
    };
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        // Inflating is CPU work: past the first MiB it runs off the async worker threads.
        let n = blocking(out.len() > BLOCKING_PARSE_BYTES, || reader.read(&mut chunk))
            .map_err(|e| InferError::invalid(format!("cannot decompress the {encoding:?} body: {e}")))?;
        if n == 0 {
            break;
        }
        if out.len() + n > limit {
            return Err(over_limit(limit, "body, decompressed,"));
        }
        if out.len() + n > out.capacity() {
            let grown = reservation.grow_buffer(out.capacity(), out.len() + n, limit, deadline).await?;
            out.reserve_exact(grown - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    drop(reader);
    let compressed = raw.len();
    drop(raw);
    reservation.shrink(compressed);
    Ok(out.into())
}

/// `parameters` of the request: the keys the server reads (others are skipped without being stored).
#[derive(Debug, Default, Deserialize)]
struct RequestParams {
    #[serde(default, deserialize_with = "lenient_bool")]
    binary_data_output: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct InputParams {
    #[serde(default)]
    binary_data_size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct OutputParams {
    #[serde(default, deserialize_with = "lenient_bool")]
    binary_data: Option<bool>,
}

/// A boolean flag; anything else (a string, a number, null) is ignored, as Triton does.
fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct Flag;
    impl<'de> serde::de::Visitor<'de> for Flag {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a boolean")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Option<bool>, E> {
            Ok(Some(v))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Option<bool>, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Option<bool>, A::Error> {
            while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(Flag)
}

/// Longest request `id` kept and echoed.
const MAX_ID_BYTES: usize = 1024;

fn bounded_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let id: Option<Cow<'de, str>> = Deserialize::deserialize(d)?;
    match id {
        Some(id) if id.len() > MAX_ID_BYTES => {
            Err(serde::de::Error::custom(format!("the id is over {MAX_ID_BYTES} bytes")))
        }
        id => Ok(id.map(Cow::into_owned)),
    }
}

/// The request's JSON with each input's data left as unparsed text (borrowed from the body).
#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    #[serde(default, deserialize_with = "bounded_id")]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<RequestParams>,
    #[serde(borrow, deserialize_with = "bounded")]
    inputs: Vec<InputTensor<'a>>,
    #[serde(default, borrow, deserialize_with = "bounded_opt")]
    outputs: Option<Vec<RequestedOutput<'a>>>,
}

#[derive(Debug, Deserialize)]
struct InputTensor<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(deserialize_with = "shape")]
    shape: Vec<i64>,
    #[serde(borrow)]
    datatype: Cow<'a, str>,
    #[serde(default)]
    parameters: Option<InputParams>,
    #[serde(default, borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    parameters: Option<OutputParams>,
}

/// A sequence of at most `limit` elements, refused as soon as it grows past it.
struct Bounded<T> {
    limit: usize,
    what: &'static str,
    _t: std::marker::PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Bounded<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an array of at most {} {}", self.limit, self.what)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(x) = seq.next_element()? {
            if out.len() == self.limit {
                return Err(serde::de::Error::custom(format!("more than {} {}", self.limit, self.what)));
            }
            out.push(x);
        }
        Ok(out)
    }
}

fn bounded<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(Bounded { limit: MAX_TENSORS, what: "tensors", _t: std::marker::PhantomData })
}

/// `null` or a bounded sequence.
fn bounded_opt<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    struct Opt<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Opt<T> {
        type Value = Option<Vec<T>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("null or an array")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            bounded(d).map(Some)
        }
    }
    d.deserialize_option(Opt(std::marker::PhantomData))
}

fn shape<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    d.deserialize_seq(Bounded { limit: MAX_DIMS, what: "dimensions", _t: std::marker::PhantomData })
}

/// What the response needs to know of the request.
#[derive(Debug, Default)]
struct ReplyShape {
    id: Option<String>,
    binary_output: bool,
    /// Requested outputs with their own binary choice.
    outputs: Vec<(String, Option<bool>)>,
}

#[derive(Debug)]
struct Request {
    inputs: Vec<Tensor>,
    outputs: Vec<String>,
    reply: ReplyShape,
}

/// Where one input's elements are.
enum Source<'a> {
    Json(&'a str),
    Binary(&'a [u8]),
}

/// Splits an infer body into the JSON request and decoded input tensors, checking each input against the
/// model and reserving its decoded size before decoding it.
async fn parse_request(
    headers: &HeaderMap,
    body: &[u8],
    info: &ModelInfo,
    may_join: &(dyn Fn(usize) -> bool + Sync),
    reservation: &mut Reservation,
    deadline: Instant,
) -> Result<Request, InferError> {
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
    let large = body.len() > BLOCKING_PARSE_BYTES;
    let envelope: Envelope = blocking(large, || serde_json::from_slice(json_part))
        .map_err(|e| InferError::invalid(format!("invalid infer request: {e}")))?;
    if envelope.inputs.is_empty() {
        return Err(InferError::invalid("the request has no inputs"));
    }
    // Check every input and find its data before anything is decoded.
    let mut plan = Vec::with_capacity(envelope.inputs.len());
    let mut need = 0usize;
    for input in &envelope.inputs {
        let named =
            |e: InferError| InferError::new(e.kind, format!("input {}: {}", shown(&input.name), e.message));
        let datatype = DataType::parse(&input.datatype).map_err(named)?;
        let (_, n) = info.check_declared(&input.name, datatype, &input.shape)?;
        let binary_size = input.parameters.as_ref().and_then(|p| p.binary_data_size);
        let source = match (binary_size, input.data) {
            (Some(size), None) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                let (raw, rest) = binary.split_at_checked(size).ok_or_else(|| {
                    named(InferError::invalid(format!("binary_data_size {size} is past the binary data")))
                })?;
                binary = rest;
                Source::Binary(raw)
            }
            (None, Some(data)) => Source::Json(data.get()),
            (Some(_), Some(_)) => {
                return Err(named(InferError::invalid("has both data and binary_data_size")));
            }
            (None, None) => return Err(named(InferError::invalid("has neither data nor binary_data_size"))),
        };
        let sent = match source {
            Source::Json(text) => text.len(),
            Source::Binary(raw) => raw.len(),
        };
        // The bytes actually sent bound the element count: a number takes a character, a raw element its
        // size, a raw BYTES element its 4-byte length.
        let most = match (&source, datatype.size()) {
            (Source::Json(_), _) => sent,
            (Source::Binary(_), Some(size)) => sent / size,
            (Source::Binary(_), None) => sent / 4,
        };
        if n > most {
            return Err(named(InferError::invalid(format!(
                "the shape {:?} asks for {n} elements, more than the {sent} bytes of data can hold",
                input.shape
            ))));
        }
        let rows = input.shape.first().copied().unwrap_or(1).max(0) as usize;
        let copies = if may_join(rows) { 2 } else { 1 };
        need = need.saturating_add(decoded_bytes(datatype, n, sent).saturating_mul(copies));
        plan.push((datatype, n, source));
    }
    if !binary.is_empty() {
        return Err(InferError::invalid(format!(
            "{} bytes of binary data are not claimed by any input",
            binary.len()
        )));
    }
    reservation.grow(need, deadline).await?;
    let inputs = blocking(large, || {
        envelope
            .inputs
            .iter()
            .zip(plan)
            .map(|(input, (datatype, n, source))| {
                let data = match source {
                    Source::Json(text) => Data::from_json(datatype, text, n),
                    Source::Binary(raw) => Data::from_raw(datatype, raw, n),
                }
                .map_err(|e| {
                    InferError::new(e.kind, format!("input {}: {}", shown(&input.name), e.message))
                })?;
                Ok(Tensor { name: input.name.to_string(), shape: input.shape.clone(), data })
            })
            .collect::<Result<Vec<_>, InferError>>()
    })?;
    let requested = envelope.outputs.unwrap_or_default();
    let reply = ReplyShape {
        id: envelope.id,
        binary_output: envelope.parameters.and_then(|p| p.binary_data_output).unwrap_or(false),
        outputs: requested
            .iter()
            .map(|o| (o.name.to_string(), o.parameters.as_ref().and_then(|p| p.binary_data)))
            .collect(),
    };
    Ok(Request { inputs, outputs: requested.iter().map(|o| o.name.to_string()).collect(), reply })
}

/// Runs CPU-heavy parsing of a large body off the async worker threads.
fn blocking<T>(large: bool, f: impl FnOnce() -> T) -> T {
    let threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if large && threaded { tokio::task::block_in_place(f) } else { f() }
}

#[derive(Serialize)]
struct ResponseBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    model_name: &'a str,
    model_version: &'a str,
    outputs: Vec<ResponseOutput<'a>>,
}

#[derive(Serialize)]
struct ResponseOutput<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Data>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// Builds the response (JSON, or JSON + binary tensors when the request asked for binary outputs), its
/// size reserved first and held until the response is sent.
async fn respond(
    loaded: &Loaded,
    reply: &ReplyShape,
    outputs: Vec<Tensor>,
    mut reservation: Reservation,
    deadline: Instant,
) -> Result<Response, InferError> {
    let wants_binary = |name: &str| {
        reply.outputs.iter().find(|(n, _)| n == name).and_then(|(_, b)| *b).unwrap_or(reply.binary_output)
    };
    let binary: Vec<bool> = outputs.iter().map(|t| wants_binary(&t.name)).collect();
    let raw_len = |t: &Tensor| t.data.raw_len();
    let json_bound: usize = outputs
        .iter()
        .zip(&binary)
        .map(|(t, &b)| if b { 64 } else { t.data.json_bytes_bound() } + t.name.len() * 6 + 128)
        .sum::<usize>()
        + reply.id.as_ref().map_or(0, |id| id.len() * 6)
        + 256;
    let binary_len: usize = outputs.iter().zip(&binary).filter(|(_, b)| **b).map(|(t, _)| raw_len(t)).sum();
    // The whole response is reserved, and written into one buffer of that size.
    let capacity = json_bound.saturating_add(binary_len);
    reservation.grow(capacity, deadline).await?;
    let body = ResponseBody {
        id: reply.id.as_deref(),
        model_name: &loaded.info.name,
        model_version: &loaded.info.version,
        outputs: outputs
            .iter()
            .zip(&binary)
            .map(|(t, &b)| ResponseOutput {
                name: &t.name,
                datatype: t.datatype().name(),
                shape: &t.shape,
                parameters: b.then(|| BinarySize { binary_data_size: raw_len(t) }),
                data: (!b).then_some(&t.data),
            })
            .collect(),
    };
    let mut bytes = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut bytes, &body)
        .map_err(|e| InferError::internal(format!("encoding the response: {e}")))?;
    let json_len = bytes.len();
    for (t, _) in outputs.iter().zip(&binary).filter(|(_, b)| **b) {
        t.data.write_raw(&mut bytes);
    }
    drop(body);
    drop(outputs);
    let content_type = if binary_len > 0 || binary.iter().any(|&b| b) {
        "application/octet-stream"
    } else {
        "application/json"
    };
    let held = Holding { body: http_body_util::Full::new(Bytes::from(bytes)), held: reservation };
    let mut response = Response::new(Body::new(held));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type != "application/json" {
        response.headers_mut().insert(HEADER_LENGTH, HeaderValue::from(json_len));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Budget;
    use proptest::prelude::*;

    fn headers(n: Option<usize>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(n) = n {
            h.insert(HEADER_LENGTH, HeaderValue::from(n));
        }
        h
    }

    /// A signature like the test model `multi_io.onnx`: a batch dimension and one input of most types.
    fn info() -> ModelInfo {
        let spec = |name: &str, datatype, shape: &[i64]| TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        };
        ModelInfo {
            name: "m".into(),
            version: "1".into(),
            inputs: vec![
                spec("f32", DataType::F32, &[-1, 3]),
                spec("i64", DataType::I64, &[-1, 2]),
                spec("u8", DataType::U8, &[-1, 2]),
                spec("b", DataType::Bool, &[-1]),
                spec("s", DataType::Bytes, &[-1]),
                spec("h", DataType::F16, &[-1, 2]),
            ],
            outputs: vec![spec("y", DataType::F32, &[-1, 3])],
            batchable: true,
        }
    }

    const VALID: &str = r#"{"id":"7","inputs":[
        {"name":"f32","shape":[1,3],"datatype":"FP32","data":[1,2.5,3]},
        {"name":"i64","shape":[1,2],"datatype":"INT64","data":[[1,-2]]},
        {"name":"u8","shape":[1,2],"datatype":"UINT8","data":[0,255]},
        {"name":"b","shape":[1],"datatype":"BOOL","data":[true]},
        {"name":"s","shape":[1],"datatype":"BYTES","data":["x"]},
        {"name":"h","shape":[1,2],"datatype":"FP16","parameters":{"binary_data_size":4}}],
        "outputs":[{"name":"y","parameters":{"binary_data":true}}],"parameters":{"binary_data_output":false,"other":[1,{"a":2}]}}"#;
    const F16: [u8; 4] = [0x00, 0x38, 0x00, 0xC0];

    /// Parses with a generous budget; returns the tensors and the bytes reserved for them.
    fn parse(body: &[u8], header_len: Option<usize>) -> Result<(Request, usize), InferError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let budget = Budget::new(1 << 30, Default::default());
            let mut reservation = budget.start();
            let deadline = Instant::now() + std::time::Duration::from_secs(1);
            let r = parse_request(&headers(header_len), body, &info(), &|_| true, &mut reservation, deadline)
                .await?;
            Ok((r, reservation.bytes()))
        })
    }

    fn binary_body(json: &[u8], binary: &[u8]) -> Vec<u8> {
        [json, binary].concat()
    }

    fn heap(t: &Tensor) -> usize {
        match &t.data {
            Data::Bytes(v) => v.iter().map(|b| b.len() + 24).sum(),
            d => d.len() * t.datatype().size().unwrap_or(0),
        }
    }

    #[test]
    fn parses_json_and_binary_inputs_in_order_with_their_reply_options() {
        let (r, reserved) = parse(&binary_body(VALID.as_bytes(), &F16), Some(VALID.len())).unwrap();
        let names: Vec<&str> = r.inputs.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["f32", "i64", "u8", "b", "s", "h"]);
        assert_eq!(r.inputs[0].data, Data::F32(vec![1.0, 2.5, 3.0]));
        assert_eq!(r.inputs[1].data, Data::I64(vec![1, -2]));
        assert_eq!(r.inputs[4].data, Data::Bytes(vec![b"x".to_vec()]));
        assert_eq!(r.inputs[5].data.len(), 2);
        assert_eq!((r.reply.id.as_deref(), r.reply.binary_output), (Some("7"), false));
        assert_eq!(r.reply.outputs, vec![("y".to_string(), Some(true))]);
        assert!(reserved >= r.inputs.iter().map(heap).sum::<usize>());
    }

    #[test]
    fn refuses_declared_sizes_the_data_cannot_hold_before_allocating() {
        let bad = |body: &str, header: Option<usize>, binary: &[u8]| {
            let e = parse(&binary_body(body.as_bytes(), binary), header).unwrap_err();
            assert_eq!(e.http_status(), 400, "{body}: {e}");
            e.message
        };
        let huge = r#"{"inputs":[{"name":"f32","shape":[2199023255552,3],"datatype":"FP32","data":[1]}]}"#;
        assert!(bad(huge, None, b"").contains("more than the 3 bytes of data can hold"));
        let max = r#"{"inputs":[{"name":"s","shape":[9223372036854775807],"datatype":"BYTES","data":[]}]}"#;
        assert!(bad(max, None, b"").contains("can hold"));
        let bin = r#"{"inputs":[{"name":"s","shape":[8796093022208],"datatype":"BYTES","parameters":{"binary_data_size":0}}]}"#;
        assert!(bad(bin, Some(bin.len()), b"").contains("can hold"));
        let wrap = r#"{"inputs":[{"name":"i64","shape":[1152921504606846976,2],"datatype":"INT64","parameters":{"binary_data_size":0}}]}"#;
        assert!(bad(wrap, Some(wrap.len()), b"").contains("can hold"));
        let overflow =
            r#"{"inputs":[{"name":"f32","shape":[9223372036854775807,3],"datatype":"FP32","data":[1]}]}"#;
        assert!(bad(overflow, None, b"").contains("too large"));
        let zero = r#"{"inputs":[{"name":"f32","shape":[0,3],"datatype":"FP32","data":[]}]}"#;
        assert!(bad(zero, None, b"").contains("no elements"));
        let dims = format!(
            r#"{{"inputs":[{{"name":"f32","shape":[{}],"datatype":"FP32","data":[]}}]}}"#,
            ["1"; 65].join(",")
        );
        assert!(bad(&dims, None, b"").contains("more than 64 dimensions"));
        let many = format!(
            r#"{{"inputs":[{}]}}"#,
            vec![r#"{"name":"b","shape":[1],"datatype":"BOOL","data":[true]}"#; 1025].join(",")
        );
        assert!(bad(&many, None, b"").contains("more than 1024 tensors"));
        assert!(bad(r#"{"inputs":[]}"#, None, b"").contains("no inputs"));
        assert!(bad("{", None, b"").contains("invalid infer request"));
        assert!(bad("{}", Some(999), b"").contains("past the body"));
        let short = r#"{"inputs":[{"name":"f32","shape":[1,3],"datatype":"FP32","parameters":{"binary_data_size":12}}]}"#;
        assert!(bad(short, Some(short.len()), &[0; 4]).contains("past the binary data"));
    }

    #[test]
    fn what_generic_clients_send_is_accepted_and_echoes_are_bounded() {
        // pydantic-dumped requests carry nulls; odd flag values are ignored, as Triton does.
        let body = r#"{"id":null,"parameters":{"binary_data_output":"yes"},"inputs":[
            {"name":"b","shape":[1],"datatype":"BOOL","data":[true],"parameters":null}],"outputs":null}"#;
        let (r, _) = parse(body.as_bytes(), None).unwrap();
        assert_eq!((r.reply.id, r.reply.binary_output, r.outputs.len()), (None, false, 0));
        let flags = r#"{"inputs":[{"name":"b","shape":[1],"datatype":"BOOL","data":[true]}],
            "outputs":[{"name":"y","parameters":{"binary_data":1}}]}"#;
        assert_eq!(parse(flags.as_bytes(), None).unwrap().0.reply.outputs, vec![("y".to_string(), None)]);
        // A long id is refused; a long unknown name is not echoed whole.
        let id = format!(
            r#"{{"id":"{}","inputs":[{{"name":"b","shape":[1],"datatype":"BOOL","data":[true]}}]}}"#,
            "i".repeat(2000)
        );
        assert!(parse(id.as_bytes(), None).unwrap_err().message.contains("id is over 1024 bytes"));
        let name = format!(
            r#"{{"inputs":[{{"name":"{}","shape":[1],"datatype":"BOOL","data":[true]}}]}}"#,
            "n".repeat(100_000)
        );
        let e = parse(name.as_bytes(), None).unwrap_err();
        assert!(e.message.len() < 1000 && e.message.contains("(100000 bytes)"), "{}", e.message);
        let leaf = format!(
            r#"{{"inputs":[{{"name":"f32","shape":[1,3],"datatype":"FP32","data":["{}",1,2]}}]}}"#,
            "s".repeat(100_000)
        );
        assert!(parse(leaf.as_bytes(), None).unwrap_err().message.len() < 1000);
    }

    /// Bodies made from a valid one by the mutations an attacker would try, and pure noise.
    fn bodies() -> impl Strategy<Value = (Vec<u8>, bool)> {
        let valid = binary_body(VALID.as_bytes(), &F16);
        let tokens: Vec<&'static [u8]> = vec![
            b"-1",
            b"null",
            b"[[",
            b"]]",
            b"1e999",
            b"\"",
            b"{}",
            b"99999999999999999999",
            b"9223372036854775807",
            b"0",
            b"[]",
            b"\\u0000",
            b"1e39",
            b"-0.0",
            b",",
            b"4294967296",
        ];
        prop_oneof![
            (proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), any::<bool>())
                .prop_map({
                    let valid = valid.clone();
                    move |(flips, bin)| {
                        let mut b = valid.clone();
                        for (at, byte) in flips {
                            let i = at.index(b.len());
                            b[i] = byte;
                        }
                        (b, bin)
                    }
                }),
            (any::<prop::sample::Index>(), any::<bool>()).prop_map({
                let valid = valid.clone();
                move |(at, bin)| (valid[..at.index(valid.len())].to_vec(), bin)
            }),
            (any::<prop::sample::Index>(), prop::sample::select(tokens), any::<bool>()).prop_map({
                let valid = valid.clone();
                move |(at, token, bin)| {
                    let mut b = valid.clone();
                    let i = at.index(VALID.len());
                    b.splice(i..i + 1, token.iter().copied());
                    (b, bin)
                }
            }),
            (proptest::collection::vec(any::<u8>(), 0..512), any::<bool>()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the bytes: no panic, a client error with a message, or tensors that fit their
        /// reservation.
        #[test]
        fn any_body_is_parsed_or_refused_within_its_reservation((body, binary) in bodies()) {
            let header = binary.then(|| body.len().saturating_sub(4));
            match parse(&body, header) {
                Ok((r, reserved)) => prop_assert!(r.inputs.iter().map(heap).sum::<usize>() <= reserved),
                Err(e) => {
                    prop_assert!((400..500).contains(&e.http_status()), "{e:?}");
                    prop_assert!(!e.message.is_empty());
                }
            }
        }
    }

    #[test]
    fn content_encodings() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
            Encoding::of(&h)
        };
        assert_eq!(Encoding::of(&HeaderMap::new()).unwrap(), Encoding::Identity);
        assert_eq!(with("GZIP").unwrap(), Encoding::Gzip);
        assert_eq!(with("deflate").unwrap(), Encoding::Deflate);
        assert_eq!(with("br").unwrap_err().http_status(), 415);
        assert_eq!(with("gzip, br").unwrap_err().http_status(), 415);
    }

    #[test]
    fn inflates_gzip_zlib_and_raw_deflate_within_the_limit() {
        use flate2::Compression;
        use std::io::Write;
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let text = VALID.as_bytes().repeat(50);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&text).unwrap();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(&text).unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        raw.write_all(&text).unwrap();
        let budget = Budget::new(1 << 30, Default::default());
        let run = |enc, body: Vec<u8>, limit| {
            rt.block_on(async {
                let mut r = budget.start();
                let deadline = Instant::now() + std::time::Duration::from_secs(1);
                inflate(enc, body.into(), limit, &mut r, deadline).await
            })
        };
        for (enc, body) in [
            (Encoding::Gzip, gz.finish().unwrap()),
            (Encoding::Deflate, zlib.finish().unwrap()),
            (Encoding::Deflate, raw.finish().unwrap()),
        ] {
            assert_eq!(&run(enc, body.clone(), 1 << 20).unwrap()[..], &text[..]);
            // A body that inflates past the limit is refused as too large, whatever its compressed size.
            assert_eq!(run(enc, body, text.len() - 1).unwrap_err().http_status(), 413);
        }
        assert_eq!(run(Encoding::Gzip, b"not gzip".to_vec(), 1 << 20).unwrap_err().http_status(), 400);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn is_infer_matches_only_posts_to_infer() {
        use axum::http::Method;
        assert!(is_infer(&Method::POST, "/v2/models/m/infer"));
        assert!(is_infer(&Method::POST, "/v2/models/m/versions/1/infer"));
        assert!(!is_infer(&Method::GET, "/v2/models/m/infer"));
        assert!(!is_infer(&Method::POST, "/v2/models/m/ready"));
        assert!(!is_infer(&Method::POST, "/v2/models/infer"));
        assert!(!is_infer(&Method::POST, "/v2/models/a/b/infer"));
        assert!(!is_infer(&Method::POST, "/v2/models//infer"));
    }
}
