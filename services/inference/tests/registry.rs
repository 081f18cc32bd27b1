//! mizzen-serve on `registry://` URIs: a model uploaded to a real mizzen-registry (run in the test),
//! registered and aliased, is served by alias and by version; an alias moved to another version is what a
//! new pod serves; a file that no longer matches the sha256 the registry recorded is refused at start; and
//! a registry URI without the registry's address is a clear error.

mod common;

use common::{Serve, models};
use serde_json::json;
use std::time::Duration;

use mizzen_registry::testing::Background as Registry;

/// Uploads `bytes` to the registry's artifact `path`.
fn put(reg: &Registry, path: &str, bytes: Vec<u8>) {
    let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{path}", reg.url);
    let status =
        reg.rt.block_on(async { reqwest::Client::new().put(url).body(bytes).send().await.unwrap().status() });
    assert_eq!(status, 200);
}

/// POSTs `body` to the registry's MLflow endpoint `op`; its 200 answer.
fn call(reg: &Registry, op: &str, body: serde_json::Value) -> serde_json::Value {
    let url = format!("{}/api/2.0/mlflow/{op}", reg.url);
    reg.rt.block_on(async {
        let r = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{op}");
        r.json().await.unwrap()
    })
}

fn infer_iris(s: &Serve) -> serde_json::Value {
    let body = json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": [6.7, 3.0, 5.2, 2.3]}]});
    let r = s.post("/v2/models/iris/infer", body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", s.log());
    r.json()
}

fn exits_with(uri: &str, extra: &[&str], message: &str) {
    let mut s = Serve::spawn_uri(uri, "iris", extra);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.is_running() {
        assert!(std::time::Instant::now() < deadline, "mizzen-serve kept running on {uri}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.log().contains(message), "{message:?} not in the log:\n{}", s.log());
}

#[test]
fn registry_models_are_served_by_alias_and_by_version_and_checked() {
    let reg = Registry::start();
    let iris = std::fs::read(models().join("iris_logreg.onnx")).unwrap();
    let mlp = std::fs::read(models().join("mlp.onnx")).unwrap();
    put(&reg, "0/r1/artifacts/model/model.onnx", iris.clone());
    put(&reg, "0/r2/artifacts/model/model.onnx", iris.clone());
    call(&reg, "registered-models/create", json!({"name": "iris"}));
    for run in ["r1", "r2"] {
        let source = format!("mlflow-artifacts:/0/{run}/artifacts/model");
        call(&reg, "model-versions/create", json!({"name": "iris", "source": source}));
    }
    call(&reg, "registered-models/alias", json!({"name": "iris", "alias": "champion", "version": "1"}));
    let flag = ["--registry-url", reg.url.as_str()];

    let by_alias = Serve::start_uri("registry://iris@champion", "iris", &flag);
    assert!(by_alias.log().contains("resolved through the registry"), "{}", by_alias.log());
    assert!(by_alias.log().contains("version=1"), "{}", by_alias.log());
    let answer = infer_iris(&by_alias);
    assert_eq!(answer["outputs"][0]["data"], json!([2]), "{answer}");
    drop(by_alias);

    call(&reg, "registered-models/alias", json!({"name": "iris", "alias": "champion", "version": "2"}));
    let moved = Serve::start_uri("registry://iris@champion", "iris", &flag);
    assert!(moved.log().contains("version=2"), "{}", moved.log());
    infer_iris(&moved);
    drop(moved);

    // Version 1's file replaced behind the registry's back: the recorded sha256 no longer matches.
    put(&reg, "0/r1/artifacts/model/model.onnx", mlp);
    exits_with("registry://iris/1", &flag, "but the registry recorded");
    exits_with("registry://iris@nobody", &flag, "Registered model alias nobody not found");
    exits_with("registry://iris@champion", &[], "needs the registry's address");
}
