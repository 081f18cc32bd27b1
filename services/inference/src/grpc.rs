//! The gRPC front end (tonic): `inference.GRPCInferenceService`. Inputs may come as typed contents or
//! `raw_input_contents`; outputs always go in `raw_output_contents`, which every client reads (tritonclient
//! reads nothing else).

use crate::error::InferError;
use crate::model::TensorSpec;
use crate::server::{EXTENSIONS, SERVER_NAME, SERVER_VERSION, Server};
use crate::tensor::{Data, DataType, Tensor, element_count};
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
            let r = r.into_inner();
            let inputs = decode_inputs(&r)?;
            let requested: Vec<String> = r.outputs.iter().map(|o| o.name.clone()).collect();
            let (info, outputs) =
                self.server.infer(&r.model_name, &r.model_version, inputs, &requested).await?;
            Ok::<_, InferError>(pb::ModelInferResponse {
                model_name: info.name.clone(),
                model_version: info.version.clone(),
                id: r.id,
                parameters: Default::default(),
                raw_output_contents: outputs.iter().map(|t| t.data.to_raw()).collect(),
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

fn decode_inputs(r: &pb::ModelInferRequest) -> Result<Vec<Tensor>, InferError> {
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
    r.inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let datatype = DataType::parse(&input.datatype)?;
            let n = element_count(&input.shape)?;
            let data = match r.raw_input_contents.get(i) {
                Some(raw) => Data::from_raw(datatype, raw, n),
                None => from_contents(datatype, input.contents.as_ref(), n),
            }
            .map_err(|e| InferError::new(e.kind, format!("input {:?}: {}", input.name, e.message)))?;
            Ok(Tensor { name: input.name.clone(), shape: input.shape.clone(), data })
        })
        .collect()
}

/// Typed contents: INT8/16/32 travel in `int_contents` and UINT8/16/32 in `uint_contents`, so narrowing
/// conversions are checked.
fn from_contents(
    datatype: DataType,
    c: Option<&pb::InferTensorContents>,
    n: usize,
) -> Result<Data, InferError> {
    let empty = pb::InferTensorContents::default();
    let c = c.unwrap_or(&empty);
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
        DataType::Bool => Data::Bool(c.bool_contents.clone()),
        DataType::I8 => Data::I8(narrow(&c.int_contents, datatype)?),
        DataType::I16 => Data::I16(narrow(&c.int_contents, datatype)?),
        DataType::I32 => Data::I32(c.int_contents.clone()),
        DataType::I64 => Data::I64(c.int64_contents.clone()),
        DataType::U8 => Data::U8(narrow(&c.uint_contents, datatype)?),
        DataType::U16 => Data::U16(narrow(&c.uint_contents, datatype)?),
        DataType::U32 => Data::U32(c.uint_contents.clone()),
        DataType::U64 => Data::U64(c.uint64_contents.clone()),
        DataType::F16 => Data::F16(c.fp32_contents.iter().map(|&x| f16::from_f32(x)).collect()),
        DataType::F32 => Data::F32(c.fp32_contents.clone()),
        DataType::F64 => Data::F64(c.fp64_contents.clone()),
        DataType::Bytes => Data::Bytes(c.bytes_contents.clone()),
    };
    if data.len() != n {
        return Err(InferError::invalid(format!(
            "contents hold {} elements but the shape asks for {n}",
            data.len()
        )));
    }
    Ok(data)
}
