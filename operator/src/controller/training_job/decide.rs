//! The TrainingJob decision: from the object, its observed Job and pods and the clock to the status and the
//! writes. Create the Job, keep its `suspend` in step, turn the trainer's reports into the status, deploy a
//! good enough model, and delete the Job after `ttlSecondsAfterFinished`. Once the run has finished its
//! status is final: the Job and pods may go, the results stay.

use super::build::{self, Refusal};
use super::observe::Observed;
use super::run::{self, Observation, State};
use crate::api::v1alpha1::common::status::{FALSE, TRUE, UNKNOWN};
use crate::api::v1alpha1::training_job::{
    DeploySpec, Metric, ObjectiveValue, PublishedModel, TrainingJob, TrainingJobPhase, TrainingJobStatus,
    TrialCounts,
};
use crate::conditions::Desired;
use crate::controller::{self, Notice};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use mizzen_common::registry;
use mizzen_common::training::TrainConfig;
use std::time::Duration;

/// One write the reconcile makes, in the order decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create the Job that runs this configuration.
    CreateJob(Box<TrainConfig>),
    /// Set the Job's `spec.suspend`.
    Suspend(bool),
    /// Delete the Job and its pods (the status stays).
    DeleteJob,
    /// Point a ModelDeployment at the published model. If it fails, the results are stored all the same
    /// and the deploy is tried again later; on success the `message` is published.
    Deploy {
        model_deployment: String,
        uri: String,
        sha256: Option<String>,
        message: String,
    },
    /// Register a search's best trial (logged as run `run_id`, its model in `source`) as a new version of
    /// `name` in the registry, and move `alias` to it; the status' model gets the version.
    Register {
        name: String,
        alias: Option<String>,
        run_id: String,
        source: String,
        tags: Vec<(String, String)>,
    },
    Publish(Notice),
}

pub type Decision = controller::Decision<TrainingJobStatus, Action>;

/// A failed deploy, or one whose ModelDeployment does not exist yet, is tried again this soon.
pub const DEPLOY_RETRY: Duration = Duration::from_secs(30);
/// A registration pending or failed is looked at again this soon.
pub const REGISTER_RETRY: Duration = Duration::from_secs(5);
/// A Job of an earlier TrainingJob of the same name, still being deleted, is waited for this long.
const DELETING_JOB_RETRY: Duration = Duration::from_secs(2);
/// The trainer writes `pvc://CLAIM/...` outputs under this path; the status speaks the user's URI.
const PVC_ROOT_URI: &str = "file:///mnt/pvc/";
/// The label the Job controller puts on its pods: the Job's uid.
const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";

fn user_uri(uri: &str) -> String {
    match uri.strip_prefix(PVC_ROOT_URI) {
        Some(rest) => format!("pvc://{rest}"),
        None => uri.to_string(),
    }
}

pub fn is_true(status: &TrainingJobStatus, type_: &str) -> bool {
    status.conditions.iter().any(|c| c.type_ == type_ && c.status == TRUE)
}

/// Whether the stored status is final.
pub fn finished(status: &TrainingJobStatus) -> bool {
    is_true(status, "Succeeded") || is_true(status, "Failed")
}

fn owned_by(job: &Job, tj: &TrainingJob) -> bool {
    job.owner_references().iter().any(|o| Some(&o.uid) == tj.uid().as_ref())
}

/// How often a TrainingJob waiting for its FeatureSet looks again.
const FEATURE_SET_RETRY: Duration = Duration::from_secs(10);

/// Why a run from a FeatureSet cannot start yet: the FeatureSet is missing or not materialized.
fn waiting_for_feature_set(tj: &TrainingJob, observed: &Observed) -> Option<String> {
    let source = tj.spec.dataset.feature_set.as_ref()?;
    let Some(fs) = &observed.feature_set else {
        return Some(format!("waiting for FeatureSet {} to be created in this namespace", source.name));
    };
    let materialized = fs
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Materialized" && c.status == TRUE));
    (!materialized).then(|| format!("waiting for FeatureSet {} to be materialized", source.name))
}

fn time(now: i64) -> Time {
    Time(Timestamp::from_second(now).unwrap_or_default())
}

