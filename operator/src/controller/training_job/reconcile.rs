//! The TrainingJob reconcile: create the Job, keep its `suspend` in step, read the trainer's reports,
//! write the status, deploy a good enough model, and delete the Job after `ttlSecondsAfterFinished`.
//! Once the run has finished its status is final: the Job and pods may go, the results stay.

use super::build::{self, TRAINING_JOB_LABEL};
use super::observe::{self, Observation, State};
use crate::api::v1alpha1::ModelDeployment;
use crate::api::v1alpha1::common::status::{FALSE, TRUE, UNKNOWN};
use crate::api::v1alpha1::training_job::{
    DeploySpec, ObjectiveValue, PublishedModel, TrainingJob, TrainingJobPhase, TrainingJobStatus, TrialCounts,
};
use crate::conditions::Desired;
use crate::controller::{Context, Error, FIELD_MANAGER, call, merge_params, update_status};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// The trainer writes `pvc://CLAIM/...` outputs under this path; the status speaks the user's URI.
const PVC_ROOT_URI: &str = "file:///mnt/pvc/";

fn user_uri(uri: &str) -> String {
    match uri.strip_prefix(PVC_ROOT_URI) {
        Some(rest) => format!("pvc://{rest}"),
        None => uri.to_string(),
    }
}

fn is_true(status: &TrainingJobStatus, type_: &str) -> bool {
    status.conditions.iter().any(|c| c.type_ == type_ && c.status == TRUE)
}

