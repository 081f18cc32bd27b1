//! mizzen-serve over REST, as a real process with real ONNX Runtime and real models.

mod common;

use common::{Serve, http};
use serde_json::{Value, json};
use std::time::Duration;

const IRIS_ROWS: &str = r#"[[5.1,3.5,1.4,0.2],[6.7,3.0,5.2,2.3]]"#;

fn iris_request(id: Option<&str>) -> Vec<u8> {
    let mut body = json!({"inputs": [{"name": "float_input", "shape": [2, 4], "datatype": "FP32",
        "data": serde_json::from_str::<Value>(IRIS_ROWS).unwrap()}]});
    if let Some(id) = id {
        body["id"] = json!(id);
    }
    serde_json::to_vec(&body).unwrap()
}

fn output<'a>(resp: &'a Value, name: &str) -> &'a Value {
    resp["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {resp}"))
}

#[test]
fn health_and_metadata() {
    let s = Serve::start("iris_logreg.onnx", "iris", &[]);
    assert_eq!(s.get("/v2/health/live").status, 200);
    assert_eq!(s.get("/v2/health/ready").status, 200);
    let meta = s.get("/v2").json();
    assert_eq!(meta["name"], "mizzen-serve");
    assert!(meta["extensions"].as_array().unwrap().contains(&json!("binary_tensor_data")));
    let model = s.get("/v2/models/iris").json();
    assert_eq!(model["inputs"], json!([{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}]));
    assert_eq!(model["outputs"][0], json!({"name": "label", "datatype": "INT64", "shape": [-1]}));
    assert_eq!(model["versions"], json!(["1"]));
    assert_eq!(s.get("/v2/models/iris/versions/1").status, 200);
    assert_eq!(s.get("/v2/models/iris/ready").status, 200);
    assert_eq!(s.get("/v2/models/iris/versions/1/ready").status, 200);
    for path in ["/v2/models/nope", "/v2/models/iris/versions/2", "/v2/models/nope/ready", "/v2/nowhere"] {
        let r = s.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["error"].as_str().unwrap().len() > 5, "{path}");
    }
}

