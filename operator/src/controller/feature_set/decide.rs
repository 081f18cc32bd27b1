//! The FeatureSet's rules, as a pure function of the object, what was observed and the clock.
//!
//! - The StatefulSet, its two Services and (with `spec.schedule`) the CronJob are applied when what the
//!   operator asks of them changed (their digest annotation), never taken over from someone else.
//! - A spec whose features the running store cannot read (a feature removed, reordered or retyped) is not
//!   rolled out: `Degraded` says why, and the store keeps serving what it has.
//! - Once the store is ready, a Job materializes the spec as it is (its key: what the materialization
//!   writes, and the manual trigger annotation); Jobs of earlier keys go once the current one has finished.
//! - The latest finished materialization, the key's own or a scheduled one, gives `Materialized` and
//!   `lastMaterialization`; its report (the Job pod's termination message) gives the rows and `rowCount`.

use super::build::{self, FEATURE_SET_LABEL, MATERIALIZATION_LABEL};
use super::observe::Observed;
use crate::api::v1alpha1::FeatureSet;
use crate::api::v1alpha1::common::status::{FALSE, TRUE, UNKNOWN};
use crate::api::v1alpha1::feature_set::{FeatureSetStatus, Materialization};
use crate::conditions::Desired;
use crate::controller::{Defaults, Notice, pods};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use mizzen_common::features::Report;
use std::time::Duration;

/// A typed write.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    ApplyStatefulSet(Box<StatefulSet>),
    ApplyService(Box<Service>),
    ApplyCronJob(Box<CronJob>),
    DeleteCronJob,
    CreateJob(Box<Job>),
    DeleteJob(String),
    Publish(Notice),
}

pub type Decision = crate::controller::Decision<FeatureSetStatus, Action>;

/// Look again this soon while the store starts or a materialization runs (their children's changes wake
/// the reconcile too; this catches pods in trouble, which change no child).
const WHILE_BUSY: Duration = Duration::from_secs(10);
/// Look again this soon when a child's name is taken by someone else's object.
const CONFLICT_RETRY: Duration = Duration::from_secs(30);

fn controlled_by(meta: &kube::api::ObjectMeta, fs: &FeatureSet) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == fs.uid().as_ref())
}

fn job_condition<'a>(job: &'a Job, type_: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status.as_ref()?.conditions.iter().flatten().find(|c| c.type_ == type_ && c.status == "True")
}

/// When a Job finished, and whether it succeeded; `None` while it runs.
fn finished(job: &Job) -> Option<(Time, bool)> {
    if let Some(c) = job_condition(job, "Complete") {
        let at =
            job.status.as_ref().and_then(|s| s.completion_time.clone()).or(c.last_transition_time.clone());
        return Some((at.unwrap_or(Time(Default::default())), true));
    }
    let c = job_condition(job, "Failed")?;
    Some((c.last_transition_time.clone().unwrap_or(Time(Default::default())), false))
}

/// The pods of a Job (the Job controller labels them with its name).
fn pods_of<'a>(job: &Job, pods: &'a [Pod]) -> impl Iterator<Item = &'a Pod> {
    let name = job.name_any();
    pods.iter().filter(move |p| p.labels().get("batch.kubernetes.io/job-name") == Some(&name))
}

/// A succeeded Job's report: the termination message of its succeeded pod.
fn report(job: &Job, pods: &[Pod]) -> Option<Report> {
    pods_of(job, pods).find_map(|p| {
        let status = p.status.as_ref()?;
        if status.phase.as_deref() != Some("Succeeded") {
            return None;
        }
        let terminated =
            status.container_statuses.iter().flatten().find_map(|c| c.state.as_ref()?.terminated.as_ref())?;
        serde_json::from_str(terminated.message.as_deref()?).ok()
    })
}

/// Why a failed Job failed: its last pod's trouble, else the Job's own condition.
fn failure(job: &Job, pods: &[Pod]) -> String {
    let mut attempts: Vec<&Pod> = pods_of(job, pods).collect();
    attempts.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    if let Some(why) = attempts.iter().rev().find_map(|p| pods::trouble(p)) {
        return why;
    }
    job_condition(job, "Failed")
        .map(|c| {
            format!("{}: {}", c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default())
        })
        .unwrap_or_else(|| "the Job failed".into())
}

/// Whether the StatefulSet serves every replica of the spec it was last given.
fn store_ready(sts: &StatefulSet, replicas: i32) -> bool {
    let Some(status) = &sts.status else { return false };
    status.observed_generation >= sts.metadata.generation
        && status.ready_replicas.unwrap_or(0) >= replicas
        && status.updated_replicas.unwrap_or(0) >= replicas
        && status.current_revision == status.update_revision
}

