//! The ModelDeployment decision: from the object, its observed children and the clock to the status and
//! the writes. The blue-green rules are the planner's ([`plan`]); this turns its plan into the difference
//! from what is observed, so an idle ModelDeployment decides no action at all.

use super::build::{self, REVISION_LABEL, SCALE_DOWN_AT_ANNOTATION};
use super::observe::Observed;
use super::plan::{self, Plan, Revision, Smoke, State, World};
use crate::api::v1alpha1::ModelDeploymentStatus;
use crate::api::v1alpha1::common::status::{FALSE, TRUE};
use crate::api::v1alpha1::model_deployment::{
    ABORT_ANNOTATION, ModelDeployment, ModelDeploymentPhase, PROMOTE_ANNOTATION, RETRY_ANNOTATION,
};
use crate::conditions::Desired;
use crate::controller::{self, Notice};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
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
    /// Put back a Service's selector and ports as the operator wants them, dropping selector keys someone
    /// else added.
    RestoreService {
        preview: bool,
        drop_keys: Vec<String>,
    },
    /// Delete an old revision's Deployment (beyond `revisionHistoryLimit`).
    DeleteRevision {
        deployment: String,
    },
    ApplyHpa(Box<HorizontalPodAutoscaler>),
    DeleteHpa,
    Publish(Notice),
}

pub type Decision = controller::Decision<ModelDeploymentStatus, Action>;

/// How soon a ModelDeployment blocked by someone else's object looks again (such objects are not watched).
const CONFLICT_RETRY: Duration = Duration::from_secs(30);

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

/// Whether this ModelDeployment made the object (its owner reference names it).
fn ours(md: &ModelDeployment, meta: &ObjectMeta) -> bool {
    let uid = md.uid();
    meta.owner_references.iter().flatten().any(|o| Some(&o.uid) == uid.as_ref())
}

/// The revisions' Deployments this ModelDeployment made: a labelled copy made by someone else is not one.
fn owned<'a>(md: &ModelDeployment, observed: &'a Observed) -> impl Iterator<Item = &'a Deployment> {
    observed.deployments.iter().filter(|d| ours(md, &d.metadata) && revision_of(d).is_some())
}

/// A time given as Unix seconds or RFC 3339.
fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    text.parse().ok().or_else(|| text.parse::<Timestamp>().ok().map(|t| t.as_second()))
}

/// The planner's view of the world.
fn world<'a>(md: &'a ModelDeployment, observed: &Observed, desired: String, now: i64) -> World<'a> {
    let revisions: Vec<Revision> = owned(md, observed)
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
    // What is active is the operator's own record; the Service only when there is none yet (a status
    // lost, or written by an older operator). A Service edited by hand is corrected, never followed.
    let exists = |r: &String| revisions.iter().any(|x| &x.name == r);
    let active = status
        .active_revision
        .clone()
        .filter(exists)
        .or_else(|| selected(&observed.active_service).filter(|a| exists(a)).cloned());
    World {
        spec: &md.spec,
        active,
        desired,
        revisions,
        stable: status.stable_revision,
        previous_preview: status.preview_revision,
        progress_started_at: seconds(&status.progress_started_at),
        preview_available_at: seconds(&status.preview_available_at),
        promote: md.annotations().get(PROMOTE_ANNOTATION).cloned(),
        abort: md.annotations().get(ABORT_ANNOTATION).cloned(),
        aborted_at: seconds(&status.aborted_at),
        retry_at: md.annotations().get(RETRY_ANNOTATION).and_then(|t| parse_time(t)),
        smoke,
        now,
    }
}