#[test]
fn json_infer_echoes_the_id_and_filters_outputs() {
    let s = Serve::start("iris_logreg.onnx", "iris", &[]);
    let r = s.post("/v2/models/iris/infer", &iris_request(Some("req-7")));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["id"], "req-7");
    assert_eq!(body["model_name"], "iris");
    assert_eq!(output(&body, "label")["data"], json!([0, 2]));
    assert_eq!(output(&body, "probabilities")["shape"], json!([2, 3]));

    // Flat data, a version in the path, and only one output requested.
    let flat = json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": [6.7, 3.0, 5.2, 2.3]}],
                      "outputs": [{"name": "label"}]});
    let r = s.post("/v2/models/iris/versions/1/infer", &serde_json::to_vec(&flat).unwrap()).json();
    assert_eq!(r["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(output(&r, "label")["data"], json!([2]));
    assert!(r.get("id").is_none());
}

#[test]
fn binary_tensor_extension_in_and_out() {
    let s = Serve::start("iris_logreg.onnx", "iris", &[]);
    let rows: Vec<f32> = vec![5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3];
    let raw: Vec<u8> = rows.iter().flat_map(|x| x.to_le_bytes()).collect();
    let header = json!({
        "inputs": [{"name": "float_input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": raw.len()}}],
        "outputs": [{"name": "label", "parameters": {"binary_data": true}}, {"name": "probabilities", "parameters": {"binary_data": false}}]
    });
    let header = serde_json::to_vec(&header).unwrap();
    let mut body = header.clone();
    body.extend_from_slice(&raw);
    let r = s.post_with(
        "/v2/models/iris/infer",
        &[("Inference-Header-Content-Length", header.len().to_string())],
        &body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let n: usize =
        r.header("inference-header-content-length").expect("binary response header").parse().unwrap();
    let json: Value = serde_json::from_slice(&r.body[..n]).unwrap();
    let label = output(&json, "label");
    assert_eq!(label["parameters"]["binary_data_size"], 16);
    let labels: Vec<i64> = r.body[n..].chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(labels, vec![0, 2]);
    assert_eq!(output(&json, "probabilities")["data"].as_array().unwrap().len(), 6);
}

#[test]
fn every_datatype_through_json_and_binary() {
    let s = Serve::start("multi_io.onnx", "multi", &[]);
    let req = json!({"inputs": [
        {"name": "in_f32", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6.5]},
        {"name": "in_f64", "shape": [2, 3], "datatype": "FP64", "data": [[1e300, 2, 3], [4, 5, 6]]},
        {"name": "in_i64", "shape": [2, 2], "datatype": "INT64", "data": [9007199254740993i64, -1, 0, 1]},
        {"name": "in_i32", "shape": [2, 2], "datatype": "INT32", "data": [-2147483648, 2147483647, 0, 1]},
        {"name": "in_u8", "shape": [2, 2], "datatype": "UINT8", "data": [0, 255, 1, 2]},
        {"name": "in_bool", "shape": [2], "datatype": "BOOL", "data": [true, false]},
        {"name": "in_str", "shape": [2], "datatype": "BYTES", "data": ["héllo", ""]}
    ]});
    let mut all = req.clone();
    // FP16 only travels binary: 0.5 and -2.0, twice.
    let f16: Vec<u8> = [0x3800u16, 0xC000, 0x3800, 0xC000].iter().flat_map(|x| x.to_le_bytes()).collect();
    all["inputs"].as_array_mut().unwrap().push(json!({"name": "in_f16", "shape": [2, 2], "datatype": "FP16",
        "parameters": {"binary_data_size": f16.len()}}));
    all["parameters"] = json!({"binary_data_output": false});
    let header = serde_json::to_vec(&all).unwrap();
    let mut body = header.clone();
    body.extend_from_slice(&f16);
    let r = s.post_with(
        "/v2/models/multi/infer",
        &[("Inference-Header-Content-Length", header.len().to_string())],
        &body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let out = r.json();
    assert_eq!(output(&out, "out_f32x2")["data"], json!([2.0, 4.0, 6.0, 8.0, 10.0, 13.0]));
    assert_eq!(output(&out, "out_f64")["data"][0], json!(1e300));
    assert_eq!(output(&out, "out_i64")["data"][0], json!(9007199254740993i64));
    assert_eq!(output(&out, "out_i32")["data"], json!([-2147483648, 2147483647, 0, 1]));
    assert_eq!(output(&out, "out_u8")["data"], json!([0, 255, 1, 2]));
    assert_eq!(output(&out, "out_not")["data"], json!([false, true]));
    assert_eq!(output(&out, "out_str")["data"], json!(["héllo", ""]));
    assert_eq!(output(&out, "out_str")["datatype"], "BYTES");
    assert_eq!(output(&out, "out_f16")["data"], json!([0.5, -2.0, 0.5, -2.0]));

    // FP16 as JSON is refused with a hint.
    let mut bad = req.clone();
    bad["inputs"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "in_f16", "shape": [1, 2], "datatype": "FP16", "data": [1, 2]}));
    let r = s.post("/v2/models/multi/infer", &serde_json::to_vec(&bad).unwrap());
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("binary"));
}

