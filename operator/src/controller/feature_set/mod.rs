//! FeatureSet: a StatefulSet running mizzen-features (a claim per replica), a Service for clients and a
//! headless one naming each replica, and materialization Jobs (a CronJob with `spec.schedule`) that ask
//! every replica to ingest the sources.
//!
//! `reconcile` is the four steps every controller takes: `observe` reads the children, `decide` (pure)
//! turns them into typed actions and the status, `apply` makes the writes, the status is stored last.
//! `build` holds the pure builders of the children.

pub mod apply;
pub mod build;
pub mod decide;
pub mod observe;
pub mod reconcile;

use super::{Children, Context, Error, Kind};
use crate::api::v1alpha1::FeatureSet;
use crate::api::v1alpha1::common::Condition;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Service;
use kube::runtime::controller::{Action, Controller};
use std::sync::Arc;

impl Kind for FeatureSet {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
    }

    fn reconcile(obj: Arc<Self>, ctx: Arc<Context>) -> impl Future<Output = Result<Action, Error>> + Send {
        reconcile::reconcile(obj, ctx)
    }

    fn owns(c: Controller<Self>, children: &Children) -> Controller<Self> {
        let c = children.watch::<Self, StatefulSet>(c);
        let c = children.watch::<Self, Service>(c);
        let c = children.watch::<Self, CronJob>(c);
        // By label, not owner: the CronJob's Jobs are owned by it, and their end matters too.
        children.watch_labelled::<Self, Job>(c, build::FEATURE_SET_LABEL)
    }
}
