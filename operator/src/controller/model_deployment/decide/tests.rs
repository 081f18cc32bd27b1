//! Scenarios of the ModelDeployment decision in Argo Rollouts' style: seed a cluster, decide, and check the
//! exact actions and status. [`Cluster`] plays the API server and the Deployment controller: it takes the
//! decided actions the way `apply` writes them, stores the status the way `update_status` merges it, and
//! makes pods available when told, so a scenario walks a rollout step by step.

use super::*;
use crate::api::v1alpha1::model_deployment::{ModelDeploymentSpec, SmokeTestStatus};
use crate::conditions;
use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;

const NOW: i64 = 1_000_000;

struct Cluster {
    md: ModelDeployment,
    observed: Observed,
    now: i64,
    /// Set when a test gives the EndpointSlices itself instead of the stand-in endpoints controller.
    endpoints_fixed: bool,
}

fn given(yaml: &str) -> Cluster {
    let spec: ModelDeploymentSpec =
        serde_saphyr::from_str(&format!("model: {{uri: \"s3://m/a.onnx\"}}\nreplicas: 2\n{yaml}")).unwrap();
    let mut md = ModelDeployment::new("iris", spec);
    md.metadata.namespace = Some("ml".into());
    md.metadata.uid = Some("uid-iris".into());
    md.metadata.generation = Some(1);
    Cluster { md, observed: Observed::default(), now: NOW, endpoints_fixed: false }
}

impl Cluster {
    /// The revision the spec asks for now.
    fn desired(&self) -> String {
        build::revision(&self.md.spec, &build::served(&self.md, None))
    }

    fn decide(&self) -> Decision {
        let mut observed = self.observed.clone();
        if !self.endpoints_fixed {
            observed.endpoints = self.endpoint_slices();
        }
        // The Deployment named like the desired revision, as observe reads it by name.
        if observed.desired_deployment.is_none() {
            let name = format!("iris-{}", self.desired());
            observed.desired_deployment = observed.deployments.iter().find(|d| d.name_any() == name).cloned();
        }
        decide(&self.md, &observed, self.now)
    }

    fn deployment(&mut self, revision: &str) -> Option<&mut Deployment> {
        self.observed.deployments.iter_mut().find(|d| revision_of(d).map(String::as_str) == Some(revision))
    }

    /// Writes the actions as `apply` would, and stores the status as `update_status` would.
    fn apply(&mut self, decision: &Decision) {
        for action in &decision.actions {
            match action {
                Action::CreateRevision { revision, replicas } => {
                    let mut d = build::deployment(
                        &self.md,
                        &build::served(&self.md, None),
                        revision,
                        *replicas,
                        &defaults(),
                    );
                    d.metadata.creation_timestamp = Some(time(self.now));
                    self.observed.deployments.push(d);
                }
                Action::DeleteRevision { deployment } => {
                    self.observed.deployments.retain(|d| &d.name_any() != deployment)
                }
                Action::RestoreService { preview, .. } => {
                    let svc = if *preview {
                        &mut self.observed.preview_service
                    } else {
                        &mut self.observed.active_service
                    };
                    let svc = svc.as_mut().unwrap();
                    let revision = selected(&Some(svc.clone())).cloned().unwrap_or_default();
                    svc.spec = build::service(&self.md, *preview, &revision).spec;
                }
                Action::Scale { deployment, replicas } => {
                    let d =
                        self.observed.deployments.iter_mut().find(|d| &d.name_any() == deployment).unwrap();
                    d.spec.as_mut().unwrap().replicas = Some(*replicas);
                }
                Action::SetScaleDownAt { deployment, at } => {
                    let d =
                        self.observed.deployments.iter_mut().find(|d| &d.name_any() == deployment).unwrap();
                    let annotations = d.metadata.annotations.get_or_insert_default();
                    match at {
                        Some(t) => annotations.insert(SCALE_DOWN_AT_ANNOTATION.into(), t.to_string()),
                        None => annotations.remove(SCALE_DOWN_AT_ANNOTATION),
                    };
                }
                Action::Select { preview: false, revision } => {
                    self.observed.active_service = Some(build::service(&self.md, false, revision))
                }
                Action::Select { preview: true, revision } => {
                    self.observed.preview_service = Some(build::service(&self.md, true, revision))
                }
                Action::ApplyHpa(h) => self.observed.hpa = Some((**h).clone()),
                Action::DeleteHpa => self.observed.hpa = None,
                Action::RunSmokeTest { .. } | Action::Publish(_) => {}
            }
        }
        let stored = self.md.status.clone().unwrap_or_default();
        let mut status = decision.status.clone();
        status.conditions =
            conditions::merge(&stored.conditions, &decision.conditions, Some(1), time(self.now));
        self.md.status = Some(status);
    }

