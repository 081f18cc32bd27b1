//! The ModelDeployment decision: from the object, its observed children and the clock to the status and
//! the writes. The blue-green rules are the planner's ([`plan`]); this turns its plan into the difference
//! from what is observed, so an idle ModelDeployment decides no action at all.

use super::build::{self, REVISION_LABEL, SCALE_DOWN_AT_ANNOTATION};
use super::observe::Observed;
use super::plan::{self, Plan, Revision, Smoke, State, World};
use crate::api::v1alpha1::ModelDeploymentStatus;
use crate::api::v1alpha1::common::status::{FALSE, TRUE};
use crate::api::v1alpha1::model_deployment::{
    ABORT_ANNOTATION, ModelDeployment, ModelDeploymentPhase, PROMOTE_ANNOTATION, ResolvedModel,
};
use crate::conditions::Desired;
use crate::controller::{self, Notice};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use std::time::Duration;

/// One write (or probe) the reconcile makes, in the order decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send the smoke test to the preview Service; its result goes into status.
    RunSmokeTest {
        revision: String,
        url: String,
    },
    /// Create the Deployment `NAME-REVISION` of the desired revision.
    CreateRevision {
        revision: String,
        replicas: i32,
    },
    /// Set an existing revision's replicas (through the scale subresource; its template never changes).
    Scale {
        deployment: String,
        replicas: i32,
    },
    /// Set or clear when a revision kept warm is scaled down.
    SetScaleDownAt {
        deployment: String,
        at: Option<i64>,
    },
    /// Point the active (`NAME`) or preview (`NAME-preview`) Service at a revision.
    Select {
        preview: bool,
        revision: String,
    },
    ApplyHpa(Box<HorizontalPodAutoscaler>),
    DeleteHpa,
    Publish(Notice),
}

pub type Decision = controller::Decision<ModelDeploymentStatus, Action>;

/// The revision a Deployment belongs to.
fn revision_of(d: &Deployment) -> Option<&String> {
    d.labels().get(REVISION_LABEL)
}

fn replicas_of(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.replicas)
}

/// The revision a Service selects.
fn selected(svc: &Option<Service>) -> Option<&String> {
    svc.as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.selector.as_ref())
        .and_then(|s| s.get(REVISION_LABEL))
}

fn seconds(t: &Option<Time>) -> Option<i64> {
    t.as_ref().map(|t| t.0.as_second())
}

fn time(s: Option<i64>) -> Option<Time> {
    s.and_then(|s| Timestamp::from_second(s).ok()).map(Time)
}

/// The planner's view of the world.
fn world<'a>(md: &'a ModelDeployment, observed: &Observed, desired: String, now: i64) -> World<'a> {
    let revisions: Vec<Revision> = observed
        .deployments
        .iter()
        .filter_map(|d| {
            Some(Revision {
                name: revision_of(d)?.clone(),
                replicas: replicas_of(d).unwrap_or(1),
                available: d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0),
                scale_down_at: d.annotations().get(SCALE_DOWN_AT_ANNOTATION).and_then(|v| v.parse().ok()),
            })
        })
        .collect();
    let status = md.status.clone().unwrap_or_default();
    let smoke = match (&md.spec.strategy.blue_green.smoke_test, &status.smoke_test) {
        (None, _) => Smoke::NotConfigured,
        (Some(_), Some(s)) if s.revision == desired && s.passed => Smoke::Passed,
        (Some(_), Some(s)) if s.revision == desired => Smoke::Failed,
        (Some(_), _) => Smoke::Pending,
    };
    World {
        spec: &md.spec,
        active: selected(&observed.active_service)
            .filter(|a| revisions.iter().any(|r| &r.name == *a))
            .cloned(),
        desired,
        revisions,
        stable: status.stable_revision,
        previous_preview: status.preview_revision,
        progress_started_at: seconds(&status.progress_started_at),
        preview_available_at: seconds(&status.preview_available_at),
        promote: md.annotations().get(PROMOTE_ANNOTATION).cloned(),
        abort: md.annotations().get(ABORT_ANNOTATION).cloned(),
        smoke,
        now,
    }
}