#[test]
fn non_tensor_outputs_are_skipped() {
    let s = Serve::start("iris_zipmap.onnx", "zipmap", &[]);
    let meta = s.get("/v2/models/zipmap").json();
    let names: Vec<&str> =
        meta["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["output_label"]);
    let r = s.post("/v2/models/zipmap/infer", &iris_request(None));
    assert_eq!(r.status, 200);
    assert_eq!(output(&r.json(), "output_label")["data"], json!([0, 2]));
}

#[test]
fn malformed_requests_get_4xx_with_a_clear_message() {
    let s = Serve::start("iris_logreg.onnx", "iris", &["--max-request-bytes", "4096"]);
    let input = |shape: Value, datatype: &str, data: Value| {
        serde_json::to_vec(
            &json!({"inputs": [{"name": "float_input", "shape": shape, "datatype": datatype, "data": data}]}),
        )
        .unwrap()
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/v2/models/iris/infer", b"{not json".to_vec(), 400, "invalid infer request"),
        ("/v2/models/iris/infer", b"".to_vec(), 400, "invalid infer request"),
        ("/v2/models/iris/infer", input(json!([1, 5]), "FP32", json!([1, 2, 3, 4, 5])), 400, "shape [1, 5]"),
        ("/v2/models/iris/infer", input(json!([1, 4]), "INT64", json!([1, 2, 3, 4])), 400, "datatype INT64"),
        ("/v2/models/iris/infer", input(json!([1, 4]), "FP32", json!([1, 2, 3])), 400, "3 elements"),
        ("/v2/models/iris/infer", input(json!([1, 4]), "FP32", json!(["a", 2, 3, 4])), 400, "not a valid FP32"),
        ("/v2/models/iris/infer", input(json!([1, 4]), "FLOAT", json!([1, 2, 3, 4])), 400, "unknown datatype"),
        ("/v2/models/iris/infer", br#"{"inputs":[]}"#.to_vec(), 400, "no inputs"),
        (
            "/v2/models/iris/infer",
            br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#.to_vec(),
            400,
            "unknown input \"x\"",
        ),
        (
            "/v2/models/iris/infer",
            br#"{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"nope"}]}"#.to_vec(),
            400,
            "unknown output",
        ),
        ("/v2/models/iris/infer", vec![b' '; 5000], 413, "over the limit of 4096 bytes"),
        ("/v2/models/other/infer", input(json!([1, 4]), "FP32", json!([1, 2, 3, 4])), 404, "unknown model"),
        ("/v2/models/iris/versions/9/infer", input(json!([1, 4]), "FP32", json!([1, 2, 3, 4])), 404, "unknown version"),
    ];
    for (path, body, status, message) in cases {
        let r = s.post(path, &body);
        assert_eq!(
            r.status,
            status,
            "{path} {}: {}",
            String::from_utf8_lossy(&body[..body.len().min(80)]),
            String::from_utf8_lossy(&r.body)
        );
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(message), "expected {message:?} in {error:?}");
    }
    let r = s.post_with("/v2/models/iris/infer", &[("Inference-Header-Content-Length", "x".into())], b"{}");
    assert_eq!(r.status, 400);
    // Still serving correctly afterwards.
    assert_eq!(
        output(&s.post("/v2/models/iris/infer", &iris_request(None)).json(), "label")["data"],
        json!([0, 2])
    );
}

#[test]
fn thousands_of_random_bodies_never_break_the_server() {
    use rand::{Rng, SeedableRng};
    let mut s = Serve::start("multi_io.onnx", "multi", &["--max-request-bytes", "65536"]);
    assert_eq!(s.post("/v2/models/multi/infer", b"{}").status, 400);
    let valid = json!({"inputs": [
        {"name": "in_f32", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
        {"name": "in_f64", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]},
        {"name": "in_i64", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]},
        {"name": "in_i32", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]},
        {"name": "in_u8", "shape": [1, 2], "datatype": "UINT8", "data": [1, 2]},
        {"name": "in_bool", "shape": [1], "datatype": "BOOL", "data": [true]},
        {"name": "in_str", "shape": [1], "datatype": "BYTES", "data": ["s"]},
        {"name": "in_f16", "shape": [1, 2], "datatype": "FP16", "parameters": {"binary_data_size": 4}},
    ]})
    .to_string()
    .into_bytes();
    // FP16 travels binary: the JSON header is fuzzed, then the 4 raw bytes follow it.
    let f16 = [0x00u8, 0x38, 0x00, 0xC0];
    let port = s.http_port;
    let send = |header: &[u8], binary: bool| {
        let mut body = header.to_vec();
        let mut headers = vec![];
        if binary {
            body.extend_from_slice(&f16);
            headers.push(("Inference-Header-Content-Length", header.len().to_string()));
        }
        http(port, "POST", "/v2/models/multi/infer", &headers, &body).expect("the server answers")
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut ok, mut client_errors) = (0, 0);
    for i in 0..3000 {
        let mut body = valid.clone();
        match i % 4 {
            // Flip bytes.
            0 => (0..rng.random_range(1..6)).for_each(|_| {
                let at = rng.random_range(0..body.len());
                body[at] = rng.random();
            }),
            // Truncate.
            1 => body.truncate(rng.random_range(0..body.len())),
            // Replace a digit or letter with another token.
            2 => {
                let at = rng.random_range(0..body.len());
                let token: &[u8] =
                    [&b"-1"[..], b"null", b"[[", b"1e999", b"\"", b"{}", b"99999999999999999999"]
                        [rng.random_range(0..7)];
                body.splice(at..at + 1, token.iter().copied());
            }
            // Pure noise.
            _ => body = (0..rng.random_range(0..512)).map(|_| rng.random()).collect(),
        }
        let r = send(&body, i % 4 != 3);
        match r.status {
            200 => ok += 1,
            400..=499 => {
                client_errors += 1;
                assert!(r.json()["error"].is_string(), "4xx without an error message");
            }
            other => panic!(
                "status {other} for body {:?}: {}",
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&r.body)
            ),
        }
    }
    assert!(s.is_running());
    assert!(client_errors > 2000 && ok > 0, "{client_errors} refusals, {ok} accepted");
    let r = send(&valid, true);
    assert_eq!(output(&r.json(), "out_f32x2")["data"], json!([2.0, 4.0, 6.0]));
    assert_eq!(output(&r.json(), "out_f16")["data"], json!([0.5, -2.0]));
}

