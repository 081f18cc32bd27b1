//! The model registry end to end on the real node: train -> register -> deploy -> promote by moving an
//! alias. mizzen-registry runs on the node's bridge address (where pods reach it), the operator is pointed
//! at it, and trainer and server pods talk to it over the cluster network.

use super::real_pods::{
    NODE, NODE_IP, ON_THE_REAL_NODE, cluster_ip, given_models_on_a_volume, healthy, predicted, real_mdep,
    switched_from, what_the_cluster_shows,
};
use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use mizzen_api::v1alpha1::{ModelDeployment, TrainingJob};
use mizzen_e2e::{Cluster, Operator, Registry, wait_until};
use serde_json::Value;
use std::time::Duration;

/// The registry's bearer token for writes.
const TOKEN: &str = "e2e-registry-token";

/// The trained model's inputs: two numbers and a colour.
const TWO_ROWS: &str = r#"{"inputs":[
    {"name":"input","shape":[2,2],"datatype":"FP32","data":[1.8,1.5,-1.9,-1.2]},
    {"name":"categories","shape":[2,1],"datatype":"BYTES","data":["red","blue"]}]}"#;

fn tag<'a>(version: &'a Value, key: &str) -> Option<&'a str> {
    version["tags"].as_array()?.iter().find(|t| t["key"] == key)?["value"].as_str()
}

/// A TrainingJob `name` on the real node training the test's table into `output`, with `extra` spec lines.
fn training_job(name: &str, output: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: mizzen.dev/v1alpha1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  dataset: {{uri: "pvc://models/data/train.csv", label: label}}
  algorithm: logisticRegression
  output: {{uri: "{output}"}}{extra}
  trainer:{ON_THE_REAL_NODE}
"#
    )
}

