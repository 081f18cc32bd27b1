//! mizzen-serve attacked as a hostile client would, over loopback only, each attack bounded in time: the
//! process must survive, answer each request correctly (a 4xx `{"error": ...}` for a client's mistake),
//! stay within its memory budget, and exit on SIGTERM. `make test` runs these against the release binary
//! (MIZZEN_SERVE_BIN); plain `cargo test` against the debug one.

mod common;

use common::{Serve, memory};
use mizzen_serve::grpc::pb;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::model_infer_request::InferInputTensor;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// A keep-alive HTTP/1.1 connection that sends requests one after another and reads each response whole.
struct KeepAlive {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{} not JSON ({e}): {:?}", self.status, String::from_utf8_lossy(&self.body))
        })
    }
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {:?}", self.json()))
            .to_string()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl KeepAlive {
    fn open(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Self { stream, buf: Vec::new() }
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes()).expect("write head");
        self.stream.write_all(body).expect("write body");
        self.read()
    }

    fn read(&mut self) -> Answer {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut lines = head.lines();
                let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| {
                        l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                while self.buf.len() < end + 4 + len {
                    self.fill();
                }
                let body = self.buf[end + 4..end + 4 + len].to_vec();
                self.buf.drain(..end + 4 + len);
                return Answer { status, headers, body };
            }
            self.fill();
        }
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).expect("read");
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Whether the server closed the connection (reads EOF or a reset) within `within`.
    fn closed_within(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}

