//! ModelDeployment: blue-green rollouts, promotion and abort, scaling, rollback, idleness, deadlines.
//!
//! Every scenario is about ModelDeployment `iris` in the test's namespace: given it served, when its model,
//! annotations or spec change (`kubectl apply`, `annotate`, `patch`, `scale`, as a user would), then its
//! typed status and children say what happened.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use mizzen_api::v1alpha1::model_deployment::{ModelDeployment, ModelDeploymentPhase, ModelDeploymentStatus};
use mizzen_e2e::recorder::Recorder;
use mizzen_e2e::{Cluster, Kind, Namespace, Operator, wait_until};
use std::time::Duration;

const V1: &str = "s3://models/iris-v1.onnx";
const V2: &str = "s3://models/iris-v2.onnx";
const V3: &str = "s3://models/iris-v3.onnx";

fn mdep(uri: &str, blue_green: &str) -> String {
    format!(
        "apiVersion: mizzen.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: iris}}\nspec:\n  model: {{uri: \"{uri}\"}}\n  replicas: 2\n  strategy: {{blueGreen: {blue_green}}}\n"
    )
}

/// Given: the operator watching `ns`, and ModelDeployment `iris` (v1 of the model, two replicas, the given
/// blue-green settings) Ready. Returns the operator and the first revision.
async fn given_a_served_model_deployment(
    cluster: &Cluster,
    ns: &Namespace,
    bg: &str,
) -> Result<(Operator, String)> {
    let operator = Operator::start(cluster, &["--namespace", &ns.name])?;
    when_applied(ns, V1, bg)?;
    ns.wait_for_condition::<ModelDeployment>("iris", "Ready", "True").await?;
    let first = status(ns).await?.active_revision.context("no active revision")?;
    Ok((operator, first))
}

/// When: `kubectl apply` of `iris` with this model and these blue-green settings.
fn when_applied(ns: &Namespace, uri: &str, bg: &str) -> Result<()> {
    ns.apply(&mdep(uri, bg)).map(drop)
}

/// When: `kubectl annotate mdep iris KEY=VALUE --overwrite`.
fn when_annotated(ns: &Namespace, key: &str, value: &str) -> Result<()> {
    ns.kubectl(&["annotate", "mdep", "iris", &format!("{key}={value}"), "--overwrite"]).ok().map(drop)
}

/// When: `kubectl patch mdep iris --type merge -p PATCH`.
fn when_patched(ns: &Namespace, patch: &str) -> Result<()> {
    ns.kubectl(&["patch", "mdep", "iris", "--type", "merge", "-p", patch]).ok().map(drop)
}

async fn status(ns: &Namespace) -> Result<ModelDeploymentStatus> {
    ns.status::<ModelDeployment>("iris").await
}

/// Then: waits up to `seconds` until `probe` finds what it looks for in `iris`'s status.
async fn then<T>(
    ns: &Namespace,
    what: &str,
    seconds: u64,
    probe: impl Fn(&ModelDeploymentStatus) -> Option<T>,
) -> Result<T> {
    ns.wait_for::<ModelDeployment, T>("iris", what, Duration::from_secs(seconds), probe).await
}

/// The reason of condition `type_` when it is True.
fn true_reason(s: &ModelDeploymentStatus, type_: &str) -> Option<String> {
    ModelDeployment::condition(s, type_).filter(|c| c.status == "True").map(|c| c.reason.clone())
}

/// `spec.replicas` of a revision's Deployment.
async fn replicas_of(ns: &Namespace, revision: &str) -> Option<i32> {
    ns.get::<Deployment>(&format!("iris-{revision}")).await.ok()?.spec?.replicas
}

/// The revision a Service selects.
async fn selected_by(ns: &Namespace, service: &str) -> Option<String> {
    ns.get::<Service>(service).await.ok()?.spec?.selector?.get("mizzen.dev/revision").cloned()
}

/// Then: waits until a revision's Deployment asks for `replicas`.
async fn then_revision_has(ns: &Namespace, what: &str, revision: &str, replicas: i32) -> Result<()> {
    wait_until(what, Duration::from_secs(30), || async {
        (replicas_of(ns, revision).await? == replicas).then_some(())
    })
    .await
}

