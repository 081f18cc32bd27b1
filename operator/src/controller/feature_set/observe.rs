//! What a FeatureSet's reconcile reads, concurrently: its StatefulSet, Services and CronJob by name, and its
//! materialization Jobs and pods (the store's and the Jobs') by label.

use super::build::{self, FEATURE_SET_LABEL};
use crate::api::v1alpha1::FeatureSet;
use crate::controller::{Context, Error, call, namespace};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

/// The world as it is.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub stateful_set: Option<StatefulSet>,
    /// The Service `NAME`.
    pub service: Option<Service>,
    /// The headless Service `NAME-pods`.
    pub pods_service: Option<Service>,
    pub cron_job: Option<CronJob>,
    /// Jobs carrying the FeatureSet's label: its materializations, and the CronJob's.
    pub jobs: Vec<Job>,
    /// Pods carrying the FeatureSet's label: the store's and the materialization Jobs'.
    pub pods: Vec<Pod>,
}

pub async fn observe(fs: &FeatureSet, ctx: &Context) -> Result<Observed, Error> {
    let ns = namespace(fs)?;
    let name = fs.name_any();
    let client = &ctx.client;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let crons: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let labelled = ListParams::default().labels(&format!("{FEATURE_SET_LABEL}={name}"));
    let (stateful_set, service, pods_service, cron_job, jobs, pods) = tokio::try_join!(
        async { sets.get_opt(&name).await.map_err(call("read_stateful_set")) },
        async { services.get_opt(&name).await.map_err(call("read_service")) },
        async { services.get_opt(&build::pods_service_name(fs)).await.map_err(call("read_service")) },
        async { crons.get_opt(&name).await.map_err(call("read_cron_job")) },
        async { Ok(jobs.list(&labelled).await.map_err(call("read_jobs"))?.items) },
        async { Ok(pods.list(&labelled).await.map_err(call("read_pods"))?.items) },
    )?;
    Ok(Observed { stateful_set, service, pods_service, cron_job, jobs, pods })
}
