//! What a ModelDeployment's reconcile reads: its revisions' Deployments, its two Services and its HPA, in
//! one concurrent round trip.

use super::build;
use crate::api::v1alpha1::model_deployment::ModelDeployment;
use crate::controller::{Context, Error, call, namespace};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

/// The children as they are.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Every revision's Deployment (those carrying the ModelDeployment's label).
    pub deployments: Vec<Deployment>,
    /// `NAME`, the Service of the active revision.
    pub active_service: Option<Service>,
    /// `NAME-preview`.
    pub preview_service: Option<Service>,
    /// `NAME`, the HorizontalPodAutoscaler.
    pub hpa: Option<HorizontalPodAutoscaler>,
}

pub async fn observe(md: &ModelDeployment, ctx: &Context) -> Result<Observed, Error> {
    let ns = namespace(md)?;
    let name = md.name_any();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
    let owned = ListParams::default().labels(&format!("{}={name}", build::MODEL_DEPLOYMENT_LABEL));
    let (deployments, active_service, preview_service, hpa) = tokio::try_join!(
        async { deployments.list(&owned).await.map_err(call("read_deployments")) },
        async { services.get_opt(&name).await.map_err(call("read_service")) },
        async { services.get_opt(&format!("{name}-preview")).await.map_err(call("read_service")) },
        async { hpas.get_opt(&name).await.map_err(call("read_hpa")) },
    )?;
    Ok(Observed { deployments: deployments.items, active_service, preview_service, hpa })
}
