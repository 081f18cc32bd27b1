//! mizzen-registry driven by the real MLflow client from PyPI (mlflow-skinny): the whole flow and every
//! error case (tests/python/mlflow_flow.py), then the same state read back after the registry restarted
//! on its data directory.

use mizzen_common::testing::python;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A mizzen-registry process on a free loopback port, killed when dropped.
struct Registry {
    child: Child,
    url: String,
}

impl Registry {
    fn start(data: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(env!("CARGO_BIN_EXE_mizzen-registry"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        mizzen_common::testing::wait_for_port(port, "mizzen-registry");
        Self { child, url: format!("http://127.0.0.1:{port}") }
    }

    /// Runs the flow script in `mode`; its JSON summary.
    fn client(&self, mode: &str, work: &Path) -> serde_json::Value {
        let script =
            mizzen_common::testing::repo_root().join("services/registry/tests/python/mlflow_flow.py");
        let out = Command::new(python())
            .arg(script)
            .args([mode, &work.to_string_lossy()])
            .env("MLFLOW_TRACKING_URI", &self.url)
            // Never retry: a 5xx must fail the test at once (the client retries them for minutes).
            .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            .env("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
            .env("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .env("DO_NOT_TRACK", "true")
            .env("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mlflow_flow.py {mode} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_mlflow_client_drives_the_registry_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("a")).unwrap();
    std::fs::create_dir_all(work.join("b")).unwrap();
    let summary = {
        let registry = Registry::start(&data);
        registry.client("flow", &work.join("a"))
    };
    eprintln!("{summary:#}");
    // Killed, started again on the same directory: every acknowledged change is there.
    let registry = Registry::start(&data);
    let after = registry.client("after-restart", &work.join("b"));
    assert_eq!(after["sha256"], summary["sha256"]);
}