pub fn decide(md: &ModelDeployment, observed: &Observed, now: i64) -> Decision {
    let name = md.name_any();
    let ns = md.namespace().unwrap_or_default();
    let preview_url = format!("http://{name}-preview.{ns}.svc:{}", build::HTTP_PORT);
    let desired = build::revision(&md.spec, &build::served_name(md));
    let world = world(md, observed, desired.clone(), now);
    let plan = plan::plan(&world);
    let mut actions = Vec::new();

    if plan.state == State::Progressing("SmokeTestPending") {
        actions.push(Action::RunSmokeTest { revision: desired.clone(), url: preview_url.clone() });
    }
    // The desired revision's Deployment is made in full; other revisions change only by scale, since their
    // pod template must stay as it was.
    for (rev, &replicas) in &plan.replicas {
        let deadline = plan.scale_down_at.get(rev).copied();
        match observed.deployments.iter().find(|d| revision_of(d) == Some(rev)) {
            None if rev == &desired => {
                actions.push(Action::CreateRevision { revision: rev.clone(), replicas });
                actions.push(Action::Publish(Notice::normal(
                    "RevisionCreated",
                    format!("created revision {rev}"),
                )));
            }
            None => {}
            Some(d) => {
                if replicas_of(d) != Some(replicas) {
                    actions.push(Action::Scale { deployment: d.name_any(), replicas });
                }
                if deadline.map(|t| t.to_string()).as_ref() != d.annotations().get(SCALE_DOWN_AT_ANNOTATION) {
                    actions.push(Action::SetScaleDownAt { deployment: d.name_any(), at: deadline });
                }
            }
        }
    }
    // A switch is one selector change. Before the desired revision's first pod exists the preview already
    // points at it (it serves nothing until ready).
    if selected(&observed.active_service) != Some(&plan.active) {
        actions.push(Action::Select { preview: false, revision: plan.active.clone() });
        if observed.active_service.is_some() {
            let note = format!("active Service now selects revision {}", plan.active);
            actions.push(Action::Publish(Notice::normal("Promoted", note)));
        }
    }
    if selected(&observed.preview_service) != Some(&plan.preview) {
        actions.push(Action::Select { preview: true, revision: plan.preview.clone() });
    }
    // Scale-downs last: a revision the active Service just stopped selecting is released only after the
    // switch is written.
    for d in &observed.deployments {
        if let Some(rev) = revision_of(d)
            && !plan.replicas.contains_key(rev)
            && replicas_of(d).unwrap_or(1) > 0
        {
            actions.push(Action::Scale { deployment: d.name_any(), replicas: 0 });
            actions
                .push(Action::Publish(Notice::normal("ScaledDown", format!("scaled down revision {rev}"))));
        }
    }
    match build::hpa(md) {
        Some(h) => {
            let current = observed.hpa.as_ref().map(|c| (&c.spec, c.metadata.labels.as_ref()));
            if current != Some((&h.spec, h.metadata.labels.as_ref())) {
                actions.push(Action::ApplyHpa(Box::new(h)));
            }
        }
        None => {
            let uid = md.uid().unwrap_or_default();
            if observed.hpa.iter().flat_map(|h| h.owner_references()).any(|o| o.uid == uid) {
                actions.push(Action::DeleteHpa);
            }
        }
    }
    let stored = md.status.clone().unwrap_or_default();
    if let Some(notice) = transition(&stored, &plan) {
        actions.push(Action::Publish(notice));
    }

    let (status, conditions) = status(md, &world.revisions, &plan, &ns, preview_url);
    Decision {
        status,
        conditions,
        actions,
        requeue: plan.wake_at.map(|t| Duration::from_secs((t - now).max(1) as u64)),
    }
}

/// The event for a change of rollout state since the status was last written, if any.
fn transition(old: &ModelDeploymentStatus, plan: &Plan) -> Option<Notice> {
    let reason_of =
        |t: &str| old.conditions.iter().find(|c| c.type_ == t && c.status == TRUE).map(|c| c.reason.as_str());
    match &plan.state {
        State::Paused("AwaitingPromotion") if reason_of("Paused") != Some("AwaitingPromotion") => {
            Some(Notice::normal(
                "PreviewAvailable",
                format!(
                    "revision {} is available on the preview Service and waits for promotion",
                    plan.preview
                ),
            ))
        }
        State::Paused("Paused") if reason_of("Paused") != Some("Paused") => {
            Some(Notice::normal("RolloutPaused", format!("rollout of revision {} is paused", plan.preview)))
        }
        State::Degraded(r) if reason_of("Degraded") != Some(r) => Some(Notice::warning(
            if *r == "RolloutAborted" { "Aborted" } else { r },
            format!("revision {} did not become active; traffic stays on {}", plan.preview, plan.active),
        )),
        _ => None,
    }
}