    /// The endpoints controller: the active Service's EndpointSlice holds the available pods of the
    /// revisions its whole selector matches.
    fn endpoint_slices(&self) -> Vec<EndpointSlice> {
        let Some(selector) =
            self.observed.active_service.as_ref().and_then(|s| s.spec.as_ref()?.selector.clone())
        else {
            return vec![];
        };
        let matches = |d: &Deployment| {
            let labels = d
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref()?.labels.clone())
                .unwrap_or_default();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        };
        let endpoints = self
            .observed
            .deployments
            .iter()
            .filter(|d| matches(d))
            .flat_map(|d| {
                let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
                (0..available).map(move |i| k8s_openapi::api::discovery::v1::Endpoint {
                    addresses: vec![format!("{}-{i}", d.name_any())],
                    ..Default::default()
                })
            })
            .collect();
        vec![EndpointSlice { endpoints, ..Default::default() }]
    }

    /// Decides and applies; returns the decision.
    fn step(&mut self) -> Decision {
        let d = self.decide();
        self.apply(&d);
        d
    }

    /// The Deployment controller: every pod of `revision` asked for is available.
    fn pods_ready(&mut self, revision: &str) {
        let d = self.deployment(revision).unwrap();
        let replicas = d.spec.as_ref().unwrap().replicas;
        d.status = Some(DeploymentStatus { available_replicas: replicas, ..Default::default() });
    }

    /// A first deploy of the spec, settled: revision `a` active at full size.
    fn settled(mut self) -> (Self, String) {
        let a = self.desired();
        self.step();
        self.pods_ready(&a);
        self.step();
        assert_eq!(self.decide().actions, [], "settled");
        (self, a)
    }

    fn new_model(&mut self, uri: &str) -> String {
        self.md.spec.model.uri.0 = uri.into();
        self.desired()
    }

    fn annotate(&mut self, key: &str, value: &str) {
        self.md.metadata.annotations.get_or_insert_default().insert(key.into(), value.into());
    }

    fn phase(&self) -> ModelDeploymentPhase {
        self.md.status.as_ref().unwrap().phase
    }

    fn condition(&self, type_: &str) -> (String, String) {
        let c = self.md.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.clone(), c.reason.clone())
    }
}

fn defaults() -> controller::Defaults {
    controller::Defaults::for_tests()
}

fn time(s: i64) -> Time {
    Time(Timestamp::from_second(s).unwrap())
}

fn publish(reason: &str, note: impl Into<String>) -> Action {
    Action::Publish(Notice::normal(reason, note))
}

fn select(preview: bool, revision: &str) -> Action {
    Action::Select { preview, revision: revision.into() }
}

fn scale(revision: &str, replicas: i32) -> Action {
    Action::Scale { deployment: format!("iris-{revision}"), replicas }
}

