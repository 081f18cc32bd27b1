//! Scenarios: a world seeded as observed, the exact actions and conditions decided.

use super::*;
use crate::controller::feature_set::build::{
    MATERIALIZE_ANNOTATION, job, materialization_key, service, stateful_set,
};
use k8s_openapi::api::apps::v1::StatefulSetStatus;
use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus};
use k8s_openapi::jiff::Timestamp;

const CUSTOMERS: &str = r#"
apiVersion: mizzen.dev/v1alpha1
kind: FeatureSet
metadata: {name: customers, namespace: ml, uid: uid-1, generation: 1}
spec:
  entity: {name: customer, joinKey: customer_id}
  features: [{name: spend, type: float64}, {name: visits, type: int64}]
  sources: [{name: daily, uri: "pvc://data/daily.csv"}]
"#;

fn fs() -> FeatureSet {
    serde_saphyr::from_str(CUSTOMERS).unwrap()
}

fn defaults() -> Defaults {
    Defaults::for_tests()
}

fn at(second: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + second).unwrap())
}

/// The children as the operator applied them for `fs`, the store serving every replica.
fn serving(fs: &FeatureSet) -> Observed {
    let mut sts = stateful_set(fs, &defaults());
    sts.metadata.generation = Some(1);
    sts.status = Some(StatefulSetStatus {
        observed_generation: Some(1),
        replicas: 1,
        ready_replicas: Some(1),
        updated_replicas: Some(1),
        current_revision: Some("a".into()),
        update_revision: Some("a".into()),
        ..Default::default()
    });
    Observed {
        stateful_set: Some(sts),
        service: Some(service(fs, false)),
        pods_service: Some(service(fs, true)),
        ..Default::default()
    }
}

