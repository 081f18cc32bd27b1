//! End-to-end tests against a real Kubernetes API server: the local cluster from `make cluster-up` (or kind,
//! with MIZZEN_CLUSTER=kind). Run with `make e2e`; `cargo test -p mizzen-e2e --test e2e -- NAME` runs one.

use anyhow::{Context as _, Result, ensure};
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::core::ApiResource;
use mizzen_api::crd;
use mizzen_api::v1alpha1::{FeatureSet, ModelDeployment, TrainingJob};
use mizzen_api::validation_cases::cases;
use mizzen_e2e::recorder::Recorder;
use mizzen_e2e::runner::{Test, TestFuture};
use mizzen_e2e::{Cluster, Namespace, Operator, repo_root, wait_until};
use std::process::ExitCode;
use std::time::Duration;

macro_rules! tests {
    ($($serial:literal $name:ident),* $(,)?) => {
        vec![$(Test { name: stringify!($name), run: |c| -> TestFuture { Box::pin($name(c)) }, serial: $serial }),*]
    };
}

fn main() -> ExitCode {
    mizzen_e2e::runner::main(
        tests![
            true operator_is_unready_until_the_crds_exist,
            false crds_are_established_and_explained,
            false api_server_judges_every_validation_case,
            false kubectl_shows_cel_messages,
            false kubectl_scale_uses_the_scale_subresource,
            false get_mizzen_lists_every_kind_with_columns,
            false operator_records_an_honest_initial_status,
            false operator_stops_cleanly_on_sigterm,
            false fake_nodes_run_deployments_and_jobs,
            false chosen_pods_can_be_held_unready_or_failed,
            false recorder_samples_selectors_and_readiness,
            false model_deployment_rolls_out_blue_green,
            false model_deployment_manual_promotion_and_abort,
            false model_deployment_scales_rolls_back_and_stays_idle,
            false model_deployment_progress_deadline_degrades,
            false training_job_runs_as_an_indexed_job,
            false training_job_reports_the_best_trial_and_deploys_it,
            false training_job_with_bad_data_fails_with_the_reason,
        ],
        |c| Box::pin(install_crds(c)),
    )
}

const MDEP: &str = r#"
apiVersion: mizzen.dev/v1alpha1
kind: ModelDeployment
metadata: {name: iris}
spec:
  model: {uri: "registry://iris@champion"}
"#;

/// Applies `crds/` and waits until every CRD is Established.
async fn install_crds(cluster: Cluster) -> Result<()> {
    cluster.kubectl(&["apply", "-f", &repo_root().join("crds").to_string_lossy()]).ok()?;
    for name in crd_names() {
        cluster
            .kubectl(&["wait", "--for=condition=Established", &format!("crd/{name}"), "--timeout=30s"])
            .ok()?;
    }
    Ok(())
}

fn crd_names() -> Vec<String> {
    crd::all().iter().filter_map(|c| c.metadata.name.clone()).collect()
}

