//! The gRPC front end (tonic): `inference.GRPCInferenceService`. Inputs may come as typed contents or
//! `raw_input_contents`; outputs always go in `raw_output_contents`, which every client reads (tritonclient
//! reads nothing else).

use crate::conn::GrpcConnInfo;
use crate::error::{InferError, shown};
use crate::limits::{Holding, Reservation};
use crate::model::{ModelInfo, TensorSpec};
use crate::server::{EXTENSIONS, SERVER_NAME, SERVER_VERSION, Server};
use crate::tensor::{Data, DataType, Tensor};
use bytes::Bytes;
use half::f16;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Generated from proto/inference.proto.
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::GrpcInferenceService;
pub use pb::grpc_inference_service_server::GrpcInferenceServiceServer;

pub struct Service {
    pub server: Arc<Server>,
}

fn specs(specs: &[TensorSpec]) -> Vec<pb::model_metadata_response::TensorMetadata> {
    specs
        .iter()
        .map(|t| pb::model_metadata_response::TensorMetadata {
            name: t.name.clone(),
            datatype: t.datatype.name().into(),
            shape: t.shape.clone(),
        })
        .collect()
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: self.server.is_ready() }))
    }

    async fn model_ready(
        &self,
        r: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = r.into_inner();
        match self.server.model(&r.name, &r.version) {
            Ok(_) => Ok(Response::new(pb::ModelReadyResponse { ready: true })),
            Err(e) if e.kind == crate::error::Kind::Unavailable => {
                Ok(Response::new(pb::ModelReadyResponse { ready: false }))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: SERVER_VERSION.into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = r.into_inner();
        let loaded = self.server.model(&r.name, &r.version)?;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: loaded.info.name.clone(),
            versions: vec![loaded.info.version.clone()],
            platform: "onnxruntime_onnx".into(),
            inputs: specs(&loaded.info.inputs),
            outputs: specs(&loaded.info.outputs),
        }))
    }

    async fn model_infer(
        &self,
        r: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let mut tracker = self.server.track("grpc");
        let result = async {
            // The admission layer reserved the message and its decoded size; the outputs join them, and the
            // layer holds it all until the response has been encoded and sent.
            let admitted = r.extensions().get::<Admitted>().cloned();
            let held = admitted.as_ref().and_then(|a| a.0.lock().ok()?.take());
            let mut reservation = held.unwrap_or_else(|| self.server.budget.start());
            let mut r = r.into_inner();
            let loaded = self.server.model(&r.model_name, &r.model_version)?;
            let deadline = tokio::time::Instant::now() + self.server.limits.request_timeout;
            let inputs = decode_inputs(&mut r, &loaded.info)?;
            let requested: Vec<String> = r.outputs.iter().map(|o| o.name.clone()).collect();
            let outputs = self.server.infer(loaded, inputs, &requested, &mut reservation, deadline).await?;
            // The raw copies and their encoding.
            let raw: usize = outputs.iter().map(|t| t.data.raw_len()).sum();
            reservation.grow(raw.saturating_mul(2), deadline).await?;
            if let Some(slot) = admitted.and_then(|a| a.0.lock().ok().map(|mut s| s.replace(reservation))) {
                drop(slot);
            }
            Ok::<_, InferError>(pb::ModelInferResponse {
                model_name: loaded.info.name.clone(),
                model_version: loaded.info.version.clone(),
                id: r.id,
                parameters: Default::default(),
                raw_output_contents: outputs.iter().map(|t| t.data.to_raw().into()).collect(),
                outputs: outputs
                    .into_iter()
                    .map(|t| pb::model_infer_response::InferOutputTensor {
                        datatype: t.datatype().name().into(),
                        name: t.name,
                        shape: t.shape,
                        parameters: Default::default(),
                        contents: None,
                    })
                    .collect(),
            })
        }
        .await;
        tracker.finish(&result);
        result.map(Response::new).map_err(Status::from)
    }
}

