//! Test fixtures: the Python environment (ONNX Runtime's library, scikit-learn), the test models, and
//! mizzen-serve as a real process on free loopback ports.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use mizzen_common::testing::{ort_dylib, python, repo_root, venv};

/// The test models, made once per content of make_models.py.
pub fn models() -> &'static PathBuf {
    static MODELS: OnceLock<PathBuf> = OnceLock::new();
    MODELS.get_or_init(|| {
        mizzen_common::testing::generated("services/inference/models/make_models.py", "models", "inputs.npz")
    })
}

/// The binary under test: `MIZZEN_SERVE_BIN` (`make test` points it at the release build, which the attack
/// tests measure) or the one cargo built for these tests.
pub fn serve_bin() -> PathBuf {
    std::env::var_os("MIZZEN_SERVE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mizzen-serve")))
}

/// Peak and current resident memory of a process, in bytes (VmHWM, VmRSS).
pub fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// mizzen-serve running one model; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Serve {
    child: Child,
    pub http: String,
    pub grpc: String,
    pub http_port: u16,
    pub grpc_port: u16,
    log: PathBuf,
}

impl Serve {
    /// Starts mizzen-serve on `model` (a file in [`models`]) served as `name`, with extra flags, and waits
    /// until it is ready.
    pub fn start(model: &str, name: &str, extra: &[&str]) -> Self {
        let mut s = Self::spawn(model, name, extra);
        s.wait_ready(Duration::from_secs(30));
        s
    }

    /// Starts mizzen-serve on a model URI and waits until it is ready.
    pub fn start_uri(uri: &str, name: &str, extra: &[&str]) -> Self {
        let mut s = Self::spawn_uri(uri, name, extra);
        s.wait_ready(Duration::from_secs(30));
        s
    }

    /// Starts it without waiting.
    pub fn spawn(model: &str, name: &str, extra: &[&str]) -> Self {
        Self::spawn_uri(&format!("file://{}", models().join(model).display()), name, extra)
    }

    /// Starts mizzen-serve on a model URI without waiting.
    pub fn spawn_uri(uri: &str, name: &str, extra: &[&str]) -> Self {
        let (http_port, grpc_port) = (free_port(), free_port());
        let log = std::env::temp_dir().join(format!("mizzen-serve-test-{http_port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(serve_bin())
            .args(["--model-uri", uri, "--model-name", name])
            .args([
                "--http-addr",
                &format!("127.0.0.1:{http_port}"),
                "--grpc-addr",
                &format!("127.0.0.1:{grpc_port}"),
            ])
            .arg("--ort-dylib-path")
            .arg(ort_dylib())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting mizzen-serve");
        Self {
            child,
            http: format!("http://127.0.0.1:{http_port}"),
            grpc: format!("127.0.0.1:{grpc_port}"),
            http_port,
            grpc_port,
            log,
        }
    }

    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            assert!(self.is_running(), "mizzen-serve exited before it was ready; log:\n{}", self.log());
            if http(self.http_port, "GET", "/v2/health/ready", &[], b"").map(|r| r.status) == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mizzen-serve not ready after {timeout:?}; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "mizzen-serve did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn get(&self, path: &str) -> Response {
        http(self.http_port, "GET", path, &[], b"").expect("GET")
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        http(self.http_port, "POST", path, &[], body).expect("POST")
    }

    pub fn post_with(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> Response {
        http(self.http_port, "POST", path, headers, body).expect("POST")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client (one request per connection), enough for tests without an HTTP client crate.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Option<Response> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    // A server may answer (e.g. 413) before reading the whole body; a failed write is not a failed request.
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Some(Response { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = pos + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    out
}
