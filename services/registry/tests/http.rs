//! mizzen-registry's HTTP surface with a plain HTTP client: the artifact proxy streaming a large file
//! both ways, paths it refuses, MLflow's error shapes for client mistakes (never a 5xx), unknown routes,
//! and the bearer token on writes.

use serde_json::{Value, json};

/// The upload stall limit of these tests' registry.
const STALL: std::time::Duration = std::time::Duration::from_secs(1);

struct Server {
    url: String,
    _dir: tempfile::TempDir,
}

async fn start(token: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let app =
        mizzen_registry::App::open_with(dir.path().join("data"), 64 << 20, token.map(str::to_string), STALL)
            .unwrap();
    let url = mizzen_registry::testing::serve(app).await.unwrap();
    Server { url, _dir: dir }
}

async fn call(method: reqwest::Method, url: &str, body: Value) -> (u16, Value) {
    let client = reqwest::Client::new();
    let r = client.request(method, url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn artifacts_stream_both_ways_and_bad_paths_are_refused() {
    let s = start(None).await;
    let client = reqwest::Client::new();
    let bytes: Vec<u8> = (0..(40u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/0/run/artifacts/model/model.onnx", s.url);
    let put = client.put(&url).body(bytes.clone()).send().await.unwrap();
    assert_eq!(put.status(), 200);
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-length"], bytes.len().to_string().as_str());
    assert!(got.bytes().await.unwrap() == bytes, "the bytes come back as they went");
    let list: Value = client
        .get(format!("{}/api/2.0/mlflow-artifacts/artifacts?path=0/run/artifacts", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!({"files": [{"path": "model", "is_dir": true}]}));
    // (`..` and `.` segments never arrive: clients resolve them; see the unit test of the path check.)
    for bad in ["0//x", "0/a%5Cb", "0/x%01"] {
        let r = client
            .put(format!("{}/api/2.0/mlflow-artifacts/artifacts/{bad}", s.url))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let missing = client.get(format!("{url}.missing")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    // Over the limit (64 MiB here): refused, and nothing is recorded.
    let big = client.put(format!("{url}.big")).body(vec![0u8; 65 << 20]).send().await.unwrap();
    assert_eq!(big.status(), 413);
    assert_eq!(client.get(format!("{url}.big")).send().await.unwrap().status(), 404);
    // And its partial file is gone, as is that of an upload the client cut off.
    let mut cut = tokio::net::TcpStream::connect(s.url.trim_start_matches("http://")).await.unwrap();
    let head = "PUT /api/2.0/mlflow-artifacts/artifacts/0/run/artifacts/cut HTTP/1.1\r\nHost: x\r\n\
                Content-Length: 10000000\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut cut, head.as_bytes()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut cut, &vec![1u8; 3 << 20]).await.unwrap();
    drop(cut);
    let tmp = s._dir.path().join("data/tmp");
    let left = eventually(|| std::fs::read_dir(&tmp).unwrap().count() == 0).await;
    assert!(left, "partial uploads left behind: {:?}", std::fs::read_dir(&tmp).unwrap().collect::<Vec<_>>());
    let cut = format!("{}/api/2.0/mlflow-artifacts/artifacts/0/run/artifacts/cut", s.url);
    assert_eq!(client.get(cut).send().await.unwrap().status(), 404);
    // A client that declares 10 MB, sends 1 MiB and then nothing, keeping the connection open: refused
    // with a 400 once it has been silent for the stall limit, its partial file removed.
    let mut stalled = tokio::net::TcpStream::connect(s.url.trim_start_matches("http://")).await.unwrap();
    let head = "PUT /api/2.0/mlflow-artifacts/artifacts/0/run/artifacts/stalled HTTP/1.1\r\nHost: x\r\n\
                Content-Length: 10000000\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut stalled, head.as_bytes()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stalled, &vec![1u8; 1 << 20]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(STALL * 10, tokio::io::AsyncReadExt::read(&mut stalled, &mut answer))
        .await
        .expect("an answer to the stalled upload")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("sent nothing"), "{answer}");
    assert!(
        eventually(|| std::fs::read_dir(&tmp).unwrap().count() == 0).await,
        "the stalled upload's file stays"
    );
}

/// Whether `done` holds within 10 s (the server removes a cut-off upload's file once it notices).
async fn eventually(done: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn client_mistakes_get_mlflow_errors_never_a_5xx() {
    let s = start(None).await;
    let api = |p: &str| format!("{}/api/2.0/mlflow/{p}", s.url);
    use reqwest::Method as M;
    let cases = [
        (M::POST, "registered-models/create", json!({}), 400, "INVALID_PARAMETER_VALUE"),
        (M::POST, "registered-models/create", json!({"name": "a/b"}), 400, "INVALID_PARAMETER_VALUE"),
        (M::POST, "registered-models/create", json!({"name": 7}), 200, ""),
        (M::POST, "registered-models/create", json!({"name": "7"}), 400, "RESOURCE_ALREADY_EXISTS"),
        (M::POST, "model-versions/create", json!({"name": "7"}), 400, "INVALID_PARAMETER_VALUE"),
        (M::POST, "model-versions/create", json!({"name": "7", "source": "s3://b/m"}), 200, ""),
        (
            M::POST,
            "registered-models/alias",
            json!({"name": "7", "alias": "a b", "version": "1"}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            M::POST,
            "registered-models/alias",
            json!({"name": "7", "alias": "v2", "version": "1"}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            M::POST,
            "registered-models/alias",
            json!({"name": "7", "alias": "prod", "version": "-1"}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            M::DELETE,
            "registered-models/alias",
            json!({"name": "7", "alias": "prod"}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            M::POST,
            "runs/log-metric",
            json!({"run_id": "x", "key": "k", "value": 1}),
            404,
            "RESOURCE_DOES_NOT_EXIST",
        ),
        (M::POST, "runs/update", json!({"run_id": "x", "status": "DONE"}), 400, "INVALID_PARAMETER_VALUE"),
        (M::GET, "registered-models/search", json!(null), 200, ""),
        (M::POST, "experiments/search", json!({"max_results": 0}), 400, "INVALID_PARAMETER_VALUE"),
        (M::POST, "experiments/search", json!({"page_token": "garbage"}), 400, "INVALID_PARAMETER_VALUE"),
        (M::POST, "no/such/endpoint", json!({}), 404, "ENDPOINT_NOT_FOUND"),
    ];
    for (method, path, body, status, code) in cases {
        let (got, reply) = call(method.clone(), &api(path), body.clone()).await;
        assert_eq!(got, status, "{method} {path} {body}: {reply}");
        if !code.is_empty() {
            assert_eq!(reply["error_code"], code, "{method} {path} {body}: {reply}");
            assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    let client = reqwest::Client::new();
    let r = client.post(api("registered-models/create")).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = client.get(format!("{}/nowhere", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_token_guards_writes_not_reads() {
    let s = start(Some("s3cret")).await;
    let client = reqwest::Client::new();
    let create = format!("{}/api/2.0/mlflow/registered-models/create", s.url);
    let r = client.post(&create).json(&json!({"name": "m"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client.post(&create).bearer_auth("wrong").json(&json!({"name": "m"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client.post(&create).bearer_auth("s3cret").json(&json!({"name": "m"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r =
        client.get(format!("{}/api/2.0/mlflow/registered-models/get?name=m", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let put = format!("{}/api/2.0/mlflow-artifacts/artifacts/0/x", s.url);
    assert_eq!(client.put(&put).body("x").send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn openapi_describes_every_endpoint_and_metrics_count_what_happened() {
    let s = start(None).await;
    let client = reqwest::Client::new();
    let doc: Value =
        client.get(format!("{}/openapi.json", s.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for (methods, op, _, _) in mizzen_registry::ENDPOINTS {
        for m in *methods {
            let operation = &doc["paths"][format!("/api/2.0/mlflow/{op}")][m.to_ascii_lowercase()];
            assert!(operation["summary"].is_string(), "{m} {op} is not described");
        }
    }
    assert!(doc["paths"]["/api/2.0/mlflow-artifacts/artifacts/{path}"]["put"].is_object());
    // Every operation id is unique, as OpenAPI requires.
    let mut ids: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| p.as_object().unwrap().values().map(|o| o["operationId"].as_str().unwrap().to_string()))
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);

    let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/m.bin", s.url);
    assert_eq!(client.put(&url).body(vec![7u8; 1000]).send().await.unwrap().status(), 200);
    assert_eq!(client.get(&url).send().await.unwrap().bytes().await.unwrap().len(), 1000);
    let (code, _) = call(
        reqwest::Method::GET,
        &format!("{}/api/2.0/mlflow/registered-models/get?name=none", s.url),
        json!({}),
    )
    .await;
    assert_eq!(code, 404);
    let metrics = client.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    for line in [
        "mizzen_registry_artifact_bytes_total{direction=\"in\"} 1000",
        "mizzen_registry_artifact_bytes_total{direction=\"out\"} 1000",
        "mizzen_registry_requests_total{api=\"artifacts\",method=\"PUT\",code=\"200\"} 1",
        "mizzen_registry_requests_total{api=\"mlflow\",method=\"GET\",code=\"404\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}
