//! Real clients (tritonclient HTTP and gRPC, the KServe SDK) against real mizzen-serve processes, with
//! answers checked against onnxruntime in Python: runs tests/python/test_clients.py under pytest.

mod common;

use common::{Serve, models, python, repo_root};
use std::process::Command;

#[test]
fn python_clients_get_what_onnxruntime_computes() {
    let servers = [("iris", "iris_logreg.onnx"), ("mlp", "mlp.onnx"), ("multi", "multi_io.onnx")]
        .map(|(name, file)| (name, Serve::start(file, name, &[])));
    let map: serde_json::Map<String, serde_json::Value> = servers
        .iter()
        .map(|(name, s)| {
            let addrs = serde_json::json!({"http": format!("127.0.0.1:{}", s.http_port), "grpc": s.grpc});
            (name.to_string(), addrs)
        })
        .collect();
    let servers = serde_json::Value::Object(map).to_string();
    // One process per client library: their generated protobuf modules clash in one interpreter.
    for file in ["test_tritonclient.py", "test_kserve.py"] {
        let status = Command::new(python())
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"])
            .arg(repo_root().join("services/inference/tests/python").join(file))
            .env("MIZZEN_MODELS", models())
            .env("MIZZEN_SERVERS", &servers)
            .status()
            .expect("running pytest");
        assert!(status.success(), "{file} failed (output above)");
    }
}