pub fn decide(md: &ModelDeployment, observed: &Observed, now: i64) -> Decision {
    let name = md.name_any();
    let ns = md.namespace().unwrap_or_default();
    let preview_url = format!("http://{name}-preview.{ns}.svc:{}", build::HTTP_PORT);
    let Some(served) = served(md, observed) else {
        return unresolved(md, observed);
    };
    let desired = build::revision(&md.spec, &served);
    let world = world(md, observed, desired.clone(), now);
    let plan = plan::plan(&world);
    let stored = md.status.clone().unwrap_or_default();
    let (mut status, mut conditions) =
        status(md, observed, &world.revisions, &plan, &ns, preview_url.clone(), &served);
    conditions.extend(resolved_condition(md, observed, &served));

    // Objects with a child's name that this ModelDeployment did not make are never taken over.
    let conflicts = conflicts(md, observed, &desired);
    if !conflicts.is_empty() {
        let message = format!(
            "{} not made by this ModelDeployment; the operator leaves {} alone: delete or rename {}",
            conflicts.join(", "),
            if conflicts.len() > 1 { "them" } else { "it" },
            if conflicts.len() > 1 { "them" } else { "it" },
        );
        status.phase = ModelDeploymentPhase::Degraded;
        conditions.retain(|c| c.type_ != "Progressing" && c.type_ != "Degraded");
        conditions.push(Desired::new("Progressing", FALSE, "ChildConflict", message.clone()));
        conditions.push(Desired::new("Degraded", TRUE, "ChildConflict", message.clone()));
        let said = stored.conditions.iter().any(|c| c.type_ == "Degraded" && c.message == message);
        let actions =
            if said { vec![] } else { vec![Action::Publish(Notice::warning("ChildConflict", message))] };
        return Decision { status, conditions, actions, requeue: Some(CONFLICT_RETRY) };
    }

    let mut actions = Vec::new();
    if plan.state == State::Progressing("SmokeTestPending") {
        actions.push(Action::RunSmokeTest {
            revision: desired.clone(),
            url: smoke_test_url(observed, preview_url),
        });
    }
    revisions(md, observed, &plan, &desired, &mut actions);
    services(md, observed, &plan, world.active.as_ref(), &mut actions);
    scale_downs(md, observed, &plan, &world, &mut actions);
    match build::hpa(md) {
        Some(h) => {
            let current = observed.hpa.as_ref().map(|c| (&c.spec, c.metadata.labels.as_ref()));
            if current != Some((&h.spec, h.metadata.labels.as_ref())) {
                actions.push(Action::ApplyHpa(Box::new(h)));
            }
        }
        None => {
            if observed.hpa.as_ref().is_some_and(|h| ours(md, &h.metadata)) {
                actions.push(Action::DeleteHpa);
            }
        }
    }
    if let Some(notice) = transition(&stored, &plan) {
        actions.push(Action::Publish(notice));
    }
    let mut requeue = plan.wake_at.map(|t| Duration::from_secs((t - now).max(1) as u64));
    // Pods that fail (rather than start slowly) are said at once, with why, instead of the rollout waiting
    // out its deadline in silence. Pod changes wake nothing here, so a wait for pods looks again after as long
    // as it has waited so far, 10 s to a minute.
    if matches!(plan.state, State::Progressing(_) | State::Degraded("ProgressDeadlineExceeded")) {
        if let Some(why) = pods_failing(observed, &plan.preview) {
            let said = stored.conditions.iter().any(|c| c.type_ == "Degraded" && c.message == why);
            if !said {
                actions.push(Action::Publish(Notice::warning("PodsFailing", why.clone())));
            }
            status.phase = ModelDeploymentPhase::Degraded;
            let reason = match plan.state {
                State::Progressing(_) => "PodsFailing",
                _ => "ProgressDeadlineExceeded",
            };
            conditions.retain(|c| c.type_ != "Degraded");
            conditions.push(Desired::new("Degraded", TRUE, reason, why));
        }
        if matches!(plan.state, State::Progressing(_)) {
            let waited = plan.progress_started_at.map_or(0, |t| (now - t).max(0) as u64);
            let check = Duration::from_secs(waited).clamp(POD_CHECK.0, POD_CHECK.1);
            requeue = Some(requeue.map_or(check, |r| r.min(check)));
        }
    }
    if let Some(after) = observed.recheck {
        requeue = Some(requeue.map_or(after, |r| r.min(after)));
    }
    Decision { status, conditions, actions, requeue }
}