pub async fn reconcile(tj: Arc<TrainingJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = tj.namespace().ok_or(Error::InvalidObject("a namespaced object without a namespace"))?;
    let name = tj.name_any();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let old = tj.status.clone().unwrap_or_default();
    let finished = is_true(&old, "Succeeded") || is_true(&old, "Failed");
    let mut status = old.clone();
    // Outlives the match below: the desired conditions borrow from it.
    let mut observation: Option<Observation> = None;
    let mut desired: Vec<Desired<'_>> = Vec::new();
    let mut wake: Option<u64> = None;

    if !finished {
        match build::config(&tj) {
            Err(refusal) => {
                status.phase = TrainingJobPhase::Failed;
                status.completion_time = Some(Time(Timestamp::now()));
                desired = vec![
                    c("Created", FALSE, refusal.reason, refusal.message.clone()),
                    c("Running", FALSE, refusal.reason, String::new()),
                    c("Succeeded", FALSE, refusal.reason, String::new()),
                    c("Failed", TRUE, refusal.reason, refusal.message.clone()),
                ];
                ctx.publish(&*tj, EventType::Warning, refusal.reason, refusal.message).await;
            }
            Ok(config) => {
                let job = match jobs.get_opt(&name).await.map_err(call("read_job"))? {
                    // The Job went before the run finished (deleted by hand): say so rather than train again.
                    None if old.job_name.is_some() => {
                        let message = format!("Job {name} was deleted before the run finished");
                        status.phase = TrainingJobPhase::Failed;
                        status.completion_time = Some(Time(Timestamp::now()));
                        let desired = vec![
                            c("Running", FALSE, "JobDeleted", String::new()),
                            c("Succeeded", FALSE, "JobDeleted", String::new()),
                            c("Failed", TRUE, "JobDeleted", message.clone()),
                        ];
                        ctx.publish(&*tj, EventType::Warning, "JobDeleted", message).await;
                        write_status(&tj, &ctx, &old, status, &desired).await?;
                        return Ok(Action::await_change());
                    }
                    None => {
                        let job = build::job(&tj, &config, &ctx.defaults);
                        let pp =
                            PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
                        let created = jobs.create(&pp, &job).await.map_err(call("create_job"))?;
                        ctx.publish(
                            &*tj,
                            EventType::Normal,
                            "JobCreated",
                            format!("created Job {name} with {} trial(s)", build::trial_count(&config)),
                        )
                        .await;
                        created
                    }
                    Some(job) => {
                        let ours = job
                            .metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .any(|o| Some(&o.uid) == tj.uid().as_ref());
                        // A Job of an earlier TrainingJob of the same name, still being deleted: wait for it.
                        if !ours && job.metadata.deletion_timestamp.is_some() {
                            return Ok(Action::requeue(Duration::from_secs(2)));
                        }
                        if !ours {
                            let message =
                                format!("a Job named {name} exists and does not belong to this TrainingJob");
                            status.phase = TrainingJobPhase::Failed;
                            status.completion_time = Some(Time(Timestamp::now()));
                            let desired = vec![
                                c("Created", FALSE, "JobConflict", message.clone()),
                                c("Succeeded", FALSE, "JobConflict", String::new()),
                                c("Failed", TRUE, "JobConflict", message),
                            ];
                            write_status(&tj, &ctx, &old, status, &desired).await?;
                            return Ok(Action::await_change());
                        }
                        if job.spec.as_ref().and_then(|s| s.suspend) != Some(tj.spec.suspend) {
                            let patch = serde_json::json!({ "spec": { "suspend": tj.spec.suspend } });
                            jobs.patch(&name, &merge_params(), &Patch::Merge(&patch))
                                .await
                                .map_err(call("suspend_job"))?;
                            let (reason, note) = if tj.spec.suspend {
                                ("Suspended", "the run is suspended: its pods are stopped")
                            } else {
                                ("Resumed", "the run is resumed")
                            };
                            ctx.publish(&*tj, EventType::Normal, reason, note.into()).await;
                        }
                        job
                    }
                };
                let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
                // Only this Job's pods: a same-named earlier run's pods may linger.
                let job_uid = job.metadata.uid.clone().unwrap_or_default();
                let pods = pods
                    .list(&ListParams::default().labels(&format!(
                        "{TRAINING_JOB_LABEL}={name},batch.kubernetes.io/controller-uid={job_uid}"
                    )))
                    .await
                    .map_err(call("read_pods"))?;
                let (metric, lower) = build::objective(&tj.spec);
                let metric = build::metric_name(metric);
                let mut obs =
                    observe::observe(&job, &pods.items, build::trial_count(&config), &metric, lower);
                // A suspend asked for but not yet taken up by the Job controller is shown at once.
                if tj.spec.suspend && matches!(obs.state, State::Created | State::Running) {
                    obs.state = State::Suspended;
                }
                let obs = &*observation.insert(obs);
                desired = apply_observation(&tj, &job, obs, &mut status, &metric);
                if status.phase != old.phase {
                    transition_event(&ctx, &tj, obs).await;
                }
            }
        }
    }

    // Deploy a finished, good enough model (once).
    if status.phase == TrainingJobPhase::Succeeded
        && let Some(deploy) = &tj.spec.deploy
        && !is_true(&old, "Deployed")
    {
        let (d, retry) = match deploy_model(&ctx, &tj, &ns, &status, deploy).await {
            Ok(outcome) => outcome,
            // The results are recorded whatever happens to the deploy; it is tried again later.
            Err(e) => (
                c("Deployed", FALSE, "DeployFailed", format!("setting the ModelDeployment's model: {e}")),
                true,
            ),
        };
        if retry {
            wake = Some(30);
        }
        desired.push(d);
    }
    let now_finished = matches!(status.phase, TrainingJobPhase::Succeeded | TrainingJobPhase::Failed);
    if now_finished && !finished && tj.spec.ttl_seconds_after_finished.is_some() {
        // Come back for the ttl once the final status is in the cache.
        wake = Some(wake.map_or(1, |w| w.min(1)));
    }
    write_status(&tj, &ctx, &old, status.clone(), &desired).await?;

    // Delete the Job (and its pods) once the ttl after finishing has passed; the status stays.
    // Only once the final status has been stored and read back (`finished` comes from the object), so a
    // reconcile from a stale cache cannot take the missing Job for one never made.
    if finished && let Some(ttl) = tj.spec.ttl_seconds_after_finished {
        let done = status
            .completion_time
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or_else(|| Timestamp::now().as_second());
        let left = done + ttl as i64 - Timestamp::now().as_second();
        if left > 0 {
            wake = Some(wake.map_or(left as u64, |w| w.min(left as u64)));
        } else if let Some(job) = jobs.get_opt(&name).await.map_err(call("read_job"))?
            && job.metadata.deletion_timestamp.is_none()
            && job.metadata.owner_references.iter().flatten().any(|o| Some(&o.uid) == tj.uid().as_ref())
        {
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            jobs.delete(&name, &dp).await.map_err(call("delete_job"))?;
            ctx.publish(
                &*tj,
                EventType::Normal,
                "JobDeleted",
                format!("deleted Job {name}: ttlSecondsAfterFinished passed"),
            )
            .await;
        }
    }
    Ok(match wake {
        Some(s) => Action::requeue(Duration::from_secs(s.max(1))),
        None => Action::await_change(),
    })
}