#[test]
fn a_first_deploy_creates_the_revision_and_both_services_then_goes_healthy() {
    let mut c = given("");
    let a = c.desired();
    let d = c.step();
    assert_eq!(
        d.actions,
        [
            Action::CreateRevision { revision: a.clone(), replicas: 2 },
            publish("RevisionCreated", format!("created revision {a}")),
            select(false, &a),
            select(true, &a),
        ]
    );
    assert_eq!(d.requeue, Some(Duration::from_secs(10)), "looks at its pods after 10 s");
    let s = c.md.status.clone().unwrap();
    assert_eq!(s.phase, ModelDeploymentPhase::Progressing);
    assert_eq!((s.active_revision.as_deref(), s.stable_revision.as_deref()), (Some(a.as_str()), None));
    assert_eq!((s.replicas, s.available_replicas), (0, 0), "status speaks of what was observed");
    assert_eq!(s.url.as_deref(), Some("http://iris.ml.svc:8080"));
    assert_eq!(s.preview_url.as_deref(), Some("http://iris-preview.ml.svc:8080"));
    assert_eq!(s.selector, Some(format!("mizzen.dev/model-deployment=iris,mizzen.dev/revision={a}")));
    assert_eq!(s.progress_started_at, Some(time(NOW)));
    assert_eq!(c.condition("Progressing"), ("True".into(), "NewRevisionCreated".into()));
    assert_eq!(c.condition("Ready"), ("False".into(), "NotServing".into()));

    c.pods_ready(&a);
    let d = c.step();
    assert_eq!(d.actions, [], "the Services already select it");
    let s = c.md.status.clone().unwrap();
    assert_eq!(s.phase, ModelDeploymentPhase::Healthy);
    assert_eq!(s.stable_revision.as_deref(), Some(a.as_str()));
    assert_eq!((s.available_replicas, s.progress_started_at), (2, None));
    assert_eq!(c.condition("Ready"), ("True".into(), "Serving".into()));
    assert_eq!(c.condition("Available"), ("True".into(), "ActiveRevisionAvailable".into()));
}

#[test]
fn an_idle_model_deployment_decides_nothing_and_keeps_its_status() {
    let (c, _) = given("autoscaling: {minReplicas: 2, maxReplicas: 4}").settled();
    let d = c.decide();
    assert_eq!(d.actions, []);
    assert_eq!(d.status, c.md.status.clone().unwrap(), "status as stored: no write");
    assert!(conditions::up_to_date(&c.md.status.as_ref().unwrap().conditions, &d.conditions, Some(1)));
}

#[test]
fn a_manual_rollout_previews_waits_switches_and_keeps_the_old_revision_warm() {
    let (mut c, a) = given("strategy: {blueGreen: {autoPromotion: false, previewReplicas: 1}}").settled();
    let b = c.new_model("s3://m/b.onnx");
    let d = c.step();
    assert_eq!(
        d.actions,
        [
            Action::CreateRevision { revision: b.clone(), replicas: 1 },
            publish("RevisionCreated", format!("created revision {b}")),
            select(true, &b),
        ],
        "the active Service stays on {a}"
    );
    assert_eq!(c.condition("Progressing"), ("True".into(), "PreviewScalingUp".into()));
    assert!(d.requeue.is_some(), "wakes at the progress deadline");

    c.pods_ready(&b);
    let d = c.step();
    assert_eq!(
        d.actions,
        [publish(
            "PreviewAvailable",
            format!("revision {b} is available on the preview Service and waits for promotion")
        )]
    );
    assert_eq!(c.phase(), ModelDeploymentPhase::Paused);
    assert_eq!(c.step().actions, [], "the event is published once");

    // Only a promote command that names the revision acts.
    c.annotate(PROMOTE_ANNOTATION, "someone-else");
    assert_eq!(c.decide().actions, []);
    c.annotate(PROMOTE_ANNOTATION, &b);
    assert_eq!(c.step().actions, [scale(&b, 2)], "full size first");
    c.pods_ready(&b);
    let d = c.step();
    let warm_until = NOW + 30;
    assert_eq!(
        d.actions,
        [
            Action::SetScaleDownAt { deployment: format!("iris-{a}"), at: Some(warm_until) },
            select(false, &b),
            publish("Promoted", format!("active Service now selects revision {b}")),
        ]
    );
    let s = c.md.status.clone().unwrap();
    assert_eq!((s.active_revision, s.stable_revision), (Some(b.clone()), Some(b.clone())));
    assert_eq!(c.phase(), ModelDeploymentPhase::Healthy);
    // The stored status wakes the next pass, which waits for the deadline.
    let d = c.step();
    assert_eq!((d.actions, d.requeue), (vec![], Some(Duration::from_secs(30))));

    // After the delay the old revision goes, after the switch and with an event.
    c.now = warm_until + 1;
    let d = c.step();
    assert_eq!(
        d.actions,
        [
            scale(&a, 0),
            publish("ScaledDown", format!("scaled down revision {a}")),
            Action::SetScaleDownAt { deployment: format!("iris-{a}"), at: None },
        ]
    );
    assert_eq!(c.decide().actions, [], "settled again");
}

