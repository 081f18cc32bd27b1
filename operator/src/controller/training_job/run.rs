//! Pure: what the Job and its pods say about a run, turned into the TrainingJob's state. The trainer's
//! reports come from its pods' termination messages; a trial counts as succeeded only with a report.

use super::build::CONTAINER;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use mizzen_common::training::{Outcome, Report, Trained};
use std::collections::{BTreeMap, BTreeSet};

/// The annotation the Job controller puts on each pod: its completion index.
pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

/// Where the run stands.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// The Job exists; no trainer pod runs yet.
    Created,
    Suspended,
    Running,
    /// At least one trial reported a model; `best` is the trial chosen by the objective.
    Succeeded {
        best: u32,
    },
    Failed {
        reason: String,
        message: String,
    },
}

/// The run as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub state: State,
    /// Reports of trials that trained a model, by index.
    pub succeeded: BTreeMap<u32, Trained>,
    /// Indexes that failed for good.
    pub failed: BTreeSet<u32>,
    pub running: i32,
    pub total: i32,
}

/// The last terminated trainer container of each pod: (index, pod failed?, report or why there is none).
fn pod_reports(pods: Vec<&Pod>) -> Vec<(u32, bool, Result<Report, String>)> {
    let mut out = Vec::new();
    for pod in pods {
        let Some(index) = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(INDEX_ANNOTATION))
            .and_then(|i| i.parse::<u32>().ok())
        else {
            continue;
        };
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or_default();
        if phase != "Succeeded" && phase != "Failed" {
            continue;
        }
        let terminated = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER))
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref());
        let report = match terminated {
            Some(t) => match t.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
                Some(m) => Report::parse(m).map_err(|_| {
                    let tail: String =
                        m.chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect();
                    format!("exit code {}; the trainer's last output: {tail}", t.exit_code)
                }),
                None => Err(format!(
                    "exit code {} ({}) without a report",
                    t.exit_code,
                    t.reason.as_deref().unwrap_or("no reason given")
                )),
            },
            None => Err("the trainer container ended without a status".into()),
        };
        out.push((index, phase == "Failed", report));
    }
    out
}

/// A condition reason the API server accepts (CamelCase letters and digits), whatever a pod reported.
fn clean_reason(reason: &str) -> String {
    let clean: String = reason
        .chars()
        .skip_while(|c| !c.is_ascii_alphabetic())
        .filter(|c| c.is_ascii_alphanumeric())
        .take(64)
        .collect();
    if clean.is_empty() { "TrainerFailed".into() } else { clean }
}