fn mlp_rows(n: usize, seed: usize) -> Vec<f32> {
    (0..n * 64).map(|i| (((i + seed * 7919) % 97) as f32 / 97.0) - 0.5).collect()
}

fn mlp_request(rows: &[f32]) -> Vec<u8> {
    serde_json::to_vec(&json!({"inputs": [{"name": "float_input", "shape": [rows.len() / 64, 64], "datatype": "FP32", "data": rows}],
        "outputs": [{"name": "probabilities"}]}))
    .unwrap()
}

/// Sixteen single-row MLP requests sent at once to `model` served with `args`: checks every answer against
/// the same model with batching off, and returns the server's metrics afterwards.
fn burst_of_single_rows(model: &str, args: &[&str]) -> impl Fn(&str) -> f64 {
    let served = Serve::start(model, "mlp", args);
    let single = Serve::start(model, "mlp", &["--batching", "false"]);
    let requests: Vec<Vec<u8>> = (0..16).map(|i| mlp_request(&mlp_rows(1, i))).collect();
    let expected: Vec<Value> =
        requests.iter().map(|b| single.post("/v2/models/mlp/infer", b).json()["outputs"].clone()).collect();
    let port = served.http_port;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(requests.len()));
    let handles: Vec<_> = requests
        .into_iter()
        .map(|b| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                http(port, "POST", "/v2/models/mlp/infer", &[], &b).expect("answer")
            })
        })
        .collect();
    for (h, want) in handles.into_iter().zip(expected) {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200);
        let got = r.json()["outputs"].clone();
        let (g, w) = (got[0]["data"].as_array().unwrap(), want[0]["data"].as_array().unwrap());
        assert_eq!(got[0]["shape"], want[0]["shape"]);
        for (a, b) in g.iter().zip(w) {
            assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-4, "served {a} vs single {b}");
        }
    }
    let metrics = String::from_utf8(served.get("/metrics").body).unwrap();
    move |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

#[test]
fn concurrent_requests_are_batched_and_split_back_correctly() {
    // The wide MLP takes long enough per run that a burst overlaps in the server (and far too long to run
    // where it was parsed); batching off gives the reference answers. Single-row requests: more than one
    // row per run can only come from joining.
    let value = burst_of_single_rows(
        "mlp_10mb.onnx",
        &[
            "--max-queue-delay-microseconds",
            "20000",
            "--max-batch-size",
            "64",
            "--quick-run-microseconds",
            "0",
        ],
    );
    let runs = value("mizzen_inference_batch_size_count");
    let rows = value("mizzen_inference_batch_size_sum");
    // Sixteen single-row requests in fewer runs than requests: some were joined. (How many depends on
    // scheduling; the exactness of the split is checked for every request.)
    assert!(rows == 16.0 && runs < 16.0, "no batching: {rows} rows in {runs} runs");
}

#[test]
fn quick_requests_run_where_they_were_parsed_and_never_queue() {
    // The small MLP counts as quick here whatever the machine; a queued request would wait up to 20 ms for
    // company. One I/O thread: its one session is always free when it looks. Every request is its own run
    // and none waited in the queue.
    let value = burst_of_single_rows(
        "mlp.onnx",
        &[
            "--max-queue-delay-microseconds",
            "20000",
            "--quick-run-microseconds",
            "1000000",
            "--io-threads",
            "1",
        ],
    );
    assert_eq!(value("mizzen_inference_batch_size_count"), 16.0);
    assert_eq!(value("mizzen_inference_batch_size_sum"), 16.0);
    assert_eq!(value("mizzen_inference_queue_duration_seconds_sum"), 0.0);
    assert_eq!(value("mizzen_inference_queue_duration_seconds_count"), 16.0);
}

