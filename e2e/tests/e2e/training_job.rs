//! TrainingJob: the Indexed Job, the real trainer's reports in status, deploying the best model, failures.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::batch::v1::Job;
use mizzen_api::v1alpha1::ModelDeployment;
use mizzen_api::v1alpha1::training_job::{Metric, TrainingJob, TrainingJobPhase, TrainingJobStatus};
use mizzen_e2e::{Cluster, Namespace, Operator, wait_until};
use std::time::Duration;

/// A small labelled table: two numeric features and a word, two classes mostly separable.
pub(crate) fn training_csv(rows: usize) -> String {
    let mut out = String::from("x1,x2,color,label\n");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for _ in 0..rows {
        let (a, b, noise) = (next() * 4.0 - 2.0, next() * 4.0 - 2.0, next());
        let label = u8::from(a + 0.5 * b + (noise - 0.5) > 0.0);
        let color = ["red", "green", "blue"][(next() * 3.0) as usize % 3];
        out.push_str(&format!("{a:.4},{b:.4},{color},{label}\n"));
    }
    out
}

/// Runs the real mizzen-train locally; returns its exit code and termination message.
fn run_trainer(dir: &std::path::Path, data: &str, extra: &[&str]) -> Result<(i32, String)> {
    let csv = dir.join("data.csv");
    std::fs::write(&csv, data)?;
    let log = dir.join(format!("termination-{}.log", extra.join("_").replace(['=', '/', ','], "-")));
    let out = std::process::Command::new(mizzen_e2e::trainer_bin()?)
        .args(["--data", &csv.to_string_lossy(), "--label", "label", "--algorithm", "logisticRegression"])
        .args(["--output", &dir.join("model").to_string_lossy(), "--termination-log", &log.to_string_lossy()])
        .args(extra)
        .output()?;
    let message = std::fs::read_to_string(&log).context("the trainer wrote no termination message")?;
    Ok((out.status.code().unwrap_or(-1), message))
}

/// The trials' `succeeded/failed/total`.
fn summary(s: &TrainingJobStatus) -> Option<&str> {
    s.trials.as_ref()?.summary.as_deref()
}