/// Decodes the inputs, taking their vectors out of the message; each input is checked against the model
/// before its data is decoded.
fn decode_inputs(r: &mut pb::ModelInferRequest, info: &ModelInfo) -> Result<Vec<Tensor>, InferError> {
    if r.inputs.is_empty() {
        return Err(InferError::invalid("the request has no inputs"));
    }
    if !r.raw_input_contents.is_empty() && r.raw_input_contents.len() != r.inputs.len() {
        return Err(InferError::invalid(format!(
            "{} raw_input_contents for {} inputs: give one per input, or none",
            r.raw_input_contents.len(),
            r.inputs.len()
        )));
    }
    let raw = std::mem::take(&mut r.raw_input_contents);
    if !raw.is_empty()
        && let Some(both) =
            r.inputs.iter().find(|i| i.contents.as_ref().is_some_and(|c| *c != Default::default()))
    {
        return Err(InferError::invalid(format!(
            "input {} has contents while raw_input_contents is used: send one or the other",
            shown(&both.name)
        )));
    }
    std::mem::take(&mut r.inputs)
        .into_iter()
        .enumerate()
        .map(|(i, input)| {
            let named = |e: InferError| {
                InferError::new(e.kind, format!("input {}: {}", shown(&input.name), e.message))
            };
            let datatype = DataType::parse(&input.datatype).map_err(named)?;
            let (_, n) = info.check_declared(&input.name, datatype, &input.shape)?;
            let data = match raw.get(i) {
                Some(raw) => Data::from_raw(datatype, raw, n),
                None => from_contents(datatype, input.contents.unwrap_or_default(), n),
            }
            .map_err(named)?;
            Ok(Tensor { name: input.name, shape: input.shape, data })
        })
        .collect()
}

/// Typed contents: INT8/16/32 travel in `int_contents` and UINT8/16/32 in `uint_contents`, so narrowing
/// conversions are checked. Vectors of the tensor's own type are moved, not copied.
fn from_contents(datatype: DataType, c: pb::InferTensorContents, n: usize) -> Result<Data, InferError> {
    fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(
        v: &[S],
        dt: DataType,
    ) -> Result<Vec<T>, InferError> {
        v.iter()
            .map(|&x| {
                T::try_from(x).map_err(|_| InferError::invalid(format!("{x} is not a valid {dt} value")))
            })
            .collect()
    }
    let data = match datatype {
        DataType::Bool => Data::Bool(c.bool_contents),
        DataType::I8 => Data::I8(narrow(&c.int_contents, datatype)?),
        DataType::I16 => Data::I16(narrow(&c.int_contents, datatype)?),
        DataType::I32 => Data::I32(c.int_contents),
        DataType::I64 => Data::I64(c.int64_contents),
        DataType::U8 => Data::U8(narrow(&c.uint_contents, datatype)?),
        DataType::U16 => Data::U16(narrow(&c.uint_contents, datatype)?),
        DataType::U32 => Data::U32(c.uint_contents),
        DataType::U64 => Data::U64(c.uint64_contents),
        DataType::F16 => Data::F16(c.fp32_contents.iter().map(|&x| f16::from_f32(x)).collect()),
        DataType::F32 => Data::F32(c.fp32_contents),
        DataType::F64 => Data::F64(c.fp64_contents),
        DataType::Bytes => Data::Bytes(c.bytes_contents),
    };
    if data.len() != n {
        return Err(InferError::invalid(format!(
            "contents hold {} elements but the shape asks for {n}",
            data.len()
        )));
    }
    Ok(data)
}

/// A `ModelInfer` request's reservation, from the admission layer to the handler.
#[derive(Clone)]
struct Admitted(Arc<std::sync::Mutex<Option<Reservation>>>);

/// The path of the one rpc whose body is worth admitting.
const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

/// A tower layer in front of the gRPC services: every stream marks its connection busy (so the idle
/// deadline waits), and its message is read against the body deadline and the size limit, reserved from
/// the memory budget as it arrives, and for `ModelInfer` its decoded size reserved too, before tonic
/// decodes it. Refusals are gRPC statuses:
/// RESOURCE_EXHAUSTED past the size limit or the whole budget, UNAVAILABLE while the budget is in use,
/// DEADLINE_EXCEEDED for a message that does not arrive.
#[derive(Clone)]
pub struct AdmissionLayer {
    pub server: Arc<Server>,
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;
    fn layer(&self, inner: S) -> Admission<S> {
        Admission { inner, server: self.server.clone() }
    }
}

#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    server: Arc<Server>,
}

type GrpcRequest = http::Request<tonic::body::Body>;
type GrpcResponse = http::Response<tonic::body::Body>;