#[test]
fn abort_keeps_traffic_on_stable_and_warns_once() {
    let (mut c, a) = given("strategy: {blueGreen: {autoPromotion: false}}").settled();
    let b = c.new_model("s3://m/b.onnx");
    c.step();
    c.annotate(ABORT_ANNOTATION, &b);
    let d = c.step();
    assert_eq!(
        d.actions,
        [
            scale(&b, 0),
            Action::Publish(Notice::warning(
                "Aborted",
                format!("revision {b} did not become active; traffic stays on {a}")
            )),
        ]
    );
    assert_eq!(c.phase(), ModelDeploymentPhase::Degraded);
    assert_eq!(c.condition("Degraded"), ("True".into(), "RolloutAborted".into()));
    assert_eq!(c.condition("Ready"), ("True".into(), "Serving".into()), "{a} still serves");
    assert_eq!(c.decide().actions, [], "the warning is not repeated");
}

#[test]
fn a_smoke_test_runs_against_the_preview_before_anything_else_and_gates_the_switch() {
    let smoke = r#"strategy: {blueGreen: {smokeTest: {request: '{"inputs": []}'}}}"#;
    let (mut c, a) = given(smoke).settled();
    let b = c.new_model("s3://m/b.onnx");
    c.step();
    c.pods_ready(&b);
    let d = c.decide();
    let url = "http://iris-preview.ml.svc:8080".to_string();
    assert_eq!(d.actions, [Action::RunSmokeTest { revision: b.clone(), url }]);
    // Once the preview Service has its ClusterIP, the test goes there: no cluster DNS needed.
    let spec = c.observed.preview_service.as_mut().unwrap().spec.as_mut().unwrap();
    spec.cluster_ip = Some("10.96.0.42".into());
    let url = "http://10.96.0.42:8080".to_string();
    assert_eq!(c.decide().actions, [Action::RunSmokeTest { revision: b.clone(), url }]);
    assert_eq!(d.status.active_revision, Some(a.clone()));
    assert_eq!(
        d.conditions[2],
        Desired::new("Progressing", TRUE, "SmokeTestPending", format!("rolling out revision {b}"))
    );

    // apply records a failure in status: the rollout degrades, traffic stays.
    let mut failed = d.clone();
    failed.status.smoke_test =
        Some(SmokeTestStatus { revision: b.clone(), passed: false, message: "500".into() });
    c.apply(&failed);
    let d = c.step();
    assert_eq!(c.condition("Degraded"), ("True".into(), "SmokeTestFailed".into()));
    assert!(
        matches!(&d.actions[..], [Action::Publish(n)] if n.reason == "SmokeTestFailed"),
        "{:?}",
        d.actions
    );
    assert!(!d.actions.iter().any(|a| matches!(a, Action::Select { preview: false, .. })));

    // A passed test lets the switch happen.
    let mut s = c.md.status.clone().unwrap();
    s.smoke_test = Some(SmokeTestStatus { revision: b.clone(), passed: true, message: String::new() });
    c.md.status = Some(s);
    assert!(c.step().actions.contains(&select(false, &b)));
}

#[test]
fn the_hpa_is_applied_when_it_differs_and_deleted_only_if_ours() {
    let (mut c, _) = given("autoscaling: {minReplicas: 2, maxReplicas: 4}").settled();
    assert!(c.observed.hpa.is_some(), "the first deploy applied it");
    c.md.spec.autoscaling.as_mut().unwrap().max_replicas = 6;
    let d = c.step();
    assert!(matches!(&d.actions[..], [Action::ApplyHpa(h)] if h.spec.as_ref().unwrap().max_replicas == 6));

    // Turned off: deleted, because the operator owns it.
    c.md.spec.autoscaling = None;
    c.observed.hpa.as_mut().unwrap().metadata.owner_references =
        Some(vec![OwnerReference { uid: "uid-iris".into(), ..Default::default() }]);
    assert_eq!(c.step().actions, [Action::DeleteHpa]);
    // Someone else's HPA of the same name is left alone.
    c.observed.hpa = Some(HorizontalPodAutoscaler {
        metadata: ObjectMeta { name: Some("iris".into()), ..Default::default() },
        ..Default::default()
    });
    assert_eq!(c.decide().actions, []);
}