fn tjob(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: mizzen.dev/v1alpha1\nkind: TrainingJob\nmetadata: {{name: {name}}}\nspec:\n  \
         dataset: {{uri: \"s3://data/train.csv\", label: label}}\n  algorithm: logisticRegression\n  \
         output: {{uri: \"s3://models/{name}/\"}}\n{extra}"
    )
}

/// Waits for the suspended Job, then gives its pods the trainer's real reports: index I ends with
/// `reports[I]` (message, exit code).
async fn given_trainer_reports(ns: &Namespace, name: &str, reports: &[(String, i32)]) -> Result<()> {
    wait_until("the suspended Job", Duration::from_secs(30), || async {
        ns.get::<Job>(name).await.ok()?.spec?.suspend?.then_some(())
    })
    .await?;
    let mut annotations = serde_json::Map::new();
    for (i, (message, code)) in reports.iter().enumerate() {
        annotations.insert(format!("mizzen.dev/e2e-termination-message-{i}"), message.clone().into());
        annotations.insert(format!("mizzen.dev/e2e-exit-code-{i}"), code.to_string().into());
    }
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": annotations}}}});
    ns.kubectl(&["patch", "job", name, "--type", "merge", "-p", &patch.to_string()]).ok()?;
    ns.kubectl(&["patch", "tjob", name, "--type", "merge", "-p", r#"{"spec":{"suspend":false}}"#]).ok()?;
    Ok(())
}

/// A TrainingJob with a search becomes one Indexed Job with an index per trial and the spec mapped; an
/// output the release cannot write is refused at once; a pod that "succeeds" without a report (a fake
/// node runs nothing) publishes nothing.
pub(crate) async fn training_job_runs_as_an_indexed_job(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("tjob-spec")?;
    let _operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    ns.apply(&tjob(
        "search",
        "  backoffLimit: 2\n  activeDeadlineSeconds: 900\n  trainer: {resources: {limits: {memory: 1Gi}}}\n  \
         search:\n    algorithm: grid\n    parallelism: 2\n    objective: {metric: f1}\n    \
         parameters: [{name: l2, logUniform: {min: 0.01, max: 1}, steps: 3}]\n",
    ))?;
    ns.wait_for_condition::<TrainingJob>("search", "Created", "True").await?;
    let job = ns.get::<Job>("search").await?;
    let owner = job.metadata.owner_references.as_ref().and_then(|o| o.first()).context("no owner")?;
    ensure!(owner.kind == "TrainingJob", "{owner:?}");
    let spec = job.spec.context("a Job without a spec")?;
    ensure!(spec.completion_mode.as_deref() == Some("Indexed"));
    let sizes = (spec.completions, spec.parallelism, spec.backoff_limit_per_index);
    ensure!(sizes == (Some(3), Some(2), Some(2)), "{sizes:?}");
    ensure!(spec.active_deadline_seconds == Some(900));
    let rule = spec.pod_failure_policy.as_ref().and_then(|p| p.rules.first()).context("no failure policy")?;
    ensure!(rule.action == "FailIndex", "{rule:?}");
    let pod = spec.template.spec.context("a Job without a pod template")?;
    ensure!(pod.restart_policy.as_deref() == Some("Never"));
    ensure!(pod.security_context.and_then(|c| c.run_as_non_root) == Some(true));
    let trainer = &pod.containers[0];
    ensure!(trainer.security_context.as_ref().and_then(|c| c.read_only_root_filesystem) == Some(true));
    let memory = trainer.resources.as_ref().and_then(|r| r.limits.as_ref()).and_then(|l| l.get("memory"));
    ensure!(memory.map(|q| q.0.as_str()) == Some("1Gi"), "{memory:?}");
    let env = trainer.env.as_ref().and_then(|e| e.first()).and_then(|v| v.value.as_deref());
    let config: serde_json::Value = serde_json::from_str(env.context("no config in the environment")?)?;
    ensure!(config["trials"].as_array().map(Vec::len) == Some(3), "{config}");
    ensure!(config["trials"][1]["l2"] == "0.1", "{config}");
    // The fake nodes run nothing: the pods end without a report, and that is what the status says.
    let reason = ns.wait_for_condition::<TrainingJob>("search", "Failed", "True").await?;
    ensure!(reason == "NoReport", "reason {reason}");
    ensure!(summary(&ns.status::<TrainingJob>("search").await?) == Some("0/3/3"));

    ns.apply(&tjob("registry", "").replace("s3://models/registry/", "registry://iris"))?;
    let reason = ns.wait_for_condition::<TrainingJob>("registry", "Failed", "True").await?;
    ensure!(reason == "RegistryUnavailable", "reason {reason}");
    ensure!(ns.kubectl(&["get", "job", "registry"]).refused().is_ok(), "no Job for a refused run");
    Ok(())
}

/// The status path with the real trainer: mizzen-train runs here on real data, and its termination
/// messages are what the Job's pods report. The best trial is published, a failed trial is counted,
/// the model passes the gate and is deployed (the ModelDeployment's model changes), events say so, and
/// after the ttl the Job goes while the status stays.
pub(crate) async fn training_job_reports_the_best_trial_and_deploys_it(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("tjob-status")?;
    let dir = tempfile::tempdir()?;
    let data = training_csv(400);
    let (code_a, strong) = run_trainer(dir.path(), &data, &["--set", "l2=0.01"])?;
    let (code_b, weak) = run_trainer(dir.path(), &data, &["--set", "l2=100000"])?;
    ensure!(code_a == 0 && code_b == 0, "the trainer failed: {strong} / {weak}");
    let report: serde_json::Value = serde_json::from_str(&strong)?;
    let (_, bad) = run_trainer(dir.path(), "x1,x2\n1,2\n", &[])?;
    let _operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    ns.apply(
        "apiVersion: mizzen.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: iris}\n\
         spec: {model: {uri: \"s3://models/iris-v1.onnx\"}, replicas: 2}\n",
    )?;
    ns.apply(&tjob(
        "iris",
        "  suspend: true\n  ttlSecondsAfterFinished: 3\n  \
         deploy: {modelDeployment: iris, when: {metric: accuracy, threshold: 0.6}}\n  \
         search:\n    algorithm: grid\n    parallelism: 3\n    objective: {metric: logLoss}\n    \
         parameters: [{name: l2, categorical: ['100000', '0.01', '1']}]\n",
    ))?;
    ns.wait_for_condition::<TrainingJob>("iris", "Suspended", "True").await?;
    given_trainer_reports(&ns, "iris", &[(weak, 0), (strong.clone(), 0), (bad, 2)]).await?;
    let reason = ns.wait_for_condition::<TrainingJob>("iris", "Succeeded", "True").await?;
    ensure!(reason == "ModelTrained", "reason {reason}");
    let s = ns.status::<TrainingJob>("iris").await?;
    ensure!(summary(&s) == Some("2/1/3"), "{s:?}");
    let model = s.model.as_ref().context("no model in status")?;
    let uri = model.uri.clone();
    ensure!(uri == report["modelUri"], "model {uri}, best report {report}");
    ensure!(model.sha256.as_deref() == report["modelSha256"].as_str(), "{model:?} vs {report}");
    ensure!(s.best_hyperparameters.get("l2").map(String::as_str) == Some("0.01"), "{s:?}");
    let accuracy = s.metrics.get("accuracy").copied();
    ensure!(accuracy == report["metrics"]["accuracy"].as_f64(), "{accuracy:?} vs {report}");
    ensure!(s.objective.as_ref().map(|o| o.metric) == Some(Metric::LogLoss), "{s:?}");
    let reason = ns.wait_for_condition::<TrainingJob>("iris", "Deployed", "True").await?;
    ensure!(reason == "Deployed");
    let deployed = ns.get::<ModelDeployment>("iris").await?.spec.model.uri.0;
    ensure!(deployed == uri, "the ModelDeployment was not updated: {deployed}");
    let table = ns.kubectl(&["get", "tjob", "iris", "-o", "wide"]).ok()?;
    ensure!(table.contains("Succeeded") && table.contains("logLoss") && table.contains("2/1/3"), "{table}");
    let events = ns.kubectl(&["get", "events", "--field-selector", "involvedObject.name=iris"]).ok()?;
    for reason in ["JobCreated", "TrainingSucceeded", "Deployed"] {
        ensure!(events.contains(reason), "no {reason} event in\n{events}");
    }
    wait_until("the Job deleted after the ttl", Duration::from_secs(30), || async {
        ns.kubectl(&["get", "job", "iris"]).refused().ok()
    })
    .await?;
    let phase = ns.status::<TrainingJob>("iris").await?.phase;
    ensure!(phase == TrainingJobPhase::Succeeded, "the status must outlive the Job: {phase:?}");
    Ok(())
}

/// Bad data ends Failed with the trainer's reason, visible in `kubectl get` and `kubectl describe`, and a
/// permanent failure (exit code 2) is not retried however large backoffLimit is.
pub(crate) async fn training_job_with_bad_data_fails_with_the_reason(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("tjob-bad-data")?;
    let dir = tempfile::tempdir()?;
    let (code, report) = run_trainer(dir.path(), "x1,x2\n1,2\n3,4\n", &[])?;
    ensure!(code == 2, "exit code {code}: {report}");
    ensure!(report.contains("InvalidData") && report.contains("label column"), "{report}");
    let _operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    ns.apply(&tjob("bad", "  suspend: true\n  backoffLimit: 4\n"))?;
    given_trainer_reports(&ns, "bad", &[(report, 2)]).await?;
    let reason = ns.wait_for_condition::<TrainingJob>("bad", "Failed", "True").await?;
    ensure!(reason == "InvalidData", "reason {reason}");
    let table = ns.kubectl(&["get", "tjob", "bad", "-o", "wide"]).ok()?;
    ensure!(table.contains("Failed") && table.contains("InvalidData"), "{table}");
    let described = ns.kubectl(&["describe", "tjob", "bad"]).ok()?;
    ensure!(described.contains("label column \"label\" is not in the file"), "{described}");
    let pods = ns.kubectl(&["get", "pods", "-l", "mizzen.dev/training-job=bad", "-o", "name"]).ok()?;
    ensure!(pods.lines().count() == 1, "a permanent failure was retried: {pods}");
    Ok(())
}