pub fn decide(fs: &FeatureSet, observed: &Observed, defaults: &Defaults) -> Decision {
    let stored = fs.status.clone().unwrap_or_default();
    let mut d = Decision {
        status: FeatureSetStatus {
            observed_generation: fs.metadata.generation,
            url: Some(build::url(fs)),
            ..stored.clone()
        },
        conditions: Vec::new(),
        actions: Vec::new(),
        requeue: None,
    };
    let said = |type_: &str, message: &str| {
        stored.conditions.iter().any(|c| c.type_ == type_ && c.message == message)
    };

    // Children with our names that we did not make are left alone.
    let sts = build::stateful_set(fs, defaults);
    let service = build::service(fs, false);
    let headless = build::service(fs, true);
    let cron = build::cron_job(fs, defaults);
    let mut conflicts = Vec::new();
    let mut check = |kind: &str, meta: Option<&kube::api::ObjectMeta>| {
        if let Some(meta) = meta.filter(|m| !controlled_by(m, fs)) {
            conflicts.push(format!("{kind} {}", meta.name.clone().unwrap_or_default()));
        }
    };
    check("StatefulSet", observed.stateful_set.as_ref().map(|s| &s.metadata));
    check("Service", observed.service.as_ref().map(|s| &s.metadata));
    check("Service", observed.pods_service.as_ref().map(|s| &s.metadata));
    check("CronJob", observed.cron_job.as_ref().map(|s| &s.metadata).filter(|_| cron.is_some()));
    if !conflicts.is_empty() {
        let message = format!(
            "{} not made by this FeatureSet; the operator leaves it alone: delete or rename it",
            conflicts.join(", ")
        );
        for type_ in ["Ready", "Materialized"] {
            d.conditions.push(Desired::new(type_, FALSE, "ChildConflict", message.clone()));
        }
        if !said("Degraded", &message) {
            d.actions.push(Action::Publish(Notice::warning("ChildConflict", message.clone())));
        }
        d.conditions.push(Desired::new("Degraded", TRUE, "ChildConflict", message));
        d.wake_within(CONFLICT_RETRY);
        return d;
    }

    // A spec the running store cannot read is not rolled out.
    let running = observed.stateful_set.as_ref();
    let incompatible =
        running.and_then(build::running_layout).and_then(|old| old.can_become(&fs.spec.layout()).err());
    match &incompatible {
        Some(why) => {
            let message = format!(
                "this change of features cannot be served from the stored data ({why}); the store keeps \
                 serving the features it has: revert the change, or create a new FeatureSet for the new features"
            );
            if !said("Degraded", &message) {
                d.actions.push(Action::Publish(Notice::warning("IncompatibleSchemaChange", message.clone())));
            }
            d.conditions.push(Desired::new("Degraded", TRUE, "IncompatibleSchemaChange", message));
        }
        None => {
            d.conditions.push(Desired::new("Degraded", FALSE, "AsExpected", ""));
            let stale = |have: Option<&kube::api::ObjectMeta>, want: &kube::api::ObjectMeta| {
                have.and_then(build::stamp) != build::stamp(want)
            };
            if stale(running.map(|s| &s.metadata), &sts.metadata) {
                d.actions.push(Action::ApplyStatefulSet(Box::new(sts.clone())));
            }
            if stale(observed.service.as_ref().map(|s| &s.metadata), &service.metadata) {
                d.actions.push(Action::ApplyService(Box::new(service)));
            }
            if stale(observed.pods_service.as_ref().map(|s| &s.metadata), &headless.metadata) {
                d.actions.push(Action::ApplyService(Box::new(headless)));
            }
            match (&cron, &observed.cron_job) {
                (Some(want), have) if stale(have.as_ref().map(|c| &c.metadata), &want.metadata) => {
                    d.actions.push(Action::ApplyCronJob(Box::new(want.clone())));
                }
                (None, Some(_)) => d.actions.push(Action::DeleteCronJob),
                _ => {}
            }
        }
    }

    // Ready: every replica of what was last applied serves.
    let replicas = fs.spec.online.replicas;
    let ready = running.is_some_and(|s| store_ready(s, replicas))
        && !d.actions.iter().any(|a| matches!(a, Action::ApplyStatefulSet(_)));
    let store_pods: Vec<&Pod> = observed
        .pods
        .iter()
        .filter(|p| {
            p.labels().get("app.kubernetes.io/component").map(String::as_str) == Some("feature-store")
        })
        .collect();
    if ready {
        let message = format!("{replicas} of {replicas} replicas serve at {}", build::url(fs));
        d.conditions.push(Desired::new("Ready", TRUE, "Serving", message));
    } else {
        let trouble =
            store_pods.iter().find_map(|p| pods::trouble(p).map(|t| format!("pod {}: {t}", p.name_any())));
        let (reason, message) = match (trouble, running) {
            (Some(t), _) => ("StoreUnavailable", t),
            (None, None) => ("Creating", "creating the feature store".to_string()),
            (None, Some(s)) => {
                let ready = s.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
                ("Starting", format!("{ready} of {replicas} replicas ready"))
            }
        };
        d.conditions.push(Desired::new("Ready", FALSE, reason, message));
        d.wake_within(WHILE_BUSY);
    }

    materialization(fs, observed, defaults, ready && incompatible.is_none(), &mut d, &stored);
    d
}