pub fn decide(tj: &TrainingJob, observed: &Observed, now: i64) -> Decision {
    let stored = tj.status.clone().unwrap_or_default();
    let mut d = Decision {
        status: TrainingJobStatus { observed_generation: tj.metadata.generation, ..stored.clone() },
        conditions: Vec::new(),
        actions: Vec::new(),
        requeue: None,
    };
    let was_finished = finished(&stored);
    // Training from a FeatureSet waits for it to be materialized (made with the TrainingJob, say).
    if !was_finished
        && observed.job.is_none()
        && stored.job_name.is_none()
        && let Some(why) = waiting_for_feature_set(tj, observed)
    {
        d.conditions.push(Desired::new("Created", FALSE, "WaitingForFeatureSet", why));
        d.wake_within(FEATURE_SET_RETRY);
        return d;
    }
    if !was_finished {
        match build::config(tj, observed.registry, observed.feature_set.as_ref()) {
            Err(refusal) => refuse(&mut d, refusal, now),
            Ok(config) => {
                let name = tj.name_any();
                let job = match &observed.job {
                    // The Job went before the run finished (deleted by hand): say so rather than train again.
                    None if stored.job_name.is_some() => {
                        let message = format!("Job {name} was deleted before the run finished");
                        fail(&mut d, &["Running", "Succeeded"], "JobDeleted", message.clone(), now);
                        d.actions.push(Action::Publish(Notice::warning("JobDeleted", message)));
                        return d;
                    }
                    None => {
                        let note =
                            format!("created Job {name} with {} trial(s)", build::trial_count(&config));
                        d.actions.push(Action::CreateJob(Box::new(config.clone())));
                        d.actions.push(Action::Publish(Notice::normal("JobCreated", note)));
                        None
                    }
                    // A Job of an earlier TrainingJob of the same name, still being deleted: wait for it.
                    Some(job) if !owned_by(job, tj) && job.metadata.deletion_timestamp.is_some() => {
                        return Decision {
                            status: stored,
                            conditions: Vec::new(),
                            actions: Vec::new(),
                            requeue: Some(DELETING_JOB_RETRY),
                        };
                    }
                    Some(job) if !owned_by(job, tj) => {
                        let message =
                            format!("a Job named {name} exists and does not belong to this TrainingJob");
                        fail(&mut d, &["Created", "Succeeded"], "JobConflict", message, now);
                        return d;
                    }
                    Some(job) => {
                        if job.spec.as_ref().and_then(|s| s.suspend) != Some(tj.spec.suspend) {
                            d.actions.push(Action::Suspend(tj.spec.suspend));
                            d.actions.push(Action::Publish(if tj.spec.suspend {
                                Notice::normal("Suspended", "the run is suspended: its pods are stopped")
                            } else {
                                Notice::normal("Resumed", "the run is resumed")
                            }));
                        }
                        Some(job)
                    }
                };
                follow(tj, &config, job, observed, &stored, &mut d, now);
            }
        }
    }
    register(tj, &mut d);
    deploy(tj, observed, &stored, &mut d);
    let ttl = tj.spec.ttl_seconds_after_finished;
    let now_finished = matches!(d.status.phase, TrainingJobPhase::Succeeded | TrainingJobPhase::Failed);
    if now_finished && !was_finished && ttl.is_some() {
        // Come back for the ttl once the final status is in the cache.
        d.wake_within(Duration::from_secs(1));
    }
    // Delete the Job (and its pods) once the ttl after finishing has passed; the status stays. Only once the
    // final status has been stored and read back (`was_finished` comes from the object), so a reconcile
    // from a stale cache cannot take the missing Job for one never made.
    if was_finished && let Some(ttl) = ttl {
        let done = d.status.completion_time.as_ref().map_or(now, |t| t.0.as_second());
        let left = done + ttl as i64 - now;
        if left > 0 {
            d.wake_within(Duration::from_secs(left as u64));
        } else if let Some(job) = &observed.job
            && job.metadata.deletion_timestamp.is_none()
            && owned_by(job, tj)
        {
            let note = format!("deleted Job {}: ttlSecondsAfterFinished passed", tj.name_any());
            d.actions.push(Action::DeleteJob);
            d.actions.push(Action::Publish(Notice::normal("JobDeleted", note)));
        }
    }
    d
}