/// What the desired revision serves: as observed (a registry URI resolved), else the spec's model; `None`
/// when a registry URI could not be resolved and nothing was resolved for it before.
pub fn served(md: &ModelDeployment, observed: &Observed) -> Option<build::Served> {
    match (&observed.served, &observed.unresolved) {
        (Some(s), _) => Some(s.clone()),
        (None, None) => Some(build::served(md, None)),
        (None, Some(_)) => None,
    }
}

/// The `ModelResolved` condition: for registry URIs, which version the URI names (or why it cannot be
/// resolved now, and that the last version resolved is kept); for other URIs only to clear an old one.
fn resolved_condition(md: &ModelDeployment, observed: &Observed, served: &build::Served) -> Option<Desired> {
    let uri = &md.spec.model.uri.0;
    if !uri.starts_with("registry://") {
        let had = md.status.iter().flat_map(|s| &s.conditions).any(|c| c.type_ == MODEL_RESOLVED);
        return had.then(|| {
            Desired::new(MODEL_RESOLVED, TRUE, "NotARegistryURI", format!("{uri} is read as it is"))
        });
    }
    let version = served.version();
    Some(match &observed.unresolved {
        Some(why) => Desired::new(
            MODEL_RESOLVED,
            FALSE,
            "RegistryUnavailable",
            format!("{why}; serving version {version}, as last resolved"),
        ),
        None => Desired::new(MODEL_RESOLVED, TRUE, "Resolved", format!("{uri} is version {version}")),
    })
}

/// The condition saying which registry version a ModelDeployment's URI names.
pub const MODEL_RESOLVED: &str = "ModelResolved";

/// A registry URI that names nothing known: the children stay as they are, the status says why, and the
/// operator looks again.
fn unresolved(md: &ModelDeployment, observed: &Observed) -> Decision {
    let why = observed.unresolved.clone().unwrap_or_default();
    let stored = md.status.clone().unwrap_or_default();
    let said = stored.conditions.iter().any(|c| c.type_ == MODEL_RESOLVED && c.message == why);
    let mut status = stored;
    status.observed_generation = md.metadata.generation;
    status.phase = ModelDeploymentPhase::Degraded;
    Decision {
        status,
        conditions: vec![
            Desired::new(MODEL_RESOLVED, FALSE, "ModelUnresolved", why.clone()),
            Desired::new("Degraded", TRUE, "ModelUnresolved", why.clone()),
        ],
        actions: if said { vec![] } else { vec![Action::Publish(Notice::warning("ModelUnresolved", why))] },
        requeue: Some(observed.recheck.unwrap_or(CONFLICT_RETRY)),
    }
}

/// How often a rollout waiting for pods looks at them: at least, at most.
const POD_CHECK: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(60));

/// Why the pods of `revision` do not come up, when one of them fails: `revision R: pod P: ...`.
fn pods_failing(observed: &Observed, revision: &str) -> Option<String> {
    observed
        .pods
        .iter()
        .filter(|p| p.labels().get(REVISION_LABEL).map(String::as_str) == Some(revision))
        .find_map(|p| {
            Some(format!(
                "revision {revision}: pod {}: {}",
                p.name_any(),
                crate::controller::pods::trouble(p)?
            ))
        })
}

/// The children this ModelDeployment would write that exist and are someone else's: `Kind name` each.
fn conflicts(md: &ModelDeployment, observed: &Observed, desired: &str) -> Vec<String> {
    let name = md.name_any();
    let foreign = |meta: Option<&ObjectMeta>| meta.is_some_and(|m| !ours(md, m));
    let mut out = Vec::new();
    if foreign(observed.desired_deployment.as_ref().map(|d| &d.metadata)) {
        out.push(format!("Deployment {name}-{desired}"));
    }
    if foreign(observed.active_service.as_ref().map(|s| &s.metadata)) {
        out.push(format!("Service {name}"));
    }
    if foreign(observed.preview_service.as_ref().map(|s| &s.metadata)) {
        out.push(format!("Service {name}-preview"));
    }
    if md.spec.autoscaling.is_some() && foreign(observed.hpa.as_ref().map(|h| &h.metadata)) {
        out.push(format!("HorizontalPodAutoscaler {name}"));
    }
    out
}

