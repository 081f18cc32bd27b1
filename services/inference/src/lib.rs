//! mizzen-serve: one ONNX model behind the Open Inference Protocol v2, over REST (axum) and gRPC (tonic),
//! with dynamic batching and Prometheus metrics.

pub mod batcher;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod model;
pub mod rest;
pub mod server;
pub mod tensor;