#[test]
fn a_lost_active_service_is_recreated_on_the_stable_revision_without_a_promotion_event() {
    let (mut c, a) = given("").settled();
    c.observed.active_service = None;
    assert_eq!(c.step().actions, [select(false, &a)]);
}

#[test]
fn a_service_pointing_at_no_revision_goes_back_to_the_active_one() {
    let (mut c, a) = given("").settled();
    c.observed.active_service = Some(build::service(&c.md, false, "r-gone"));
    let d = c.step();
    let note = format!("Service iris selected revision r-gone; set back to the active revision {a}");
    assert_eq!(d.actions, [select(false, &a), Action::Publish(Notice::warning("ServiceCorrected", note))]);
}

#[test]
fn a_scaled_revision_is_resized_through_its_scale_and_foreign_deployments_are_ignored() {
    let (mut c, a) = given("").settled();
    // A Deployment with the ModelDeployment's label but no revision is not one of its revisions.
    let mut stray = build::deployment(&c.md, &build::served(&c.md, None), "x", 5, &defaults());
    stray.metadata.labels.as_mut().unwrap().remove(REVISION_LABEL);
    c.observed.deployments.push(stray);
    c.md.spec.replicas = 4;
    assert_eq!(c.step().actions, [scale(&a, 4)]);
    assert_eq!(c.condition("Progressing"), ("True".into(), "ScalingActive".into()));
    c.pods_ready(&a);
    assert_eq!(c.step().actions, []);
    assert_eq!(c.phase(), ModelDeploymentPhase::Healthy);
}

#[test]
fn old_revisions_left_at_size_without_a_deadline_are_scaled_down() {
    let (mut c, a) = given("").settled();
    let mut old = build::deployment(&c.md, &build::served(&c.md, None), "rold", 2, &defaults());
    old.metadata.annotations = Some(BTreeMap::new());
    c.observed.deployments.push(old);
    assert_eq!(c.step().actions, [scale("rold", 0), publish("ScaledDown", "scaled down revision rold")]);
    assert_eq!(c.md.status.as_ref().unwrap().active_revision, Some(a));
}

// --- A messy cluster: edited, conflicting and foreign objects, and rollouts that cannot finish. ----------

/// A rollout of `b` whose pods never become available (say, a nodeSelector nothing matches).
fn stuck_rollout(extra: &str) -> (Cluster, String, String) {
    rolling_out_b(
        given(&format!("strategy: {{blueGreen: {{progressDeadlineSeconds: 60{extra}}}}}")).settled(),
    )
}

#[test]
fn an_aborted_rollout_stays_aborted_until_retried_or_the_spec_changes() {
    let (mut c, a, b) = stuck_rollout(", progressDeadlineAbort: true");
    c.now += 61;
    let d = c.step();
    let aborted = Action::Publish(Notice::warning(
        "Aborted",
        format!("revision {b} did not become active; traffic stays on {a}"),
    ));
    assert_eq!(d.actions, [scale(&b, 0), aborted]);
    assert_eq!(c.md.status.as_ref().unwrap().aborted_at, Some(time(NOW + 61)));
    // Time passes: no restart, no second abort, no new event (the loop this replaces aborted every 2 s).
    for _ in 0..5 {
        c.now += 30;
        let d = c.step();
        assert_eq!((d.actions, d.requeue), (vec![], None));
        assert_eq!(c.condition("Degraded"), ("True".into(), "RolloutAborted".into()));
    }
    // A retry dated before the abort, or in the future, does nothing.
    c.annotate(RETRY_ANNOTATION, &(NOW + 10).to_string());
    assert_eq!(c.decide().actions, []);
    c.annotate(RETRY_ANNOTATION, &(c.now + 100).to_string());
    assert_eq!(c.decide().actions, []);
    // A later one starts the rollout again, with a fresh deadline.
    let retry_at = Timestamp::from_second(NOW + 61).unwrap().checked_add(jiff_secs(1)).unwrap();
    c.annotate(RETRY_ANNOTATION, &retry_at.to_string());
    assert_eq!(c.step().actions, [scale(&b, 2)]);
    assert_eq!(c.condition("Progressing"), ("True".into(), "PreviewScalingUp".into()));
    assert_eq!(c.md.status.as_ref().unwrap().aborted_at, None);
    // A new spec is a new rollout, aborted or not.
    c.now += 61;
    c.step();
    assert_eq!(c.condition("Degraded"), ("True".into(), "RolloutAborted".into()));
    let b2 = c.new_model("s3://m/b2.onnx");
    let d = c.step();
    assert_eq!(d.actions[0], Action::CreateRevision { revision: b2, replicas: 2 });
    assert_eq!(c.phase(), ModelDeploymentPhase::Progressing);
}