fn iris_body() -> Vec<u8> {
    serde_json::to_vec(&json!({"inputs": [{"name": "float_input", "shape": [2, 4], "datatype": "FP32",
        "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}))
    .unwrap()
}

fn labels(answer: &Answer) -> Value {
    let body = answer.json();
    body["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "label").unwrap()["data"].clone()
}

fn assert_serves(port: u16) {
    let r = KeepAlive::open(port).send("POST", "/v2/models/iris/infer", &[], &iris_body());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(labels(&r), json!([0, 2]));
}

fn metric(s: &Serve, line_start: &str) -> f64 {
    let text = String::from_utf8(s.get("/metrics").body).unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn grpc_client(s: &Serve) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{}", s.grpc))
        .await
        .expect("gRPC connect")
        .max_encoding_message_size(usize::MAX)
}

fn grpc_request(model: &str, inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs,
        raw_input_contents: raw.into_iter().map(Into::into).collect(),
        ..Default::default()
    }
}

fn input(
    name: &str,
    datatype: &str,
    shape: Vec<i64>,
    contents: Option<pb::InferTensorContents>,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        parameters: Default::default(),
        contents,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_shapes_never_size_an_allocation() {
    let mut s = Serve::start("iris_logreg.onnx", "iris", &[]);
    let bodies: Vec<(&str, String, Option<usize>, u16)> = vec![
        // The 90-byte request that used to abort the process, to an unknown model and to the served one.
        ("/v2/models/anything/infer", r#"{"inputs":[{"name":"X","shape":[2199023255552,13],"datatype":"FP32","data":[1]}]}"#.into(), None, 404),
        ("/v2/models/iris/infer", r#"{"inputs":[{"name":"float_input","shape":[2199023255552,4],"datatype":"FP32","data":[1]}]}"#.into(), None, 400),
        ("/v2/models/iris/infer", r#"{"inputs":[{"name":"float_input","shape":[9223372036854775807,4],"datatype":"FP32","data":[1]}]}"#.into(), None, 400),
        ("/v2/models/iris/infer", r#"{"inputs":[{"name":"float_input","shape":[9223372036854775807],"datatype":"BYTES","data":[]}]}"#.into(), None, 400),
    ];
    let binary: Vec<(&str, &str)> = vec![
        (
            r#"{"inputs":[{"name":"float_input","shape":[8796093022208],"datatype":"BYTES","parameters":{"binary_data_size":0}}]}"#,
            "BYTES [2^43]",
        ),
        (
            r#"{"inputs":[{"name":"float_input","shape":[1152921504606846976,4],"datatype":"FP32","parameters":{"binary_data_size":0}}]}"#,
            "FP32 [2^60, 4]",
        ),
    ];
    let mut conn = KeepAlive::open(s.http_port);
    for (path, body, _, status) in &bodies {
        let r = conn.send("POST", path, &[], body.as_bytes());
        assert_eq!(r.status, *status, "{body}: {}", String::from_utf8_lossy(&r.body));
        assert!(!r.error().is_empty());
    }
    for (header, what) in binary {
        let n = header.len().to_string();
        let r = conn.send(
            "POST",
            "/v2/models/iris/infer",
            &[("Inference-Header-Content-Length", &n)],
            header.as_bytes(),
        );
        assert_eq!(r.status, 400, "{what}: {}", String::from_utf8_lossy(&r.body));
    }
    // gRPC: raw BYTES of a 2^43 shape with no content, typed FP32 without contents, INT64 whose size wraps.
    let mut c = grpc_client(&s).await;
    for (inputs, raw) in [
        (vec![input("float_input", "BYTES", vec![1 << 43], None)], vec![vec![]]),
        (vec![input("float_input", "FP32", vec![1 << 41, 4], None)], vec![]),
        (vec![input("float_input", "INT64", vec![1 << 60, 2], None)], vec![vec![]]),
        (vec![input("X", "FP32", vec![2199023255552, 13], None)], vec![]),
    ] {
        let e = c.model_infer(grpc_request("iris", inputs, raw)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    }
    assert!(s.is_running());
    let (peak, _) = memory(s.pid());
    assert!(peak < 400 * MIB, "peak RSS {} MiB", peak / MIB);
    assert_serves(s.http_port);
}

#[test]
fn slow_and_idle_clients_are_cut_off() {
    let s = Serve::start(
        "iris_logreg.onnx",
        "iris",
        &["--header-timeout-ms", "1000", "--body-timeout-ms", "1000", "--idle-timeout-ms", "1500"],
    );
    let port = s.http_port;
    // Slowloris: 50 connections sending their headers a byte every 100 ms. Each must be cut (a write
    // fails) well before the 20 s this loop allows.
    let loris: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let head = b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nX-Slow: "
                    .iter()
                    .chain(std::iter::repeat(&b'a'));
                let start = Instant::now();
                for &b in head.take(200) {
                    if c.write_all(&[b]).is_err() {
                        return Some(start.elapsed());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                None
            })
        })
        .collect();
    // A body that stops arriving: 408 with a message, and the connection closed.
    let mut slow = KeepAlive::open(port);
    slow.stream
        .write_all(
            b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inputs\":",
        )
        .unwrap();
    let r = slow.read();
    assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.error().contains("did not arrive"), "{}", r.error());
    assert!(slow.closed_within(Duration::from_secs(5)));
    // An idle keep-alive connection is closed after the idle timeout, not before it served.
    let mut idle = KeepAlive::open(port);
    assert_eq!(idle.send("GET", "/v2/health/live", &[], b"").status, 200);
    assert!(idle.closed_within(Duration::from_secs(10)), "an idle connection stayed open");
    // A connection that never sends a byte is closed too.
    let mut silent = KeepAlive::open(port);
    assert!(silent.closed_within(Duration::from_secs(10)), "a silent connection stayed open");
    for l in loris {
        let cut = l.join().unwrap();
        assert!(cut.is_some(), "a slowloris connection was never cut");
    }
    assert!(
        metric(
            &s,
            "mizzen_inference_rejections_total{model=\"iris\",protocol=\"rest\",reason=\"header_timeout\"}"
        ) >= 50.0
    );
    assert_serves(port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_refuse_quickly_and_keep_serving() {
    let s =
        Serve::start("iris_logreg.onnx", "iris", &["--max-connections", "32", "--grpc-max-connections", "2"]);
    let port = s.http_port;
    // 32 connections, each proven accepted by a request.
    let mut held: Vec<KeepAlive> = (0..32).map(|_| KeepAlive::open(port)).collect();
    for c in &mut held {
        assert_eq!(c.send("GET", "/v2/health/live", &[], b"").status, 200);
    }
    // 200 more are refused at once with a 503 that says why.
    let started = Instant::now();
    for _ in 0..200 {
        let mut c = KeepAlive::open(port);
        c.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let r = c.read();
        assert_eq!(r.status, 503);
        assert!(r.error().contains("--max-connections"), "{}", r.error());
    }
    assert!(started.elapsed() < Duration::from_secs(20), "refusals took {:?}", started.elapsed());
    // The connections it has are still served.
    for c in held.iter_mut().take(4) {
        let r = c.send("POST", "/v2/models/iris/infer", &[], &iris_body());
        assert_eq!(labels(&r), json!([0, 2]));
    }
    drop(held);
    // gRPC: two connections are served; a third is closed at once; the two keep working.
    let mut a = grpc_client(&s).await;
    let mut b = grpc_client(&s).await;
    let ready = || pb::ServerReadyRequest {};
    assert!(a.server_ready(ready()).await.is_ok() && b.server_ready(ready()).await.is_ok());
    let third = tokio::time::timeout(Duration::from_secs(10), async {
        let mut c = GrpcInferenceServiceClient::connect(format!("http://{}", s.grpc)).await?;
        c.server_ready(ready()).await.map_err(Into::<Box<dyn std::error::Error + Send + Sync>>::into)?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })
    .await
    .expect("the third connection was neither served nor refused in time");
    assert!(third.is_err(), "a third gRPC connection was served past the limit of 2");
    assert!(a.server_ready(ready()).await.is_ok() && b.server_ready(ready()).await.is_ok());
    assert!(
        metric(
            &s,
            "mizzen_inference_rejections_total{model=\"iris\",protocol=\"rest\",reason=\"connection_limit\"}"
        ) >= 200.0
    );
    assert!(
        metric(
            &s,
            "mizzen_inference_rejections_total{model=\"iris\",protocol=\"grpc\",reason=\"connection_limit\"}"
        ) >= 1.0
    );
}

#[test]
fn sigterm_exits_within_the_grace_period_despite_stalled_clients() {
    let mut s = Serve::start("iris_logreg.onnx", "iris", &["--shutdown-grace-ms", "1500"]);
    let mut mid_headers = TcpStream::connect(("127.0.0.1", s.http_port)).unwrap();
    mid_headers.write_all(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut mid_body = TcpStream::connect(("127.0.0.1", s.http_port)).unwrap();
    mid_body
        .write_all(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        .unwrap();
    let mut grpc = TcpStream::connect(s.grpc.as_str()).unwrap();
    grpc.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    let status = s.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit {status}: {}", s.log());
    assert!(signalled.elapsed() < Duration::from_secs(10), "exit took {:?}", signalled.elapsed());
}

/// Sends an infer request while reading the answer, as a client that sees an early refusal does.
fn racing(port: u16, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut c = KeepAlive::open(port);
    c.stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head =
        format!("POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut writer = c.stream.try_clone().unwrap();
    let body = body.to_vec();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&body));
    });
    let answer = c.read();
    drop(c);
    let _ = sending.join();
    answer
}

/// A JSON request of `rows` iris rows of zeros: two bytes an element, the densest JSON there is.
fn zeros_request(rows: usize) -> Vec<u8> {
    let mut body =
        format!(r#"{{"inputs":[{{"name":"float_input","shape":[{rows},4],"datatype":"FP32","data":["#)
            .into_bytes();
    body.extend(b"0,".repeat(rows * 4));
    body.pop();
    body.extend_from_slice(b"]}]}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_within_the_budget_under_the_largest_bodies() {
    // Default limits: 64 MiB bodies, a 256 MiB budget.
    let s = Serve::start("iris_logreg.onnx", "iris", &[]);
    let (_, base) = memory(s.pid());
    let port = s.http_port;
    let largest = zeros_request((64 << 20) / 8 - 16);
    assert!(largest.len() <= 64 << 20);
    let mut wrong_shape = largest.clone();
    wrong_shape[50..52].copy_from_slice(b"99");
    let fits = zeros_request(1 << 20);
    let bomb = {
        use flate2::write::GzEncoder;
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..80 {
            gz.write_all(&[b' '; 1 << 20]).unwrap();
        }
        gz.finish().unwrap()
    };
    let send = move |body: Vec<u8>, headers: Vec<(&'static str, &'static str)>| {
        std::thread::spawn(move || racing(port, &headers, &body))
    };
    let mut attacks = Vec::new();
    for _ in 0..2 {
        attacks.push(("largest", send(largest.clone(), vec![])));
    }
    attacks.push(("wrong shape", send(wrong_shape, vec![])));
    attacks.push(("gzip bomb", send(bomb, vec![("Content-Encoding", "gzip")])));
    for _ in 0..2 {
        attacks.push(("fits", send(fits.clone(), vec![])));
    }
    // 30 million empty strings in one 60 MB gRPC message.
    let strings = || {
        let contents =
            pb::InferTensorContents { bytes_contents: vec![vec![]; 30_000_000], ..Default::default() };
        grpc_request("iris", vec![input("float_input", "BYTES", vec![30_000_000], Some(contents))], vec![])
    };
    let mut c = grpc_client(&s).await;
    let grpc = {
        let (mut c, request) = (c.clone(), strings());
        tokio::spawn(async move { c.model_infer(request).await })
    };
    let mut statuses = Vec::new();
    for (what, attack) in attacks {
        let r = attack.join().unwrap();
        let error =
            serde_json::from_slice::<Value>(&r.body).ok().and_then(|v| v["error"].as_str().map(String::from));
        match (what, r.status) {
            // Under the burst a request that fits may wait for the budget past its deadline: 503, said so.
            ("fits", 200 | 503)
            | ("largest", 413 | 503)
            | ("wrong shape", 400 | 503)
            | ("gzip bomb", 413 | 503) => {}
            (what, status) => {
                panic!("{what}: {status} {:?}", String::from_utf8_lossy(&r.body[..r.body.len().min(300)]))
            }
        }
        if r.status != 200 {
            assert!(error.is_some_and(|e| !e.is_empty()), "{what}: no error message");
        }
        statuses.push((what, r.status));
    }
    // Refused as too large once it is read whole; while the burst holds the budget, its bytes arriving
    // may find no room first: 503 then, said so.
    let e = grpc.await.unwrap().unwrap_err();
    assert!(matches!(e.code(), tonic::Code::ResourceExhausted | tonic::Code::Unavailable), "{e:?}");
    assert!(!e.message().is_empty(), "{e:?}");
    let (peak, _) = memory(s.pid());
    // The budget, the model and the runtime, and the allocator's slack; the README states the bound.
    let bound = base + 256 * MIB + 96 * MIB;
    eprintln!(
        "peak RSS {} MiB (base {} MiB, bound {} MiB): {statuses:?}",
        peak / MIB,
        base / MIB,
        bound / MIB
    );
    assert!(peak <= bound, "peak RSS {} MiB over {} MiB", peak / MIB, bound / MIB);
    // The budget is all given back: the same requests that fit are served.
    assert_eq!(metric(&s, "mizzen_inference_inflight_request_bytes{model=\"iris\"}"), 0.0);
    assert_eq!(racing(port, &[], &fits).status, 200);
    // Alone, the strings are refused for what they would take decoded.
    let e = c.model_infer(strings()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert_serves(port);
}

#[test]
fn declared_lengths_hold_nothing_until_their_bytes_arrive() {
    // Four bodies that declare 64 MiB each (the whole 256 MiB budget) and send nothing: a request that fits
    // is still served at once, not after their body timeout.
    let s = Serve::start("iris_logreg.onnx", "iris", &[]);
    let stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", s.http_port)).unwrap();
            c.write_all(
                b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 67108864\r\n\r\n{",
            )
            .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert_serves(s.http_port);
    assert!(started.elapsed() < Duration::from_secs(5), "waited {:?} for the budget", started.elapsed());
    assert!(metric(&s, "mizzen_inference_inflight_request_bytes{model=\"iris\"}") < (8 << 20) as f64);
    drop(stalled);
}

#[test]
fn client_mistakes_get_json_errors_and_keep_the_connection_usable() {
    let s = Serve::start("iris_logreg.onnx", "iris", &["--max-request-bytes", "1000000"]);
    let mut c = KeepAlive::open(s.http_port);
    let kib = vec![b'x'; 1024];
    let mistakes: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", "/nowhere", kib.clone(), 404, "no such endpoint"),
        ("PUT", "/v2/models/iris/infer", kib.clone(), 405, "method not allowed"),
        ("DELETE", "/v2/health/live", kib.clone(), 405, "method not allowed"),
        ("GET", "/v2/models/%ff%fe", vec![], 400, "bad path"),
        ("POST", "/v2/models/%ff/infer", kib.clone(), 400, "bad path"),
        ("POST", "/v2/models/infer", kib.clone(), 405, "method not allowed"),
        ("POST", "/v2/models/a/b/infer", kib.clone(), 404, "no such endpoint"),
        ("POST", "/v2/models/other/infer", kib.clone(), 404, "unknown model"),
        ("POST", "/v2/models/iris/infer", kib.clone(), 400, "invalid infer request"),
        (
            "POST",
            "/v2/models/iris/infer",
            br#"{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32","data":[1e39,0,0,0]}]}"#
                .to_vec(),
            400,
            "out of the FP32 range",
        ),
    ];
    for round in 0..20 {
        for (method, path, body, status, message) in &mistakes {
            let r = c.send(method, path, &[], body);
            assert_eq!(r.status, *status, "round {round}: {method} {path}");
            assert!(r.error().contains(message), "{method} {path}: {}", r.error());
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_ne!(r.header("connection"), Some("close"), "{method} {path} closed the connection");
            // The same connection carries a valid request next.
            let ok = c.send("POST", "/v2/models/iris/infer", &[], &iris_body());
            assert_eq!(labels(&ok), json!([0, 2]), "round {round} after {method} {path}");
        }
    }
    // Request-line and header limits answer in JSON too.
    let long = format!("/v2/models/{}", "m".repeat(10_000));
    let r = KeepAlive::open(s.http_port).send("GET", &long, &[], b"");
    assert_eq!((r.status, r.error().contains("request target")), (414, true));
    let many: Vec<(String, String)> = (0..120).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = KeepAlive::open(s.http_port).send("GET", "/v2/health/live", &many, b"");
    assert_eq!((r.status, r.error().contains("header fields")), (431, true));
    // Expect: 100-continue past the limit is refused before the client sends the body.
    let mut e = KeepAlive::open(s.http_port);
    e.stream
        .write_all(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let r = e.read();
    assert_eq!(r.status, 413);
    assert!(r.error().contains("over the limit of 1000000 bytes"), "{}", r.error());
    // A chunked body past the limit is refused as well.
    let mut chunked = KeepAlive::open(s.http_port);
    chunked
        .stream
        .write_all(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = [format!("{:x}\r\n", 600_000).into_bytes(), vec![b' '; 600_000], b"\r\n".to_vec()].concat();
    let _ = chunked.stream.write_all(&chunk);
    let _ = chunked.stream.write_all(&chunk);
    assert_eq!(chunked.read().status, 413);
    assert!(
        metric(
            &s,
            "mizzen_inference_rejections_total{model=\"iris\",protocol=\"rest\",reason=\"method_not_allowed\"}"
        ) >= 40.0
    );
    assert!(
        metric(
            &s,
            "mizzen_inference_requests_total{model=\"iris\",protocol=\"rest\",outcome=\"error\",reason=\"too_large\"}"
        ) >= 2.0
    );
}

#[test]
fn compressed_bodies_are_read_within_the_limit() {
    use flate2::Compression;
    let s = Serve::start("iris_logreg.onnx", "iris", &["--max-request-bytes", "100000"]);
    let gzip = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let zlib = |data: &[u8]| {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let mut c = KeepAlive::open(s.http_port);
    for (encoding, body) in [("gzip", gzip(&iris_body())), ("deflate", zlib(&iris_body()))] {
        let r = c.send("POST", "/v2/models/iris/infer", &[("Content-Encoding", encoding)], &body);
        assert_eq!(labels(&r), json!([0, 2]), "{encoding}");
    }
    // 1 KB that inflates past the limit.
    let bomb = gzip(&vec![b' '; 200_000]);
    let r = c.send("POST", "/v2/models/iris/infer", &[("Content-Encoding", "gzip")], &bomb);
    assert_eq!((r.status, r.error().contains("decompressed")), (413, true), "{}", r.error());
    let r = c.send("POST", "/v2/models/iris/infer", &[("Content-Encoding", "gzip")], b"not gzip at all");
    assert_eq!((r.status, r.error().contains("decompress")), (400, true));
    let r = c.send("POST", "/v2/models/iris/infer", &[("Content-Encoding", "br")], &iris_body());
    assert_eq!((r.status, r.error().contains("Content-Encoding")), (415, true));
    assert_eq!(labels(&c.send("POST", "/v2/models/iris/infer", &[], &iris_body())), json!([0, 2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_the_request_timeout_is_stopped_even_alone() {
    // 20,000 rows through the wide MLP take seconds; the request timeout is 300 ms and the request is
    // alone, so it runs inline, where only the watchdog can stop it.
    let s = Serve::start("mlp_10mb.onnx", "mlp", &["--request-timeout-ms", "300"]);
    let rows: Vec<u8> = (0..20_000 * 64).flat_map(|i| ((i % 97) as f32 / 97.0).to_le_bytes()).collect();
    let header = serde_json::to_vec(
        &json!({"inputs": [{"name": "float_input", "shape": [20000, 64], "datatype": "FP32",
        "parameters": {"binary_data_size": rows.len()}}]}),
    )
    .unwrap();
    let n = header.len().to_string();
    let mut c = KeepAlive::open(s.http_port);
    let started = Instant::now();
    let r = c.send(
        "POST",
        "/v2/models/mlp/infer",
        &[("Inference-Header-Content-Length", &n)],
        &[header, rows].concat(),
    );
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.error().contains("deadline"), "{}", r.error());
    eprintln!("answered 503 after {took:?}: {}", r.error());
    // The stopped session serves the next request.
    let one = serde_json::to_vec(&json!({"inputs": [{"name": "float_input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.5; 64]}]})).unwrap();
    assert_eq!(c.send("POST", "/v2/models/mlp/infer", &[], &one).status, 200);
    assert!(
        metric(
            &s,
            "mizzen_inference_requests_total{model=\"mlp\",protocol=\"rest\",outcome=\"error\",reason=\"timeout\"}"
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_over_grpc_and_empty_or_non_finite_inputs() {
    let s = Serve::start("mlp.onnx", "mlp", &["--max-request-bytes", "4096"]);
    // Zero rows: a client error on both protocols, never a 500.
    let zero = br#"{"inputs":[{"name":"float_input","shape":[0,64],"datatype":"FP32","data":[]}]}"#;
    let r = KeepAlive::open(s.http_port).send("POST", "/v2/models/mlp/infer", &[], zero);
    assert_eq!((r.status, r.error().contains("no elements")), (400, true), "{}", r.error());
    let mut c = grpc_client(&s).await;
    let empty = pb::InferTensorContents::default();
    let e = c
        .model_infer(grpc_request(
            "mlp",
            vec![input("float_input", "FP32", vec![0, 64], Some(empty))],
            vec![],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // NaN and infinity sent in binary pass through to the model (for models trained by mizzen-train, a
    // missing value); the answer is 200.
    let raw: Vec<u8> =
        [f32::NAN, f32::INFINITY].iter().chain([0.5f32; 62].iter()).flat_map(|x| x.to_le_bytes()).collect();
    let header =
        serde_json::to_vec(&json!({"inputs": [{"name": "float_input", "shape": [1, 64], "datatype": "FP32",
        "parameters": {"binary_data_size": 256}}]}))
        .unwrap();
    let n = header.len().to_string();
    let r = KeepAlive::open(s.http_port).send(
        "POST",
        "/v2/models/mlp/infer",
        &[("Inference-Header-Content-Length", &n)],
        &[header, raw.clone()].concat(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Both typed contents and raw contents: refused, as Triton does.
    let both = pb::InferTensorContents { fp32_contents: vec![0.5; 64], ..Default::default() };
    let e = c
        .model_infer(grpc_request(
            "mlp",
            vec![input("float_input", "FP32", vec![1, 64], Some(both))],
            vec![raw],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("one or the other"), "{e:?}");
    // Over the size limit: RESOURCE_EXHAUSTED, counted.
    let big = pb::InferTensorContents { fp32_contents: vec![0.5; 64 * 40], ..Default::default() };
    let e = c
        .model_infer(grpc_request("mlp", vec![input("float_input", "FP32", vec![40, 64], Some(big))], vec![]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("--max-request-bytes"), "{e:?}");
    assert_eq!(
        metric(
            &s,
            "mizzen_inference_requests_total{model=\"mlp\",protocol=\"grpc\",outcome=\"error\",reason=\"too_large\"}"
        ),
        1.0
    );
    // The connection still serves.
    let ok = pb::InferTensorContents { fp32_contents: vec![0.5; 64], ..Default::default() };
    assert!(
        c.model_infer(grpc_request("mlp", vec![input("float_input", "FP32", vec![1, 64], Some(ok))], vec![]))
            .await
            .is_ok()
    );
}
