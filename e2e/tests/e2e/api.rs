//! The API as users meet it: the CRDs, their validation, kubectl, and the operator process itself.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::core::ApiResource;
use mizzen_api::crd;
use mizzen_api::v1alpha1::model_deployment::ModelDeploymentPhase;
use mizzen_api::v1alpha1::{FeatureSet, ModelDeployment, TrainingJob};
use mizzen_api::validation_cases::cases;
use mizzen_e2e::{Cluster, Kind, Operator, Registry, repo_root, wait_until};
use std::time::Duration;

pub(crate) const MDEP: &str = r#"
apiVersion: mizzen.dev/v1alpha1
kind: ModelDeployment
metadata: {name: iris}
spec:
  model: {uri: "registry://iris@champion"}
"#;

pub(crate) fn crd_names() -> Vec<String> {
    crd::all().iter().filter_map(|c| c.metadata.name.clone()).collect()
}

/// Given no CRDs, the operator runs but is not ready; when the CRDs are applied, it becomes ready.
pub(crate) async fn operator_is_unready_until_the_crds_exist(cluster: Cluster) -> Result<()> {
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
pub(crate) async fn crds_are_established_and_explained(cluster: Cluster) -> Result<()> {
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
pub(crate) async fn api_server_judges_every_validation_case(cluster: Cluster) -> Result<()> {
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
pub(crate) async fn kubectl_shows_cel_messages(cluster: Cluster) -> Result<()> {
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
pub(crate) async fn kubectl_scale_uses_the_scale_subresource(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("scale")?;
    ns.apply(MDEP)?;
    ensure!(ns.get::<ModelDeployment>("iris").await?.spec.replicas == 1, "default replicas is not 1");
    ns.kubectl(&["scale", "mdep/iris", "--replicas", "3"]).ok()?;
    ensure!(ns.get::<ModelDeployment>("iris").await?.spec.replicas == 3);
    let scale = ns.kubectl(&["get", "mdep", "iris", "--subresource", "scale", "-o", "json"]).ok()?;
    let scale: serde_json::Value = serde_json::from_str(&scale)?;
    ensure!(scale["kind"] == "Scale" && scale["spec"]["replicas"] == 3, "{scale}");
    // An invalid scale is refused by the same schema.
    let err = ns.kubectl(&["scale", "mdep/iris", "--replicas", "-1"]).refused()?;
    ensure!(err.contains("replicas"), "{err}");
    Ok(())
}

/// `kubectl get mizzen` lists all three kinds with their printer columns.
pub(crate) async fn get_mizzen_lists_every_kind_with_columns(cluster: Cluster) -> Result<()> {
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

/// Given a running operator, when the examples are created, then each gets an honest status that names the
/// generation it describes, and a spec change is observed again.
pub(crate) async fn operator_records_an_honest_initial_status(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("initial-status")?;
    // The example serves registry://iris@champion: the registry knows it.
    let registry = Registry::start("127.0.0.1").await?;
    registry.register("iris", "s3://models/iris/", "champion").await?;
    let operator = Operator::start(&cluster, &["--namespace", &ns.name, "--registry-url", &registry.url()])?;
    ns.kubectl(&["apply", "-f", &repo_root().join("manifests/examples").to_string_lossy()]).ok()?;
    // FeatureSets have a reconciler: the store is made (its claim stays Pending on fake nodes, which have no
    // volumes), and materialization waits for it.
    let reason = ns.wait_for_condition::<FeatureSet>("customers", "Materialized", "False").await?;
    ensure!(reason == "WaitingForStore", "fset/customers: reason {reason}");
    let status = ns.status::<FeatureSet>("customers").await?;
    ensure!(status.observed_generation == Some(1), "{status:?}");
    ensure!(status.url.as_deref() == Some(&*format!("http://customers.{}.svc:6566", ns.name)), "{status:?}");
    ns.kubectl(&["get", "statefulset/customers", "service/customers", "service/customers-pods"]).ok()?;
    // TrainingJobs have a reconciler: the example's Job is created.
    let reason = ns.wait_for_condition::<TrainingJob>("iris", "Created", "True").await?;
    ensure!(reason == "JobCreated", "tjob/iris: reason {reason}");
    // ModelDeployments have a reconciler: served on the fake nodes, they become Ready.
    let reason = ns.wait_for_condition::<ModelDeployment>("iris", "Ready", "True").await?;
    ensure!(reason == "Serving", "mdep/iris: reason {reason}");
    let status = ns.status::<ModelDeployment>("iris").await?;
    ensure!(
        status.phase == ModelDeploymentPhase::Healthy && status.observed_generation == Some(1),
        "{status:?}"
    );
    ns.kubectl(&["patch", "mdep", "iris", "--type", "merge", "-p", r#"{"spec":{"paused":true}}"#]).ok()?;
    let status = ns
        .wait_for::<ModelDeployment, _>("iris", "observedGeneration 2", Duration::from_secs(20), |s| {
            (s.observed_generation == Some(2)).then(|| s.clone())
        })
        .await?;
    let condition = ModelDeployment::condition(&status, "Ready").context("no Ready condition")?;
    ensure!(condition.observed_generation == Some(2), "condition {condition:?}");
    let (_, metrics) = operator.get("/metrics").await?;
    for kind in ["ModelDeployment", "TrainingJob", "FeatureSet"] {
        let line = format!("mizzen_operator_reconciles_total{{kind=\"{kind}\"}}");
        ensure!(metrics.contains(&line), "no {line} in\n{metrics}");
    }
    Ok(())
}

/// SIGTERM stops the operator promptly and cleanly.
pub(crate) async fn operator_stops_cleanly_on_sigterm(cluster: Cluster) -> Result<()> {
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

/// The API server goes away and comes back (restarted in place, its state kept): the operator's `/ready`
/// fails while it is gone and says why, `mizzen_operator_watch_errors_total` counts it, `/health` stays 200, and `/ready` recovers by itself; the cluster
/// keeps its state across the restart, and the operator reconciles again at once: every watch resumes
/// (relisting after its `410 Gone`) within seconds, not after minutes of stacked backoff. Runs alone: it stops the cluster's
/// API server. Needs the local cluster (restart.sh); with kind it is skipped.
pub(crate) async fn operator_is_unready_while_the_api_server_is_gone(cluster: Cluster) -> Result<()> {
    let restart = repo_root().join("hack/cluster/restart.sh");
    let cluster_dir = cluster.kubeconfig.parent().context("kubeconfig has a directory")?.to_path_buf();
    if !cluster_dir.join("kube-apiserver.cmd").exists() {
        println!("    skipped: not the local cluster (restart.sh restarts its components in place)");
        return Ok(());
    }
    crate::install_crds(cluster.clone()).await?;
    let ns = cluster.namespace("api-outage")?;
    let operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    ns.apply(MDEP.replace("registry://iris@champion", "s3://models/iris.onnx").as_str())?;
    ns.wait_for_condition::<ModelDeployment>("iris", "Ready", "True").await?;
    let sh = |args: &[&str]| -> Result<()> {
        let out =
            std::process::Command::new(&restart).args(args).env("CLUSTER_DIR", &cluster_dir).output()?;
        ensure!(out.status.success(), "restart.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    };
    sh(&["kube-apiserver", "--stop"])?;
    let outage = async {
        let body = wait_until("/ready to fail", Duration::from_secs(60), || async {
            operator.get("/ready").await.ok().filter(|(code, _)| *code == 503).map(|(_, body)| body)
        })
        .await?;
        ensure!(body.contains("the watches fail"), "{body}");
        let (health, _) = operator.get("/health").await?;
        ensure!(health == 200, "/health answered {health} while only the API server is gone");
        // And its metrics count the failing watches, for alerts.
        let (_, metrics) = operator.get("/metrics").await?;
        let errors: u64 = metrics
            .lines()
            .filter(|l| l.starts_with("mizzen_operator_watch_errors_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        ensure!(errors > 0, "no watch errors counted during the outage:\n{metrics}");
        Ok(())
    };
    // Whatever happened, the API server comes back for the other tests.
    let result = outage.await;
    sh(&["kube-apiserver"])?;
    result?;
    wait_until("/ready to recover", Duration::from_secs(60), || async {
        operator.get("/ready").await.ok().filter(|(code, _)| *code == 200)
    })
    .await?;
    // The operator acts on a change made after the restart, within seconds: each watch waits at most 5 s
    // after an error, on its own (kube-runtime's shared backoff took minutes here).
    let revision =
        ns.status::<ModelDeployment>("iris").await?.active_revision.context("an active revision")?;
    ns.kubectl(&["scale", "mdep/iris", "--replicas", "3"]).ok()?;
    wait_until("the operator to scale the revision after the restart", Duration::from_secs(20), || async {
        let deployment = ns.get::<Deployment>(&format!("iris-{revision}")).await.ok()?;
        (deployment.spec?.replicas == Some(3)).then_some(())
    })
    .await?;
    // The controller manager's informers can take a while to get over an API server restart ("informer
    // cache is out of date"); the tests after this one get fresh ones.
    sh(&["kube-controller-manager"])?;
    // The same cluster, and the scale served: the namespace and its object survived the restart.
    ns.wait_for::<ModelDeployment, _>("iris", "three available replicas", Duration::from_secs(60), |s| {
        (s.available_replicas == 3 && s.active_revision.as_deref() == Some(&revision)).then_some(())
    })
    .await?;
    Ok(())
}

/// Puts the strict ModelDeployment CRD back when dropped, whatever happened.
struct StrictCrdBack(Cluster);

impl Drop for StrictCrdBack {
    fn drop(&mut self) {
        let file = repo_root().join("crds/modeldeployments.mizzen.dev.yaml");
        let _ = self.0.kubectl(&["replace", "-f", &file.to_string_lossy()]);
    }
}

/// A ModelDeployment stored under an older, looser schema (the API server keeps what it once accepted)
/// that the operator's types cannot read does not wedge the controller: it is reported on itself (a
/// Warning event InvalidObject naming the field, the failure metric), the other ModelDeployments are
/// reconciled, the operator stays ready, and once fixed it is reconciled like any other. Runs alone: it swaps a CRD's schema.
pub(crate) async fn an_object_the_types_cannot_read_wedges_nothing(cluster: Cluster) -> Result<()> {
    crate::install_crds(cluster.clone()).await?;
    let ns = cluster.namespace("unreadable")?;
    let crd = cluster.kubectl(&["get", "crd", "modeldeployments.mizzen.dev", "-o", "json"]).ok()?;
    let mut crd: serde_json::Value = serde_json::from_str(&crd)?;
    for field in ["resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"] {
        crd["metadata"].as_object_mut().context("metadata")?.remove(field);
    }
    crd.as_object_mut().context("crd")?.remove("status");
    // The older schema: any spec at all.
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] =
        serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let strict_back = StrictCrdBack(cluster.clone());
    cluster.kubectl_with_input(&["replace", "-f", "-"], Some(&crd.to_string())).ok()?;
    let bad = "apiVersion: mizzen.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: bad}\nspec:\n  \
               model: {uri: \"s3://models/iris.onnx\"}\n  strategy: {blueGreen: soon}\n";
    // The API server takes a moment to serve the new schema.
    wait_until("the loose schema to accept the object", Duration::from_secs(20), || async {
        cluster.kubectl_with_input(&["apply", "-n", &ns.name, "-f", "-"], Some(bad)).ok().ok()
    })
    .await?;
    drop(strict_back);
    // The strict schema refuses such an object now; the stored one stays.
    let refused = wait_until("the strict schema back", Duration::from_secs(20), || async {
        cluster
            .kubectl_with_input(
                &["apply", "-n", &ns.name, "-f", "-"],
                Some(&bad.replace("name: bad", "name: bad2")),
            )
            .refused()
            .ok()
    })
    .await?;
    ensure!(refused.contains("spec.strategy.blueGreen"), "{refused}");

    let operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    ns.apply(MDEP.replace("registry://iris@champion", "s3://models/iris.onnx").as_str())?;
    ns.wait_for_condition::<ModelDeployment>("iris", "Ready", "True").await?;
    // (Its status cannot be written: the API server evaluates the schema's CEL rules on the stored spec
    // for any write, and they cannot read it. So the report is the event, the log and the metric.)
    let events = wait_until("an InvalidObject event on bad", Duration::from_secs(30), || async {
        let e = ns
            .kubectl(&["get", "events", "--field-selector", "involvedObject.name=bad", "-o", "json"])
            .ok()
            .ok()?;
        e.contains("InvalidObject").then_some(e)
    })
    .await?;
    ensure!(events.contains("spec.strategy.blueGreen: invalid type"), "{events}");
    let (code, body) = operator.get("/ready").await?;
    ensure!(code == 200, "/ready: {code} {body}");
    let (_, metrics) = operator.get("/metrics").await?;
    ensure!(
        metrics.contains(
            r#"mizzen_operator_reconcile_failures_total{kind="ModelDeployment",error="invalid_object"} 1"#
        ),
        "{metrics}"
    );
    // Fixed by its owner, it is reconciled like any other.
    ns.kubectl(&[
        "patch",
        "mdep",
        "bad",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"strategy":{"blueGreen":{}}}}"#,
    ])
    .ok()?;
    ns.wait_for_condition::<ModelDeployment>("bad", "Ready", "True").await?;
    Ok(())
}
