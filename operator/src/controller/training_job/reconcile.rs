//! The TrainingJob reconcile: observe the Job and its pods, decide, apply the decision's writes, store the
//! status.

use super::apply::apply;
use super::decide::decide;
use super::observe::observe;
use crate::api::v1alpha1::training_job::TrainingJob;
use crate::controller::{Context, Error, update_status};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use std::sync::Arc;

pub async fn reconcile(tj: Arc<TrainingJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let observed = observe(&tj, &ctx).await?;
    let mut decision = decide(&tj, &observed, Timestamp::now().as_second());
    apply(&tj, &ctx, &mut decision).await?;
    update_status(&ctx, &*tj, &tj.status.clone().unwrap_or_default(), &decision.status, &decision.conditions)
        .await?;
    Ok(decision.next())
}
