//! What a TrainingJob's reconcile reads: its Job, the pods of its runs, and the ModelDeployment a good
//! enough model goes to, concurrently, and only what the decision can still use.

use super::build::TRAINING_JOB_LABEL;
use super::decide::{finished, is_true};
use crate::api::v1alpha1::training_job::TrainingJob;
use crate::api::v1alpha1::{FeatureSet, ModelDeployment};
use crate::controller::{Context, Error, call, namespace};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

/// The world as it is.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The Job named like the TrainingJob, whoever owns it. Not read once the run has finished, unless
    /// `ttlSecondsAfterFinished` asks for it to be deleted.
    pub job: Option<Job>,
    /// Pods carrying the TrainingJob's label: those of its Job, and perhaps a same-named earlier run's.
    /// Not read once the run has finished.
    pub pods: Vec<Pod>,
    /// `spec.deploy.modelDeployment`, read only while a deploy may still happen.
    pub deploy_target: Option<ModelDeployment>,
    /// Whether the operator has a model registry (`--registry-url`) for registry:// outputs.
    pub registry: bool,
    /// `spec.dataset.featureSet`, read only until the Job is made.
    pub feature_set: Option<FeatureSet>,
}

pub async fn observe(tj: &TrainingJob, ctx: &Context) -> Result<Observed, Error> {
    let ns = namespace(tj)?;
    let name = tj.name_any();
    let stored = tj.status.clone().unwrap_or_default();
    let finished = finished(&stored);
    let read_job = !finished || tj.spec.ttl_seconds_after_finished.is_some();
    let deploy_target = tj.spec.deploy.as_ref().filter(|_| !is_true(&stored, "Deployed"));
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mds: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &ns);
    let labelled = ListParams::default().labels(&format!("{TRAINING_JOB_LABEL}={name}"));
    let source = tj.spec.dataset.feature_set.as_ref().filter(|_| !finished && stored.job_name.is_none());
    let sets: Api<FeatureSet> = Api::namespaced(ctx.client.clone(), &ns);
    let (job, pods, deploy_target, feature_set) = tokio::try_join!(
        async {
            if !read_job {
                return Ok(None);
            }
            jobs.get_opt(&name).await.map_err(call("read_job"))
        },
        async {
            if finished {
                return Ok(Vec::new());
            }
            Ok(pods.list(&labelled).await.map_err(call("read_pods"))?.items)
        },
        async {
            let Some(deploy) = deploy_target else { return Ok(None) };
            mds.get_opt(&deploy.model_deployment).await.map_err(call("read_model_deployment"))
        },
        async {
            let Some(source) = source else { return Ok(None) };
            sets.get_opt(&source.name).await.map_err(call("read_feature_set"))
        },
    )?;
    Ok(Observed { job, pods, deploy_target, registry: ctx.registry.client().is_some(), feature_set })
}