fn jiff_secs(s: i64) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(s)
}

#[test]
fn a_commanded_abort_lasts_after_the_annotation_goes_until_a_retry() {
    let (mut c, a, b) = rolling_out_b(given("strategy: {blueGreen: {autoPromotion: false}}").settled());
    c.annotate(ABORT_ANNOTATION, &b);
    c.step();
    c.md.metadata.annotations.as_mut().unwrap().remove(ABORT_ANNOTATION);
    c.now += 5;
    assert_eq!(c.step().actions, []);
    assert_eq!(c.md.status.as_ref().unwrap().active_revision, Some(a));
    c.annotate(RETRY_ANNOTATION, &c.now.to_string());
    assert_eq!(c.step().actions, [scale(&b, 2)]);
}

/// Settled on `a`, then rolling out `b` (created, not yet available).
fn rolling_out_b((mut c, a): (Cluster, String)) -> (Cluster, String, String) {
    let b = c.new_model("s3://m/b.onnx");
    c.step();
    (c, a, b)
}

#[test]
fn a_hand_edited_active_selector_is_set_back_not_taken_as_a_promotion() {
    let (mut c, a, b) = rolling_out_b(given("strategy: {blueGreen: {autoPromotion: false}}").settled());
    c.pods_ready(&b);
    c.step();
    assert_eq!(c.phase(), ModelDeploymentPhase::Paused);
    // kubectl patch svc/iris: select the preview by hand.
    c.observed.active_service = Some(build::service(&c.md, false, &b));
    let d = c.step();
    let note = format!("Service iris selected revision {b}; set back to the active revision {a}");
    assert_eq!(d.actions, [select(false, &a), Action::Publish(Notice::warning("ServiceCorrected", note))]);
    let s = c.md.status.clone().unwrap();
    assert_eq!(s.active_revision, Some(a.clone()), "the operator's record decides what is active");
    assert_eq!(c.phase(), ModelDeploymentPhase::Paused, "still waiting for the promotion");
    assert!(!d.actions.iter().any(|x| matches!(x, Action::Scale { .. })), "nothing scaled down");
}

#[test]
fn foreign_selector_keys_and_edited_ports_are_removed() {
    let (mut c, _) = given("").settled();
    let spec = c.observed.active_service.as_mut().unwrap().spec.as_mut().unwrap();
    spec.selector.as_mut().unwrap().insert("tamper".into(), "x".into());
    let d = c.step();
    assert_eq!(
        d.actions,
        [
            Action::RestoreService { preview: false, drop_keys: vec!["tamper".into()] },
            Action::Publish(Notice::warning(
                "ServiceCorrected",
                "Service iris: selector keys tamper removed"
            )),
        ]
    );
    assert_eq!(c.decide().actions, []);
    let spec = c.observed.preview_service.as_mut().unwrap().spec.as_mut().unwrap();
    spec.ports.as_mut().unwrap()[0].port = 9999;
    let d = c.step();
    assert_eq!(
        d.actions,
        [
            Action::RestoreService { preview: true, drop_keys: vec![] },
            Action::Publish(Notice::warning(
                "ServiceCorrected",
                "Service iris-preview: its ports were edited; set back"
            )),
        ]
    );
    assert_eq!(c.decide().actions, []);
}

