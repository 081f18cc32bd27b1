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
use mizzen_e2e::recorder::{Recorder, assert_active_always_fully_available};
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
    assert_active_always_fully_available(&samples, "iris", 2)?;

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
    assert_active_always_fully_available(&recorder.finish().await, "iris", 2)?;
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

// --- A messy cluster: tampering with kubectl, foreign objects, rollouts that cannot finish. -------------

/// How many times an event with this reason was recorded about `iris`.
async fn events_with_reason(ns: &Namespace, reason: &str) -> Result<i32> {
    ns.events("iris", reason).await
}

/// Then: at least `n` events with this reason about `iris` (an event is published just after its write).
async fn then_events(ns: &Namespace, reason: &str, n: i32) -> Result<()> {
    let what = format!("{n} {reason} event(s)");
    wait_until(&what, Duration::from_secs(10), || async {
        (events_with_reason(ns, reason).await.ok()? >= n).then_some(())
    })
    .await
}

/// Holds the pods of a revision unready (before minReadySeconds makes them available).
async fn hold_unready(ns: &Namespace, revision: &str, pods: usize) -> Result<()> {
    let selector = format!("mizzen.dev/revision={revision}");
    wait_until("the revision's pods", Duration::from_secs(20), || async {
        let out = ns.kubectl(&["get", "pods", "-l", &selector, "-o", "name"]).ok().ok()?;
        (out.lines().count() >= pods).then_some(())
    })
    .await?;
    ns.kubectl(&["label", "pods", "-l", &selector, "mizzen.dev/e2e-pod=unready", "--overwrite"])
        .ok()
        .map(drop)
}