/// Then: the namespace's events include each reason.
fn then_events_include(ns: &Namespace, reasons: &[&str]) -> Result<()> {
    let events = ns.kubectl(&["get", "events", "-o", "jsonpath={.items[*].reason}"]).ok()?;
    for reason in reasons {
        ensure!(events.contains(reason), "no {reason} event in {events}");
    }
    Ok(())
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
pub(crate) async fn model_deployment_rolls_out_blue_green(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("blue-green")?;
    let _operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    let recorder = Recorder::start(
        cluster.client.clone(),
        &ns.name,
        &["iris", "iris-preview"],
        Duration::from_millis(50),
    );
    let bg = "{scaleDownDelaySeconds: 2, minReadySeconds: 1}";
    when_applied(&ns, V1, bg)?;
    ns.wait_for_condition::<ModelDeployment>("iris", "Ready", "True").await?;
    let first = status(&ns).await?.active_revision.context("no active revision")?;

    when_applied(&ns, V2, bg)?;
    let second = then(&ns, "the switch to the new revision", 60, |s| {
        let active = s.active_revision.clone()?;
        (active != first && s.phase == ModelDeploymentPhase::Healthy).then_some(active)
    })
    .await?;
    ensure!(status(&ns).await?.stable_revision.as_ref() == Some(&second));
    ensure!(selected_by(&ns, "iris-preview").await.as_ref() == Some(&second));
    then_revision_has(&ns, "the old revision scaled down after the delay", &first, 0).await?;
    then_events_include(&ns, &["RevisionCreated", "Promoted", "ScaledDown"])?;
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
pub(crate) async fn model_deployment_manual_promotion_and_abort(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("promote-abort")?;
    let bg = "{autoPromotion: false, scaleDownDelaySeconds: 30}";
    let (_operator, first) = given_a_served_model_deployment(&cluster, &ns, bg).await?;
    let recorder = Recorder::start(cluster.client.clone(), &ns.name, &["iris"], Duration::from_millis(50));

    when_applied(&ns, V2, bg)?;
    let reason = ns.wait_for_condition::<ModelDeployment>("iris", "Paused", "True").await?;
    ensure!(reason == "AwaitingPromotion", "{reason}");
    let s = status(&ns).await?;
    let second = s.preview_revision.clone().context("no preview revision")?;
    ensure!(second != first && s.active_revision.as_ref() == Some(&first), "{s:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(status(&ns).await?.active_revision.as_ref() == Some(&first), "promoted without the annotation");

    // Pause holds even a promote command; unpausing lets it through.
    when_patched(&ns, r#"{"spec":{"paused":true}}"#)?;
    when_annotated(&ns, "mizzen.dev/promote", &second)?;
    then(&ns, "the pause", 10, |s| (true_reason(s, "Paused")? == "Paused").then_some(())).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(status(&ns).await?.active_revision.as_ref() == Some(&first), "promoted while paused");
    when_patched(&ns, r#"{"spec":{"paused":false}}"#)?;
    then(&ns, "the manual promotion", 30, |s| (s.active_revision.as_ref()? == &second).then_some(())).await?;

    when_applied(&ns, V3, bg)?;
    let third = then(&ns, "the third revision waiting for promotion", 30, |s| {
        let preview = s.preview_revision.clone()?;
        (preview != second && true_reason(s, "Paused").is_some()).then_some(preview)
    })
    .await?;
    when_annotated(&ns, "mizzen.dev/abort", &third)?;
    let reason = ns.wait_for_condition::<ModelDeployment>("iris", "Degraded", "True").await?;
    ensure!(reason == "RolloutAborted", "{reason}");
    ensure!(
        status(&ns).await?.active_revision.as_ref() == Some(&second),
        "abort must keep traffic on stable"
    );
    then_revision_has(&ns, "the aborted revision scaled down", &third, 0).await?;
    assert_active_always_fully_available(&recorder.finish().await, 2)?;
    then_events_include(&ns, &["PreviewAvailable", "RolloutPaused", "Promoted", "Aborted"])
}

/// `kubectl scale` resizes the active revision without a new revision; an HPA targets the ModelDeployment;
/// re-applying a revision still warm switches back at once; an idle ModelDeployment causes no writes.
pub(crate) async fn model_deployment_scales_rolls_back_and_stays_idle(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("scale-rollback")?;
    let bg = "{scaleDownDelaySeconds: 120}";
    let (_operator, first) = given_a_served_model_deployment(&cluster, &ns, bg).await?;

    ns.kubectl(&["scale", "mdep/iris", "--replicas", "3"]).ok()?;
    let s =
        then(&ns, "three available replicas", 30, |s| (s.available_replicas == 3).then(|| s.clone())).await?;
    ensure!(s.active_revision.as_ref() == Some(&first), "a replicas change made a revision");
    let revisions = ns.kubectl(&["get", "deployments", "-o", "name"]).ok()?;
    ensure!(revisions.lines().count() == 1, "{revisions}");
    let selector = s.selector.unwrap_or_default();
    ensure!(selector.contains(&format!("mizzen.dev/revision={first}")), "{selector}");

    // Autoscaling: the operator owns an HPA that targets the ModelDeployment's scale subresource.
    let with_hpa = |uri: &str| {
        mdep(uri, bg)
            .replace("  replicas: 2\n", "  replicas: 3\n  autoscaling: {minReplicas: 2, maxReplicas: 6}\n")
    };
    ns.apply(&with_hpa(V1))?;
    let hpa = wait_until("the HPA", Duration::from_secs(20), || async {
        ns.get::<HorizontalPodAutoscaler>("iris").await.ok()?.spec
    })
    .await?;
    let target = (hpa.scale_target_ref.kind.as_str(), hpa.scale_target_ref.name.as_str(), hpa.max_replicas);
    ensure!(target == ("ModelDeployment", "iris", 6), "{target:?}");

    // A new revision, then back to the first while it is still warm: no promotion wait, no new Deployment.
    ns.apply(&with_hpa(V2))?;
    let second = then(&ns, "the second revision active", 60, |s| {
        s.active_revision.clone().filter(|active| active != &first)
    })
    .await?;
    ns.apply(&with_hpa(V1))?;
    then(&ns, "the fast rollback", 10, |s| (s.active_revision.as_ref()? == &first).then_some(())).await?;
    ensure!(replicas_of(&ns, &second).await == Some(3), "the rolled-back revision stays warm");

    // Idle: the operator writes nothing over ten seconds. Other controllers may (the HPA controller
    // writes the HPA's status on its own period, the Deployment controller its Deployments'), so the
    // check reads the operator's own writes: the managedFields entries of its field manager.
    then(&ns, "Healthy", 30, |s| (s.phase == ModelDeploymentPhase::Healthy).then_some(())).await?;
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
pub(crate) async fn model_deployment_progress_deadline_degrades(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("deadline")?;
    let bg = "{minReadySeconds: 4, progressDeadlineSeconds: 6}";
    let (_operator, first) = given_a_served_model_deployment(&cluster, &ns, bg).await?;
    when_applied(&ns, V2, bg)?;
    let second = wait_until("the new revision's pods", Duration::from_secs(10), || async {
        let preview = status(&ns).await.ok()?.preview_revision.filter(|p| p != &first)?;
        let pods = ns
            .kubectl(&["get", "pods", "-l", &format!("mizzen.dev/revision={preview}"), "-o", "name"])
            .ok()
            .ok()?;
        (pods.lines().count() == 2).then_some(preview)
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
    let s = then(&ns, "Degraded", 30, |s| true_reason(s, "Degraded").map(|_| s.clone())).await?;
    ensure!(true_reason(&s, "Degraded").as_deref() == Some("ProgressDeadlineExceeded"), "{s:?}");
    ensure!(s.active_revision.as_ref() == Some(&first) && s.phase == ModelDeploymentPhase::Degraded, "{s:?}");
    let progressing = ModelDeployment::condition(&s, "Progressing").context("no Progressing condition")?;
    ensure!(progressing.status == "False", "{progressing:?}");
    Ok(())
}