/// A run the operator will not start: Failed at once, with the refusal's reason.
fn refuse(d: &mut Decision, refusal: Refusal, now: i64) {
    d.status.phase = TrainingJobPhase::Failed;
    d.status.completion_time = Some(time(now));
    d.conditions = vec![
        Desired::new("Created", FALSE, refusal.reason, refusal.message.clone()),
        Desired::new("Running", FALSE, refusal.reason, ""),
        Desired::new("Succeeded", FALSE, refusal.reason, ""),
        Desired::new("Failed", TRUE, refusal.reason, refusal.message.clone()),
    ];
    d.actions.push(Action::Publish(Notice::warning(refusal.reason, refusal.message)));
}

/// A run that cannot go on: Failed with `reason`, and `cleared` conditions False for the same reason.
fn fail(d: &mut Decision, cleared: &[&'static str], reason: &str, message: String, now: i64) {
    d.status.phase = TrainingJobPhase::Failed;
    d.status.completion_time = Some(time(now));
    let clear = |type_: &&'static str| {
        let message = if *type_ == "Created" { message.clone() } else { String::new() };
        Desired::new(type_, FALSE, reason, message)
    };
    d.conditions = cleared.iter().map(clear).collect();
    d.conditions.push(Desired::new("Failed", TRUE, reason, message));
}

/// The run as its Job (`None`: about to be created) and that Job's pods say, into the status.
fn follow(
    tj: &TrainingJob,
    config: &TrainConfig,
    job: Option<&Job>,
    observed: &Observed,
    stored: &TrainingJobStatus,
    d: &mut Decision,
    now: i64,
) {
    let (metric, lower) = build::objective(&tj.spec);
    let metric = build::metric_name(metric);
    let new_job = Job::default();
    let job = job.unwrap_or(&new_job);
    // Only this Job's pods: a same-named earlier run's pods may linger.
    let uid = job.uid();
    let pods = observed
        .pods
        .iter()
        .filter(|p| uid.is_some() && p.labels().get(CONTROLLER_UID_LABEL) == uid.as_ref());
    let mut obs = run::read(job, pods, build::trial_count(config), &metric, lower);
    // A suspend asked for but not yet taken up by the Job controller is shown at once.
    if tj.spec.suspend && matches!(obs.state, State::Created | State::Running) {
        obs.state = State::Suspended;
    }
    d.conditions = record(tj, job, &obs, &mut d.status, &metric, now);
    if d.status.phase != stored.phase
        && let Some(notice) = transition(&obs)
    {
        d.actions.push(Action::Publish(notice));
    }
}