#[test]
fn a_full_queue_answers_503_at_once() {
    // The wide MLP on 1,000 rows takes a good part of a second a run, so with room for one waiting request
    // the rest of a burst of twelve must be refused, whatever the scheduling.
    let s = Serve::start("mlp_10mb.onnx", "mlp", &["--max-queue-size", "1", "--batching", "false"]);
    let body = mlp_request(&mlp_rows(1000, 1));
    let port = s.http_port;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(12));
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let (body, barrier) = (body.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                http(port, "POST", "/v2/models/mlp/infer", &[], &body).unwrap()
            })
        })
        .collect();
    let responses: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    let refused: Vec<_> = responses.iter().filter(|r| r.status == 503).collect();
    assert!(!refused.is_empty(), "no 503 among {statuses:?}");
    assert!(refused[0].json()["error"].as_str().unwrap().contains("queue is full"));
    assert!(statuses.iter().all(|&c| c == 200 || c == 503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    // 1,500 rows through the wide MLP keep the request in flight well past the signal.
    let mut s = Serve::start("mlp_10mb.onnx", "mlp", &[]);
    let port = s.http_port;
    let body = mlp_request(&mlp_rows(1500, 3));
    let in_flight = std::thread::spawn(move || {
        let r = http(port, "POST", "/v2/models/mlp/infer", &[], &body);
        (r, std::time::Instant::now())
    });
    std::thread::sleep(Duration::from_millis(30));
    let signalled = std::time::Instant::now();
    let status = s.terminate(Duration::from_secs(20));
    let (r, answered) = in_flight.join().unwrap();
    let r = r.expect("the in-flight request was answered");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(answered > signalled, "the request finished before the signal: nothing was in flight");
    assert_eq!(r.json()["outputs"][0]["shape"], json!([1500, 10]));
    assert!(status.success(), "exit {status}: {}", s.log());
}

#[test]
fn unready_until_loaded_and_a_missing_model_exits_with_the_reason() {
    let mut s = Serve::spawn("does-not-exist.onnx", "x", &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.is_running() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!s.is_running(), "a server without its model keeps running");
    assert!(s.log().contains("does-not-exist.onnx"), "{}", s.log());
}

#[test]
fn metrics_cover_requests_queue_compute_and_load() {
    let s = Serve::start("iris_logreg.onnx", "iris", &[]);
    s.post("/v2/models/iris/infer", &iris_request(None));
    s.post("/v2/models/iris/infer", b"{");
    let m = String::from_utf8(s.get("/metrics").body).unwrap();
    for want in [
        r#"mizzen_inference_requests_total{model="iris",protocol="rest",outcome="success",reason=""} 1"#,
        r#"mizzen_inference_requests_total{model="iris",protocol="rest",outcome="error",reason="invalid_argument"} 1"#,
        "mizzen_inference_request_duration_seconds_count{model=\"iris\",protocol=\"rest\"} 2",
        "mizzen_inference_queue_duration_seconds_count{model=\"iris\"} 1",
        "mizzen_inference_compute_duration_seconds_count{model=\"iris\"} 1",
        "mizzen_inference_batch_size_count{model=\"iris\"} 1",
        "mizzen_inference_inflight_requests{model=\"iris\"} 0",
        "mizzen_inference_queue_depth{model=\"iris\"} 0",
        "mizzen_inference_model_load_seconds{model=\"iris\"}",
    ] {
        assert!(m.contains(want), "missing {want}\n{m}");
    }
}

#[test]
fn loads_the_model_over_http() {
    // A plain HTTP file server on loopback stands in for any http(s):// model store.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut files = std::process::Command::new(common::python())
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(common::models())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while http(port, "GET", "/iris_logreg.onnx", &[], b"").map(|r| r.status) != Some(200) {
        assert!(std::time::Instant::now() < deadline, "the file server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = Serve::spawn_uri(&format!("http://127.0.0.1:{port}/iris_logreg.onnx"), "iris", &[]);
    s.wait_ready(Duration::from_secs(30));
    let r = s.post("/v2/models/iris/infer", &iris_request(None));
    let _ = files.kill();
    let _ = files.wait();
    assert_eq!(output(&r.json(), "label")["data"], json!([0, 2]));
}
