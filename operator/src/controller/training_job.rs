//! TrainingJob: a batch/v1 Job (Indexed for a search) running mizzen-train.

use super::{Children, Kind, not_implemented};
use crate::api::v1alpha1::common::Condition;
use crate::api::v1alpha1::training_job::{TrainingJob, TrainingJobPhase};
use crate::conditions::Desired;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::controller::Controller;

impl Kind for TrainingJob {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
    }

    fn desired_conditions(&self) -> Vec<Desired<'static>> {
        not_implemented("Succeeded", "TrainingJobs")
    }

    fn status(&self, conditions: Vec<Condition>) -> serde_json::Value {
        serde_json::json!({
            "observedGeneration": self.metadata.generation,
            "phase": TrainingJobPhase::Pending,
            "conditions": conditions,
        })
    }

    fn owns(c: Controller<Self>, children: &Children) -> Controller<Self> {
        children.watch::<Self, Job>(c)
    }
}