impl<S> tower::Service<GrpcRequest> for Admission<S>
where
    S: tower::Service<GrpcRequest, Response = GrpcResponse> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<GrpcResponse, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        // The clone is the one not yet polled ready; the ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let server = self.server.clone();
        Box::pin(async move {
            use futures::FutureExt as _;
            let _busy = req.extensions().get::<GrpcConnInfo>().map(|c| c.state.busy());
            let answer = async {
                match admit(&server, req).await {
                    Ok((mut req, reservation)) => {
                        // Lent to the handler, and held here until the response body has been sent.
                        let admitted = Admitted(Arc::new(std::sync::Mutex::new(Some(reservation))));
                        req.extensions_mut().insert(admitted.clone());
                        let response = inner.call(req).await?;
                        Ok(response.map(|body| tonic::body::Body::new(Holding { body, held: admitted })))
                    }
                    Err(e) => {
                        let mut tracker = server.track("grpc");
                        let status = Status::from(e.clone());
                        tracker.finish(&Err::<(), _>(e));
                        Ok(status.into_http())
                    }
                }
            };
            // A panic in a handler answers INTERNAL instead of resetting the stream unanswered.
            std::panic::AssertUnwindSafe(answer).catch_unwind().await.unwrap_or_else(|_| {
                tracing::error!("a gRPC handler panicked");
                server.metrics.reject("grpc", "panic");
                Ok(Status::internal("the server failed on this request").into_http())
            })
        })
    }
}

/// Reads one gRPC message against the body deadline, checks its size, and reserves its bytes as they
/// arrive and then (for `ModelInfer`) its decoded size.
async fn admit(server: &Server, req: GrpcRequest) -> Result<(GrpcRequest, Reservation), InferError> {
    use http_body_util::BodyExt as _;
    let limits = &server.limits;
    let body_deadline = tokio::time::Instant::now() + limits.body_timeout;
    let too_large = |n: usize| {
        InferError::too_large(format!(
            "the request message of {n} bytes is over the limit of {} bytes (--max-request-bytes)",
            limits.max_request_bytes
        ))
        .counted_as("too_large")
    };
    let (parts, mut body) = req.into_parts();
    let mut reservation = server.budget.start();
    let mut buf: Vec<u8> = Vec::new();
    let mut length: Option<usize> = None;
    loop {
        let frame = match tokio::time::timeout_at(body_deadline, body.frame()).await {
            Err(_) => {
                return Err(InferError::new(
                    crate::error::Kind::Timeout,
                    format!(
                        "the request message did not arrive within {:?} (--body-timeout-ms)",
                        limits.body_timeout
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(InferError::invalid(format!("cannot read the request: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if length.is_none() && buf.len() + data.len() >= 5 {
            let mut head = [0u8; 5];
            let have = buf.len().min(5);
            head[..have].copy_from_slice(&buf[..have]);
            head[have..].copy_from_slice(&data[..5 - have]);
            let n = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if n > limits.max_request_bytes {
                return Err(too_large(n));
            }
            length = Some(n);
        }
        let wanted = buf.len() + data.len();
        if wanted > length.unwrap_or(0) + 5 {
            return Err(too_large(wanted));
        }
        // Reserved as it arrives (up to the declared length at once when it comes that far).
        if wanted > buf.capacity() {
            let most = length.map_or(5, |n| n + 5);
            let grown = reservation.grow_buffer(buf.capacity(), wanted, most, body_deadline).await?;
            buf.reserve_exact(grown - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    let message = match length {
        Some(n) if buf.len() == n + 5 => &buf[5..],
        _ => return Err(InferError::invalid("the request body is not one whole gRPC message")),
    };
    if buf[0] != 0 {
        return Err(InferError::invalid("compressed requests are not supported; send them uncompressed"));
    }
    let cost = if parts.uri.path() == MODEL_INFER {
        crate::wire::decoded_cost(message).map_err(|m| {
            InferError::invalid(format!("the request is not a valid ModelInferRequest: {}", m.0))
        })?
    } else {
        // The other rpcs carry names at most.
        2 * message.len() + 1024
    };
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    reservation.grow(cost, deadline).await?;
    let body = tonic::body::Body::new(http_body_util::Full::new(Bytes::from(buf)));
    Ok((http::Request::from_parts(parts, body), reservation))
}
