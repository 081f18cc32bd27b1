//! ModelDeployment: one Deployment per revision, the Services NAME and NAME-preview, and an HPA.
//!
//! `reconcile` is the four steps every controller takes: `observe` reads the children; `decide` (pure)
//! asks the blue-green planner (`plan`, pure) and turns its plan into typed actions and the status; `apply`
//! makes the writes, and runs the smoke test (`smoke`); the status is stored last. `build` holds the pure
//! builders of the children.

pub mod apply;
pub mod build;
pub mod decide;
pub mod observe;
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
        let c = children.watch_endpoint_slices::<Self>(c, build::MODEL_DEPLOYMENT_LABEL);
        children.watch::<Self, HorizontalPodAutoscaler>(c)
    }
}
