//! Scenarios of the TrainingJob decision in Argo Rollouts' style: seed the Job, its pods and the stored
//! status, decide, and check the exact actions and status. [`Cluster`] plays the API server and the Job
//! controller: it takes the decided actions the way `apply` writes them and stores the status the way
//! `update_status` merges it.

use super::super::fixtures::{bad, logged, ok, pod, reported};
use super::*;
use crate::api::v1alpha1::ModelDeployment;
use crate::conditions;
use crate::controller::Defaults;
use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::EventType;

const NOW: i64 = 1_000_000;

const SPEC: &str = "apiVersion: mizzen.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: churn}\nspec:\n  \
    dataset: {uri: s3://data/churn.csv, label: churned}\n  algorithm: logisticRegression\n  \
    output: {uri: s3://models/churn/}\n";

struct Cluster {
    tj: TrainingJob,
    observed: Observed,
    now: i64,
}

fn given(extra: &str) -> Cluster {
    let mut tj: TrainingJob = serde_saphyr::from_str(&format!("{SPEC}{extra}")).unwrap();
    tj.metadata.namespace = Some("ml".into());
    tj.metadata.uid = Some("uid-churn".into());
    tj.metadata.generation = Some(1);
    Cluster { tj, observed: Observed::default(), now: NOW }
}

fn defaults() -> Defaults {
    Defaults::for_tests()
}

