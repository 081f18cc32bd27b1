//! The real mizzen-train binary publishing to a real mizzen-registry (`--output registry://NAME[@ALIAS]`):
//! a single run logs its run (params, metrics, the model and its metadata as artifacts) and registers a
//! version with the alias moved to it; a search's trial only logs its run (the operator registers the
//! best); a missing or unreachable registry fails before the data is read, with a reason.

use mizzen_common::registry::Client;
use std::process::Command;

use mizzen_registry::testing::Background as Registry;

/// GETs the registry's MLflow endpoint `op` with `query`; its 200 answer.
fn get(registry: &Registry, op: &str, query: &[(&str, &str)]) -> serde_json::Value {
    let url = format!("{}/api/2.0/mlflow/{op}", registry.url);
    registry.rt.block_on(async {
        let r = reqwest::Client::new().get(url).query(query).send().await.unwrap();
        assert_eq!(r.status(), 200, "{op}");
        r.json().await.unwrap()
    })
}

/// mizzen-train with `args` in `dir` (which holds `data.csv`): its exit code and report.
fn train(dir: &std::path::Path, args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_mizzen-train"))
        .current_dir(dir)
        .args(["--data", "data.csv", "--label", "y", "--algorithm", "logisticRegression"])
        .args(args)
        .env_remove("MIZZEN_REGISTRY_URL")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap_or(-1), report)
}

fn table(dir: &std::path::Path) {
    let rows: String =
        (0..200).map(|i| format!("{},{}\n", (i % 17) as f64 - 8.0, u8::from(i % 17 > 8))).collect();
    std::fs::write(dir.join("data.csv"), format!("a,y\n{rows}")).unwrap();
}

#[test]
fn a_single_run_registers_a_version_and_moves_the_alias() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    table(dir.path());
    let (code, report) = train(
        dir.path(),
        &["--output", "registry://churn@champion", "--registry-url", &registry.url, "--set", "l2=0.5"],
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["modelUri"], "registry://churn/1", "{report}");
    assert_eq!(report["version"], "1", "{report}");
    let run_id = report["runId"].as_str().unwrap().to_string();

    let client = Client::new(&registry.url, None);
    let resolved = registry.rt.block_on(client.resolve("registry://churn@champion")).unwrap();
    assert_eq!(resolved.version, "1");
    assert_eq!(
        resolved.sha256.as_deref(),
        report["modelSha256"].as_str(),
        "the registry's digest is the model's"
    );
    let (bytes, _) =
        registry.rt.block_on(mizzen_common::registry::read("registry://churn/1", &registry.url)).unwrap();
    assert_eq!(mizzen_common::sha256_hex(&bytes), report["modelSha256"].as_str().unwrap());

    // The run, under the experiment named after the model, with what it trained.
    let run = get(&registry, "runs/get", &[("run_id", &run_id)]);
    let info = &run["run"]["info"];
    assert_eq!(info["status"], "FINISHED", "{run}");
    assert_eq!(info["run_name"], "train", "{run}");
    let experiment = get(&registry, "experiments/get-by-name", &[("experiment_name", "churn")]);
    assert_eq!(info["experiment_id"], experiment["experiment"]["experiment_id"], "{run}");
    let data = &run["run"]["data"];
    let has = |list: &str, key: &str| data[list].as_array().unwrap().iter().any(|m| m["key"] == key);
    assert!(
        has("metrics", "accuracy") && has("params", "l2") && has("tags", "mizzen.dataset.sha256"),
        "{run}"
    );
    // Its artifacts, listed through the artifact proxy as the MLflow client lists them.
    let dir_path =
        info["artifact_uri"].as_str().unwrap().trim_start_matches("mlflow-artifacts:/").to_string();
    let url = format!("{}/api/2.0/mlflow-artifacts/artifacts", registry.url);
    let listed: serde_json::Value = registry.rt.block_on(async {
        let query = [("path", format!("{dir_path}/model"))];
        reqwest::Client::new().get(url).query(&query).send().await.unwrap().json().await.unwrap()
    });
    let files: Vec<&str> =
        listed["files"].as_array().unwrap().iter().filter_map(|f| f["path"].as_str()).collect();
    assert_eq!(files, ["model.json", "model.onnx"], "{listed}");
    // The version carries its lineage.
    let version = get(&registry, "model-versions/get", &[("name", "churn"), ("version", "1")]);
    let tag = |key: &str| {
        version["model_version"]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == key)
            .map(|t| t["value"].clone())
    };
    assert_eq!(tag("mizzen.dataset.sha256"), Some(report["datasetSha256"].clone()), "{version}");
    assert_eq!(version["model_version"]["run_id"], run_id.as_str(), "{version}");

    // A second run: version 2, and the alias follows.
    let (code, report) =
        train(dir.path(), &["--output", "registry://churn@champion", "--registry-url", &registry.url]);
    assert_eq!((code, report["version"].as_str()), (0, Some("2")), "{report}");
    assert_eq!(registry.rt.block_on(client.resolve("registry://churn@champion")).unwrap().version, "2");
}

#[test]
fn a_search_trial_logs_its_run_and_registers_nothing() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    table(dir.path());
    let config = serde_json::json!({
        "dataset": {"uri": "data.csv", "label": "y"},
        "algorithm": "logisticRegression",
        "trials": [{"l2": "0.1"}, {"l2": "10"}],
        "holdoutFraction": 0.2,
        "splitSeed": 1,
        "outputUri": "registry://churn",
        "experiment": "churn-search",
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mizzen-train"))
        .current_dir(dir.path())
        .args(["--config", "config.json", "--trial", "1", "--registry-url", &registry.url])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["trial"], 1, "{report}");
    assert!(report.get("version").is_none(), "{report}");
    let uri = report["modelUri"].as_str().unwrap();
    assert!(uri.starts_with("mlflow-artifacts:/") && uri.ends_with("/model/model.onnx"), "{report}");
    let run = get(&registry, "runs/get", &[("run_id", report["runId"].as_str().unwrap())]);
    assert_eq!(run["run"]["info"]["run_name"], "trial-1", "{run}");
    let experiment = get(&registry, "experiments/get-by-name", &[("experiment_name", "churn-search")]);
    assert_eq!(run["run"]["info"]["experiment_id"], experiment["experiment"]["experiment_id"]);
    let models = get(&registry, "registered-models/search", &[]);
    assert!(models.get("registered_models").is_none_or(|m| m.as_array().unwrap().is_empty()), "{models}");
}

#[test]
fn without_a_reachable_registry_the_run_fails_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    // The data does not exist: the registry is checked first.
    let (code, report) = train(dir.path(), &["--output", "registry://churn"]);
    assert_eq!((code, report["reason"].as_str()), (2, Some("InvalidConfig")), "{report}");
    assert!(report["message"].as_str().unwrap().contains("--registry-url"), "{report}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{closed}");
    let (code, report) = train(dir.path(), &["--output", "registry://churn", "--registry-url", &url]);
    assert_eq!((code, report["reason"].as_str()), (1, Some("RegistryUnavailable")), "{report}");
    assert!(report["message"].as_str().unwrap().contains(&url), "{report}");
}
