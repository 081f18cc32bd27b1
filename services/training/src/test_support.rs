//! Test fixtures: the project's Python environment (hack/python-env.sh) and ONNX Runtime loaded from its
//! onnxruntime wheel, as services/inference's tests find them.

use crate::data::{Spec, Task};
pub use mizzen_common::testing::{ort_dylib, python};
use std::sync::OnceLock;

/// The process's ONNX Runtime environment, loaded once.
pub fn ort_env() -> &'static ort::environment::Environment {
    static ENV: OnceLock<ort::environment::Environment> = OnceLock::new();
    ENV.get_or_init(|| {
        ort::init_from(ort_dylib())
            .expect("loading ONNX Runtime")
            .with_name("mizzen-train-tests")
            .build()
            .expect("starting ONNX Runtime")
    })
}

/// An ONNX Runtime session over the model bytes, on one thread.
pub fn session(bytes: &[u8]) -> ort::session::Session {
    let build = || -> ort::Result<ort::session::Session> {
        ort::session::Session::builder(ort_env())?.with_intra_threads(1)?.commit_from_memory(bytes)
    };
    build().expect("ONNX Runtime loads the model")
}

/// Reads every column but `label` as a feature.
pub fn spec(label: &str, task: Task) -> Spec {
    Spec { label: label.into(), features: None, categorical: vec![], task }
}