fn completed(at: i64) -> JobStatus {
    JobStatus {
        conditions: Some(vec![JobCondition {
            type_: "Complete".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        completed_indexes: Some("0".into()),
        completion_time: Some(time(at)),
        start_time: Some(time(at - 60)),
        ..Default::default()
    }
}

impl Cluster {
    fn decide(&self) -> Decision {
        decide(&self.tj, &self.observed, self.now)
    }

    /// Writes the actions as `apply` would, and stores the status as `update_status` would.
    fn apply(&mut self, decision: &Decision) {
        let mut registered = None;
        for action in &decision.actions {
            match action {
                Action::CreateJob(config) => {
                    let mut job = build::job(&self.tj, config, &defaults());
                    job.metadata.uid = Some("uid-job".into());
                    self.observed.job = Some(job);
                }
                Action::Suspend(on) => self.job().spec.as_mut().unwrap().suspend = Some(*on),
                Action::DeleteJob => self.observed.job = None,
                // The registry numbers the first version of a model 1.
                Action::Register { name, .. } => registered = Some(format!("registry://{name}/1")),
                Action::Deploy { .. } | Action::Publish(_) => {}
            }
        }
        let stored = self.tj.status.clone().unwrap_or_default();
        let mut status = decision.status.clone();
        if let (Some(uri), Some(model)) = (registered, status.model.as_mut()) {
            (model.uri, model.version) = (uri, Some("1".into()));
        }
        status.conditions =
            conditions::merge(&stored.conditions, &decision.conditions, Some(1), time(self.now));
        self.tj.status = Some(status);
    }

    fn step(&mut self) -> Decision {
        let d = self.decide();
        self.apply(&d);
        d
    }

    fn job(&mut self) -> &mut Job {
        self.observed.job.as_mut().unwrap()
    }

    /// A pod of the Job (`uid`) with the trainer's report.
    fn pod_of(&mut self, uid: &str, pod: Pod) {
        let mut pod = pod;
        pod.metadata.labels = Some([(CONTROLLER_UID_LABEL.to_string(), uid.to_string())].into());
        self.observed.pods.push(pod);
    }

    /// The Job's single trial trained a model with this accuracy and the Job completed at `at`.
    fn trained(&mut self, accuracy: f64, at: i64) {
        self.pod_of("uid-job", pod(0, false, 0, Some(&ok(accuracy))));
        self.job().status = Some(completed(at));
    }

    fn with_algorithm(mut self, algorithm: &str) -> Self {
        self.tj.spec.algorithm = serde_json::from_value(serde_json::json!(algorithm)).unwrap();
        self
    }

    fn phase(&self) -> TrainingJobPhase {
        self.tj.status.as_ref().unwrap().phase
    }

    fn condition(&self, type_: &str) -> (String, String, String) {
        let c = self.tj.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }
}

/// The ModelDeployment a good enough model goes to.
fn target() -> ModelDeployment {
    ModelDeployment::new("churn-serve", serde_saphyr::from_str("model: {uri: \"s3://m/old.onnx\"}").unwrap())
}

/// An mlp's task follows its label (the trainer decides): one that regressed reports r2, which becomes
/// the objective when no search or deploy gate names one.
#[test]
fn an_mlp_that_regressed_has_r2_as_its_objective() {
    let mut c = given("").with_algorithm("mlp");
    c.step();
    c.pod_of("uid-job", pod(0, false, 0, Some(&reported("r2", 0.94))));
    c.job().status = Some(completed(NOW - 5));
    c.step();
    let s = c.tj.status.clone().unwrap();
    assert_eq!(s.phase, TrainingJobPhase::Succeeded);
    let objective = s.objective.unwrap();
    assert_eq!((objective.metric, objective.value), (Metric::R2, 0.94));
    assert_eq!(c.condition("Succeeded").2, "trained: r2 0.9400; model at s3://m/0.94/model.onnx");
}

fn publish(reason: &str, note: &str) -> Action {
    Action::Publish(Notice::normal(reason, note))
}

#[test]
fn a_new_run_creates_its_job_then_follows_it_to_success_with_one_event_per_phase() {
    let mut c = given("");
    let d = c.step();
    let config = build::config(&c.tj, false, None).unwrap();
    assert_eq!(
        d.actions,
        [Action::CreateJob(Box::new(config)), publish("JobCreated", "created Job churn with 1 trial(s)")]
    );
    assert_eq!(c.phase(), TrainingJobPhase::Pending);
    assert_eq!(c.tj.status.as_ref().unwrap().job_name.as_deref(), Some("churn"));
    assert_eq!(
        c.condition("Created"),
        (TRUE.into(), "JobCreated".into(), "Job churn runs 1 trial(s)".into())
    );
    assert_eq!(c.condition("Succeeded").0, UNKNOWN);
    assert_eq!(c.step().actions, [], "nothing new");

    c.job().status = Some(JobStatus { active: Some(1), ready: Some(1), ..Default::default() });
    assert_eq!(c.step().actions, [publish("TrainingStarted", "1 trainer pod(s) running")]);
    assert_eq!(c.phase(), TrainingJobPhase::Running);
    assert_eq!(c.step().actions, [], "the event is published once");

    c.trained(0.93, NOW - 5);
    let d = c.step();
    assert_eq!(
        d.actions,
        [publish("TrainingSucceeded", "model at s3://m/0.93/model.onnx (1 trial(s) succeeded, 0 failed)")]
    );
    assert_eq!(d.requeue, None);
    let s = c.tj.status.clone().unwrap();
    assert_eq!(s.phase, TrainingJobPhase::Succeeded);
    assert_eq!(s.completion_time, Some(time(NOW - 5)), "the Job's completion time");
    assert_eq!(s.start_time, Some(time(NOW - 65)));
    assert_eq!(s.metrics.get("accuracy"), Some(&0.93));
    assert_eq!(s.model.as_ref().unwrap().uri, "s3://m/0.93/model.onnx");
    assert_eq!(s.objective.as_ref().unwrap().value, 0.93);
    assert_eq!(s.trials.as_ref().unwrap().summary.as_deref(), Some("1/0/1"));
    let (status, reason, message) = c.condition("Succeeded");
    assert_eq!((status.as_str(), reason.as_str()), (TRUE, "ModelTrained"));
    assert_eq!(message, "trained: accuracy 0.9300; model at s3://m/0.93/model.onnx");

    // Final: the Job and its pods may go, the status stays.
    c.observed = Observed::default();
    let d = c.decide();
    assert_eq!((d.actions, d.status), (vec![], c.tj.status.clone().unwrap()));
}

#[test]
fn a_run_the_operator_cannot_start_fails_at_once_with_the_reason() {
    let mut c = given("");
    c.tj.spec.output.uri = None; // registry://churn
    let d = c.step();
    assert!(
        matches!(&d.actions[..], [Action::Publish(n)] if n.reason == "RegistryUnavailable" && n.type_ == EventType::Warning)
    );
    assert_eq!(c.phase(), TrainingJobPhase::Failed);
    assert_eq!(c.tj.status.as_ref().unwrap().completion_time, Some(time(NOW)));
    let (status, reason, message) = c.condition("Failed");
    assert_eq!((status.as_str(), reason.as_str()), (TRUE, "RegistryUnavailable"));
    assert!(message.contains("registry://churn"), "{message}");
    assert_eq!(c.step().actions, [], "said once; no Job is ever made");
}

#[test]
fn a_failed_trial_fails_the_run_with_the_trainers_reason() {
    let mut c = given("");
    c.step();
    c.pod_of("uid-job", pod(0, true, 2, Some(&bad("InvalidData", "column churned is missing"))));
    c.job().status = Some(JobStatus {
        conditions: Some(vec![JobCondition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: Some("FailedIndexes".into()),
            ..Default::default()
        }]),
        failed_indexes: Some("0".into()),
        ..Default::default()
    });
    let d = c.step();
    assert_eq!(d.actions, [Action::Publish(Notice::warning("InvalidData", "column churned is missing"))]);
    assert_eq!(c.phase(), TrainingJobPhase::Failed);
    assert_eq!(
        c.condition("Failed"),
        (TRUE.into(), "InvalidData".into(), "column churned is missing".into())
    );
    assert_eq!(c.tj.status.as_ref().unwrap().completion_time, Some(time(NOW)), "the Job gave none");
}

#[test]
fn pods_of_an_earlier_run_of_the_same_name_are_not_this_runs_results() {
    let mut c = given("");
    c.step();
    c.pod_of("uid-earlier", pod(0, false, 0, Some(&ok(0.99))));
    c.step();
    assert_eq!(c.phase(), TrainingJobPhase::Pending);
    assert_eq!(c.tj.status.as_ref().unwrap().model, None);
}

#[test]
fn suspend_and_resume_reach_the_job_and_show_at_once() {
    let mut c = given("");
    c.step();
    c.job().status = Some(JobStatus { active: Some(1), ready: Some(1), ..Default::default() });
    c.step();
    c.tj.spec.suspend = true;
    let d = c.step();
    assert_eq!(
        d.actions,
        [Action::Suspend(true), publish("Suspended", "the run is suspended: its pods are stopped")]
    );
    assert_eq!(c.phase(), TrainingJobPhase::Suspended, "before the Job controller takes it up");
    assert_eq!(c.condition("Suspended").0, TRUE);
    c.tj.spec.suspend = false;
    assert_eq!(c.step().actions, [Action::Suspend(false), publish("Resumed", "the run is resumed")]);
    // The pass the Job's change wakes sees it running again.
    c.step();
    assert_eq!(c.phase(), TrainingJobPhase::Running);
}

#[test]
fn a_job_deleted_before_the_run_finished_fails_it_rather_than_training_again() {
    let mut c = given("");
    c.step();
    c.observed.job = None;
    let d = c.step();
    let message = "Job churn was deleted before the run finished";
    assert_eq!(d.actions, [Action::Publish(Notice::warning("JobDeleted", message))]);
    assert_eq!(c.phase(), TrainingJobPhase::Failed);
    assert_eq!(c.condition("Failed"), (TRUE.into(), "JobDeleted".into(), message.into()));
    assert_eq!(c.step().actions, []);
}

#[test]
fn someone_elses_job_of_the_same_name_is_waited_for_or_refused() {
    let mut c = given("");
    let mut foreign = build::job(&c.tj, &build::config(&c.tj, false, None).unwrap(), &defaults());
    foreign.metadata.owner_references = None;
    foreign.metadata.deletion_timestamp = Some(time(NOW - 1));
    c.observed.job = Some(foreign);
    // Still being deleted (an earlier TrainingJob's): wait, write nothing.
    let d = c.decide();
    assert_eq!((d.actions, d.requeue), (vec![], Some(Duration::from_secs(2))));
    assert_eq!(d.status, TrainingJobStatus::default(), "no status write, not even the generation");

    c.job().metadata.deletion_timestamp = None;
    let d = c.step();
    assert_eq!(d.actions, []);
    assert_eq!(c.phase(), TrainingJobPhase::Failed);
    let (_, reason, message) = c.condition("Created");
    assert_eq!(reason, "JobConflict");
    assert_eq!(message, "a Job named churn exists and does not belong to this TrainingJob");
}

#[test]
fn a_good_enough_model_is_deployed_once_to_an_existing_model_deployment() {
    let mut c = given("  deploy: {modelDeployment: churn-serve, when: {metric: accuracy, threshold: 0.9}}\n");
    c.step();
    c.trained(0.93, NOW);
    // The ModelDeployment does not exist yet: the results are stored, the deploy is tried again.
    let d = c.step();
    assert_eq!(d.requeue, Some(DEPLOY_RETRY));
    assert_eq!(c.condition("Deployed").1, "ModelDeploymentNotFound");
    assert_eq!(c.phase(), TrainingJobPhase::Succeeded);

    c.observed.deploy_target = Some(target());
    let d = c.step();
    let message =
        "accuracy 0.9300 passed 0.9: ModelDeployment churn-serve now rolls out s3://m/0.93/model.onnx";
    assert_eq!(
        d.actions,
        [Action::Deploy {
            model_deployment: "churn-serve".into(),
            uri: "s3://m/0.93/model.onnx".into(),
            sha256: Some("m".into()),
            message: message.into(),
        }]
    );
    assert_eq!(c.condition("Deployed"), (TRUE.into(), "Deployed".into(), message.into()));
    assert_eq!(c.step().actions, [], "once");
}

/// A search's trials each log a run; the best one becomes a version once the run is over (its alias moved
/// to it), and that version, not the run's artifact, is what gets deployed.
#[test]
fn a_searchs_best_trial_is_registered_then_deployed_by_version() {
    let mut c = given("  deploy: {modelDeployment: churn-serve, when: {metric: accuracy, threshold: 0.9}}\n");
    c.tj.spec.output.uri =
        Some(serde_json::from_value(serde_json::json!("registry://churn@champion")).unwrap());
    c.observed.registry = true;
    c.observed.deploy_target = Some(target());
    c.step();
    c.pod_of("uid-job", pod(0, false, 0, Some(&logged(0.93, "run-7"))));
    c.job().status = Some(completed(NOW));
    let d = c.step();
    let artifacts = "mlflow-artifacts:/1/run-7/artifacts/model";
    let tags: Vec<(String, String)> = [
        ("mizzen.trainingjob", "ml/churn"),
        ("mizzen.dataset.uri", "s3://data/churn.csv"),
        ("mizzen.dataset.sha256", "d"),
        ("mizzen.model.sha256", "m"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let register = Action::Register {
        name: "churn".into(),
        alias: Some("champion".into()),
        run_id: "run-7".into(),
        source: artifacts.into(),
        tags,
    };
    assert!(d.actions.contains(&register), "{:?}", d.actions);
    assert!(!d.actions.iter().any(|a| matches!(a, Action::Deploy { .. })), "not the run's artifact");
    assert_eq!(d.requeue, Some(REGISTER_RETRY));
    let model = c.tj.status.as_ref().unwrap().model.clone().unwrap();
    assert_eq!((model.uri.as_str(), model.version.as_deref()), ("registry://churn/1", Some("1")));
    assert_eq!(model.run_id.as_deref(), Some("run-7"));

    let d = c.step();
    let message = "accuracy 0.9300 passed 0.9: ModelDeployment churn-serve now rolls out registry://churn/1";
    assert_eq!(
        d.actions,
        [Action::Deploy {
            model_deployment: "churn-serve".into(),
            uri: "registry://churn/1".into(),
            sha256: Some("m".into()),
            message: message.into(),
        }]
    );
    assert_eq!(c.step().actions, [], "registered and deployed once");
}

/// A registration that fails leaves the status' model the run's artifact, so the next reconcile asks again.
#[test]
fn a_failed_registration_is_asked_again() {
    let mut c = given("");
    c.tj.spec.output.uri = Some(serde_json::from_value(serde_json::json!("registry://churn")).unwrap());
    c.observed.registry = true;
    c.step();
    c.pod_of("uid-job", pod(0, false, 0, Some(&logged(0.93, "run-7"))));
    c.job().status = Some(completed(NOW));
    let d = c.decide();
    assert!(d.actions.iter().any(|a| matches!(a, Action::Register { alias: None, .. })), "{:?}", d.actions);
    // As if the registry had been down: the status is stored without the version.
    let mut failed = d.clone();
    failed.actions.clear();
    c.apply(&failed);
    assert!(c.decide().actions.iter().any(|a| matches!(a, Action::Register { .. })));
}

#[test]
fn a_model_below_the_threshold_is_not_deployed_and_says_so_once() {
    let mut c =
        given("  deploy: {modelDeployment: churn-serve, when: {metric: accuracy, threshold: 0.95}}\n");
    c.observed.deploy_target = Some(target());
    c.step();
    c.trained(0.93, NOW);
    let d = c.step();
    let message = "accuracy 0.9300 is below the threshold 0.95: not deployed";
    assert_eq!(d.actions[1], Action::Publish(Notice::warning("NotDeployed", message)), "{:?}", d.actions);
    assert_eq!(c.condition("Deployed"), (FALSE.into(), "BelowThreshold".into(), message.into()));
    assert_eq!(c.step().actions, []);
}

#[test]
fn the_job_goes_after_ttl_seconds_after_finished_and_the_status_stays() {
    let mut c = given("  ttlSecondsAfterFinished: 60\n");
    c.step();
    c.trained(0.93, NOW);
    let d = c.step();
    assert_eq!(d.requeue, Some(Duration::from_secs(1)), "comes back once the final status is stored");
    let d = c.step();
    assert_eq!((d.actions, d.requeue), (vec![], Some(Duration::from_secs(60))));
    c.now = NOW + 60;
    let d = c.step();
    assert_eq!(
        d.actions,
        [Action::DeleteJob, publish("JobDeleted", "deleted Job churn: ttlSecondsAfterFinished passed")]
    );
    assert_eq!(c.phase(), TrainingJobPhase::Succeeded);
    assert_eq!(c.decide().actions, [], "gone");
    // A Job of the same name that is not this TrainingJob's is never deleted.
    let mut foreign = build::job(&c.tj, &build::config(&c.tj, false, None).unwrap(), &defaults());
    foreign.metadata.owner_references = None;
    c.observed.job = Some(foreign);
    assert_eq!(c.decide().actions, []);
}

fn spec_status(metric: &str, value: f64) -> TrainingJobStatus {
    TrainingJobStatus {
        metrics: [(metric.to_string(), value)].into(),
        model: Some(PublishedModel { uri: "s3://m/model.onnx".into(), ..Default::default() }),
        ..Default::default()
    }
}

#[test]
fn the_deploy_gate_knows_which_way_each_metric_is_better() {
    let deploy = |yaml: &str| -> DeploySpec { serde_saphyr::from_str(yaml).unwrap() };
    let at_least = deploy("{modelDeployment: iris, when: {metric: accuracy, threshold: 0.9}}");
    assert!(gate(&spec_status("accuracy", 0.9), &at_least).is_ok());
    let refused = gate(&spec_status("accuracy", 0.85), &at_least).unwrap_err();
    assert_eq!(refused.reason, "BelowThreshold");
    assert_eq!(refused.message, "accuracy 0.8500 is below the threshold 0.9: not deployed");
    let at_most = deploy("{modelDeployment: iris, when: {metric: logLoss, threshold: 0.3}}");
    assert!(gate(&spec_status("logLoss", 0.2), &at_most).is_ok());
    let refused = gate(&spec_status("logLoss", 0.35), &at_most).unwrap_err();
    assert!(refused.message.contains("above the threshold"), "{}", refused.message);
    assert_eq!(gate(&spec_status("f1", 0.99), &at_least).unwrap_err().reason, "MetricMissing");
    let mut none = spec_status("accuracy", 1.0);
    none.model = None;
    assert_eq!(gate(&none, &at_least).unwrap_err().reason, "NoModel");
}

/// A run from a FeatureSet waits until the FeatureSet exists and is materialized, then trains on the join
/// (the trainer is told the store's URL and the features), and its registration names the FeatureSet.
#[test]
fn a_run_from_a_feature_set_waits_for_it_to_be_materialized() {
    let mut c = given("");
    c.tj.spec.dataset.uri = None;
    c.tj.spec.dataset.feature_set = Some(
        serde_json::from_value(serde_json::json!({"name": "customers", "labelsUri": "s3://data/labels.csv"}))
            .unwrap(),
    );
    let d = c.step();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    let (status, reason, message) = c.condition("Created");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "WaitingForFeatureSet"));
    assert!(message.contains("customers to be created"), "{message}");
    assert!(d.requeue.is_some());

    let mut fs: crate::api::v1alpha1::FeatureSet = serde_saphyr::from_str(
        "apiVersion: mizzen.dev/v1alpha1\nkind: FeatureSet\nmetadata: {name: customers, namespace: ml}\nspec:\n  \
         entity: {name: c, joinKey: id}\n  features: [{name: spend, type: float64}]\n  \
         sources: [{name: daily, uri: \"s3://d/a.csv\"}]\n",
    )
    .unwrap();
    c.observed.feature_set = Some(fs.clone());
    c.step();
    assert!(c.condition("Created").2.contains("customers to be materialized"));

    let materialized = crate::api::v1alpha1::common::Condition {
        type_: "Materialized".into(),
        status: "True".into(),
        reason: "Materialized".into(),
        message: String::new(),
        last_transition_time: time(NOW),
        observed_generation: Some(1),
    };
    fs.status = Some(crate::api::v1alpha1::feature_set::FeatureSetStatus {
        conditions: vec![materialized],
        ..Default::default()
    });
    c.observed.feature_set = Some(fs);
    let d = c.step();
    let Some(Action::CreateJob(config)) = d.actions.first() else { panic!("{:?}", d.actions) };
    let join = config.dataset.feature_set.clone().unwrap();
    assert_eq!(
        (join.url.as_str(), join.features.clone()),
        ("http://customers.ml.svc:6566", vec!["spend".to_string()])
    );
    assert_eq!(config.dataset.uri, "s3://data/labels.csv");
}
