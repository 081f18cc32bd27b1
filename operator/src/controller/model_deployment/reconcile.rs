//! The ModelDeployment reconcile: observe the children, ask the planner, apply the difference, write the
//! status. Writes happen only where observed and desired differ, so an idle ModelDeployment causes none.

use super::build::{self, REVISION_LABEL};
use super::plan::{self, Plan, Revision, Smoke, State, World};
use super::smoke;
use crate::api::v1alpha1::common::status::{FALSE, TRUE};
use crate::api::v1alpha1::model_deployment::{
    ABORT_ANNOTATION, ModelDeployment, ModelDeploymentPhase, PROMOTE_ANNOTATION, ResolvedModel,
    SmokeTestStatus,
};
use crate::conditions::Desired;
use crate::controller::{Context, Error, FIELD_MANAGER, call, merge_params, update_status};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Annotation on an old revision's Deployment: when it is scaled down (seconds since the epoch).
pub const SCALE_DOWN_AT_ANNOTATION: &str = "mizzen.dev/scale-down-at";

fn seconds(t: &Option<Time>) -> Option<i64> {
    t.as_ref().map(|t| t.0.as_second())
}

fn time(s: Option<i64>) -> Option<Time> {
    s.and_then(|s| Timestamp::from_second(s).ok()).map(Time)
}

pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = md.namespace().ok_or(Error::InvalidObject("a namespaced object without a namespace"))?;
    let name = md.name_any();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
    let ssa = PatchParams::apply(FIELD_MANAGER).force();

    // Observe.
    let selector = format!("{}={name}", build::MODEL_DEPLOYMENT_LABEL);
    let preview_name = format!("{name}-preview");
    // The three reads are independent: one round trip instead of three.
    let list_params = ListParams::default().labels(&selector);
    let (owned, active_svc, preview_svc) = tokio::try_join!(
        async { deployments.list(&list_params).await.map_err(call("read_deployments")) },
        async { services.get_opt(&name).await.map_err(call("read_service")) },
        async { services.get_opt(&preview_name).await.map_err(call("read_service")) },
    )?;
    let owned = owned.items;
    let revisions: Vec<Revision> = owned
        .iter()
        .filter_map(|d| {
            let revision = d.labels().get(REVISION_LABEL)?.clone();
            Some(Revision {
                name: revision,
                replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                available: d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0),
                scale_down_at: d.annotations().get(SCALE_DOWN_AT_ANNOTATION).and_then(|v| v.parse().ok()),
            })
        })
        .collect();
    let selected = |svc: &Option<Service>| {
        svc.as_ref()
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.get(REVISION_LABEL).cloned())
    };
    let served = build::served_name(&md);
    let desired = build::revision(&md.spec, &served);
    let status = md.status.clone().unwrap_or_default();
    let now = Timestamp::now().as_second();
    let smoke_state = match (&md.spec.strategy.blue_green.smoke_test, &status.smoke_test) {
        (None, _) => Smoke::NotConfigured,
        (Some(_), Some(s)) if s.revision == desired => {
            if s.passed {
                Smoke::Passed
            } else {
                Smoke::Failed
            }
        }
        (Some(_), _) => Smoke::Pending,
    };
    let world = World {
        spec: &md.spec,
        desired: desired.clone(),
        revisions: revisions.clone(),
        active: selected(&active_svc).filter(|a| revisions.iter().any(|r| &r.name == a)),
        stable: status.stable_revision.clone(),
        previous_preview: status.preview_revision.clone(),
        progress_started_at: seconds(&status.progress_started_at),
        preview_available_at: seconds(&status.preview_available_at),
        promote: md.annotations().get(PROMOTE_ANNOTATION).cloned(),
        abort: md.annotations().get(ABORT_ANNOTATION).cloned(),
        smoke: smoke_state,
        now,
    };
    let plan = plan::plan(&world);
    let mut smoke_status = status.smoke_test.clone();
    let mut smoke_retry = false;
    if plan.state == State::Progressing("SmokeTestPending")
        && let Some(test) = &md.spec.strategy.blue_green.smoke_test
    {
        let preview_url = format!("http://{name}-preview.{ns}.svc:{}", build::HTTP_PORT);
        match smoke::run(&ctx.http, &preview_url, &served, test).await {
            // Not reachable yet (endpoints still propagating): try again shortly, record nothing.
            Err(smoke::Failure { retry: true, message }) => {
                tracing::info!(%name, %message, "smoke test not answered yet; retrying");
                smoke_retry = true;
            }
            result => {
                let (reason, note) = match &result {
                    Ok(()) => ("SmokeTestPassed", format!("revision {desired} answered the smoke test")),
                    Err(e) => ("SmokeTestFailed", format!("revision {desired}: {e}")),
                };
                publish(&ctx, &md, reason, note).await;
                smoke_status = Some(SmokeTestStatus {
                    revision: desired.clone(),
                    passed: result.is_ok(),
                    message: result.err().map(|e| e.message).unwrap_or_default(),
                });
            }
        }
    }

    // Apply: the desired revision's Deployment in full; other revisions only by scale, since their pod
    // template must stay as it was.
    for (rev, &replicas) in &plan.replicas {
        let observed = owned.iter().find(|d| d.labels().get(REVISION_LABEL) == Some(rev));
        let observed_replicas = observed.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas);
        let deadline = plan.scale_down_at.get(rev).map(|t| t.to_string());
        let observed_deadline = observed.and_then(|d| d.annotations().get(SCALE_DOWN_AT_ANNOTATION).cloned());
        match observed {
            None if rev == &desired => {
                let d = build::deployment(&md, rev, replicas, &ctx.defaults);
                deployments
                    .patch(&format!("{name}-{rev}"), &ssa, &Patch::Apply(&d))
                    .await
                    .map_err(call("apply_deployment"))?;
                publish(&ctx, &md, "RevisionCreated", format!("created revision {rev}")).await;
            }
            None => {}
            Some(d) => {
                let dname = d.name_any();
                if observed_replicas != Some(replicas) {
                    let scale = serde_json::json!({ "spec": { "replicas": replicas } });
                    deployments
                        .patch_scale(&dname, &merge_params(), &Patch::Merge(&scale))
                        .await
                        .map_err(call("scale_deployment"))?;
                }
                if deadline != observed_deadline {
                    let patch = serde_json::json!({ "metadata": { "annotations": { SCALE_DOWN_AT_ANNOTATION: deadline } } });
                    deployments
                        .patch(&dname, &merge_params(), &Patch::Merge(&patch))
                        .await
                        .map_err(call("annotate_deployment"))?;
                }
            }
        }
    }
    // Services: a switch is one selector change. Before the desired revision's first pod exists the
    // preview still points at it (it serves nothing until ready).
    if selected(&active_svc).as_deref() != Some(plan.active.as_str()) {
        services
            .patch(&name, &ssa, &Patch::Apply(&build::service(&md, false, &plan.active)))
            .await
            .map_err(call("apply_service"))?;
        if active_svc.is_some() {
            publish(&ctx, &md, "Promoted", format!("active Service now selects revision {}", plan.active))
                .await;
        }
    }
    if selected(&preview_svc).as_deref() != Some(plan.preview.as_str()) {
        services
            .patch(&preview_name, &ssa, &Patch::Apply(&build::service(&md, true, &plan.preview)))
            .await
            .map_err(call("apply_service"))?;
    }
    // Scale-downs last: a revision the active Service just stopped selecting is released only after the
    // switch is written.
    for d in &owned {
        let rev = d.labels().get(REVISION_LABEL);
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        if rev.is_some_and(|r| !plan.replicas.contains_key(r)) && replicas > 0 {
            let scale = serde_json::json!({ "spec": { "replicas": 0 } });
            deployments
                .patch_scale(&d.name_any(), &merge_params(), &Patch::Merge(&scale))
                .await
                .map_err(call("scale_deployment"))?;
            publish(
                &ctx,
                &md,
                "ScaledDown",
                format!("scaled down revision {}", rev.map_or("", |r| r.as_str())),
            )
            .await;
        }
    }
    match build::hpa(&md) {
        Some(h) => {
            let current = hpas.get_opt(&name).await.map_err(call("read_hpa"))?;
            if current.as_ref().map(|c| (&c.spec, c.metadata.labels.as_ref()))
                != Some((&h.spec, h.metadata.labels.as_ref()))
            {
                hpas.patch(&name, &ssa, &Patch::Apply(&h)).await.map_err(call("apply_hpa"))?;
            }
        }
        None => {
            if hpas.get_opt(&name).await.map_err(call("read_hpa"))?.is_some_and(|h| {
                h.metadata.owner_references.iter().flatten().any(|o| o.uid == md.uid().unwrap_or_default())
            }) {
                hpas.delete(&name, &DeleteParams::default()).await.map_err(call("delete_hpa"))?;
            }
        }
    }

    if let Some((type_, reason, note)) = transition(&status, &plan) {
        ctx.publish(&*md, type_, reason, note).await;
    }
    write_status(&md, &ctx, &plan, &revisions, &served, &ns, smoke_status).await?;
    let wake = if smoke_retry { Some(2) } else { plan.wake_at.map(|t| (t - now).max(1) as u64) };
    Ok(match (wake, &plan.state) {
        (Some(s), _) => Action::requeue(Duration::from_secs(s)),
        // Waiting for pods: their Deployment's status changes wake us.
        (None, _) => Action::await_change(),
    })
}

