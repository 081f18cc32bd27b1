//! ModelDeployment: one Deployment per revision, the Services NAME and NAME-preview, and an HPA.
//!
//! `build` holds the pure builders of the desired children and `plan` the blue-green planner (both pure, no
//! client); `reconcile` observes the children, plans, applies the plan's writes and stores the status;
//! `smoke` runs a revision's smoke test.

pub mod build;
pub mod plan;
pub mod reconcile;
pub mod smoke;

use super::{Children, Context, Error, Kind};
use crate::api::v1alpha1::common::Condition;
use crate::api::v1alpha1::model_deployment::ModelDeployment;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::controller::{Action, Controller};
use std::sync::Arc;

impl Kind for ModelDeployment {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
    }

    fn reconcile(obj: Arc<Self>, ctx: Arc<Context>) -> impl Future<Output = Result<Action, Error>> + Send {
        reconcile::reconcile(obj, ctx)
    }

    fn owns(c: Controller<Self>, children: &Children) -> Controller<Self> {
        let c = children.watch::<Self, Deployment>(c);
        let c = children.watch::<Self, Service>(c);
        children.watch::<Self, HorizontalPodAutoscaler>(c)
    }
}