fn desired_conditions(plan: &Plan, active_available: bool) -> (ModelDeploymentPhase, Vec<Desired>) {
    let c = Desired::new;
    let (phase, progressing, paused, degraded) = match &plan.state {
        State::Healthy => (
            ModelDeploymentPhase::Healthy,
            c("Progressing", TRUE, "NewRevisionAvailable", format!("revision {} is active", plan.active)),
            c("Paused", FALSE, "NotPaused", String::new()),
            c("Degraded", FALSE, "AsExpected", String::new()),
        ),
        State::Progressing(r) => (
            ModelDeploymentPhase::Progressing,
            c("Progressing", TRUE, r, format!("rolling out revision {}", plan.preview)),
            c("Paused", FALSE, "NotPaused", String::new()),
            c("Degraded", FALSE, "AsExpected", String::new()),
        ),
        State::Paused(r) => (
            ModelDeploymentPhase::Paused,
            c(
                "Progressing",
                TRUE,
                "AwaitingPromotion",
                format!("revision {} waits for promotion", plan.preview),
            ),
            c("Paused", TRUE, r, format!("revision {} is available on the preview Service", plan.preview)),
            c("Degraded", FALSE, "AsExpected", String::new()),
        ),
        State::Degraded(r) => (
            ModelDeploymentPhase::Degraded,
            c("Progressing", FALSE, r, format!("revision {} did not become active", plan.preview)),
            c("Paused", FALSE, "NotPaused", String::new()),
            c("Degraded", TRUE, r, format!("traffic stays on revision {}", plan.active)),
        ),
    };
    let available = if active_available {
        c("Available", TRUE, "ActiveRevisionAvailable", format!("revision {} is available", plan.active))
    } else {
        c(
            "Available",
            FALSE,
            "ActiveRevisionUnavailable",
            format!("revision {} is not fully available", plan.active),
        )
    };
    let ready = c(
        "Ready",
        if active_available { TRUE } else { FALSE },
        if active_available { "Serving" } else { "NotServing" },
        format!("the Service serves revision {}", plan.active),
    );
    (phase, vec![ready, available, progressing, paused, degraded])
}

/// The status the plan gives: what serves, how big it is, and the rollout's clocks.
fn status(
    md: &ModelDeployment,
    revisions: &[Revision],
    plan: &Plan,
    ns: &str,
    preview_url: String,
) -> (ModelDeploymentStatus, Vec<Desired>) {
    let name = md.name_any();
    let full = md.spec.replicas.max(0);
    let active = revisions.iter().find(|r| r.name == plan.active);
    let preview = revisions.iter().find(|r| r.name == plan.preview);
    let available = active.map_or(0, |r| r.available);
    let (phase, conditions) =
        desired_conditions(plan, active.is_some_and(|r| r.available >= full && r.replicas >= full));
    let stored = md.status.clone().unwrap_or_default();
    let status = ModelDeploymentStatus {
        observed_generation: md.metadata.generation,
        phase,
        conditions: stored.conditions,
        active_revision: Some(plan.active.clone()),
        preview_revision: Some(plan.preview.clone()),
        stable_revision: plan.stable.clone(),
        replicas: active.map_or(0, |r| r.replicas),
        ready_replicas: available,
        available_replicas: available,
        updated_replicas: preview.map_or(0, |r| r.available),
        selector: Some(format!("{}={name},{REVISION_LABEL}={}", build::MODEL_DEPLOYMENT_LABEL, plan.active)),
        url: Some(format!("http://{name}.{ns}.svc:{}", build::HTTP_PORT)),
        preview_url: Some(preview_url),
        model: Some(ResolvedModel {
            uri: md.spec.model.uri.0.clone(),
            name: build::served_name(md),
            version: md.spec.model.version.clone().unwrap_or_else(|| "1".into()),
            sha256: md.spec.model.sha256.clone(),
        }),
        progress_started_at: time(plan.progress_started_at),
        preview_available_at: time(plan.preview_available_at),
        smoke_test: stored.smoke_test,
    };
    (status, conditions)
}

#[cfg(test)]
mod tests;
