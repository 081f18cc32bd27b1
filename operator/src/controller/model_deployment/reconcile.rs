//! The ModelDeployment reconcile: observe the children, decide, apply the decision's writes, store the
//! status. Writes happen only where observed and desired differ, so an idle ModelDeployment causes none.

use super::apply::apply;
use super::decide::decide;
use super::observe::observe;
use crate::api::v1alpha1::model_deployment::ModelDeployment;
use crate::controller::{Context, Error, update_status};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use std::sync::Arc;

pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let observed = observe(&md, &ctx).await?;
    let mut decision = decide(&md, &observed, Timestamp::now().as_second());
    apply(&md, &ctx, &observed, &mut decision).await?;
    update_status(&ctx, &*md, &md.status.clone().unwrap_or_default(), &decision.status, &decision.conditions)
        .await?;
    Ok(decision.next())
}
