//! Test fixtures: trainer pods as the Job controller and the kubelet leave them, and the trainer's reports.

use super::build::CONTAINER;
use super::run::INDEX_ANNOTATION;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mizzen_common::training::{Outcome, Report, Trained};

/// A finished trainer pod of completion index `index`, with its termination message.
pub fn pod(index: u32, failed: bool, exit: i32, message: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            annotations: Some([(INDEX_ANNOTATION.to_string(), index.to_string())].into()),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some(if failed { "Failed" } else { "Succeeded" }.into()),
            container_statuses: Some(vec![ContainerStatus {
                name: CONTAINER.into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: exit,
                        message: message.map(str::to_owned),
                        reason: Some(if failed { "Error" } else { "Completed" }.into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

pub fn ok(accuracy: f64) -> String {
    reported("accuracy", accuracy)
}

/// A succeeded run whose one metric is `metric` = `value`.
pub fn reported(metric: &str, value: f64) -> String {
    Report {
        trial: None,
        outcome: Outcome::Succeeded(Trained {
            metrics: [(metric.to_string(), value)].into(),
            hyperparameters: [("l2".to_string(), value.to_string())].into(),
            model_uri: format!("s3://m/{value}/model.onnx"),
            model_sha256: "m".into(),
            dataset_sha256: "d".into(),
            run_id: None,
            version: None,
        }),
    }
    .to_termination_message()
}

/// A search trial's report: its model logged as run `run_id`'s artifact, not yet a registered version.
pub fn logged(accuracy: f64, run_id: &str) -> String {
    Report {
        trial: Some(0),
        outcome: Outcome::Succeeded(Trained {
            metrics: [("accuracy".to_string(), accuracy)].into(),
            hyperparameters: [("l2".to_string(), "0.1".to_string())].into(),
            model_uri: format!("mlflow-artifacts:/1/{run_id}/artifacts/model/model.onnx"),
            model_sha256: "m".into(),
            dataset_sha256: "d".into(),
            run_id: Some(run_id.into()),
            version: None,
        }),
    }
    .to_termination_message()
}

pub fn bad(reason: &str, message: &str) -> String {
    Report { trial: None, outcome: Outcome::Failed { reason: reason.into(), message: message.into() } }
        .to_termination_message()
}
