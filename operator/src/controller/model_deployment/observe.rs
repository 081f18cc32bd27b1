//! What a ModelDeployment's reconcile reads: its revisions' Deployments, its two Services and its HPA in
//! one concurrent round trip; the Deployment named like the desired revision when that list lacks it; and
//! the active Service's EndpointSlices from the operator's cache; and, only while a revision is not fully
//! available, its pods (to say why, when they fail).

use super::build;
use crate::api::v1alpha1::model_deployment::{ModelDeployment, RESOLVE_ANNOTATION};
use crate::controller::{Context, Error, call, namespace};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
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
    /// The EndpointSlices of the active Service: what it really sends traffic to.
    pub endpoints: Vec<EndpointSlice>,
    /// `NAME-REVISION` of the revision the spec asks for, whoever made it (a user's Deployment of that name
    /// carries none of the operator's labels).
    pub desired_deployment: Option<Deployment>,
    /// Pods of the desired revision (at most [`POD_SAMPLE`]), read only while its Deployment is not fully
    /// available: enough to say why they fail, without reading every pod of a large revision.
    pub pods: Vec<Pod>,
    /// The model the desired revision serves, with a registry alias resolved (or, when the registry cannot
    /// answer, as last resolved for the same URI); `None`: the spec's own, or nothing known (see
    /// `unresolved`).
    pub served: Option<build::Served>,
    /// Why a registry URI could not be resolved now.
    pub unresolved: Option<String>,
    /// Look again this soon: a registry alias may move.
    pub recheck: Option<std::time::Duration>,
}

/// How many pods of a waiting revision are read; when pods fail, they fail alike.
pub const POD_SAMPLE: u32 = 20;

/// Whether a Deployment does not have all the pods it asks for available.
fn waiting(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    want > 0 && available < want
}

pub async fn observe(md: &ModelDeployment, ctx: &Context) -> Result<Observed, Error> {
    let ns = namespace(md)?;
    let name = md.name_any();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
    let labelled = ListParams::default().labels(&format!("{}={name}", build::MODEL_DEPLOYMENT_LABEL));
    let (served, unresolved) = resolve(md, ctx).await;
    let Some(served) = served.clone().or_else(|| unresolved.is_none().then(|| build::served(md, None)))
    else {
        // Nothing to serve is known: the children are left as they are.
        return Ok(Observed { unresolved, recheck: Some(ctx.registry.poll()), ..Observed::default() });
    };
    let revision = build::revision(&md.spec, &served);
    let desired = format!("{name}-{revision}");
    let (listed, active_service, preview_service, hpa) = tokio::try_join!(
        async { deployments.list(&labelled).await.map_err(call("read_deployments")) },
        async { services.get_opt(&name).await.map_err(call("read_service")) },
        async { services.get_opt(&format!("{name}-preview")).await.map_err(call("read_service")) },
        async { hpas.get_opt(&name).await.map_err(call("read_hpa")) },
    )?;
    // Someone else's Deployment of that name carries none of the labels: read it by name, when the list
    // does not have it.
    let desired_deployment = match listed.items.iter().find(|d| d.name_any() == desired) {
        Some(ours) => Some(ours.clone()),
        None => deployments.get_opt(&desired).await.map_err(call("read_deployments"))?,
    };
    let pods = if desired_deployment.as_ref().is_some_and(waiting) {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let of_revision = ListParams::default()
            .labels(&format!("{}={name},{}={revision}", build::MODEL_DEPLOYMENT_LABEL, build::REVISION_LABEL))
            .limit(POD_SAMPLE);
        pods.list(&of_revision).await.map_err(call("read_pods"))?.items
    } else {
        vec![]
    };
    let endpoints = ctx
        .endpoint_slices
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
        .filter(|s| s.labels().get("kubernetes.io/service-name") == Some(&name))
        .map(|s| (*s).clone())
        .collect();
    Ok(Observed {
        deployments: listed.items,
        active_service,
        preview_service,
        hpa,
        endpoints,
        desired_deployment,
        pods,
        served: Some(served),
        unresolved,
        recheck: md.spec.model.uri.0.contains('@').then(|| ctx.registry.poll()),
    })
}

/// The model `md` serves: for a registry URI, the version it names now (from the operator's cache while
/// fresh); when the registry cannot say, the version last resolved for the same URI (from the status) and
/// why it is stale; for other URIs, `None` (the spec's own).
async fn resolve(md: &ModelDeployment, ctx: &Context) -> (Option<build::Served>, Option<String>) {
    let uri = &md.spec.model.uri.0;
    if !uri.starts_with("registry://") {
        return (None, None);
    }
    let key = format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any());
    let asked = md.annotations().get(RESOLVE_ANNOTATION).map(String::as_str);
    match ctx.registry.resolve(&key, uri, asked).await {
        Ok(resolved) => (Some(build::served(md, Some(&resolved))), None),
        Err(why) => {
            let last =
                md.status.as_ref().and_then(|s| s.model.as_ref()).filter(|m| m.from.as_ref() == Some(uri));
            let served = last.map(|m| build::Served {
                uri: m.uri.clone(),
                name: build::served_name(md),
                version: md.spec.model.version.clone().or_else(|| Some(m.version.clone())),
                sha256: md.spec.model.sha256.clone().or_else(|| m.sha256.clone()),
                from: Some(uri.clone()),
            });
            (served, Some(why))
        }
    }
}