/// The event for a change of rollout state since the status was last written, if any.
fn transition(
    old: &crate::api::v1alpha1::ModelDeploymentStatus,
    plan: &Plan,
) -> Option<(EventType, &'static str, String)> {
    let reason_of =
        |t: &str| old.conditions.iter().find(|c| c.type_ == t && c.status == TRUE).map(|c| c.reason.as_str());
    match &plan.state {
        State::Paused("AwaitingPromotion") if reason_of("Paused") != Some("AwaitingPromotion") => Some((
            EventType::Normal,
            "PreviewAvailable",
            format!("revision {} is available on the preview Service and waits for promotion", plan.preview),
        )),
        State::Paused("Paused") if reason_of("Paused") != Some("Paused") => Some((
            EventType::Normal,
            "RolloutPaused",
            format!("rollout of revision {} is paused", plan.preview),
        )),
        State::Degraded(r) if reason_of("Degraded") != Some(r) => {
            let reason = if *r == "RolloutAborted" { "Aborted" } else { r };
            Some((
                EventType::Warning,
                reason,
                format!("revision {} did not become active; traffic stays on {}", plan.preview, plan.active),
            ))
        }
        _ => None,
    }
}

async fn publish(ctx: &Context, md: &ModelDeployment, reason: &str, note: String) {
    ctx.publish(md, EventType::Normal, reason, note).await
}

fn desired_conditions(plan: &Plan, active_available: bool) -> (ModelDeploymentPhase, Vec<Desired<'static>>) {
    let c = |type_, status, reason: &'static str, message: String| Desired { type_, status, reason, message };
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

async fn write_status(
    md: &ModelDeployment,
    ctx: &Context,
    plan: &Plan,
    revisions: &[Revision],
    served: &str,
    ns: &str,
    smoke_test: Option<SmokeTestStatus>,
) -> Result<(), Error> {
    let name = md.name_any();
    let full = md.spec.replicas.max(0);
    let active = revisions.iter().find(|r| r.name == plan.active);
    let preview = revisions.iter().find(|r| r.name == plan.preview);
    let available = active.map_or(0, |r| r.available);
    let (phase, desired) =
        desired_conditions(plan, active.is_some_and(|r| r.available >= full && r.replicas >= full));
    let generation = md.metadata.generation;
    let stored = md.status.clone().unwrap_or_default();
    let status = crate::api::v1alpha1::ModelDeploymentStatus {
        observed_generation: generation,
        phase,
        conditions: stored.conditions.clone(),
        active_revision: Some(plan.active.clone()),
        preview_revision: Some(plan.preview.clone()),
        stable_revision: plan.stable.clone(),
        replicas: active.map_or(0, |r| r.replicas),
        ready_replicas: available,
        available_replicas: available,
        updated_replicas: preview.map_or(0, |r| r.available),
        selector: Some(format!("{}={name},{REVISION_LABEL}={}", build::MODEL_DEPLOYMENT_LABEL, plan.active)),
        url: Some(format!("http://{name}.{ns}.svc:{}", build::HTTP_PORT)),
        preview_url: Some(format!("http://{name}-preview.{ns}.svc:{}", build::HTTP_PORT)),
        model: Some(ResolvedModel {
            uri: md.spec.model.uri.0.clone(),
            name: served.to_string(),
            version: md.spec.model.version.clone().unwrap_or_else(|| "1".into()),
            sha256: md.spec.model.sha256.clone(),
        }),
        progress_started_at: time(plan.progress_started_at),
        preview_available_at: time(plan.preview_available_at),
        smoke_test,
    };
    update_status(ctx, md, &stored, &status, &desired).await
}