/// Given no CRDs, the operator runs but is not ready; when the CRDs are applied, it becomes ready.
async fn operator_is_unready_until_the_crds_exist(cluster: Cluster) -> Result<()> {
    let crds = repo_root().join("crds");
    let crds = crds.to_string_lossy();
    cluster.kubectl(&["delete", "-f", &crds, "--ignore-not-found", "--wait=true"]).ok()?;

    let operator = Operator::start(&cluster, &[])?;
    wait_until("the operator's /health", Duration::from_secs(20), || async {
        operator.get("/health").await.ok().filter(|(code, _)| *code == 200)
    })
    .await?;
    // It keeps polling for the CRDs; over several polls it must stay unready, and keep running.
    for _ in 0..3 {
        let (code, body) = operator.get("/ready").await?;
        ensure!(code == 503, "/ready answered {code} {body} without CRDs");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    ensure!(operator.log().contains("waiting for CRDs"), "no hint in the log:\n{}", operator.log());

    cluster.kubectl(&["apply", "-f", &crds]).ok()?;
    for name in crd_names() {
        cluster
            .kubectl(&["wait", "--for=condition=Established", &format!("crd/{name}"), "--timeout=30s"])
            .ok()?;
    }
    wait_until("the operator's /ready to answer 200", Duration::from_secs(30), || async {
        operator.get("/ready").await.ok().filter(|(code, _)| *code == 200)
    })
    .await
    .with_context(|| format!("operator log:\n{}", operator.log()))?;
    let (code, metrics) = operator.get("/metrics").await?;
    ensure!(code == 200 && metrics.ends_with("# EOF\n"), "metrics:\n{metrics}");
    Ok(())
}

/// Then: every CRD is Established, and `kubectl explain` shows the field docs.
async fn crds_are_established_and_explained(cluster: Cluster) -> Result<()> {
    for name in crd_names() {
        cluster
            .kubectl(&["wait", "--for=condition=Established", &format!("crd/{name}"), "--timeout=30s"])
            .ok()?;
    }
    let explain = |path: &str| cluster.kubectl(&["explain", path]).ok();
    let spec = explain("modeldeployment.spec")?;
    for want in ["model", "replicas", "autoscaling", "strategy", "paused", "server", "kubectl scale"] {
        ensure!(spec.contains(want), "`kubectl explain modeldeployment.spec` lacks {want:?}:\n{spec}");
    }
    let field = explain("modeldeployment.spec.strategy.blueGreen.scaleDownDelaySeconds")?;
    ensure!(field.contains("Seconds the old revision stays at full size"), "{field}");
    ensure!(field.contains("<integer>"), "{field}");
    let dataset = explain("trainingjob.spec.dataset")?;
    ensure!(dataset.contains("exactly one of `uri` and `featureSet`"), "{dataset}");
    ensure!(dataset.contains("enum: csv, parquet\n"), "optional enums list null: {dataset}");
    let ttl = explain("fset.spec.ttl")?;
    ensure!(ttl.contains("OUTSIDE_MAX_AGE"), "{ttl}");
    Ok(())
}

/// Every case of the shared validation table, judged by the real API server (server-side dry run).
async fn api_server_judges_every_validation_case(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("validation")?;
    let resources = [
        ("ModelDeployment", ApiResource::erase::<ModelDeployment>(&())),
        ("TrainingJob", ApiResource::erase::<TrainingJob>(&())),
        ("FeatureSet", ApiResource::erase::<FeatureSet>(&())),
    ];
    let dry_run = PostParams { dry_run: true, field_manager: Some("mizzen-e2e".into()) };
    let mut failures = Vec::new();
    let all = cases();
    for case in &all {
        let ar = &resources.iter().find(|(k, _)| *k == case.kind).context("unknown kind")?.1;
        let api: Api<DynamicObject> = Api::namespaced_with(cluster.client.clone(), &ns.name, ar);
        let object: DynamicObject = serde_json::from_value(case.object.clone())?;
        let result = match &case.old {
            None => api.create(&dry_run, &object).await,
            // An update: store the old object for real, then try the new one as a dry-run replace.
            Some(old) => {
                let mut old: DynamicObject = serde_json::from_value(old.clone())?;
                let name = format!("update-{}", case.index);
                old.metadata.name = Some(name.clone());
                let stored = api.create(&PostParams::default(), &old).await?;
                let mut new = object.clone();
                new.metadata.name = Some(name.clone());
                new.metadata.resource_version = stored.metadata.resource_version;
                let result = api.replace(&name, &dry_run, &new).await;
                api.delete(&name, &Default::default()).await?;
                result
            }
        };
        match (&case.refused, result) {
            (None, Ok(_)) => {}
            (None, Err(e)) => failures.push(format!("{case}: expected accepted, got {e}")),
            (Some(msg), Ok(_)) => {
                failures.push(format!("{case}: expected refused with {msg:?}, was accepted"))
            }
            (Some(msg), Err(kube::Error::Api(status))) if status.message.contains(msg.as_str()) => {}
            (Some(msg), Err(e)) => failures.push(format!("{case}: expected refused with {msg:?}, got {e}")),
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    Ok(())
}

/// When a user applies a bad object with kubectl, kubectl prints the rules' messages.
async fn kubectl_shows_cel_messages(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("cel-messages")?;
    let err = ns.apply_refused(
        r#"
apiVersion: mizzen.dev/v1alpha1
kind: ModelDeployment
metadata: {name: iris}
spec:
  model: {uri: "ftp://models/iris.onnx"}
  autoscaling: {minReplicas: 5, maxReplicas: 2}
"#,
    )?;
    for want in [
        "spec.model.uri",
        "uri must start with registry://",
        "spec.autoscaling",
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
    ] {
        ensure!(err.contains(want), "kubectl's error lacks {want:?}:\n{err}");
    }
    let err = ns.apply_refused(
        r#"
apiVersion: mizzen.dev/v1alpha1
kind: TrainingJob
metadata: {name: both}
spec:
  dataset: {uri: "s3://d/a.csv", featureSet: {name: c, labelsUri: "s3://d/l.csv"}, label: species}
  algorithm: logisticRegression
"#,
    )?;
    ensure!(err.contains("set exactly one of dataset.uri and dataset.featureSet"), "{err}");
    Ok(())
}

/// When `kubectl scale mdep/iris --replicas 3` runs, spec.replicas changes through the scale subresource.
async fn kubectl_scale_uses_the_scale_subresource(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("scale")?;
    ns.apply(MDEP)?;
    ensure!(ns.jsonpath("mdep", "iris", "{.spec.replicas}")? == "1", "default replicas is not 1");
    ns.kubectl(&["scale", "mdep/iris", "--replicas", "3"]).ok()?;
    ensure!(ns.jsonpath("mdep", "iris", "{.spec.replicas}")? == "3");
    let scale = ns.kubectl(&["get", "mdep", "iris", "--subresource", "scale", "-o", "json"]).ok()?;
    let scale: serde_json::Value = serde_json::from_str(&scale)?;
    ensure!(scale["kind"] == "Scale" && scale["spec"]["replicas"] == 3, "{scale}");
    // An invalid scale is refused by the same schema.
    let err = ns.kubectl(&["scale", "mdep/iris", "--replicas", "-1"]).refused()?;
    ensure!(err.contains("replicas"), "{err}");
    Ok(())
}

/// `kubectl get mizzen` lists all three kinds with their printer columns.
async fn get_mizzen_lists_every_kind_with_columns(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("get-mizzen")?;
    let examples = repo_root().join("manifests/examples");
    ns.kubectl(&["apply", "-f", &examples.to_string_lossy()]).ok()?;
    let out = ns.kubectl(&["get", "mizzen"]).ok()?;
    for want in
        ["modeldeployment.mizzen.dev/iris", "trainingjob.mizzen.dev/iris", "featureset.mizzen.dev/customers"]
    {
        ensure!(out.contains(want), "`kubectl get mizzen` lacks {want}:\n{out}");
    }
    let mdep = ns.kubectl(&["get", "mdep"]).ok()?;
    let header: Vec<&str> = mdep.lines().next().unwrap_or_default().split_whitespace().collect();
    ensure!(
        header == ["NAME", "READY", "PHASE", "ACTIVE", "PREVIEW", "DESIRED", "AVAILABLE", "AGE"],
        "{mdep}"
    );
    ensure!(mdep.contains("churn") && mdep.contains("iris"), "{mdep}");
    let wide = ns.kubectl(&["get", "mdep", "-o", "wide"]).ok()?;
    ensure!(wide.contains("MODEL") && wide.contains("registry://iris@champion"), "{wide}");
    let tjob = ns.kubectl(&["get", "tjob"]).ok()?;
    ensure!(
        tjob.lines().next().unwrap_or_default().split_whitespace().collect::<Vec<_>>()
            == ["NAME", "STATUS", "METRIC", "VALUE", "MODEL", "AGE"],
        "{tjob}"
    );
    let fset = ns.kubectl(&["get", "fset"]).ok()?;
    ensure!(fset.lines().next().unwrap_or_default().contains("LAST MATERIALIZATION"), "{fset}");
    Ok(())
}

/// Given a running operator, when objects are created, then each gets an honest Unknown condition that
/// names the generation it describes, and a spec change is observed again.
async fn operator_records_an_honest_initial_status(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("initial-status")?;
    let operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    ns.kubectl(&["apply", "-f", &repo_root().join("manifests/examples").to_string_lossy()]).ok()?;
    let reason = ns.wait_for_condition("fset", "customers", "Ready", "Unknown").await?;
    ensure!(reason == "NotImplemented", "fset/customers: reason {reason}");
    ensure!(ns.jsonpath("fset", "customers", "{.status.observedGeneration}")? == "1");
    // TrainingJobs have a reconciler: the example's Job is created.
    let reason = ns.wait_for_condition("tjob", "iris", "Created", "True").await?;
    ensure!(reason == "JobCreated", "tjob/iris: reason {reason}");
    // ModelDeployments have a reconciler: served on the fake nodes, they become Ready.
    let reason = ns.wait_for_condition("mdep", "iris", "Ready", "True").await?;
    ensure!(reason == "Serving", "mdep/iris: reason {reason}");
    ensure!(ns.jsonpath("mdep", "iris", "{.status.phase}")? == "Healthy");
    ensure!(ns.jsonpath("mdep", "iris", "{.status.observedGeneration}")? == "1");
    ns.kubectl(&["patch", "mdep", "iris", "--type", "merge", "-p", r#"{"spec":{"paused":true}}"#]).ok()?;
    wait_until("observedGeneration 2", Duration::from_secs(20), || async {
        (ns.jsonpath("mdep", "iris", "{.status.observedGeneration}").ok()? == "2").then_some(())
    })
    .await?;
    let condition_gen = ns.jsonpath("mdep", "iris", "{.status.conditions[0].observedGeneration}")?;
    ensure!(condition_gen == "2", "condition observedGeneration {condition_gen}");
    let (_, metrics) = operator.get("/metrics").await?;
    for kind in ["ModelDeployment", "TrainingJob", "FeatureSet"] {
        let line = format!("mizzen_operator_reconciles_total{{kind=\"{kind}\"}}");
        ensure!(metrics.contains(&line), "no {line} in\n{metrics}");
    }
    Ok(())
}

/// SIGTERM stops the operator promptly and cleanly.
async fn operator_stops_cleanly_on_sigterm(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("sigterm")?;
    let mut operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    wait_until("ready", Duration::from_secs(30), || async {
        operator.get("/ready").await.ok().filter(|(c, _)| *c == 200)
    })
    .await?;
    let status = operator.terminate(Duration::from_secs(10))?;
    ensure!(status.success(), "exit status {status}; log:\n{}", operator.log());
    ensure!(operator.log().contains("stopped"), "{}", operator.log());
    Ok(())
}

/// The fake nodes make a Deployment's pods Ready and a Job's pods succeed.
async fn fake_nodes_run_deployments_and_jobs(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("fake-nodes")?;
    ns.kubectl(&["create", "deployment", "web", "--image=example.invalid/web:1", "--replicas=3"]).ok()?;
    ns.kubectl(&["create", "job", "once", "--image=example.invalid/job:1"]).ok()?;
    ns.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]).ok()?;
    ns.kubectl(&["wait", "--for=condition=Complete", "job/once", "--timeout=60s"]).ok()?;
    let nodes =
        ns.kubectl(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].spec.nodeName}"]).ok()?;
    ensure!(nodes.split_whitespace().all(|n| n.starts_with("kwok-node-")), "pods on {nodes}");
    Ok(())
}

/// The label mizzen.dev/e2e-pod holds a pod unready (and releases it), or fails a Job's pod with the
/// termination message from its annotation.
async fn chosen_pods_can_be_held_unready_or_failed(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("hold")?;
    ns.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: held}
spec:
  replicas: 2
  selector: {matchLabels: {app: held}}
  template:
    metadata: {labels: {app: held, mizzen.dev/e2e-pod: unready}}
    spec: {containers: [{name: c, image: example.invalid/c:1}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: broken}
spec:
  backoffLimit: 0
  template:
    metadata:
      labels: {mizzen.dev/e2e-pod: fail}
      annotations: {mizzen.dev/e2e-termination-message: '{"error":"label column missing"}'}
    spec: {restartPolicy: Never, containers: [{name: c, image: example.invalid/c:1}]}
"#,
    )?;
    let ready_of = |status: &'static str| {
        let ns = &ns;
        async move {
            let out = ns
                .kubectl(&["get", "pods", "-l", "app=held", "-o", r#"jsonpath={range .items[*]}{.status.phase}/{.status.conditions[?(@.type=="Ready")].status} {end}"#])
                .ok()
                .ok()?;
            let states: Vec<&str> = out.split_whitespace().collect();
            (states.len() == 2 && states.iter().all(|s| *s == format!("Running/{status}"))).then_some(())
        }
    };
    wait_until("held pods running and unready", Duration::from_secs(30), || ready_of("False")).await?;
    // Still unready a while later: the hold is not a race.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ready_of("False").await.context("a held pod became ready")?;
    ns.kubectl(&["label", "pods", "-l", "app=held", "mizzen.dev/e2e-pod-"]).ok()?;
    wait_until("released pods ready", Duration::from_secs(30), || ready_of("True")).await?;
    ns.kubectl(&["label", "pods", "-l", "app=held", "mizzen.dev/e2e-pod=unready"]).ok()?;
    wait_until("ready pods held unready again", Duration::from_secs(30), || ready_of("False")).await?;

    ns.kubectl(&["wait", "--for=condition=Failed", "job/broken", "--timeout=60s"]).ok()?;
    let message = ns
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "job-name=broken",
            "-o",
            "jsonpath={.items[0].status.containerStatuses[0].state.terminated.message}",
        ])
        .ok()?;
    ensure!(message == r#"{"error":"label column missing"}"#, "termination message {message:?}");
    Ok(())
}

/// The recorder sees a Service's selector change and the ReplicaSets' readiness.
async fn recorder_samples_selectors_and_readiness(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("recorder")?;
    ns.kubectl(&["create", "deployment", "blue", "--image=example.invalid/blue:1", "--replicas=2"]).ok()?;
    ns.kubectl(&["create", "service", "clusterip", "active", "--tcp=80:8080"]).ok()?;
    ns.kubectl(&["set", "selector", "service/active", "app=blue"]).ok()?;
    let recorder = Recorder::start(cluster.client.clone(), &ns.name, &["active"], Duration::from_millis(50));
    ns.kubectl(&["rollout", "status", "deployment/blue", "--timeout=60s"]).ok()?;
    ns.kubectl(&["set", "selector", "service/active", "app=green"]).ok()?;
    wait_until("the selector change", Duration::from_secs(10), || async {
        (ns.jsonpath("service", "active", "{.spec.selector.app}").ok()? == "green").then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let samples = recorder.finish().await;
    ensure!(samples.len() >= 5, "only {} samples", samples.len());
    let selector_of = |s: &mizzen_e2e::recorder::Sample| {
        s.selectors["active"].as_ref().and_then(|m| m.get("app").cloned()).unwrap_or_default()
    };
    ensure!(selector_of(&samples[0]) == "blue" && selector_of(samples.last().unwrap()) == "green");
    let blue_ready = samples.iter().any(|s| {
        let sel = s.selectors["active"].clone().unwrap_or_default();
        s.selected(&sel).any(|rs| rs.available == 2 && rs.desired == 2)
    });
    ensure!(blue_ready, "never saw the blue ReplicaSet fully available behind the selector");
    Ok(())
}

/// Given: the operator watching `ns`, and ModelDeployment `iris` (v1 of the model, two replicas, the given
/// blue-green settings) Ready. Returns the operator and the first revision.
async fn given_a_served_model_deployment(
    cluster: &Cluster,
    ns: &Namespace,
    bg: &str,
) -> Result<(Operator, String)> {
    let operator = Operator::start(cluster, &["--namespace", &ns.name])?;
    ns.apply(&mdep("iris", "s3://models/iris-v1.onnx", bg))?;
    ns.wait_for_condition("mdep", "iris", "Ready", "True").await?;
    let first = ns.jsonpath("mdep", "iris", "{.status.activeRevision}")?;
    Ok((operator, first))
}

fn mdep(name: &str, uri: &str, blue_green: &str) -> String {
    format!(
        "apiVersion: mizzen.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {name}}}\nspec:\n  model: {{uri: \"{uri}\"}}\n  replicas: 2\n  strategy: {{blueGreen: {blue_green}}}\n"
    )
}

/// Invariant 1 over a whole record: once the first deploy is available (the one exception, as in Argo
/// Rollouts), the active Service only ever selects a revision whose pods are all available at full size,
/// and never nothing.
fn assert_active_always_fully_available(samples: &[mizzen_e2e::recorder::Sample], full: i32) -> Result<()> {
    let mut serving = false;
    for s in samples {
        let Some(Some(selector)) = s.selectors.get("iris") else {
            ensure!(!serving, "the active Service disappeared at {:?}", s.at);
            continue;
        };
        let selected: Vec<_> = s.selected(selector).collect();
        let available: i32 = selected.iter().map(|rs| rs.available).sum();
        if !serving {
            serving = available >= full;
            continue;
        }
        ensure!(!selected.is_empty(), "the active Service selects no ReplicaSet at {:?}: {selector:?}", s.at);
        ensure!(
            available >= full,
            "at {:?} the active Service selected {selected:?} with {available} available of {full}",
            s.at
        );
    }
    ensure!(serving, "the active Service never served a fully available revision");
    Ok(())
}

/// Given a served ModelDeployment, when its model changes, then a new revision starts as preview, is
/// promoted once fully available, and the old one is scaled down after the delay; throughout, the active
/// Service points only at fully available pods. Deleting the ModelDeployment removes every child.
async fn model_deployment_rolls_out_blue_green(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("blue-green")?;
    let _operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    let recorder = Recorder::start(
        cluster.client.clone(),
        &ns.name,
        &["iris", "iris-preview"],
        Duration::from_millis(50),
    );
    let bg = "{scaleDownDelaySeconds: 2, minReadySeconds: 1}";
    ns.apply(&mdep("iris", "s3://models/iris-v1.onnx", bg))?;
    ns.wait_for_condition("mdep", "iris", "Ready", "True").await?;
    let first = ns.jsonpath("mdep", "iris", "{.status.activeRevision}")?;

    ns.apply(&mdep("iris", "s3://models/iris-v2.onnx", bg))?;
    let second = wait_until("the switch to the new revision", Duration::from_secs(60), || async {
        let active = ns.jsonpath("mdep", "iris", "{.status.activeRevision}").ok()?;
        let phase = ns.jsonpath("mdep", "iris", "{.status.phase}").ok()?;
        (active != first && phase == "Healthy").then_some(active)
    })
    .await?;
    ensure!(ns.jsonpath("mdep", "iris", "{.status.stableRevision}")? == second);
    ensure!(ns.jsonpath("service", "iris-preview", "{.spec.selector.mizzen\\.dev/revision}")? == second);
    let old = format!("iris-{first}");
    wait_until("the old revision scaled down after the delay", Duration::from_secs(30), || async {
        (ns.jsonpath("deployment", &old, "{.spec.replicas}").ok()? == "0").then_some(())
    })
    .await?;
    let events = ns.kubectl(&["get", "events", "-o", "jsonpath={.items[*].reason}"]).ok()?;
    for reason in ["RevisionCreated", "Promoted", "ScaledDown"] {
        ensure!(events.contains(reason), "no {reason} event in {events}");
    }
    let samples = recorder.finish().await;
    assert_active_always_fully_available(&samples, 2)?;

    ns.kubectl(&["delete", "mdep", "iris", "--wait=true"]).ok()?;
    // The controller manager's garbage collector notices a newly installed CRD kind at its next discovery
    // resync (every 30 s), so right after the CRDs are installed this can take that long.
    wait_until("garbage collection of the children", Duration::from_secs(90), || async {
        let left = ns.kubectl(&["get", "deployments,services,hpa", "-o", "name"]).ok().ok()?;
        left.trim().is_empty().then_some(())
    })
    .await?;
    Ok(())
}

/// Given autoPromotion off, a new revision waits (Paused) until `mizzen.dev/promote=REVISION`; another
/// revision aborted with `mizzen.dev/abort=REVISION` sends traffic back to stable (Degraded).
async fn model_deployment_manual_promotion_and_abort(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("promote-abort")?;
    let bg = "{autoPromotion: false, scaleDownDelaySeconds: 30}";
    let (_operator, first) = given_a_served_model_deployment(&cluster, &ns, bg).await?;
    let recorder = Recorder::start(cluster.client.clone(), &ns.name, &["iris"], Duration::from_millis(50));

    ns.apply(&mdep("iris", "s3://models/iris-v2.onnx", bg))?;
    let reason = ns.wait_for_condition("mdep", "iris", "Paused", "True").await?;
    ensure!(reason == "AwaitingPromotion", "{reason}");
    let second = ns.jsonpath("mdep", "iris", "{.status.previewRevision}")?;
    ensure!(second != first && ns.jsonpath("mdep", "iris", "{.status.activeRevision}")? == first);
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        ns.jsonpath("mdep", "iris", "{.status.activeRevision}")? == first,
        "promoted without the annotation"
    );

    // Pause holds even a promote command; unpausing lets it through.
    ns.kubectl(&["patch", "mdep", "iris", "--type", "merge", "-p", r#"{"spec":{"paused":true}}"#]).ok()?;
    ns.kubectl(&["annotate", "mdep", "iris", &format!("mizzen.dev/promote={second}"), "--overwrite"]).ok()?;
    let reason = ns.wait_for_condition("mdep", "iris", "Paused", "True").await?;
    wait_until("the pause", Duration::from_secs(10), || async {
        let reason =
            ns.jsonpath("mdep", "iris", "{.status.conditions[?(@.type==\"Paused\")].reason}").ok()?;
        (reason == "Paused").then_some(())
    })
    .await
    .with_context(|| format!("reason was {reason}"))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(ns.jsonpath("mdep", "iris", "{.status.activeRevision}")? == first, "promoted while paused");
    ns.kubectl(&["patch", "mdep", "iris", "--type", "merge", "-p", r#"{"spec":{"paused":false}}"#]).ok()?;
    wait_until("the manual promotion", Duration::from_secs(30), || async {
        (ns.jsonpath("mdep", "iris", "{.status.activeRevision}").ok()? == second).then_some(())
    })
    .await?;

    ns.apply(&mdep("iris", "s3://models/iris-v3.onnx", bg))?;
    ns.wait_for_condition("mdep", "iris", "Paused", "True").await?;
    let third = ns.jsonpath("mdep", "iris", "{.status.previewRevision}")?;
    ns.kubectl(&["annotate", "mdep", "iris", &format!("mizzen.dev/abort={third}"), "--overwrite"]).ok()?;
    let reason = ns.wait_for_condition("mdep", "iris", "Degraded", "True").await?;
    ensure!(reason == "RolloutAborted", "{reason}");
    ensure!(
        ns.jsonpath("mdep", "iris", "{.status.activeRevision}")? == second,
        "abort must keep traffic on stable"
    );
    wait_until("the aborted revision scaled down", Duration::from_secs(30), || async {
        (ns.jsonpath("deployment", &format!("iris-{third}"), "{.spec.replicas}").ok()? == "0").then_some(())
    })
    .await?;
    assert_active_always_fully_available(&recorder.finish().await, 2)?;
    let events = ns.kubectl(&["get", "events", "-o", "jsonpath={.items[*].reason}"]).ok()?;
    for reason in ["PreviewAvailable", "RolloutPaused", "Promoted", "Aborted"] {
        ensure!(events.contains(reason), "no {reason} event in {events}");
    }
    Ok(())
}

/// `kubectl scale` resizes the active revision without a new revision; an HPA targets the ModelDeployment;
/// re-applying a revision still warm switches back at once; an idle ModelDeployment causes no writes.
async fn model_deployment_scales_rolls_back_and_stays_idle(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("scale-rollback")?;
    let bg = "{scaleDownDelaySeconds: 120}";
    let (_operator, first) = given_a_served_model_deployment(&cluster, &ns, bg).await?;

    ns.kubectl(&["scale", "mdep/iris", "--replicas", "3"]).ok()?;
    wait_until("three available replicas", Duration::from_secs(30), || async {
        (ns.jsonpath("mdep", "iris", "{.status.availableReplicas}").ok()? == "3").then_some(())
    })
    .await?;
    ensure!(
        ns.jsonpath("mdep", "iris", "{.status.activeRevision}")? == first,
        "a replicas change made a revision"
    );
    let revisions = ns.kubectl(&["get", "deployments", "-o", "name"]).ok()?;
    ensure!(revisions.lines().count() == 1, "{revisions}");
    let selector = ns.jsonpath("mdep", "iris", "{.status.selector}")?;
    ensure!(selector.contains(&format!("mizzen.dev/revision={first}")), "{selector}");

    // Autoscaling: the operator owns an HPA that targets the ModelDeployment's scale subresource.
    let with_hpa = mdep("iris", "s3://models/iris-v1.onnx", bg)
        .replace("  replicas: 2\n", "  replicas: 3\n  autoscaling: {minReplicas: 2, maxReplicas: 6}\n");
    ns.apply(&with_hpa)?;
    let target = wait_until("the HPA", Duration::from_secs(20), || async {
        ns.jsonpath(
            "hpa",
            "iris",
            "{.spec.scaleTargetRef.kind}/{.spec.scaleTargetRef.name}/{.spec.maxReplicas}",
        )
        .ok()
    })
    .await?;
    ensure!(target == "ModelDeployment/iris/6", "{target}");

    // A new revision, then back to the first while it is still warm: no promotion wait, no new Deployment.
    ns.apply(&with_hpa.replace("iris-v1.onnx", "iris-v2.onnx"))?;
    let second = wait_until("the second revision active", Duration::from_secs(60), || async {
        let active = ns.jsonpath("mdep", "iris", "{.status.activeRevision}").ok()?;
        (active != first).then_some(active)
    })
    .await?;
    ns.apply(&with_hpa)?;
    wait_until("the fast rollback", Duration::from_secs(10), || async {
        (ns.jsonpath("mdep", "iris", "{.status.activeRevision}").ok()? == first).then_some(())
    })
    .await?;
    ensure!(
        ns.jsonpath("deployment", &format!("iris-{second}"), "{.spec.replicas}")? == "3",
        "the rolled-back revision stays warm"
    );

    // Idle: the operator writes nothing over ten seconds. Other controllers may (the HPA controller
    // writes the HPA's status on its own period, the Deployment controller its Deployments'), so the
    // check reads the operator's own writes: the managedFields entries of its field manager.
    wait_until("Healthy", Duration::from_secs(30), || async {
        (ns.jsonpath("mdep", "iris", "{.status.phase}").ok()? == "Healthy").then_some(())
    })
    .await?;
    let versions = || {
        ns.kubectl(&[
            "get",
            "mdep,deployments,services,hpa",
            "-o",
            r#"jsonpath={range .items[*]}{.kind}/{.metadata.name}:{range .metadata.managedFields[?(@.manager=="mizzen-operator")]}{.operation}{.subresource}@{.time},{end} {end}"#,
        ])
        .ok()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = versions()?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = versions()?;
    ensure!(before.contains("@"), "no writes of the operator's field manager found: {before}");
    ensure!(before == after, "the operator wrote while idle:\nbefore {before}\nafter  {after}");
    Ok(())
}

/// A new revision whose pods never become available passes its progress deadline: Degraded with
/// ProgressDeadlineExceeded, while traffic stays on the stable revision.
async fn model_deployment_progress_deadline_degrades(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("deadline")?;
    let bg = "{minReadySeconds: 4, progressDeadlineSeconds: 6}";
    let (_operator, first) = given_a_served_model_deployment(&cluster, &ns, bg).await?;
    ns.apply(&mdep("iris", "s3://models/iris-v2.onnx", bg))?;
    let second = wait_until("the new revision's pods", Duration::from_secs(10), || async {
        let preview = ns.jsonpath("mdep", "iris", "{.status.previewRevision}").ok()?;
        let pods = ns
            .kubectl(&["get", "pods", "-l", &format!("mizzen.dev/revision={preview}"), "-o", "name"])
            .ok()
            .ok()?;
        (preview != first && pods.lines().count() == 2).then_some(preview)
    })
    .await?;
    // Hold them unready before minReadySeconds makes them available.
    ns.kubectl(&[
        "label",
        "pods",
        "-l",
        &format!("mizzen.dev/revision={second}"),
        "mizzen.dev/e2e-pod=unready",
    ])
    .ok()?;
    let reason = wait_until("Degraded", Duration::from_secs(30), || async {
        let got = ns.jsonpath("mdep", "iris", "{.status.conditions[?(@.type==\"Degraded\")].status}/{.status.conditions[?(@.type==\"Degraded\")].reason}").ok()?;
        got.strip_prefix("True/").map(str::to_string)
    })
    .await?;
    ensure!(reason == "ProgressDeadlineExceeded", "{reason}");
    ensure!(ns.jsonpath("mdep", "iris", "{.status.activeRevision}")? == first);
    ensure!(ns.jsonpath("mdep", "iris", "{.status.phase}")? == "Degraded");
    ensure!(
        ns.jsonpath("mdep", "iris", "{.status.conditions[?(@.type==\"Progressing\")].status}")? == "False"
    );
    Ok(())
}

// --- TrainingJob ------------------------------------------------------------------------------------

/// A small labelled table: two numeric features and a word, two classes mostly separable.
fn training_csv(rows: usize) -> String {
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
        (ns.jsonpath("job", name, "{.spec.suspend}").ok()? == "true").then_some(())
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
async fn training_job_runs_as_an_indexed_job(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("tjob-spec")?;
    let _operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    ns.apply(&tjob(
        "search",
        "  backoffLimit: 2\n  activeDeadlineSeconds: 900\n  trainer: {resources: {limits: {memory: 1Gi}}}\n  \
         search:\n    algorithm: grid\n    parallelism: 2\n    objective: {metric: f1}\n    \
         parameters: [{name: l2, logUniform: {min: 0.01, max: 1}, steps: 3}]\n",
    ))?;
    ns.wait_for_condition("tjob", "search", "Created", "True").await?;
    let spec = |path: &str| ns.jsonpath("job", "search", path);
    ensure!(spec("{.spec.completionMode}")? == "Indexed");
    ensure!(spec("{.spec.completions}/{.spec.parallelism}/{.spec.backoffLimitPerIndex}")? == "3/2/2");
    ensure!(spec("{.spec.activeDeadlineSeconds}")? == "900");
    ensure!(spec("{.spec.podFailurePolicy.rules[0].action}")? == "FailIndex");
    ensure!(spec("{.metadata.ownerReferences[0].kind}")? == "TrainingJob");
    let pod = |path: &str| spec(&format!("{{.spec.template.spec{path}}}"));
    ensure!(pod(".restartPolicy")? == "Never");
    ensure!(pod(".securityContext.runAsNonRoot")? == "true");
    ensure!(pod(".containers[0].securityContext.readOnlyRootFilesystem")? == "true");
    ensure!(pod(".containers[0].resources.limits.memory")? == "1Gi");
    let config: serde_json::Value = serde_json::from_str(&pod(".containers[0].env[0].value")?)?;
    ensure!(config["trials"].as_array().map(Vec::len) == Some(3), "{config}");
    ensure!(config["trials"][1]["l2"] == "0.1", "{config}");
    // The fake nodes run nothing: the pods end without a report, and that is what the status says.
    let reason = ns.wait_for_condition("tjob", "search", "Failed", "True").await?;
    ensure!(reason == "NoReport", "reason {reason}");
    ensure!(ns.jsonpath("tjob", "search", "{.status.trials.summary}")? == "0/3/3");

    ns.apply(&tjob("registry", "").replace("s3://models/registry/", "registry://iris"))?;
    let reason = ns.wait_for_condition("tjob", "registry", "Failed", "True").await?;
    ensure!(reason == "RegistryUnavailable", "reason {reason}");
    ensure!(ns.kubectl(&["get", "job", "registry"]).refused().is_ok(), "no Job for a refused run");
    Ok(())
}

/// The status path with the real trainer: mizzen-train runs here on real data, and its termination
/// messages are what the Job's pods report. The best trial is published, a failed trial is counted,
/// the model passes the gate and is deployed (the ModelDeployment's model changes), events say so, and
/// after the ttl the Job goes while the status stays.
async fn training_job_reports_the_best_trial_and_deploys_it(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("tjob-status")?;
    let dir = tempfile::tempdir()?;
    let data = training_csv(400);
    let (code_a, strong) = run_trainer(dir.path(), &data, &["--set", "l2=0.01"])?;
    let (code_b, weak) = run_trainer(dir.path(), &data, &["--set", "l2=100000"])?;
    ensure!(code_a == 0 && code_b == 0, "the trainer failed: {strong} / {weak}");
    let report: serde_json::Value = serde_json::from_str(&strong)?;
    let (_, bad) = run_trainer(dir.path(), "x1,x2\n1,2\n", &[])?;
    let _operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    ns.apply(&mdep("iris", "s3://models/iris-v1.onnx", "{}"))?;
    ns.apply(&tjob(
        "iris",
        "  suspend: true\n  ttlSecondsAfterFinished: 3\n  \
         deploy: {modelDeployment: iris, when: {metric: accuracy, threshold: 0.6}}\n  \
         search:\n    algorithm: grid\n    parallelism: 3\n    objective: {metric: logLoss}\n    \
         parameters: [{name: l2, categorical: ['100000', '0.01', '1']}]\n",
    ))?;
    ns.wait_for_condition("tjob", "iris", "Suspended", "True").await?;
    given_trainer_reports(&ns, "iris", &[(weak, 0), (strong.clone(), 0), (bad, 2)]).await?;
    let reason = ns.wait_for_condition("tjob", "iris", "Succeeded", "True").await?;
    ensure!(reason == "ModelTrained", "reason {reason}");
    ensure!(ns.jsonpath("tjob", "iris", "{.status.trials.summary}")? == "2/1/3");
    let uri = ns.jsonpath("tjob", "iris", "{.status.model.uri}")?;
    ensure!(uri == report["modelUri"], "model {uri}, best report {report}");
    ensure!(ns.jsonpath("tjob", "iris", "{.status.bestHyperparameters.l2}")? == "0.01");
    let accuracy: f64 = ns.jsonpath("tjob", "iris", "{.status.metrics.accuracy}")?.parse()?;
    ensure!(Some(accuracy) == report["metrics"]["accuracy"].as_f64(), "{accuracy} vs {report}");
    ensure!(ns.jsonpath("tjob", "iris", "{.status.objective.metric}")? == "logLoss");
    ensure!(ns.jsonpath("tjob", "iris", "{.status.model.sha256}")? == report["modelSha256"]);
    let reason = ns.wait_for_condition("tjob", "iris", "Deployed", "True").await?;
    ensure!(reason == "Deployed");
    ensure!(ns.jsonpath("mdep", "iris", "{.spec.model.uri}")? == uri, "the ModelDeployment was not updated");
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
    ensure!(
        ns.jsonpath("tjob", "iris", "{.status.phase}")? == "Succeeded",
        "the status must outlive the Job"
    );
    Ok(())
}

/// Bad data ends Failed with the trainer's reason, visible in `kubectl get` and `kubectl describe`, and a
/// permanent failure (exit code 2) is not retried however large backoffLimit is.
async fn training_job_with_bad_data_fails_with_the_reason(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("tjob-bad-data")?;
    let dir = tempfile::tempdir()?;
    let (code, report) = run_trainer(dir.path(), "x1,x2\n1,2\n3,4\n", &[])?;
    ensure!(code == 2, "exit code {code}: {report}");
    ensure!(report.contains("InvalidData") && report.contains("label column"), "{report}");
    let _operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    ns.apply(&tjob("bad", "  suspend: true\n  backoffLimit: 4\n"))?;
    given_trainer_reports(&ns, "bad", &[(report, 2)]).await?;
    let reason = ns.wait_for_condition("tjob", "bad", "Failed", "True").await?;
    ensure!(reason == "InvalidData", "reason {reason}");
    let table = ns.kubectl(&["get", "tjob", "bad", "-o", "wide"]).ok()?;
    ensure!(table.contains("Failed") && table.contains("InvalidData"), "{table}");
    let described = ns.kubectl(&["describe", "tjob", "bad"]).ok()?;
    ensure!(described.contains("label column \"label\" is not in the file"), "{described}");
    let pods = ns.kubectl(&["get", "pods", "-l", "mizzen.dev/training-job=bad", "-o", "name"]).ok()?;
    ensure!(pods.lines().count() == 1, "a permanent failure was retried: {pods}");
    Ok(())
}
