//! TrainingJob: an Indexed batch/v1 Job running mizzen-train, one index per trial (one index without a
//! search); the trainer's termination messages become the status; a good enough model is deployed.
//!
//! `reconcile` is the four steps every controller takes: `observe` reads the Job, its pods and the deploy
//! target; `decide` (pure) turns them into typed actions and the status, reading the run through `run`
//! (pure); `apply` makes the writes; the status is stored last. `build` holds the pure builders of the
//! trainer's configuration and the Job, `search` the trials of a hyperparameter search.

pub mod apply;
pub mod build;
pub mod decide;
#[cfg(test)]
mod fixtures;
pub mod observe;
pub mod reconcile;
pub mod run;
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
