//! TrainingJob: an Indexed batch/v1 Job running mizzen-train, one index per trial (one index without a
//! search); the trainer's termination messages become the status; a good enough model is deployed.

pub mod build;
pub mod observe;
pub mod reconcile;
pub mod search;

use super::{Children, Context, Error, Kind};
use crate::api::v1alpha1::common::Condition;
use crate::api::v1alpha1::training_job::TrainingJob;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::controller::{Action, Controller};
use std::sync::Arc;

impl Kind for TrainingJob {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
    }

    fn reconcile(obj: Arc<Self>, ctx: Arc<Context>) -> impl Future<Output = Result<Action, Error>> + Send {
        reconcile::reconcile(obj, ctx)
    }

    fn owns(c: Controller<Self>, children: &Children) -> Controller<Self> {
        children.watch::<Self, Job>(c)
    }
}