/// With a preview waiting for promotion, `kubectl patch svc/iris` pointing it at the preview is set back
/// (no promotion, nothing scaled down), and an extra selector key is removed; both with a warning event.
pub(crate) async fn model_deployment_sets_hand_edited_services_back(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("tamper")?;
    let bg = "{autoPromotion: false}";
    let (_operator, first) = given_a_served_model_deployment(&cluster, &ns, bg).await?;
    let recorder = Recorder::start(cluster.client.clone(), &ns.name, &["iris"], Duration::from_millis(50));
    when_applied(&ns, V2, bg)?;
    let second = then(&ns, "the preview waiting for promotion", 30, |s| {
        true_reason(s, "Paused").and(s.preview_revision.clone()).filter(|p| p != &first)
    })
    .await?;
    let patch = format!(r#"{{"spec":{{"selector":{{"mizzen.dev/revision":"{second}"}}}}}}"#);
    ns.kubectl(&["patch", "svc", "iris", "--type", "merge", "-p", &patch]).ok()?;
    wait_until("the active Service set back", Duration::from_secs(10), || async {
        (selected_by(&ns, "iris").await? == first).then_some(())
    })
    .await?;
    let s = status(&ns).await?;
    ensure!(s.active_revision.as_ref() == Some(&first), "the edit was taken as a promotion: {s:?}");
    ensure!(true_reason(&s, "Paused").is_some(), "no longer waiting for the promotion: {s:?}");
    ensure!(replicas_of(&ns, &first).await == Some(2), "the active revision was scaled down");
    // Up to here the active Service only ever selected fully available pods (the hand edit pointed it at a
    // preview that was fully available); the extra key below empties it until it is removed.
    assert_active_always_fully_available(&recorder.finish().await, "iris", 2)?;

    ns.kubectl(&["patch", "svc", "iris", "--type", "merge", "-p", r#"{"spec":{"selector":{"tamper":"x"}}}"#])
        .ok()?;
    wait_until("the extra selector key removed", Duration::from_secs(10), || async {
        let selector = ns.get::<Service>("iris").await.ok()?.spec?.selector?;
        (!selector.contains_key("tamper") && selector.get("mizzen.dev/revision") == Some(&first))
            .then_some(())
    })
    .await?;
    then_events(&ns, "ServiceCorrected", 2).await?;
    ensure!(events_with_reason(&ns, "Promoted").await? == 0, "a Promoted event for a hand edit");
    Ok(())
}

/// With `progressDeadlineAbort`, a new revision that never becomes available is aborted once and stays
/// aborted (no restart, no second abort) until `mizzen.dev/retry` asks again.
pub(crate) async fn model_deployment_abort_lasts_until_retried(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("abort-lasts")?;
    let bg = "{minReadySeconds: 2, progressDeadlineSeconds: 4, progressDeadlineAbort: true}";
    let (_operator, first) = given_a_served_model_deployment(&cluster, &ns, bg).await?;
    let recorder = Recorder::start(cluster.client.clone(), &ns.name, &["iris"], Duration::from_millis(50));
    when_applied(&ns, V2, bg)?;
    let second =
        then(&ns, "the new revision", 10, |s| s.preview_revision.clone().filter(|p| p != &first)).await?;
    hold_unready(&ns, &second, 2).await?;
    let reason = ns.wait_for_condition::<ModelDeployment>("iris", "Degraded", "True").await?;
    ensure!(reason == "RolloutAborted", "{reason}");
    then_revision_has(&ns, "the aborted revision scaled down", &second, 0).await?;
    // Well past several deadlines: still aborted, never scaled up again, one Aborted event.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ensure!(replicas_of(&ns, &second).await == Some(0), "the aborted revision was scaled up again");
        ensure!(true_reason(&status(&ns).await?, "Degraded").as_deref() == Some("RolloutAborted"));
    }
    ensure!(events_with_reason(&ns, "Aborted").await? == 1, "aborted more than once");
    assert_active_always_fully_available(&recorder.finish().await, "iris", 2)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    when_annotated(&ns, "mizzen.dev/retry", &now.to_string())?;
    then_revision_has(&ns, "the retried revision scaled up", &second, 2).await?;
    Ok(())
}

/// A Service `iris` the user made is never taken over (no owner reference, selector and ports as they
/// were) nor deleted with the ModelDeployment; the ModelDeployment says ChildConflict until it goes.
pub(crate) async fn model_deployment_leaves_a_users_service_alone(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("foreign-svc")?;
    ns.kubectl(&["create", "service", "clusterip", "iris", "--tcp=80:9000"]).ok()?;
    let before = ns.get::<Service>("iris").await?;
    let _operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    when_applied(&ns, V1, "{}")?;
    let reason = ns.wait_for_condition::<ModelDeployment>("iris", "Degraded", "True").await?;
    ensure!(reason == "ChildConflict", "{reason}");
    let message = ModelDeployment::condition(&status(&ns).await?, "Degraded").map(|c| c.message.clone());
    ensure!(message.as_deref().is_some_and(|m| m.contains("Service iris")), "{message:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = ns.get::<Service>("iris").await?;
    ensure!(after.metadata.owner_references.is_none(), "taken over: {:?}", after.metadata.owner_references);
    ensure!(
        after.spec.as_ref().map(|s| (&s.selector, &s.ports))
            == before.spec.as_ref().map(|s| (&s.selector, &s.ports))
    );
    then_events(&ns, "ChildConflict", 1).await?;
    ensure!(events_with_reason(&ns, "ChildConflict").await? == 1, "said more than once");
    ns.kubectl(&["delete", "mdep", "iris", "--wait=true"]).ok()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(ns.get::<Service>("iris").await.is_ok(), "the user's Service went with the ModelDeployment");
    Ok(())
}

/// A Deployment of the user's named like the revision the ModelDeployment wants (`iris-REVISION`) is
/// reported (ChildConflict, naming it) instead of failing every reconcile silently; once it is deleted the
/// ModelDeployment deploys.
pub(crate) async fn model_deployment_reports_a_name_collision(cluster: Cluster) -> Result<()> {
    // The revision is a hash of the spec: learn it from the same spec served in another namespace.
    let probe = cluster.namespace("collision-probe")?;
    let (operator, revision) = given_a_served_model_deployment(&cluster, &probe, "{}").await?;
    drop(operator);
    let ns = cluster.namespace("collision")?;
    let theirs = format!("iris-{revision}");
    ns.kubectl(&["create", "deployment", &theirs, "--image=example.invalid/theirs:1"]).ok()?;
    let _operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    when_applied(&ns, V1, "{}")?;
    let reason = ns.wait_for_condition::<ModelDeployment>("iris", "Degraded", "True").await?;
    ensure!(reason == "ChildConflict", "{reason}");
    let d = ns.get::<Deployment>(&theirs).await?;
    ensure!(d.metadata.owner_references.is_none(), "taken over");
    ns.kubectl(&["delete", "deployment", &theirs, "--wait=true"]).ok()?;
    // Foreign objects are not watched: the ModelDeployment looks again within 30 s.
    let ready = ns.wait_for::<ModelDeployment, _>("iris", "Ready", Duration::from_secs(45), |s| {
        ModelDeployment::condition(s, "Ready").filter(|c| c.status == "True").map(|_| ())
    });
    ready.await
}

/// The progress deadline holds for a first deploy whose pods never become available and for a scale-up
/// of the active revision (`ScalingActive`) whose new pods never do; model changes leave at most
/// `revisionHistoryLimit` old revisions at zero.
pub(crate) async fn model_deployment_deadline_first_deploy_and_history(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("deadline-history")?;
    let _operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    let bg = "{minReadySeconds: 3, progressDeadlineSeconds: 5, scaleDownDelaySeconds: 0}";
    when_applied(&ns, V1, bg)?;
    let first = then(&ns, "the first revision", 10, |s| s.active_revision.clone()).await?;
    hold_unready(&ns, &first, 2).await?;
    let s = then(&ns, "Degraded", 30, |s| true_reason(s, "Degraded").map(|_| s.clone())).await?;
    ensure!(true_reason(&s, "Degraded").as_deref() == Some("ProgressDeadlineExceeded"), "{s:?}");
    let release = || {
        ns.kubectl(&["label", "pods", "-l", &format!("mizzen.dev/revision={first}"), "mizzen.dev/e2e-pod-"])
            .ok()
            .map(drop)
    };
    release()?;
    ns.wait_for_condition::<ModelDeployment>("iris", "Ready", "True").await?;

    // Scaling the active revision has the same deadline: a scale-up whose pods never become ready
    // degrades, and recovers when they come.
    ns.kubectl(&["scale", "mdep/iris", "--replicas", "4"]).ok()?;
    hold_unready(&ns, &first, 4).await?;
    then(&ns, "scaling the active revision", 10, |s| {
        (true_reason(s, "Progressing").as_deref() == Some("ScalingActive")).then_some(())
    })
    .await?;
    then(&ns, "Degraded while scaling", 30, |s| {
        (true_reason(s, "Degraded").as_deref() == Some("ProgressDeadlineExceeded")).then_some(())
    })
    .await?;
    release()?;
    then(&ns, "four available replicas", 30, |s| (s.available_replicas == 4).then_some(())).await?;
    ns.wait_for_condition::<ModelDeployment>("iris", "Ready", "True").await?;
    ns.kubectl(&["scale", "mdep/iris", "--replicas", "2"]).ok()?;
    then(&ns, "two replicas again", 30, |s| (s.available_replicas == 2).then_some(())).await?;

    let recorder = Recorder::start(cluster.client.clone(), &ns.name, &["iris"], Duration::from_millis(50));
    let history =
        |uri: &str| mdep(uri, bg).replace("  replicas: 2\n", "  replicas: 2\n  revisionHistoryLimit: 1\n");
    for (i, uri) in [V2, V3, "s3://models/iris-v4.onnx"].into_iter().enumerate() {
        ns.apply(&history(uri))?;
        then(&ns, &format!("model {} active", i + 2), 60, |s| {
            (s.phase == ModelDeploymentPhase::Healthy && s.model.as_ref()?.uri == uri).then_some(())
        })
        .await?;
    }
    wait_until("old revisions deleted", Duration::from_secs(20), || async {
        let out = ns.kubectl(&["get", "deployments", "-o", "name"]).ok().ok()?;
        (out.lines().count() == 2).then_some(())
    })
    .await?;
    then_events(&ns, "RevisionDeleted", 2).await?;
    assert_active_always_fully_available(&recorder.finish().await, "iris", 2)?;
    Ok(())
}