/// The desired revision's Deployment is made in full; other revisions change only by scale, since their
/// pod template must stay as it was.
fn revisions(
    md: &ModelDeployment,
    observed: &Observed,
    plan: &Plan,
    desired: &str,
    actions: &mut Vec<Action>,
) {
    for (rev, &replicas) in &plan.replicas {
        let deadline = plan.scale_down_at.get(rev).copied();
        match owned(md, observed).find(|d| revision_of(d) == Some(rev)) {
            None if rev == desired => {
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
}

/// A switch is one selector change. Before the desired revision's first pod exists the preview already
/// points at it (it serves nothing until ready). A Service that says something else than the operator's
/// record (its selector or ports edited) is put back, with a warning.
fn services(
    md: &ModelDeployment,
    observed: &Observed,
    plan: &Plan,
    recorded: Option<&String>,
    actions: &mut Vec<Action>,
) {
    for (preview, observed, revision) in
        [(false, &observed.active_service, &plan.active), (true, &observed.preview_service, &plan.preview)]
    {
        let name = if preview { format!("{}-preview", md.name_any()) } else { md.name_any() };
        let Some(service) = observed else {
            actions.push(Action::Select { preview, revision: revision.clone() });
            continue;
        };
        let selects = selected(observed);
        if selects != Some(revision) {
            actions.push(Action::Select { preview, revision: revision.clone() });
            if preview {
                // The preview follows the newest revision; nothing to announce.
            } else if recorded != Some(revision) {
                let note = format!("active Service now selects revision {revision}");
                actions.push(Action::Publish(Notice::normal("Promoted", note)));
            } else {
                let was = selects.map_or("no revision".to_string(), |r| format!("revision {r}"));
                let note =
                    format!("Service {name} selected {was}; set back to the active revision {revision}");
                actions.push(Action::Publish(Notice::warning("ServiceCorrected", note)));
            }
        }
        let want = build::service(md, preview, revision);
        let drop_keys = extra_keys(service, &want);
        if !drop_keys.is_empty() || ports(service) != ports(&want) {
            let note = if drop_keys.is_empty() {
                format!("Service {name}: its ports were edited; set back")
            } else {
                format!("Service {name}: selector keys {} removed", drop_keys.join(", "))
            };
            actions.push(Action::RestoreService { preview, drop_keys });
            actions.push(Action::Publish(Notice::warning("ServiceCorrected", note)));
        }
    }
}

/// Where the smoke test goes: the preview Service's ClusterIP, so it needs no cluster DNS (it works from the
/// operator's pod and from an operator run on a node); its DNS name when it has none yet.
fn smoke_test_url(observed: &Observed, by_name: String) -> String {
    let ip = observed.preview_service.as_ref().and_then(|s| s.spec.as_ref()?.cluster_ip.clone());
    match ip.filter(|ip| !ip.is_empty() && ip != "None") {
        Some(ip) if ip.contains(':') => format!("http://[{ip}]:{}", build::HTTP_PORT),
        Some(ip) => format!("http://{ip}:{}", build::HTTP_PORT),
        None => by_name,
    }
}

/// Selector keys of `svc` that `want` does not have.
fn extra_keys(svc: &Service, want: &Service) -> Vec<String> {
    let keys = |s: &Service| s.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    let want = keys(want);
    keys(svc).into_keys().filter(|k| !want.contains_key(k)).collect()
}

/// A Service's ports as (name, port, target port), in order.
fn ports(svc: &Service) -> Vec<(Option<String>, i32, Option<String>)> {
    let target = |p: &k8s_openapi::api::core::v1::ServicePort| {
        p.target_port.as_ref().map(|t| match t {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i.to_string(),
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
        })
    };
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports.into_iter().flatten().map(|p| (p.name.clone(), p.port, target(p))).collect()
}

/// Scale-downs last: a revision the active Service just stopped selecting is released only after the
/// switch is written. Old revisions at zero beyond `revisionHistoryLimit` (the oldest first) are deleted;
/// the kept ones lose their spent scale-down time.
fn scale_downs(
    md: &ModelDeployment,
    observed: &Observed,
    plan: &Plan,
    world: &World<'_>,
    actions: &mut Vec<Action>,
) {
    let clear = |d: &Deployment, actions: &mut Vec<Action>| {
        if d.annotations().contains_key(SCALE_DOWN_AT_ANNOTATION) {
            actions.push(Action::SetScaleDownAt { deployment: d.name_any(), at: None });
        }
    };
    let referenced = [Some(&plan.active), plan.stable.as_ref(), Some(&plan.preview), Some(&world.desired)];
    let mut history = Vec::new();
    for d in owned(md, observed) {
        let Some(rev) = revision_of(d).filter(|r| !plan.replicas.contains_key(*r)) else { continue };
        if replicas_of(d).unwrap_or(1) > 0 {
            actions.push(Action::Scale { deployment: d.name_any(), replicas: 0 });
            actions
                .push(Action::Publish(Notice::normal("ScaledDown", format!("scaled down revision {rev}"))));
            clear(d, actions);
        } else if !referenced.contains(&Some(rev)) {
            history.push(d);
        }
    }
    // Newest first (by creation; the name breaks ties), so the oldest go.
    history.sort_by_key(|d| std::cmp::Reverse((d.metadata.creation_timestamp.clone(), d.name_any())));
    let keep = md.spec.revision_history_limit.max(0) as usize;
    for (i, d) in history.into_iter().enumerate() {
        if i < keep {
            clear(d, actions);
        } else {
            let rev = revision_of(d).cloned().unwrap_or_default();
            actions.push(Action::DeleteRevision { deployment: d.name_any() });
            actions.push(Action::Publish(Notice::normal(
                "RevisionDeleted",
                format!("deleted old revision {rev}"),
            )));
        }
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

fn desired_conditions(
    plan: &Plan,
    active_available: bool,
    endpoints: i32,
    full: i32,
) -> (ModelDeploymentPhase, Vec<Desired>) {
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
    // Ready is judged by what the Service really sends traffic to, not only by the revision's Deployment.
    let ready = if !active_available {
        c("Ready", FALSE, "NotServing", format!("the Service serves revision {}", plan.active))
    } else if endpoints < full {
        let message = format!("the Service sends traffic to {endpoints} ready pod(s) of {full}");
        c("Ready", FALSE, "NotServing", message)
    } else {
        c("Ready", TRUE, "Serving", format!("the Service serves revision {}", plan.active))
    };
    (phase, vec![ready, available, progressing, paused, degraded])
}

/// The ready endpoints of a Service's EndpointSlices (each address once: slices may overlap while they are
/// rewritten). An endpoint whose readiness is not given counts as ready, as the API says.
fn ready_endpoints(slices: &[EndpointSlice]) -> i32 {
    let ready = slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .filter_map(|e| e.addresses.first())
        .collect::<std::collections::BTreeSet<_>>();
    ready.len() as i32
}

/// The status the plan gives: what serves, how big it is, and the rollout's clocks.
fn status(
    md: &ModelDeployment,
    observed: &Observed,
    revisions: &[Revision],
    plan: &Plan,
    ns: &str,
    preview_url: String,
    served: &build::Served,
) -> (ModelDeploymentStatus, Vec<Desired>) {
    let name = md.name_any();
    let full = md.spec.replicas.max(0);
    let active = revisions.iter().find(|r| r.name == plan.active);
    let preview = revisions.iter().find(|r| r.name == plan.preview);
    let available = active.map_or(0, |r| r.available);
    let active_available = active.is_some_and(|r| r.available >= full && r.replicas >= full);
    let (phase, conditions) =
        desired_conditions(plan, active_available, ready_endpoints(&observed.endpoints), full);
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
        model: Some(served.status()),
        progress_started_at: time(plan.progress_started_at),
        preview_available_at: time(plan.preview_available_at),
        smoke_test: stored.smoke_test,
        aborted_at: time(plan.aborted_at),
    };
    (status, conditions)
}

#[cfg(test)]
mod tests;