/// Fills `status` from the observation and returns the conditions to hold.
fn record(
    tj: &TrainingJob,
    job: &Job,
    obs: &Observation,
    status: &mut TrainingJobStatus,
    metric: &str,
    now: i64,
) -> Vec<Desired> {
    let c = Desired::new;
    let name = tj.name_any();
    let js = job.status.clone().unwrap_or_default();
    status.job_name = Some(name.clone());
    status.start_time = js.start_time.clone().or(status.start_time.take());
    let succeeded = obs.succeeded.len() as i32;
    let failed = obs.failed.len() as i32;
    status.trials = Some(TrialCounts {
        total: obs.total,
        succeeded,
        failed,
        running: obs.running,
        summary: Some(format!("{succeeded}/{failed}/{}", obs.total)),
    });
    let created = c("Created", TRUE, "JobCreated", format!("Job {name} runs {} trial(s)", obs.total));
    let suspended = |on: bool| {
        if on {
            c("Suspended", TRUE, "Suspended", "spec.suspend is true: no trainer pod runs".to_string())
        } else {
            c("Suspended", FALSE, "NotSuspended", String::new())
        }
    };
    match &obs.state {
        State::Created | State::Running | State::Suspended => {
            let (phase, running, reason) = match obs.state {
                State::Running => (TrainingJobPhase::Running, TRUE, "TrainerRunning"),
                State::Suspended => (TrainingJobPhase::Suspended, FALSE, "Suspended"),
                _ => (TrainingJobPhase::Pending, FALSE, "PodsPending"),
            };
            status.phase = phase;
            vec![
                created,
                c("Running", running, reason, format!("{} trainer pod(s) running", obs.running)),
                suspended(obs.state == State::Suspended),
                c("Succeeded", UNKNOWN, reason, String::new()),
                c("Failed", FALSE, "NotFailed", String::new()),
            ]
        }
        State::Succeeded { best } => {
            let t = &obs.succeeded[best];
            status.phase = TrainingJobPhase::Succeeded;
            status.completion_time = js.completion_time.clone().or_else(|| Some(time(now)));
            status.metrics = t.metrics.clone();
            status.best_hyperparameters = t.hyperparameters.clone();
            let (m, _) = build::objective(&tj.spec);
            // Without a search or a deploy gate an mlp's objective is accuracy, unless the label made it a
            // regressor (the trainer decides from the data): then r2.
            let (m, metric): (Metric, &str) = match t.metrics.get(metric) {
                None if t.metrics.contains_key("r2")
                    && tj.spec.search.is_none()
                    && tj.spec.deploy.is_none() =>
                {
                    (Metric::R2, "r2")
                }
                _ => (m, metric),
            };
            status.objective = t.metrics.get(metric).map(|&value| ObjectiveValue { metric: m, value });
            let uri = user_uri(&t.model_uri);
            status.model = Some(PublishedModel {
                uri: uri.clone(),
                version: t.version.clone(),
                sha256: Some(t.model_sha256.clone()),
                dataset_sha256: Some(t.dataset_sha256.clone()),
                run_id: t.run_id.clone(),
            });
            let value = t.metrics.get(metric).map_or("n/a".to_string(), |v| format!("{v:.4}"));
            let trial = if obs.total > 1 {
                format!("best of {} trials (trial {best}, {} failed)", obs.succeeded.len(), obs.failed.len())
            } else {
                "trained".into()
            };
            vec![
                created,
                c("Running", FALSE, "Finished", String::new()),
                suspended(false),
                c("Succeeded", TRUE, "ModelTrained", format!("{trial}: {metric} {value}; model at {uri}")),
                c("Failed", FALSE, "NotFailed", String::new()),
            ]
        }
        State::Failed { reason, message } => {
            status.phase = TrainingJobPhase::Failed;
            status.completion_time = js.completion_time.clone().or_else(|| Some(time(now)));
            vec![
                created,
                c("Running", FALSE, "Finished", String::new()),
                suspended(false),
                c("Succeeded", FALSE, reason.as_str(), String::new()),
                c("Failed", TRUE, reason.as_str(), message.chars().take(2048).collect::<String>()),
            ]
        }
    }
}

/// The event for the run's new phase, if it has one.
fn transition(obs: &Observation) -> Option<Notice> {
    match &obs.state {
        State::Running => {
            Some(Notice::normal("TrainingStarted", format!("{} trainer pod(s) running", obs.running)))
        }
        State::Succeeded { best } => Some(Notice::normal(
            "TrainingSucceeded",
            format!(
                "model at {} ({} trial(s) succeeded, {} failed)",
                user_uri(&obs.succeeded[best].model_uri),
                obs.succeeded.len(),
                obs.failed.len()
            ),
        )),
        State::Failed { reason, message } => {
            Some(Notice::warning(reason.as_str(), message.chars().take(1024).collect::<String>()))
        }
        State::Suspended | State::Created => None,
    }
}

