//! The only code of the ModelDeployment controller that writes: each [`Action`] in the order decided, one
//! small function per kind. The first failed write stops the rest; the next reconcile decides again.

use super::build::{self, SCALE_DOWN_AT_ANNOTATION};
use super::decide::{Action, Decision, served};
use super::observe::Observed;
use super::smoke;
use crate::api::v1alpha1::model_deployment::{ModelDeployment, SmokeTestStatus};
use crate::controller::{Context, Error, FIELD_MANAGER, Notice, call, merge_params, namespace};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use std::time::Duration;

/// A smoke test that got no answer (endpoints still propagating) is tried again this soon.
const SMOKE_RETRY: Duration = Duration::from_secs(2);

struct Writer<'a> {
    md: &'a ModelDeployment,
    ctx: &'a Context,
    deployments: Api<Deployment>,
    services: Api<Service>,
    hpas: Api<HorizontalPodAutoscaler>,
    /// What the desired revision serves.
    served: Option<build::Served>,
}

/// Takes the decision's actions, in order. A smoke test's result is recorded in the decision's status (or,
/// when it got no answer, the decision wakes again soon).
pub async fn apply(
    md: &ModelDeployment,
    ctx: &Context,
    observed: &Observed,
    decision: &mut Decision,
) -> Result<(), Error> {
    let ns = namespace(md)?;
    let w = Writer {
        md,
        ctx,
        deployments: Api::namespaced(ctx.client.clone(), &ns),
        services: Api::namespaced(ctx.client.clone(), &ns),
        hpas: Api::namespaced(ctx.client.clone(), &ns),
        served: served(md, observed),
    };
    for action in std::mem::take(&mut decision.actions) {
        match action {
            Action::RunSmokeTest { revision, url } => match w.smoke_test(&revision, &url).await {
                Some(result) => decision.status.smoke_test = Some(result),
                None => decision.wake_within(SMOKE_RETRY),
            },
            Action::CreateRevision { revision, replicas } => w.create_revision(&revision, replicas).await?,
            Action::Scale { deployment, replicas } => w.scale(&deployment, replicas).await?,
            Action::SetScaleDownAt { deployment, at } => w.set_scale_down_at(&deployment, at).await?,
            Action::Select { preview, revision } => w.select(preview, &revision).await?,
            Action::RestoreService { preview, drop_keys } => w.restore_service(preview, &drop_keys).await?,
            Action::DeleteRevision { deployment } => w.delete_revision(&deployment).await?,
            Action::ApplyHpa(hpa) => w.apply_hpa(&hpa).await?,
            Action::DeleteHpa => w.delete_hpa().await?,
            Action::Publish(notice) => ctx.publish(md, &notice).await,
        }
    }
    Ok(())
}

fn ssa() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

impl Writer<'_> {
    /// The smoke test's result, or `None` when the preview did not answer yet.
    async fn smoke_test(&self, revision: &str, url: &str) -> Option<SmokeTestStatus> {
        let test = self.md.spec.strategy.blue_green.smoke_test.as_ref()?;
        let result = smoke::run(&self.ctx.http, url, &build::served_name(self.md), test).await;
        let notice = match &result {
            Err(smoke::Failure { retry: true, message }) => {
                tracing::info!(name = %self.md.name_any(), %message, "smoke test not answered yet; retrying");
                return None;
            }
            Ok(()) => {
                Notice::normal("SmokeTestPassed", format!("revision {revision} answered the smoke test"))
            }
            Err(e) => Notice::normal("SmokeTestFailed", format!("revision {revision}: {e}")),
        };
        self.ctx.publish(self.md, &notice).await;
        Some(SmokeTestStatus {
            revision: revision.to_string(),
            passed: result.is_ok(),
            message: result.err().map(|e| e.message).unwrap_or_default(),
        })
    }

    async fn create_revision(&self, revision: &str, replicas: i32) -> Result<(), Error> {
        // Decided only when what to serve is known.
        let Some(served) = &self.served else { return Ok(()) };
        let d = build::deployment(self.md, served, revision, replicas, &self.ctx.defaults);
        let name = format!("{}-{revision}", self.md.name_any());
        self.deployments.patch(&name, &ssa(), &Patch::Apply(&d)).await.map_err(call("apply_deployment"))?;
        Ok(())
    }

    async fn scale(&self, deployment: &str, replicas: i32) -> Result<(), Error> {
        let scale = serde_json::json!({ "spec": { "replicas": replicas } });
        self.deployments
            .patch_scale(deployment, &merge_params(), &Patch::Merge(&scale))
            .await
            .map_err(call("scale_deployment"))?;
        Ok(())
    }

    async fn set_scale_down_at(&self, deployment: &str, at: Option<i64>) -> Result<(), Error> {
        let at = at.map(|t| t.to_string());
        let patch = serde_json::json!({ "metadata": { "annotations": { SCALE_DOWN_AT_ANNOTATION: at } } });
        self.deployments
            .patch(deployment, &merge_params(), &Patch::Merge(&patch))
            .await
            .map_err(call("annotate_deployment"))?;
        Ok(())
    }

    async fn select(&self, preview: bool, revision: &str) -> Result<(), Error> {
        let svc = build::service(self.md, preview, revision);
        let name = svc.name_any();
        self.services.patch(&name, &ssa(), &Patch::Apply(&svc)).await.map_err(call("apply_service"))?;
        Ok(())
    }

    /// A JSON merge patch: the selector's foreign keys set to null (server-side apply cannot remove fields
    /// another manager owns) and the ports list replaced whole.
    async fn restore_service(&self, preview: bool, drop_keys: &[String]) -> Result<(), Error> {
        let want = build::service(self.md, preview, "");
        let spec = want.spec.unwrap_or_default();
        let mut selector = serde_json::Map::new();
        for key in drop_keys {
            selector.insert(key.clone(), serde_json::Value::Null);
        }
        let patch = serde_json::json!({ "spec": { "selector": selector, "ports": spec.ports } });
        let name = want.metadata.name.unwrap_or_default();
        self.services
            .patch(&name, &merge_params(), &Patch::Merge(&patch))
            .await
            .map_err(call("restore_service"))?;
        Ok(())
    }

    async fn delete_revision(&self, deployment: &str) -> Result<(), Error> {
        let dp = DeleteParams {
            propagation_policy: Some(kube::api::PropagationPolicy::Background),
            ..Default::default()
        };
        self.deployments.delete(deployment, &dp).await.map_err(call("delete_deployment"))?;
        Ok(())
    }

    async fn apply_hpa(&self, hpa: &HorizontalPodAutoscaler) -> Result<(), Error> {
        self.hpas.patch(&hpa.name_any(), &ssa(), &Patch::Apply(hpa)).await.map_err(call("apply_hpa"))?;
        Ok(())
    }

    async fn delete_hpa(&self) -> Result<(), Error> {
        self.hpas.delete(&self.md.name_any(), &DeleteParams::default()).await.map_err(call("delete_hpa"))?;
        Ok(())
    }
}
