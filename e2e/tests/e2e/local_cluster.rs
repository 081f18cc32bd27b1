//! The test cluster itself: fake nodes run pods, chosen pods can be held unready or failed, and the
//! recorder sees selectors and readiness change.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::Service;
use mizzen_e2e::recorder::Recorder;
use mizzen_e2e::{Cluster, wait_until};
use std::time::Duration;

/// The fake nodes make a Deployment's pods Ready and a Job's pods succeed.
pub(crate) async fn fake_nodes_run_deployments_and_jobs(cluster: Cluster) -> Result<()> {
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
pub(crate) async fn chosen_pods_can_be_held_unready_or_failed(cluster: Cluster) -> Result<()> {
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
pub(crate) async fn recorder_samples_selectors_and_readiness(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("recorder")?;
    ns.kubectl(&["create", "deployment", "blue", "--image=example.invalid/blue:1", "--replicas=2"]).ok()?;
    ns.kubectl(&["create", "service", "clusterip", "active", "--tcp=80:8080"]).ok()?;
    ns.kubectl(&["set", "selector", "service/active", "app=blue"]).ok()?;
    let recorder = Recorder::start(cluster.client.clone(), &ns.name, &["active"], Duration::from_millis(50));
    ns.kubectl(&["rollout", "status", "deployment/blue", "--timeout=60s"]).ok()?;
    ns.kubectl(&["set", "selector", "service/active", "app=green"]).ok()?;
    wait_until("the selector change", Duration::from_secs(10), || async {
        let service = ns.get::<Service>("active").await.ok()?;
        (service.spec?.selector?.get("app")? == "green").then_some(())
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
