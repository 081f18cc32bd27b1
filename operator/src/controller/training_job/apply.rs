//! The only code of the TrainingJob controller that writes: each [`Action`] in the order decided, one small
//! function per kind. The first failed write stops the rest, except a failed deploy: the run's results are
//! stored whatever happens to it, and it is tried again later.

use super::build;
use super::decide::{Action, DEPLOY_RETRY, Decision};
use crate::api::v1alpha1::ModelDeployment;
use crate::api::v1alpha1::common::status::FALSE;
use crate::api::v1alpha1::training_job::TrainingJob;
use crate::conditions::Desired;
use crate::controller::{Context, Error, FIELD_MANAGER, Notice, call, merge_params, namespace};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, Patch, PostParams, PropagationPolicy};
use kube::{Api, ResourceExt};
use mizzen_common::training::TrainConfig;

struct Writer<'a> {
    tj: &'a TrainingJob,
    ctx: &'a Context,
    jobs: Api<Job>,
    mds: Api<ModelDeployment>,
}

/// Takes the decision's actions, in order. A deploy that fails turns the decision's Deployed condition into
/// `DeployFailed` and wakes it again later.
pub async fn apply(tj: &TrainingJob, ctx: &Context, decision: &mut Decision) -> Result<(), Error> {
    let ns = namespace(tj)?;
    let w = Writer {
        tj,
        ctx,
        jobs: Api::namespaced(ctx.client.clone(), &ns),
        mds: Api::namespaced(ctx.client.clone(), &ns),
    };
    for action in std::mem::take(&mut decision.actions) {
        match action {
            Action::CreateJob(config) => w.create_job(&config).await?,
            Action::Suspend(suspend) => w.suspend(suspend).await?,
            Action::DeleteJob => w.delete_job().await?,
            Action::Deploy { model_deployment, uri, sha256, message } => {
                if let Err(e) = w.deploy(&model_deployment, &uri, sha256.as_deref()).await {
                    let failed = format!("setting the ModelDeployment's model: {e}");
                    decision.conditions.retain(|c| c.type_ != "Deployed");
                    decision.conditions.push(Desired::new("Deployed", FALSE, "DeployFailed", failed));
                    decision.wake_within(DEPLOY_RETRY);
                } else {
                    ctx.publish(tj, &Notice::normal("Deployed", message)).await;
                }
            }
            Action::Register { name, alias, run_id, source, tags } => {
                let Some(client) = ctx.registry.client() else { continue };
                match client.register(&name, &source, &run_id, &tags, alias.as_deref()).await {
                    Ok(version) => {
                        let uri = format!("registry://{name}/{version}");
                        let moved = alias.map(|a| format!(", alias {a} moved to it")).unwrap_or_default();
                        let note = format!("registered run {run_id} as {uri}{moved}");
                        if let Some(model) = decision.status.model.as_mut() {
                            (model.uri, model.version) = (uri, Some(version));
                        }
                        ctx.publish(tj, &Notice::normal("Registered", note)).await;
                    }
                    Err(e) => {
                        tracing::warn!(name = %tj.name_any(), %e, "cannot register the model; retrying");
                        decision.wake_within(DEPLOY_RETRY);
                    }
                }
            }
            Action::Publish(notice) => ctx.publish(tj, &notice).await,
        }
    }
    Ok(())
}

impl Writer<'_> {
    async fn create_job(&self, config: &TrainConfig) -> Result<(), Error> {
        let job = build::job(self.tj, config, &self.ctx.defaults);
        let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        self.jobs.create(&pp, &job).await.map_err(call("create_job"))?;
        Ok(())
    }

    async fn suspend(&self, suspend: bool) -> Result<(), Error> {
        let patch = serde_json::json!({ "spec": { "suspend": suspend } });
        self.jobs
            .patch(&self.tj.name_any(), &merge_params(), &Patch::Merge(&patch))
            .await
            .map_err(call("suspend_job"))?;
        Ok(())
    }

    async fn delete_job(&self) -> Result<(), Error> {
        let dp =
            DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
        self.jobs.delete(&self.tj.name_any(), &dp).await.map_err(call("delete_job"))?;
        Ok(())
    }

    /// Sets the ModelDeployment's model. A version it named belongs to its old model: dropped.
    async fn deploy(&self, target: &str, uri: &str, sha256: Option<&str>) -> Result<(), Error> {
        let patch =
            serde_json::json!({ "spec": { "model": { "uri": uri, "sha256": sha256, "version": null } } });
        self.mds.patch(target, &merge_params(), &Patch::Merge(&patch)).await.map_err(call("deploy_model"))?;
        Ok(())
    }
}
