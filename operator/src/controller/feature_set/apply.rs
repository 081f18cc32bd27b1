//! The only code of the FeatureSet controller that writes: each [`Action`] in the order decided, one small
//! function per kind. Children are server-side applied by the operator's field manager; the first failed
//! write stops the rest, and the next reconcile decides again.

use super::decide::{Action, Decision};
use crate::api::v1alpha1::FeatureSet;
use crate::controller::{Context, Error, FIELD_MANAGER, call, namespace};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn api<K>(ctx: &Context, ns: &str) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    Api::namespaced(ctx.client.clone(), ns)
}

async fn server_side_apply<K>(api: Api<K>, obj: &K, what: &'static str) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let mut obj = obj.clone();
    obj.meta_mut().managed_fields = None;
    let mut value = serde_json::to_value(&obj).unwrap_or_default();
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&value))
        .await
        .map_err(call(what))?;
    Ok(())
}

/// Takes the decision's actions, in order.
pub async fn apply(fs: &FeatureSet, ctx: &Context, decision: &mut Decision) -> Result<(), Error> {
    let ns = namespace(fs)?;
    let background =
        DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    for action in std::mem::take(&mut decision.actions) {
        match action {
            Action::ApplyStatefulSet(sts) => {
                server_side_apply(api::<StatefulSet>(ctx, &ns), &sts, "apply_stateful_set").await?
            }
            Action::ApplyService(svc) => {
                server_side_apply(api::<Service>(ctx, &ns), &svc, "apply_service").await?
            }
            Action::ApplyCronJob(cron) => {
                server_side_apply(api::<CronJob>(ctx, &ns), &cron, "apply_cron_job").await?
            }
            Action::DeleteCronJob => {
                api::<CronJob>(ctx, &ns)
                    .delete(&fs.name_any(), &background)
                    .await
                    .map_err(call("delete_cron_job"))?;
            }
            Action::CreateJob(job) => {
                let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
                match api::<Job>(ctx, &ns).create(&pp, &job).await {
                    // Made by an earlier pass whose status write did not land: nothing to do.
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    other => {
                        other.map_err(call("create_job"))?;
                    }
                }
            }
            Action::DeleteJob(name) => match api::<Job>(ctx, &ns).delete(&name, &background).await {
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                other => {
                    other.map_err(call("delete_job"))?;
                }
            },
            Action::Publish(notice) => ctx.publish(fs, &notice).await,
        }
    }
    Ok(())
}