/// The materialization Job of `fs` as it is, finished at `second` (`Some(true)`: succeeded), with its pod.
fn finished_job(fs: &FeatureSet, outcome: Option<bool>, second: i64) -> (Job, Pod) {
    let mut job = job(fs, &defaults(), &materialization_key(fs));
    let condition = |type_: &str| JobCondition {
        type_: type_.into(),
        status: "True".into(),
        last_transition_time: Some(at(second)),
        ..Default::default()
    };
    job.status = Some(JobStatus {
        conditions: match outcome {
            Some(true) => Some(vec![condition("Complete")]),
            Some(false) => Some(vec![condition("Failed")]),
            None => None,
        },
        completion_time: (outcome == Some(true)).then(|| at(second)),
        ..Default::default()
    });
    let (phase, code, message) = match outcome {
        Some(true) => {
            ("Succeeded", 0, r#"{"rows":1200,"entities":300,"seconds":0.5,"sources":[["daily",1200]]}"#)
        }
        Some(false) => (
            "Failed",
            2,
            "Error: http://customers-0 refused: 400: daily.csv: row 4: spend: \"lots\" is not a float64",
        ),
        None => ("Running", 0, ""),
    };
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{}-x1", job.name_any())),
            labels: Some([("batch.kubernetes.io/job-name".to_string(), job.name_any())].into()),
            ..Default::default()
        },
        status: Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: outcome.map(|_| {
                vec![ContainerStatus {
                    name: "materialize".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: code,
                            message: Some(message.into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    (job, pod)
}

fn condition(d: &Decision, type_: &str) -> (&'static str, String) {
    let c = d.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} in {d:?}"));
    (c.status, c.reason.clone())
}

fn kinds(d: &Decision) -> Vec<String> {
    d.actions
        .iter()
        .map(|a| match a {
            Action::ApplyStatefulSet(_) => "ApplyStatefulSet".into(),
            Action::ApplyService(s) => format!("ApplyService {}", s.name_any()),
            Action::ApplyCronJob(_) => "ApplyCronJob".into(),
            Action::DeleteCronJob => "DeleteCronJob".into(),
            Action::CreateJob(j) => format!("CreateJob {}", j.name_any()),
            Action::DeleteJob(name) => format!("DeleteJob {name}"),
            Action::Publish(n) => format!("Publish {}", n.reason),
        })
        .collect()
}

/// Stores the decision's status on the object, as the status write does.
fn stored(mut fs: FeatureSet, d: &Decision) -> FeatureSet {
    let mut status = d.status.clone();
    status.conditions = crate::conditions::merge(&[], &d.conditions, fs.metadata.generation, at(0));
    fs.status = Some(status);
    fs
}

#[test]
fn a_new_feature_set_gets_its_store_and_services_and_waits_to_materialize() {
    let d = decide(&fs(), &Observed::default(), &defaults());
    assert_eq!(kinds(&d), ["ApplyStatefulSet", "ApplyService customers", "ApplyService customers-pods"]);
    assert_eq!(condition(&d, "Ready"), (FALSE, "Creating".into()));
    assert_eq!(condition(&d, "Materialized"), (FALSE, "WaitingForStore".into()));
    assert_eq!(condition(&d, "Degraded"), (FALSE, "AsExpected".into()));
    assert_eq!(d.status.url.as_deref(), Some("http://customers.ml.svc:6566"));
    assert!(d.requeue.is_some(), "a starting store is looked at again");
}

#[test]
fn a_ready_store_is_materialized_once_and_the_report_fills_the_status() {
    let fs = fs();
    let mut world = serving(&fs);
    let d = decide(&fs, &world, &defaults());
    let name = format!("customers-m-{}", materialization_key(&fs));
    assert_eq!(kinds(&d), [format!("CreateJob {name}"), "Publish Materializing".into()]);
    assert_eq!(condition(&d, "Ready"), (TRUE, "Serving".into()));
    assert_eq!(condition(&d, "Materialized"), (FALSE, "Materializing".into()));

    // Running: nothing more to do.
    let (job, pod) = finished_job(&fs, None, 10);
    world.jobs = vec![job];
    world.pods = vec![pod];
    let d = decide(&fs, &world, &defaults());
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(condition(&d, "Materialized"), (FALSE, "Materializing".into()));

    // Done: the report becomes the status, with an event, once.
    let (job, pod) = finished_job(&fs, Some(true), 20);
    world.jobs = vec![job];
    world.pods = vec![pod];
    let d = decide(&fs, &world, &defaults());
    assert_eq!(kinds(&d), ["Publish Materialized"]);
    assert_eq!(condition(&d, "Materialized"), (TRUE, "Materialized".into()));
    let m = d.status.last_materialization.clone().unwrap();
    assert_eq!((m.rows, m.duration_seconds, m.time.clone()), (1200, Some(0.5), at(20)));
    assert_eq!(m.job_name.as_deref(), Some(name.as_str()));
    assert_eq!(d.status.row_count, Some(300));
    let fs = stored(fs, &d);
    let again = decide(&fs, &world, &defaults());
    assert!(again.actions.is_empty(), "an idle FeatureSet writes nothing: {:?}", again.actions);
    assert_eq!(
        (again.status.last_materialization, again.status.row_count),
        (d.status.last_materialization.clone(), d.status.row_count)
    );
    assert_eq!(again.requeue, None);
}

#[test]
fn a_refused_source_fails_the_materialization_with_the_row_named_once() {
    let fs = fs();
    let mut world = serving(&fs);
    let (job, pod) = finished_job(&fs, Some(false), 20);
    world.jobs = vec![job];
    world.pods = vec![pod];
    let d = decide(&fs, &world, &defaults());
    assert_eq!(kinds(&d), ["Publish MaterializationFailed"]);
    assert_eq!(condition(&d, "Materialized"), (FALSE, "MaterializationFailed".into()));
    let message = &d.conditions.iter().find(|c| c.type_ == "Materialized").unwrap().message;
    assert!(message.contains("row 4: spend") && message.contains("exited with code 2"), "{message}");
    assert_eq!(condition(&d, "Ready"), (TRUE, "Serving".into()), "the store serves what it had");
    let fs = stored(fs, &d);
    assert!(decide(&fs, &world, &defaults()).actions.is_empty(), "said once");

    // The manual trigger runs it again (the file fixed, say).
    let mut triggered = fs.clone();
    triggered.annotations_mut().insert(MATERIALIZE_ANNOTATION.into(), "1".into());
    let d = decide(&triggered, &world, &defaults());
    let name = format!("customers-m-{}", materialization_key(&triggered));
    assert_eq!(kinds(&d), [format!("CreateJob {name}"), "Publish Materializing".into()]);
}

#[test]
fn appended_features_roll_the_store_and_materialize_again_once_it_serves_them() {
    let old = fs();
    let mut world = serving(&old);
    let (job, pod) = finished_job(&old, Some(true), 20);
    world.jobs = vec![job.clone()];
    world.pods = vec![pod];
    let mut new = old.clone();
    new.spec
        .features
        .push(serde_json::from_value(serde_json::json!({"name": "tier", "type": "string"})).unwrap());
    let d = decide(&new, &world, &defaults());
    assert_eq!(kinds(&d), ["ApplyStatefulSet", "Publish Materialized"]);
    assert_eq!(condition(&d, "Ready"), (FALSE, "Starting".into()), "not ready until rolled");
    assert_eq!(condition(&d, "Materialized"), (FALSE, "WaitingForStore".into()));
    assert_eq!(condition(&d, "Degraded"), (FALSE, "AsExpected".into()));

    // Rolled: the new spec is materialized, and the old key's Job goes once that one finished.
    let mut world = serving(&new);
    world.jobs = vec![job.clone()];
    let d = decide(&new, &world, &defaults());
    let name = format!("customers-m-{}", materialization_key(&new));
    assert!(kinds(&d).contains(&format!("CreateJob {name}")), "{:?}", kinds(&d));
    let (current, pod) = finished_job(&new, Some(true), 40);
    world.jobs = vec![job.clone(), current];
    world.pods = vec![pod];
    let d = decide(&new, &world, &defaults());
    assert_eq!(kinds(&d), ["Publish Materialized".to_string(), format!("DeleteJob {}", job.name_any())]);
    assert_eq!(condition(&d, "Materialized"), (TRUE, "Materialized".into()));
}

#[test]
fn a_change_the_stored_data_cannot_take_is_not_rolled_out() {
    let old = fs();
    let world = serving(&old);
    let mut new = old.clone();
    new.spec.features.reverse();
    let d = decide(&new, &world, &defaults());
    assert_eq!(kinds(&d), ["Publish IncompatibleSchemaChange"]);
    assert_eq!(condition(&d, "Degraded"), (TRUE, "IncompatibleSchemaChange".into()));
    let message = &d.conditions.iter().find(|c| c.type_ == "Degraded").unwrap().message;
    assert!(message.contains("feature 1 was spend (Float64) and is now visits (Int64)"), "{message}");
    assert_eq!(condition(&d, "Ready"), (TRUE, "Serving".into()), "the store keeps serving");
    assert_eq!(condition(&d, "Materialized"), (FALSE, "WaitingForStore".into()));
    let new = stored(new, &d);
    assert!(decide(&new, &world, &defaults()).actions.is_empty(), "said once");
}

#[test]
fn children_someone_else_made_are_left_alone() {
    let fs = fs();
    let mut world = serving(&fs);
    world.stateful_set.as_mut().unwrap().metadata.owner_references = None;
    let d = decide(&fs, &world, &defaults());
    assert_eq!(kinds(&d), ["Publish ChildConflict"]);
    assert_eq!(condition(&d, "Degraded"), (TRUE, "ChildConflict".into()));
    assert_eq!(condition(&d, "Ready"), (FALSE, "ChildConflict".into()));
}

#[test]
fn a_schedule_is_a_cron_job_whose_runs_count_and_goes_with_the_schedule() {
    let mut fs = fs();
    fs.spec.schedule = Some("@hourly".into());
    let mut world = serving(&fs);
    let (job, pod) = finished_job(&fs, Some(true), 20);
    world.jobs = vec![job];
    world.pods = vec![pod];
    let d = decide(&fs, &world, &defaults());
    assert_eq!(kinds(&d), ["ApplyCronJob", "Publish Materialized"]);
    let cron = match &d.actions[0] {
        Action::ApplyCronJob(c) => c.as_ref().clone(),
        _ => unreachable!(),
    };
    let fs = stored(fs, &d);
    world.cron_job = Some(cron);

    // A scheduled run finishes later: it is the last materialization.
    let (mut scheduled, mut pod) = finished_job(&fs, Some(true), 3600);
    scheduled.metadata.name = Some("customers-29000000".into());
    scheduled.metadata.owner_references = None;
    scheduled.labels_mut().insert(MATERIALIZATION_LABEL.into(), "scheduled".into());
    pod.labels_mut().insert("batch.kubernetes.io/job-name".into(), "customers-29000000".into());
    world.jobs.push(scheduled);
    world.pods.push(pod);
    let d = decide(&fs, &world, &defaults());
    assert_eq!(kinds(&d), ["Publish Materialized"], "scheduled runs are never deleted by the operator");
    let m = d.status.last_materialization.clone().unwrap();
    assert_eq!((m.job_name.as_deref(), m.time), (Some("customers-29000000"), at(3600)));

    let mut unscheduled = fs.clone();
    unscheduled.spec.schedule = None;
    assert!(kinds(&decide(&unscheduled, &world, &defaults())).contains(&"DeleteCronJob".to_string()));
}
