//! The FeatureSet reconcile: observe its children, decide, apply the decision's writes, store the status.

use super::apply::apply;
use super::decide::decide;
use super::observe::observe;
use crate::api::v1alpha1::FeatureSet;
use crate::controller::{Context, Error, update_status};
use kube::runtime::controller::Action;
use std::sync::Arc;

pub async fn reconcile(fs: Arc<FeatureSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let observed = observe(&fs, &ctx).await?;
    let mut decision = decide(&fs, &observed, &ctx.defaults);
    apply(&fs, &ctx, &mut decision).await?;
    update_status(&ctx, &*fs, &fs.status.clone().unwrap_or_default(), &decision.status, &decision.conditions)
        .await?;
    Ok(decision.next())
}
