//! Crash safety: 100 times, a client uploads models, registers versions and moves an alias while the
//! registry is killed with SIGKILL at a random moment; after each restart every acknowledged upload,
//! version and alias move is there, byte for byte, and no visible version has an incomplete artifact.

use rand::{Rng, RngCore, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ITERATIONS: usize = 100;

fn start(data: &Path) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_mizzen-registry"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    mizzen_common::testing::wait_for_port(port, "mizzen-registry");
    (child, format!("http://127.0.0.1:{port}"))
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// What the client was told succeeded.
#[derive(Default)]
struct Acknowledged {
    /// Artifact path -> sha256.
    artifacts: Vec<(String, String)>,
    /// Version -> sha256 of its model.onnx.
    versions: Vec<(u64, String)>,
    /// The last alias move answered 200, and the versions of moves sent after it (answered or not).
    alias: Option<u64>,
    alias_attempts_since: Vec<u64>,
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> Option<Value> {
    let r = client.post(url).json(&body).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

/// Uploads, registers and moves the alias until the registry dies.
async fn work(url: String, iteration: usize, seed: u64, ack: &mut Acknowledged) {
    let client = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for k in 0.. {
        let mut bytes = vec![0u8; rng.random_range(1usize..(512 << 10))];
        rng.fill_bytes(&mut bytes);
        let dir = format!("crash/{iteration}/{k}");
        let put = client
            .put(format!("{url}/api/2.0/mlflow-artifacts/artifacts/{dir}/model.onnx"))
            .body(bytes.clone())
            .send()
            .await;
        if !put.is_ok_and(|r| r.status() == 200) {
            return;
        }
        let sha = hex(&bytes);
        ack.artifacts.push((format!("{dir}/model.onnx"), sha.clone()));
        let created = post(
            &client,
            &format!("{url}/api/2.0/mlflow/model-versions/create"),
            json!({"name": "crash", "source": format!("mlflow-artifacts:/{dir}")}),
        )
        .await;
        let Some(created) = created else { return };
        let version: u64 = created["model_version"]["version"].as_str().unwrap().parse().unwrap();
        ack.versions.push((version, sha));
        ack.alias_attempts_since.push(version);
        let moved = post(
            &client,
            &format!("{url}/api/2.0/mlflow/registered-models/alias"),
            json!({"name": "crash", "alias": "current", "version": version.to_string()}),
        )
        .await;
        if moved.is_none() {
            return;
        }
        ack.alias = Some(version);
        ack.alias_attempts_since.clear();
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn artifact_sha(client: &reqwest::Client, url: &str, path: &str) -> Option<String> {
    let r = client.get(format!("{url}/api/2.0/mlflow-artifacts/artifacts/{path}")).send().await.unwrap();
    (r.status() == 200).then_some(())?;
    Some(hex(&r.bytes().await.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_kill_9_at_any_moment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = reqwest::Client::new();
    {
        let (mut child, url) = start(&data);
        post(&client, &format!("{url}/api/2.0/mlflow/registered-models/create"), json!({"name": "crash"}))
            .await
            .expect("the model is created");
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261201);
    let mut all = Acknowledged::default();
    let mut alias_acked = None;
    // Versions already found complete (a version never changes once visible).
    let mut checked = std::collections::BTreeSet::new();
    for iteration in 0..ITERATIONS {
        let (mut child, url) = start(&data);
        let mut ack = Acknowledged::default();
        let kill_after = Duration::from_millis(rng.random_range(5..300));
        let _ = tokio::time::timeout(kill_after, work(url, iteration, rng.random(), &mut ack)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let (mut child, url) = start(&data);
        for (path, sha) in &ack.artifacts {
            assert_eq!(
                artifact_sha(&client, &url, path).await.as_ref(),
                Some(sha),
                "iteration {iteration}: {path}"
            );
        }
        // Every newly visible version is complete (its artifact there, as recorded); every acknowledged one is
        // visible.
        let versions = get_json(
            &client,
            &format!("{url}/api/2.0/mlflow/model-versions/search?filter=name%3D%27crash%27"),
        )
        .await;
        let versions = versions["model_versions"].as_array().cloned().unwrap_or_default();
        for v in &versions {
            if !checked.insert(v["version"].as_str().unwrap().to_string()) {
                continue;
            }
            assert_eq!(v["status"], "READY");
            let source = v["source"].as_str().unwrap().trim_start_matches("mlflow-artifacts:/");
            let want =
                v["tags"].as_array().unwrap().iter().find(|t| t["key"] == "mizzen.artifact.sha256").unwrap();
            let got = artifact_sha(&client, &url, &format!("{source}/model.onnx")).await;
            assert_eq!(
                got.as_deref(),
                want["value"].as_str(),
                "iteration {iteration}: version {}",
                v["version"]
            );
        }
        let visible: Vec<u64> =
            versions.iter().map(|v| v["version"].as_str().unwrap().parse().unwrap()).collect();
        for (v, _) in &ack.versions {
            assert!(visible.contains(v), "iteration {iteration}: acknowledged version {v} is gone");
        }
        // The alias is where the last acknowledged move put it, or where a move sent after that did.
        alias_acked = ack.alias.or(alias_acked);
        let alias = client
            .get(format!("{url}/api/2.0/mlflow/registered-models/alias?name=crash&alias=current"))
            .send()
            .await
            .unwrap();
        let now: Option<u64> = if alias.status() == 200 {
            let body: Value = alias.json().await.unwrap();
            body["model_version"]["version"].as_str().and_then(|v| v.parse().ok())
        } else {
            None
        };
        let allowed: Vec<Option<u64>> =
            std::iter::once(alias_acked).chain(ack.alias_attempts_since.iter().map(|v| Some(*v))).collect();
        assert!(allowed.contains(&now), "iteration {iteration}: alias at {now:?}, allowed {allowed:?}");
        alias_acked = now;
        child.kill().unwrap();
        child.wait().unwrap();
        all.artifacts.extend(ack.artifacts);
        all.versions.extend(ack.versions);
    }
    // At the end, everything acknowledged over the 100 runs, byte for byte.
    let (mut child, url) = start(&data);
    for (path, sha) in &all.artifacts {
        assert_eq!(artifact_sha(&client, &url, path).await.as_ref(), Some(sha), "{path}");
    }
    for (v, sha) in &all.versions {
        let got =
            get_json(&client, &format!("{url}/api/2.0/mlflow/model-versions/get?name=crash&version={v}"))
                .await;
        let tags = got["model_version"]["tags"].as_array().unwrap().clone();
        assert!(
            tags.iter().any(|t| t["key"] == "mizzen.artifact.sha256" && t["value"] == sha.as_str()),
            "version {v}"
        );
    }
    eprintln!(
        "{ITERATIONS} kills: {} acknowledged uploads and {} versions all intact",
        all.artifacts.len(),
        all.versions.len()
    );
    assert!(all.versions.len() >= ITERATIONS / 2, "the runs did real work: {} versions", all.versions.len());
    child.kill().unwrap();
    child.wait().unwrap();
}
