//! mizzen-serve: one ONNX model behind the Open Inference Protocol v2, over REST (axum) and gRPC (tonic),
//! with dynamic batching, Prometheus metrics, and limits that no client can push it past.

pub mod batcher;
pub mod conn;
pub mod error;
pub mod grpc;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod rest;
pub mod server;
pub mod tensor;
pub mod wire;
