//! mizzen-features driven by Feast's own Python SDK from PyPI (feast 0.67, tests/python/feast_flow.py),
//! configured with `online_store: {type: remote, path: URL}`: writes and reads go through the SDK unchanged.

use std::process::{Command, Stdio};

const FEATURE_SET: &str = r#"{"metadata": {"name": "customers"}, "spec": {
  "entity": {"name": "customer", "joinKey": "customer_id", "type": "int64"},
  "features": [{"name": "spend", "type": "float64"}, {"name": "visits", "type": "int64"},
               {"name": "segment", "type": "string"}],
  "ttl": "1h",
  "sources": [{"name": "events", "uri": "s3://data/events.parquet", "timestampColumn": "ts"}]}}"#;

#[test]
fn feasts_sdk_writes_and_reads_through_a_remote_online_store() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_mizzen-features"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--feature-set", FEATURE_SET, "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    mizzen_common::testing::wait_for_port(port, "mizzen-features");
    let venv = mizzen_common::testing::venv_for(Some("python-features-requirements.txt"));
    let script =
        mizzen_common::testing::repo_root().join("services/feature-store/tests/python/feast_flow.py");
    let out = Command::new(venv.join("bin/python"))
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(dir.path().join("repo"))
        .env("FEAST_USAGE", "False")
        .env("DO_NOT_TRACK", "true")
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "feast_flow.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    eprintln!("{summary:#}");
    let first = &summary["first"];
    // Entity 3's row is two hours old, past the one-hour ttl: None (Feast's own stores would serve it).
    assert_eq!(first["spend"], serde_json::json!([10.5, 20.0, null, null]));
    assert_eq!(first["visits"], serde_json::json!([3, 4, null, null]));
    assert_eq!(first["segment"], serde_json::json!(["gold", "silver", null, null]));
    let second = &summary["second"];
    assert_eq!(second["spend"], serde_json::json!([11.5, 20.0]), "newer overwrote, older was ignored");
    assert_eq!(second["segment"], serde_json::json!(["platinum", "silver"]));
    assert_eq!(summary["nan"]["spend"], serde_json::json!([null]));
    assert_eq!(summary["nan"]["segment"], serde_json::json!(["new"]));
    let refused = summary["unknown_feature"].as_str().unwrap_or_default();
    assert!(refused.contains("height"), "{refused}");
}