fn c<'a>(type_: &'static str, status: &'static str, reason: &'a str, message: String) -> Desired<'a> {
    Desired { type_, status, reason, message }
}

/// Fills `status` from the observation and returns the conditions to hold.
fn apply_observation<'a>(
    tj: &TrainingJob,
    job: &Job,
    obs: &'a Observation,
    status: &mut TrainingJobStatus,
    metric: &str,
) -> Vec<Desired<'a>> {
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
            c("Suspended", TRUE, "Suspended", "spec.suspend is true: no trainer pod runs".into())
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
            status.completion_time = js.completion_time.clone().or_else(|| Some(Time(Timestamp::now())));
            status.metrics = t.metrics.clone();
            status.best_hyperparameters = t.hyperparameters.clone();
            let (m, _) = build::objective(&tj.spec);
            status.objective = t.metrics.get(metric).map(|&value| ObjectiveValue { metric: m, value });
            let uri = user_uri(&t.model_uri);
            status.model = Some(PublishedModel {
                uri: uri.clone(),
                version: None,
                sha256: Some(t.model_sha256.clone()),
                dataset_sha256: Some(t.dataset_sha256.clone()),
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
            status.completion_time = js.completion_time.clone().or_else(|| Some(Time(Timestamp::now())));
            vec![
                created,
                c("Running", FALSE, "Finished", String::new()),
                suspended(false),
                c("Succeeded", FALSE, reason, String::new()),
                c("Failed", TRUE, reason, message.chars().take(2048).collect()),
            ]
        }
    }
}

async fn transition_event(ctx: &Context, tj: &TrainingJob, obs: &Observation) {
    match &obs.state {
        State::Running => {
            ctx.publish(
                tj,
                EventType::Normal,
                "TrainingStarted",
                format!("{} trainer pod(s) running", obs.running),
            )
            .await
        }
        State::Succeeded { best } => {
            let t = &obs.succeeded[best];
            ctx.publish(
                tj,
                EventType::Normal,
                "TrainingSucceeded",
                format!(
                    "model at {} ({} trial(s) succeeded, {} failed)",
                    user_uri(&t.model_uri),
                    obs.succeeded.len(),
                    obs.failed.len()
                ),
            )
            .await
        }
        State::Failed { reason, message } => {
            ctx.publish(tj, EventType::Warning, reason, message.chars().take(1024).collect()).await
        }
        State::Suspended | State::Created => {}
    }
}