/// Registers a search's best trial, logged as a registry run, as a version of the output's model (a single
/// run registered its version itself). Until it is, the status' model is the run's artifact; once it is, the
/// version is in the status and this asks nothing more.
fn register(tj: &TrainingJob, d: &mut Decision) {
    let Some(model) = d.status.model.as_ref().filter(|_| d.status.phase == TrainingJobPhase::Succeeded)
    else {
        return;
    };
    let (Some((name, alias)), Some(run_id), None) =
        (registry::parse_output(&build::output_uri(tj)), &model.run_id, &model.version)
    else {
        return;
    };
    let source = model.uri.rsplit_once('/').map_or(model.uri.clone(), |(dir, _)| dir.to_string());
    let mut tags = vec![(
        "mizzen.trainingjob".to_string(),
        format!("{}/{}", tj.namespace().unwrap_or_default(), tj.name_any()),
    )];
    if let Some(data) = &tj.spec.dataset.uri {
        tags.push(("mizzen.dataset.uri".into(), data.0.clone()));
    }
    // What serving must fetch to give the model the inputs it was trained on.
    if let Some(source) = &tj.spec.dataset.feature_set {
        let ns = tj.namespace().unwrap_or_default();
        tags.push(("mizzen.featureset".into(), format!("{ns}/{}", source.name)));
        tags.push(("mizzen.dataset.uri".into(), source.labels_uri.0.clone()));
        if let Some(features) = &tj.spec.dataset.features {
            tags.push(("mizzen.featureset.features".into(), features.join(",")));
        }
    }
    tags.extend(model.dataset_sha256.clone().map(|s| ("mizzen.dataset.sha256".to_string(), s)));
    tags.extend(model.sha256.clone().map(|s| ("mizzen.model.sha256".to_string(), s)));
    d.actions.push(Action::Register { name, alias, run_id: run_id.clone(), source, tags });
}

/// Deploys a finished, good enough model (once).
fn deploy(tj: &TrainingJob, observed: &Observed, stored: &TrainingJobStatus, d: &mut Decision) {
    let Some(deploy) = &tj.spec.deploy else { return };
    if d.status.phase != TrainingJobPhase::Succeeded || is_true(stored, "Deployed") {
        return;
    }
    let (model, metric, value, threshold) = match gate(&d.status, deploy) {
        Ok(passed) => passed,
        Err(refused) => {
            let said =
                stored.conditions.iter().any(|c| c.type_ == "Deployed" && c.reason == "BelowThreshold");
            if refused.reason == "BelowThreshold" && !said {
                d.actions.push(Action::Publish(Notice::warning("NotDeployed", refused.message.clone())));
            }
            d.conditions.push(refused);
            return;
        }
    };
    let target = &deploy.model_deployment;
    if model.uri.starts_with("mlflow-artifacts:") {
        // Registered by this reconcile's actions; deployed by the next one, by version.
        let message = "registering the model in the registry".to_string();
        d.conditions.push(Desired::new("Deployed", FALSE, "Registering", message));
        d.wake_within(REGISTER_RETRY);
        return;
    }
    if observed.deploy_target.is_none() {
        let message = format!("ModelDeployment {target} does not exist (retrying)");
        d.conditions.push(Desired::new("Deployed", FALSE, "ModelDeploymentNotFound", message));
        d.wake_within(DEPLOY_RETRY);
        return;
    }
    let message = format!(
        "{metric} {value:.4} passed {threshold}: ModelDeployment {target} now rolls out {}",
        model.uri
    );
    d.actions.push(Action::Deploy {
        model_deployment: target.clone(),
        uri: model.uri.clone(),
        sha256: model.sha256.clone(),
        message: message.clone(),
    });
    d.conditions.push(Desired::new("Deployed", TRUE, "Deployed", message));
}

/// The deploy gate: the model, the metric's name and value and the threshold when it passes, else the
/// Deployed=False condition saying why.
fn gate<'a>(
    status: &'a TrainingJobStatus,
    deploy: &DeploySpec,
) -> Result<(&'a PublishedModel, String, f64, f64), Desired> {
    let metric = build::metric_name(deploy.when.metric);
    let Some(model) = &status.model else {
        return Err(Desired::new("Deployed", FALSE, "NoModel", "the run published no model"));
    };
    let Some(&value) = status.metrics.get(&metric) else {
        let message = format!("the trainer reported no {metric} for this model");
        return Err(Desired::new("Deployed", FALSE, "MetricMissing", message));
    };
    let threshold = deploy.when.threshold;
    let lower = deploy.when.metric.lower_is_better();
    if (lower && value <= threshold) || (!lower && value >= threshold) {
        return Ok((model, metric, value, threshold));
    }
    let side = if lower { "above" } else { "below" };
    let message = format!("{metric} {value:.4} is {side} the threshold {threshold}: not deployed");
    Err(Desired::new("Deployed", FALSE, "BelowThreshold", message))
}

#[cfg(test)]
mod tests;
