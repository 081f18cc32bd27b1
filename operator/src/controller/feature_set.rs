//! FeatureSet: a StatefulSet running mizzen-features, its Service, and materialization Jobs or a CronJob.

use super::{Children, Kind, not_implemented};
use crate::api::v1alpha1::FeatureSet;
use crate::api::v1alpha1::common::Condition;
use crate::conditions::Desired;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Service;
use kube::runtime::controller::Controller;

impl Kind for FeatureSet {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
    }

    fn desired_conditions(&self) -> Vec<Desired> {
        not_implemented("Ready", "FeatureSets")
    }

    fn owns(c: Controller<Self>, children: &Children) -> Controller<Self> {
        let c = children.watch::<Self, StatefulSet>(c);
        let c = children.watch::<Self, Service>(c);
        let c = children.watch::<Self, Job>(c);
        children.watch::<Self, CronJob>(c)
    }
}