/// The deploy gate: the model, the metric's name and value and the threshold when it passes, else the
/// Deployed=False condition saying why.
fn gate<'a>(
    status: &'a TrainingJobStatus,
    deploy: &DeploySpec,
) -> Result<(&'a PublishedModel, String, f64, f64), Desired<'static>> {
    let metric = build::metric_name(deploy.when.metric);
    let Some(model) = &status.model else {
        return Err(c("Deployed", FALSE, "NoModel", "the run published no model".into()));
    };
    let Some(&value) = status.metrics.get(&metric) else {
        return Err(c(
            "Deployed",
            FALSE,
            "MetricMissing",
            format!("the trainer reported no {metric} for this model"),
        ));
    };
    let threshold = deploy.when.threshold;
    let lower = deploy.when.metric.lower_is_better();
    if (lower && value <= threshold) || (!lower && value >= threshold) {
        return Ok((model, metric, value, threshold));
    }
    let side = if lower { "above" } else { "below" };
    Err(c(
        "Deployed",
        FALSE,
        "BelowThreshold",
        format!("{metric} {value:.4} is {side} the threshold {threshold}: not deployed"),
    ))
}

/// Sets the ModelDeployment's model when the gate passes. Returns the Deployed condition and whether to
/// try again later (the ModelDeployment does not exist yet).
async fn deploy_model(
    ctx: &Context,
    tj: &TrainingJob,
    ns: &str,
    status: &TrainingJobStatus,
    deploy: &DeploySpec,
) -> Result<(Desired<'static>, bool), Error> {
    let (model, metric, value, threshold) = match gate(status, deploy) {
        Ok(passed) => passed,
        Err(refused) => {
            if refused.reason == "BelowThreshold"
                && !status.conditions.iter().any(|c| c.type_ == "Deployed" && c.reason == "BelowThreshold")
            {
                ctx.publish(tj, EventType::Warning, "NotDeployed", refused.message.clone()).await;
            }
            return Ok((refused, false));
        }
    };
    let mds: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), ns);
    let target = &deploy.model_deployment;
    if mds.get_opt(target).await.map_err(call("read_model_deployment"))?.is_none() {
        return Ok((
            c(
                "Deployed",
                FALSE,
                "ModelDeploymentNotFound",
                format!("ModelDeployment {target} does not exist (retrying)"),
            ),
            true,
        ));
    }
    // A version the ModelDeployment named belongs to its old model: drop it.
    let patch = serde_json::json!({ "spec": { "model": { "uri": model.uri, "sha256": model.sha256, "version": null } } });
    mds.patch(target, &merge_params(), &Patch::Merge(&patch)).await.map_err(call("deploy_model"))?;
    let message = format!(
        "{metric} {value:.4} passed {threshold}: ModelDeployment {target} now rolls out {}",
        model.uri
    );
    ctx.publish(tj, EventType::Normal, "Deployed", message.clone()).await;
    Ok((c("Deployed", TRUE, "Deployed", message), false))
}

/// Writes the status when it differs from what is stored (conditions compared without their times).
async fn write_status(
    tj: &TrainingJob,
    ctx: &Context,
    old: &TrainingJobStatus,
    mut status: TrainingJobStatus,
    desired: &[Desired<'_>],
) -> Result<(), Error> {
    status.observed_generation = tj.metadata.generation;
    update_status(ctx, tj, old, &status, desired).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(yaml: &str) -> DeploySpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn status(metric: &str, value: f64) -> TrainingJobStatus {
        TrainingJobStatus {
            metrics: [(metric.to_string(), value)].into(),
            model: Some(PublishedModel { uri: "s3://m/model.onnx".into(), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn the_deploy_gate_knows_which_way_each_metric_is_better() {
        let at_least = deploy("{modelDeployment: iris, when: {metric: accuracy, threshold: 0.9}}");
        assert!(gate(&status("accuracy", 0.9), &at_least).is_ok());
        let refused = gate(&status("accuracy", 0.85), &at_least).unwrap_err();
        assert_eq!(refused.reason, "BelowThreshold");
        assert_eq!(refused.message, "accuracy 0.8500 is below the threshold 0.9: not deployed");
        let at_most = deploy("{modelDeployment: iris, when: {metric: logLoss, threshold: 0.3}}");
        assert!(gate(&status("logLoss", 0.2), &at_most).is_ok());
        let refused = gate(&status("logLoss", 0.35), &at_most).unwrap_err();
        assert!(refused.message.contains("above the threshold"), "{}", refused.message);
        assert_eq!(gate(&status("f1", 0.99), &at_least).unwrap_err().reason, "MetricMissing");
        let mut none = status("accuracy", 1.0);
        none.model = None;
        assert_eq!(gate(&none, &at_least).unwrap_err().reason, "NoModel");
    }
}