/// Train -> register -> deploy -> promote, with a registry whose writes need a token (a trainer pod without
/// the token's Secret is refused, with a message saying where it goes): a TrainingJob's pod logs its run in the registry and registers
/// version 1 under the alias `champion`; a ModelDeployment of `registry://iris@champion` serves that version
/// (the pods read it through the registry, sha256 checked); a search registers its best trial as version 2;
/// moving the alias and annotating the ModelDeployment rolls version 2 out blue-green, and the status names
/// the version and digest served.
pub(crate) async fn a_moved_registry_alias_rolls_the_new_version_out(cluster: Cluster) -> Result<()> {
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    if nodes.get_opt(NODE).await?.is_none() {
        println!("    skipped: the cluster has no real node (MIZZEN_REAL_NODE=0, or kind)");
        return Ok(());
    }
    let ns = cluster.namespace("registry")?;
    let volume = given_models_on_a_volume(&cluster, &ns)?;
    std::fs::create_dir_all(volume.dir.join("data"))?;
    std::fs::write(volume.dir.join("data/train.csv"), super::training_job::training_csv(400))?;
    // Writes need a token: the operator has it, and its trainer pods read it from a Secret in their namespace.
    let registry = Registry::start_with_token(NODE_IP, Some(TOKEN)).await?;
    // Aliases are looked up again only when asked: the move below is noticed through the annotation.
    let _operator = Operator::start(
        &cluster,
        &[
            "--namespace",
            &ns.name,
            "--registry-url",
            &registry.url(),
            "--registry-poll-seconds",
            "3600",
            "--registry-token",
            TOKEN,
            "--registry-token-secret",
            "registry-token",
        ],
    )?;

    // 0. Without the Secret in the namespace, the pod sends no token: Failed, saying what to do.
    ns.apply(&training_job("tokenless", "registry://iris@champion", ""))?;
    let reason = ns
        .wait_for_condition::<TrainingJob>("tokenless", "Failed", "True")
        .await
        .with_context(|| what_the_cluster_shows(&ns))?;
    ensure!(reason == "RegistryRefused", "{reason}");
    let described = ns.kubectl(&["describe", "tjob", "tokenless"]).ok()?;
    ensure!(described.contains("401") && described.contains("--registry-token-secret"), "{described}");
    let models = registry.get("registered-models/search", "").await?;
    let registered = models["registered_models"].as_array().map_or(0, Vec::len);
    ensure!(registered == 0, "a refused pod registered something: {models}");
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: registry-token}}\nstringData: {{token: {TOKEN}}}\n"
    );
    ns.apply(&secret)?;

    // 1. A single run registers version 1 and points `champion` at it.
    ns.apply(&training_job("first", "registry://iris@champion", ""))?;
    let reason = ns
        .wait_for_condition::<TrainingJob>("first", "Succeeded", "True")
        .await
        .with_context(|| what_the_cluster_shows(&ns))?;
    ensure!(reason == "ModelTrained", "{reason}");
    let model = ns.status::<TrainingJob>("first").await?.model.context("no model in the status")?;
    ensure!(model.uri == "registry://iris/1" && model.version.as_deref() == Some("1"), "{model:?}");
    let v1 = registry.get("registered-models/alias", "name=iris&alias=champion").await?;
    let v1 = &v1["model_version"];
    ensure!(v1["version"] == "1" && v1["run_id"].as_str() == model.run_id.as_deref(), "{v1}");
    ensure!(tag(v1, "mizzen.artifact.sha256") == model.sha256.as_deref(), "{v1}");
    ensure!(tag(v1, "mizzen.trainingjob") == Some(&format!("{}/first", ns.name)), "{v1}");
    ensure!(tag(v1, "mizzen.dataset.sha256") == model.dataset_sha256.as_deref(), "{v1}");
    // The signature, read from the ONNX file the pod uploaded: the trained model's two inputs.
    let signature = tag(v1, "mizzen.onnx.signature").unwrap_or_default();
    ensure!(signature.contains("\"input\"") && signature.contains("\"categories\""), "{v1}");
    // The run: under the experiment named after the TrainingJob, with its params and metrics.
    let experiment = registry.get("experiments/get-by-name", "experiment_name=first").await?;
    let experiment_id =
        experiment["experiment"]["experiment_id"].as_str().context("no experiment")?.to_string();
    let run =
        registry.get("runs/get", &format!("run_id={}", model.run_id.clone().unwrap_or_default())).await?;
    ensure!(run["run"]["info"]["experiment_id"] == experiment_id.as_str(), "{run}");
    ensure!(run["run"]["info"]["status"] == "FINISHED", "{run}");
    let metrics = run["run"]["data"]["metrics"].as_array().cloned().unwrap_or_default();
    ensure!(metrics.iter().any(|m| m["key"] == "accuracy"), "{run}");

    // 2. A ModelDeployment of the alias serves version 1, read by its pods through the registry.
    ns.apply(&real_mdep("registry://iris@champion", 1, "{scaleDownDelaySeconds: 0}"))?;
    let first = healthy(&ns, 1).await?;
    let status = ns.status::<ModelDeployment>("iris").await?;
    let served = status.model.context("no model in the status")?;
    ensure!(served.uri == "registry://iris/1" && served.version == "1", "{served:?}");
    ensure!(served.from.as_deref() == Some("registry://iris@champion"), "{served:?}");
    ensure!(served.sha256 == model.sha256, "{served:?} vs {model:?}");
    predicted(cluster_ip(&ns, "iris").await?, TWO_ROWS).await?;

    // 3. A search: its trials are runs of one experiment; the operator registers the best as version 2.
    let search = "\n  search:\n    algorithm: grid\n    parallelism: 2\n    objective: {metric: logLoss}\n    \
                  parameters: [{name: l2, categorical: [\"1000\", \"0.01\"]}]";
    ns.apply(&training_job("second", "registry://iris", search))?;
    ns.wait_for_condition::<TrainingJob>("second", "Succeeded", "True")
        .await
        .with_context(|| what_the_cluster_shows(&ns))?;
    let v2 = wait_until("the best trial registered", Duration::from_secs(60), || async {
        let m = ns.status::<TrainingJob>("second").await.ok()?.model?;
        (m.version.as_deref() == Some("2")).then_some(m)
    })
    .await?;
    ensure!(v2.uri == "registry://iris/2", "{v2:?}");
    let runs = registry.get("experiments/get-by-name", "experiment_name=second").await?;
    let id = runs["experiment"]["experiment_id"].as_str().context("no experiment")?;
    let runs = registry.post("runs/search", serde_json::json!({"experiment_ids": [id]})).await?;
    ensure!(runs["runs"].as_array().map(Vec::len) == Some(2), "two trials, two runs: {runs}");
    // Registered once: reconciles after the registration make no second version.
    let versions = registry.get("model-versions/search", "filter=name%3D%27iris%27").await?;
    ensure!(versions["model_versions"].as_array().map(Vec::len) == Some(2), "{versions}");

    // 4. Promotion: move the alias, ask the operator to look, and version 2 rolls out blue-green.
    registry
        .post(
            "registered-models/alias",
            serde_json::json!({"name": "iris", "alias": "champion", "version": "2"}),
        )
        .await?;
    ns.kubectl(&["annotate", "mdep/iris", "mizzen.dev/resolve=1", "--overwrite"]).ok()?;
    let status = switched_from(&ns, &first).await?;
    let served = status.model.context("no model in the status")?;
    ensure!(served.uri == "registry://iris/2" && served.version == "2", "{served:?}");
    ensure!(served.sha256 == v2.sha256, "{served:?} vs {v2:?}");
    // The Service points at the new revision; kube-proxy rewrites its rules a moment later, so the old
    // pods may still answer the first requests after the switch.
    let addr = cluster_ip(&ns, "iris").await?;
    wait_until("version 2 answering through the ClusterIP", Duration::from_secs(20), || async {
        let body = predicted(addr, TWO_ROWS).await.ok()?;
        let answer: Value = serde_json::from_str(&body).ok()?;
        (answer["model_version"] == "2").then_some(())
    })
    .await?;
    println!(
        "    trained -> registry://iris/1 (champion) -> served; search -> registry://iris/2; alias moved: {first} -> {}",
        status.active_revision.unwrap_or_default()
    );
    Ok(())
}