/// The materialization Jobs: the current key's, created once the store is ready; the status from the latest
/// finished one; earlier keys' Jobs deleted once the current one finished.
fn materialization(
    fs: &FeatureSet,
    observed: &Observed,
    defaults: &Defaults,
    can_start: bool,
    d: &mut Decision,
    stored: &FeatureSetStatus,
) {
    let key = build::materialization_key(fs);
    let name = build::job_name(fs, &key);
    let ours: Vec<&Job> = observed
        .jobs
        .iter()
        .filter(|j| j.labels().get(FEATURE_SET_LABEL) == Some(&fs.name_any()))
        .filter(|j| {
            // The key's Jobs are ours by owner; scheduled ones are the CronJob's.
            controlled_by(&j.metadata, fs)
                || j.labels().get(MATERIALIZATION_LABEL).map(String::as_str) == Some("scheduled")
        })
        .collect();
    let current = ours.iter().find(|j| j.name_any() == name).copied();
    // The latest finished materialization, whichever started it.
    let latest =
        ours.iter().filter_map(|j| finished(j).map(|(at, ok)| (at, ok, *j))).max_by_key(|(at, _, _)| at.0);

    if let Some((at, true, job)) = &latest
        && stored.last_materialization.as_ref().and_then(|m| m.job_name.as_deref())
            != Some(job.name_any().as_str())
    {
        let report = report(job, &observed.pods);
        let rows = report.as_ref().map_or(0, |r| r.rows as i64);
        let seconds = report.as_ref().map(|r| r.seconds);
        d.status.last_materialization = Some(Materialization {
            time: at.clone(),
            rows,
            duration_seconds: seconds,
            job_name: Some(job.name_any()),
        });
        if let Some(r) = &report {
            d.status.row_count = Some(r.entities as i64);
        }
        let note = format!(
            "{rows} rows from {} in {:.1} s (Job {})",
            sources(fs),
            seconds.unwrap_or(0.0),
            job.name_any()
        );
        d.actions.push(Action::Publish(Notice::normal("Materialized", note)));
    }

    let running_current = current.is_some_and(|j| finished(j).is_none());
    let condition = if running_current {
        d.wake_within(WHILE_BUSY);
        Desired::new(
            "Materialized",
            FALSE,
            "Materializing",
            format!("Job {name} is ingesting {}", sources(fs)),
        )
    } else if current.is_none() {
        if can_start {
            d.actions.push(Action::CreateJob(Box::new(build::job(fs, defaults, &key))));
            d.actions.push(Action::Publish(Notice::normal(
                "Materializing",
                format!("Job {name} ingests {}", sources(fs)),
            )));
            Desired::new(
                "Materialized",
                FALSE,
                "Materializing",
                format!("Job {name} is ingesting {}", sources(fs)),
            )
        } else {
            Desired::new(
                "Materialized",
                FALSE,
                "WaitingForStore",
                "materialization starts once the feature store is ready",
            )
        }
    } else {
        match &latest {
            Some((_, true, job)) => {
                let m = d.status.last_materialization.clone();
                let rows = m.map_or(0, |m| m.rows);
                Desired::new(
                    "Materialized",
                    TRUE,
                    "Materialized",
                    format!("{rows} rows from {} (Job {})", sources(fs), job.name_any()),
                )
            }
            Some((_, false, job)) => {
                let message = format!("Job {}: {}", job.name_any(), failure(job, &observed.pods));
                if !stored.conditions.iter().any(|c| c.type_ == "Materialized" && c.message == message) {
                    d.actions
                        .push(Action::Publish(Notice::warning("MaterializationFailed", message.clone())));
                }
                Desired::new("Materialized", FALSE, "MaterializationFailed", message)
            }
            None => Desired::new("Materialized", UNKNOWN, "Materializing", ""),
        }
    };
    d.conditions.push(condition);

    // Earlier keys' Jobs go once the current one has finished (kubectl logs works on the latest).
    if current.is_some() && !running_current {
        for job in &ours {
            let label = job.labels().get(MATERIALIZATION_LABEL).map(String::as_str);
            if job.name_any() != name
                && label != Some("scheduled")
                && job.metadata.deletion_timestamp.is_none()
            {
                d.actions.push(Action::DeleteJob(job.name_any()));
            }
        }
    }
}

fn sources(fs: &FeatureSet) -> String {
    let names: Vec<&str> = fs.spec.sources.iter().map(|s| s.name.as_str()).collect();
    format!("source{} {}", if names.len() > 1 { "s" } else { "" }, names.join(", "))
}

#[cfg(test)]
mod tests;
