//! mizzen-serve over gRPC, with a tonic client built from the same proto.

mod common;

use common::Serve;
use mizzen_serve::grpc::pb;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use tonic::Code;

async fn client(s: &Serve) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{}", s.grpc)).await.expect("gRPC connect")
}

fn iris_input(contents: Option<pb::InferTensorContents>) -> InferInputTensor {
    InferInputTensor {
        name: "float_input".into(),
        datatype: "FP32".into(),
        shape: vec![2, 4],
        parameters: Default::default(),
        contents,
    }
}

const ROWS: [f32; 8] = [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3];

fn labels(resp: &pb::ModelInferResponse) -> Vec<i64> {
    let i = resp.outputs.iter().position(|o| o.name == "label").expect("label output");
    resp.raw_output_contents[i].chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metadata_and_infer_with_typed_or_raw_inputs() {
    let s = Serve::start("iris_logreg.onnx", "iris", &[]);
    let mut c = client(&s).await;
    assert!(c.server_live(pb::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(c.server_ready(pb::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let ready =
        c.model_ready(pb::ModelReadyRequest { name: "iris".into(), version: String::new() }).await.unwrap();
    assert!(ready.into_inner().ready);
    let meta = c.server_metadata(pb::ServerMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(meta.name, "mizzen-serve");
    assert!(meta.extensions.contains(&"binary_tensor_data".to_string()));
    let model = c
        .model_metadata(pb::ModelMetadataRequest { name: "iris".into(), version: "1".into() })
        .await
        .unwrap();
    let model = model.into_inner();
    assert_eq!(model.inputs[0].shape, vec![-1, 4]);
    assert_eq!(model.outputs.iter().map(|o| o.datatype.as_str()).collect::<Vec<_>>(), ["INT64", "FP32"]);

    // Typed contents.
    let typed = pb::ModelInferRequest {
        model_name: "iris".into(),
        id: "g-1".into(),
        inputs: vec![iris_input(Some(pb::InferTensorContents {
            fp32_contents: ROWS.to_vec(),
            ..Default::default()
        }))],
        ..Default::default()
    };
    let resp = c.model_infer(typed).await.unwrap().into_inner();
    assert_eq!(resp.id, "g-1");
    assert_eq!(resp.raw_output_contents.len(), resp.outputs.len());
    assert_eq!(labels(&resp), vec![0, 2]);

    // Raw contents, one output requested.
    let raw = pb::ModelInferRequest {
        model_name: "iris".into(),
        inputs: vec![iris_input(None)],
        outputs: vec![InferRequestedOutputTensor { name: "label".into(), parameters: Default::default() }],
        raw_input_contents: vec![ROWS.iter().flat_map(|x| x.to_le_bytes()).collect()],
        ..Default::default()
    };
    let resp = c.model_infer(raw).await.unwrap().into_inner();
    assert_eq!(resp.outputs.len(), 1);
    assert_eq!(labels(&resp), vec![0, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_grpc_codes() {
    let s = Serve::start("iris_logreg.onnx", "iris", &[]);
    let mut c = client(&s).await;
    let base = || pb::ModelInferRequest {
        model_name: "iris".into(),
        inputs: vec![iris_input(Some(pb::InferTensorContents {
            fp32_contents: ROWS.to_vec(),
            ..Default::default()
        }))],
        ..Default::default()
    };
    let code = |r: Result<tonic::Response<pb::ModelInferResponse>, tonic::Status>| r.unwrap_err().code();
    let mut unknown = base();
    unknown.model_name = "nope".into();
    assert_eq!(code(c.model_infer(unknown).await), Code::NotFound);
    let mut short = base();
    short.inputs[0].contents =
        Some(pb::InferTensorContents { fp32_contents: vec![1.0], ..Default::default() });
    let status = c.model_infer(short).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("1 elements"), "{}", status.message());
    let mut mismatched = base();
    mismatched.raw_input_contents = vec![vec![0u8; 4].into(), vec![0u8; 4].into()];
    assert_eq!(code(c.model_infer(mismatched).await), Code::InvalidArgument);
    let mut wrong_type = base();
    wrong_type.inputs[0].datatype = "INT32".into();
    assert_eq!(code(c.model_infer(wrong_type).await), Code::InvalidArgument);
    let r = c.model_ready(pb::ModelReadyRequest { name: "nope".into(), version: String::new() }).await;
    assert_eq!(r.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_reports_serving() {
    let s = Serve::start("iris_logreg.onnx", "iris", &[]);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "inference.GRPCInferenceService"] {
        let r = health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap();
        assert_eq!(
            r.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
}