#[test]
fn a_users_deployment_with_a_revisions_name_is_reported_not_overwritten() {
    let mut c = given("");
    let a = c.desired();
    let mut theirs = build::deployment(&c.md, &build::served(&c.md, None), &a, 1, &defaults());
    theirs.metadata.owner_references = None;
    theirs.metadata.labels = None;
    c.observed.desired_deployment = Some(theirs);
    let d = c.step();
    let message = format!(
        "Deployment iris-{a} not made by this ModelDeployment; the operator leaves it alone: delete or rename it"
    );
    assert_eq!(d.actions, [Action::Publish(Notice::warning("ChildConflict", message.clone()))]);
    assert_eq!(d.requeue, Some(CONFLICT_RETRY), "such objects are not watched");
    assert_eq!(c.phase(), ModelDeploymentPhase::Degraded);
    assert_eq!(c.condition("Degraded"), ("True".into(), "ChildConflict".into()));
    assert_eq!(c.step().actions, [], "said once");
}

#[test]
fn a_users_service_is_never_taken_over_and_is_left_alone() {
    let mut c = given("");
    let mut theirs = build::service(&c.md, false, "theirs");
    theirs.metadata.owner_references = None;
    c.observed.active_service = Some(theirs.clone());
    let d = c.step();
    assert!(
        matches!(&d.actions[..], [Action::Publish(n)] if n.reason == "ChildConflict" && n.note.starts_with("Service iris not made"))
    );
    assert_eq!(c.observed.active_service, Some(theirs), "untouched");
    // Once the user removes it, the ModelDeployment deploys.
    c.observed.active_service = None;
    let d = c.step();
    assert!(matches!(d.actions[0], Action::CreateRevision { .. }));
    assert_eq!(c.phase(), ModelDeploymentPhase::Progressing);
}

#[test]
fn labelled_deployments_someone_else_made_are_not_revisions() {
    let (mut c, _) = given("").settled();
    let mut copy = build::deployment(&c.md, &build::served(&c.md, None), "rcopy", 3, &defaults());
    copy.metadata.owner_references = None;
    c.observed.deployments.push(copy);
    assert_eq!(c.decide().actions, [], "not scaled down, not deleted");
}

#[test]
fn the_progress_deadline_holds_for_a_first_deploy_and_for_scaling_the_active_revision() {
    let mut c = given("strategy: {blueGreen: {progressDeadlineSeconds: 60}}");
    let a = c.desired();
    let d = c.step();
    assert_eq!(d.requeue, Some(Duration::from_secs(10)), "looks at the pods after 10 s");
    c.now += 50;
    assert_eq!(c.step().requeue, Some(Duration::from_secs(11)), "then at the deadline, before a minute");
    c.now += 11;
    c.step();
    assert_eq!(c.condition("Degraded"), ("True".into(), "ProgressDeadlineExceeded".into()));
    assert_eq!(c.condition("Progressing"), ("False".into(), "ProgressDeadlineExceeded".into()));
    c.pods_ready(&a);
    c.step();
    assert_eq!(c.phase(), ModelDeploymentPhase::Healthy, "recovers once available");

    c.md.spec.replicas = 5;
    c.step();
    assert_eq!(c.condition("Progressing"), ("True".into(), "ScalingActive".into()));
    c.now += 61;
    c.step();
    assert_eq!(c.condition("Degraded"), ("True".into(), "ProgressDeadlineExceeded".into()));
    assert_eq!(c.md.status.as_ref().unwrap().active_revision, Some(a), "traffic stays");
}

#[test]
fn old_revisions_beyond_the_history_limit_are_deleted_oldest_first() {
    let (mut c, first) =
        given("revisionHistoryLimit: 1\nstrategy: {blueGreen: {scaleDownDelaySeconds: 0}}").settled();
    let mut made = vec![first];
    for i in 1..4 {
        c.now += 10;
        let r = c.new_model(&format!("s3://m/{i}.onnx"));
        c.step();
        c.pods_ready(&r);
        for _ in 0..3 {
            c.step();
        }
        made.push(r);
    }
    let left: Vec<String> = c.observed.deployments.iter().map(|d| d.name_any()).collect();
    assert_eq!(
        left,
        [format!("iris-{}", made[2]), format!("iris-{}", made[3])],
        "the active one and one for history"
    );
    assert_eq!(c.decide().actions, []);
}