/// Parses a Job's `failedIndexes` / `completedIndexes`: `"1,3-5"`.
pub fn parse_indexes(text: Option<&str>) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for part in text.unwrap_or_default().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a..=b.min(a.saturating_add(100_000)));
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// The trial with the best `metric` (lowest when `lower_is_better`); ties go to the lower index.
pub fn best_trial(succeeded: &BTreeMap<u32, Trained>, metric: &str, lower_is_better: bool) -> Option<u32> {
    let mut best: Option<(u32, f64)> = None;
    for (&i, t) in succeeded {
        let Some(&v) = t.metrics.get(metric).filter(|v| v.is_finite()) else { continue };
        let better = match best {
            None => true,
            Some((_, b)) => {
                if lower_is_better {
                    v < b
                } else {
                    v > b
                }
            }
        };
        if better {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i).or_else(|| succeeded.keys().next().copied())
}

/// Reads the run's state from its Job and that Job's pods.
pub fn read<'a>(
    job: &Job,
    pods: impl IntoIterator<Item = &'a Pod>,
    total: i32,
    metric: &str,
    lower_is_better: bool,
) -> Observation {
    let status = job.status.clone().unwrap_or_default();
    let condition = |t: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t && c.status == "True")
            .map(|c| (c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
    };
    let mut succeeded = BTreeMap::new();
    let mut failures: BTreeMap<u32, (String, String)> = BTreeMap::new();
    // Attempts in order (the API lists pods by name, whose suffix is random): a success anywhere wins,
    // else the last attempt's failure.
    let mut pods: Vec<&Pod> = pods.into_iter().collect();
    pods.sort_by_key(|p| {
        let failures: u32 = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("batch.kubernetes.io/job-index-failure-count"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (failures, p.metadata.creation_timestamp.as_ref().map(|t| t.0))
    });
    for (index, pod_failed, report) in pod_reports(pods) {
        match report {
            Ok(Report { outcome: Outcome::Succeeded(t), .. }) if !pod_failed => {
                succeeded.insert(index, t);
            }
            Ok(Report { outcome: Outcome::Failed { reason, message }, .. }) => {
                failures.insert(index, (reason, message));
            }
            Ok(Report { outcome: Outcome::Succeeded(_), .. }) => {
                failures
                    .insert(index, ("TrainerFailed".into(), "the pod failed after reporting success".into()));
            }
            Err(why) => {
                failures.insert(index, (if pod_failed { "TrainerFailed" } else { "NoReport" }.into(), why));
            }
        }
    }
    let completed = parse_indexes(status.completed_indexes.as_deref());
    let mut failed = parse_indexes(status.failed_indexes.as_deref());
    // A pod that succeeded without a report trained nothing we can publish.
    failed.extend(completed.iter().filter(|i| !succeeded.contains_key(i)));
    for i in succeeded.keys() {
        failed.remove(i);
    }
    let running = status.active.unwrap_or(0);
    let finished = condition("Complete").is_some() || condition("Failed").is_some();
    let state = if finished {
        match best_trial(&succeeded, metric, lower_is_better) {
            Some(best) => State::Succeeded { best },
            None => {
                let (reason, message) = match condition("Failed") {
                    Some((r, m)) if r == "DeadlineExceeded" => (
                        "DeadlineExceeded".to_string(),
                        format!("the run took longer than activeDeadlineSeconds: {m}"),
                    ),
                    _ => match failures.iter().next_back() {
                        Some((i, (r, m))) if total > 1 => {
                            (r.clone(), format!("all {total} trials failed; trial {i}: {m}"))
                        }
                        Some((_, (r, m))) => (r.clone(), m.clone()),
                        None => match condition("Failed") {
                            Some((r, m)) => (if r.is_empty() { "JobFailed".into() } else { r }, m),
                            None => ("NoReport".into(), "the trainer finished without a report".into()),
                        },
                    },
                };
                State::Failed { reason: clean_reason(&reason), message }
            }
        }
    } else if condition("Suspended").is_some() || job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
        State::Suspended
    } else if status.ready.unwrap_or(0) > 0
        || status.succeeded.unwrap_or(0) > 0
        || status.failed.unwrap_or(0) > 0
    {
        // A trainer has started (active pods may still be pending: image pulls, scheduling).
        State::Running
    } else {
        State::Created
    };
    Observation { state, succeeded, failed, running, total }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{bad, ok, pod};
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    fn job(condition: Option<(&str, &str)>, completed: &str, failed: &str, active: i32) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: condition.map(|(t, r)| {
                    vec![JobCondition {
                        type_: t.into(),
                        status: "True".into(),
                        reason: Some(r.into()),
                        message: Some("job message".into()),
                        ..Default::default()
                    }]
                }),
                completed_indexes: Some(completed.into()),
                failed_indexes: (!failed.is_empty()).then(|| failed.into()),
                active: Some(active),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn indexes_parse_like_the_job_controller_writes_them() {
        assert_eq!(parse_indexes(Some("1,3-5,9")), [1, 3, 4, 5, 9].into());
        assert!(parse_indexes(None).is_empty());
    }

    #[test]
    fn the_best_trial_wins_and_failed_trials_are_counted() {
        let pods = [
            pod(0, false, 0, Some(&ok(0.9))),
            pod(1, true, 2, Some(&bad("InvalidData", "x"))),
            pod(2, false, 0, Some(&ok(0.95))),
            pod(3, false, 0, Some(&ok(0.93))),
        ];
        let o = read(&job(Some(("Failed", "FailedIndexes")), "0,2-3", "1", 0), &pods, 4, "accuracy", false);
        assert_eq!(o.state, State::Succeeded { best: 2 });
        assert_eq!(o.failed, [1].into());
        assert_eq!(o.succeeded.len(), 3);
        let o = read(&job(Some(("Complete", "")), "0,2-3", "", 0), &pods[..1], 4, "logLoss", true);
        assert_eq!(o.state, State::Succeeded { best: 0 }, "a metric nobody reported falls back to the first");
    }

    #[test]
    fn a_run_fails_only_when_every_trial_fails_and_says_why() {
        let pods = [pod(0, true, 2, Some(&bad("InvalidData", "label column \"y\" is not in the file")))];
        let o = read(&job(Some(("Failed", "FailedIndexes")), "", "0", 0), &pods, 1, "accuracy", false);
        assert_eq!(
            o.state,
            State::Failed {
                reason: "InvalidData".into(),
                message: "label column \"y\" is not in the file".into()
            }
        );
        let pods = [pod(0, true, 137, None), pod(1, true, 2, Some(&bad("InvalidData", "bad")))];
        let o = read(&job(Some(("Failed", "FailedIndexes")), "", "0-1", 0), &pods, 2, "accuracy", false);
        let State::Failed { reason, message } = o.state else { panic!() };
        assert_eq!(reason, "InvalidData");
        assert!(message.starts_with("all 2 trials failed; trial 1: bad"), "{message}");
        let o = read(&job(Some(("Failed", "DeadlineExceeded")), "", "", 0), &[], 1, "accuracy", false);
        assert!(matches!(o.state, State::Failed { ref reason, .. } if reason == "DeadlineExceeded"));
        let o = read(
            &job(Some(("Failed", "FailedIndexes")), "", "0", 0),
            &[pod(0, true, 137, None)],
            1,
            "accuracy",
            false,
        );
        assert_eq!(
            o.state,
            State::Failed {
                reason: "TrainerFailed".into(),
                message: "exit code 137 (Error) without a report".into()
            }
        );
        // A pod that "succeeds" without a report (a fake node) publishes nothing.
        let o =
            read(&job(Some(("Complete", "")), "0", "", 0), &[pod(0, false, 0, None)], 1, "accuracy", false);
        assert!(matches!(o.state, State::Failed { ref reason, .. } if reason == "NoReport"));
        assert_eq!(o.failed, [0].into());
    }

    #[test]
    fn the_last_attempt_of_an_index_gives_the_reason_whatever_order_pods_are_listed_in() {
        let attempt = |failures: u32, reason: &str| {
            let mut p = pod(0, true, 1, Some(&bad(reason, reason)));
            p.metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert("batch.kubernetes.io/job-index-failure-count".into(), failures.to_string());
            p
        };
        let pods = [attempt(1, "InvalidData"), attempt(0, "DataUnreadable")];
        let o = read(&job(Some(("Failed", "FailedIndexes")), "", "0", 0), &pods, 1, "accuracy", false);
        assert!(
            matches!(o.state, State::Failed { ref reason, .. } if reason == "InvalidData"),
            "{:?}",
            o.state
        );
    }

    #[test]
    fn unfinished_runs_are_created_running_or_suspended() {
        assert_eq!(read(&job(None, "", "", 0), &[], 1, "accuracy", false).state, State::Created);
        let mut started = job(None, "", "", 2);
        assert_eq!(read(&started, &[], 3, "accuracy", false).state, State::Created, "pods pending");
        started.status.as_mut().unwrap().ready = Some(1);
        assert_eq!(read(&started, &[], 3, "accuracy", false).state, State::Running);
        assert_eq!(
            read(&job(Some(("Suspended", "JobSuspended")), "", "", 0), &[], 1, "accuracy", false).state,
            State::Suspended
        );
    }
}
