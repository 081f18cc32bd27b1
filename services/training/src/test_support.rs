//! Test fixtures: the project's Python environment (hack/python-env.sh) and ONNX Runtime loaded from its
//! onnxruntime wheel, as services/inference's tests find them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// The project's Python virtual environment (created once, cached outside the clone).
pub fn venv() -> &'static PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let out = Command::new(repo_root().join("hack/python-env.sh"))
            .output()
            .expect("running hack/python-env.sh");
        assert!(out.status.success(), "hack/python-env.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

pub fn python() -> PathBuf {
    venv().join("bin/python")
}

/// libonnxruntime.so from the onnxruntime wheel.
pub fn ort_dylib() -> &'static PathBuf {
    static DYLIB: OnceLock<PathBuf> = OnceLock::new();
    DYLIB.get_or_init(|| {
        let capi = std::fs::read_dir(venv().join("lib"))
            .expect("venv lib")
            .filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/onnxruntime/capi"))
            .find(|p| p.exists())
            .expect("onnxruntime in the venv");
        std::fs::read_dir(&capi)
            .expect("capi")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so.")))
            .expect("libonnxruntime.so.* in the onnxruntime wheel")
    })
}

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