#[test]
fn ready_is_judged_by_the_services_endpoints_not_only_by_the_revision() {
    let (mut c, a) = given("").settled();
    assert_eq!(c.condition("Ready"), ("True".into(), "Serving".into()));
    // The Deployment says 2 available, but the Service reaches one ready pod (one failing its readiness
    // probe after minReadySeconds, or an edit of the selector not yet undone).
    c.endpoints_fixed = true;
    let ready = |n: i32| k8s_openapi::api::discovery::v1::Endpoint {
        addresses: vec![format!("10.0.0.{n}")],
        conditions: Some(k8s_openapi::api::discovery::v1::EndpointConditions {
            ready: Some(n == 1),
            ..Default::default()
        }),
        ..Default::default()
    };
    c.observed.endpoints = vec![EndpointSlice { endpoints: vec![ready(1), ready(2)], ..Default::default() }];
    c.step();
    assert_eq!(c.condition("Ready"), ("False".into(), "NotServing".into()));
    assert_eq!(c.condition("Available"), ("True".into(), "ActiveRevisionAvailable".into()));
    assert_eq!(c.md.status.as_ref().unwrap().active_revision, Some(a));
    // Both ready (the same address listed in two slices counts once).
    let both = EndpointSlice { endpoints: vec![ready(1), ready(1)], ..Default::default() };
    c.observed.endpoints = vec![both, EndpointSlice { endpoints: vec![ready(1)], ..Default::default() }];
    c.step();
    assert_eq!(c.condition("Ready").0, "False");
    c.endpoints_fixed = false;
    c.step();
    assert_eq!(c.condition("Ready"), ("True".into(), "Serving".into()));
}

/// A pod of the revision being rolled out that fails (here: mizzen-serve exits, the model cannot be read)
/// degrades the ModelDeployment at once with the reason, one warning, traffic staying where it is; the
/// rollout keeps looking every 10 s, and the deadline's message keeps the reason.
#[test]
fn failing_pods_are_reported_with_their_reason_before_the_deadline() {
    let (mut c, a) = given("").settled();
    let b = c.new_model("s3://m/missing.onnx");
    c.step();
    let crash: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "iris-b-1", "labels": {REVISION_LABEL: b}},
        "status": {"containerStatuses": [{
            "name": "mizzen-serve", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "message": "Error: s3://m/missing.onnx: not found\n"}},
        }]},
    }))
    .unwrap();
    c.observed.pods = vec![crash];
    let d = c.step();
    let why = format!(
        "revision {b}: pod iris-b-1: container mizzen-serve exited with code 1: Error: s3://m/missing.onnx: \
         not found (restarting)"
    );
    assert_eq!(d.actions, [Action::Publish(Notice::warning("PodsFailing", why.clone()))]);
    assert_eq!(d.requeue, Some(Duration::from_secs(10)));
    assert_eq!(c.phase(), ModelDeploymentPhase::Degraded);
    assert_eq!(c.condition("Degraded"), ("True".into(), "PodsFailing".into()));
    assert_eq!(c.condition("Progressing"), ("True".into(), "PreviewScalingUp".into()), "still waiting");
    assert_eq!(c.md.status.as_ref().unwrap().active_revision, Some(a.clone()));
    assert_eq!(c.step().actions, [], "said once");
    // Past the deadline the reason stays in the message.
    c.now += 601;
    c.step();
    let degraded = c.md.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(
        (degraded.reason.as_str(), degraded.message.as_str()),
        ("ProgressDeadlineExceeded", why.as_str())
    );
    // Pods that come up clear it.
    c.observed.pods.clear();
    c.pods_ready(&b);
    c.step();
    c.step();
    assert_eq!(c.phase(), ModelDeploymentPhase::Healthy);
}
