//! End-to-end tests against a real Kubernetes API server: the local cluster from `make cluster-up` (or kind,
//! with MIZZEN_CLUSTER=kind). Run with `make e2e`; `cargo test -p mizzen-e2e --test e2e -- NAME` runs one.
//!
//! One module per subject: `api` (CRDs, validation, kubectl, the operator process), `local_cluster` (the
//! test cluster's own fakes), `model_deployment` and `training_job` (on fake nodes), `real_pods` and
//! `feature_set` (on the real node).

mod api;
mod chaos;
mod chart;
mod feature_set;
mod leader;
mod local_cluster;
mod model_deployment;
mod real_pods;
mod registry;
mod training_job;

use anyhow::Result;
use mizzen_e2e::runner::{Test, TestFuture};
use mizzen_e2e::{Cluster, repo_root};
use std::process::ExitCode;

macro_rules! tests {
    ($($serial:literal $module:ident::$name:ident),* $(,)?) => {
        vec![$(Test {
            name: stringify!($name),
            run: |c| -> TestFuture { Box::pin($module::$name(c)) },
            serial: $serial,
        }),*]
    };
}

fn main() -> ExitCode {
    mizzen_e2e::runner::main(
        tests![
            true api::operator_is_unready_until_the_crds_exist,
            true api::operator_is_unready_while_the_api_server_is_gone,
            true api::an_object_the_types_cannot_read_wedges_nothing,
            true chaos::fifty_rollouts_survive_the_operator_killed_at_random,
            true chaos::an_etcd_pause_loses_no_update,
            true chaos::a_thousand_objects_churned_leave_flat_memory_and_no_children,
            false api::crds_are_established_and_explained,
            false api::api_server_judges_every_validation_case,
            false api::kubectl_shows_cel_messages,
            false api::kubectl_scale_uses_the_scale_subresource,
            false api::get_mizzen_lists_every_kind_with_columns,
            false api::operator_records_an_honest_initial_status,
            false api::operator_stops_cleanly_on_sigterm,
            false local_cluster::fake_nodes_run_deployments_and_jobs,
            false local_cluster::chosen_pods_can_be_held_unready_or_failed,
            false local_cluster::recorder_samples_selectors_and_readiness,
            false model_deployment::model_deployment_rolls_out_blue_green,
            false model_deployment::model_deployment_manual_promotion_and_abort,
            false model_deployment::model_deployment_scales_rolls_back_and_stays_idle,
            false model_deployment::model_deployment_progress_deadline_degrades,
            false model_deployment::model_deployment_sets_hand_edited_services_back,
            false model_deployment::model_deployment_abort_lasts_until_retried,
            false model_deployment::model_deployment_leaves_a_users_service_alone,
            false model_deployment::model_deployment_reports_a_name_collision,
            false model_deployment::model_deployment_deadline_first_deploy_and_history,
            false training_job::training_job_runs_as_an_indexed_job,
            false training_job::training_job_reports_the_best_trial_and_deploys_it,
            false training_job::training_job_with_bad_data_fails_with_the_reason,
            false real_pods::model_deployment_serves_from_real_pods,
            false real_pods::blue_green_on_real_pods_loses_no_request,
            false real_pods::a_model_that_cannot_load_is_reported_with_its_reason,
            false real_pods::a_slow_model_holds_the_pod_unready_until_it_is_loaded,
            false real_pods::training_job_trains_in_real_pods_and_its_model_is_served,
            false real_pods::the_operator_runs_in_the_cluster_from_its_image,
            false feature_set::feature_set_serves_materializes_and_evolves_on_real_pods,
            false registry::a_moved_registry_alias_rolls_the_new_version_out,
            false chart::the_plain_manifests_are_the_chart_rendered,
            false leader::a_standby_takes_over_from_a_killed_or_stopped_leader,
            false chart::the_chart_installs_upgrades_and_uninstalls,
        ],
        |c| Box::pin(install_crds(c)),
    )
}

/// Applies `crds/` and waits until every CRD is Established.
async fn install_crds(cluster: Cluster) -> Result<()> {
    cluster.kubectl(&["apply", "-f", &repo_root().join("crds").to_string_lossy()]).ok()?;
    for name in api::crd_names() {
        cluster
            .kubectl(&["wait", "--for=condition=Established", &format!("crd/{name}"), "--timeout=30s"])
            .ok()?;
    }
    Ok(())
}
