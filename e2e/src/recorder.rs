//! Samples Service selectors and ReplicaSet readiness over time, so a test can assert rollout invariants
//! over the whole record (for example: the active Service never selects a revision that is not fully
//! available), not only at the end.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One ReplicaSet at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaSetSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub desired: i32,
    pub ready: i32,
    pub available: i32,
}

/// The watched Services and every ReplicaSet of the namespace at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Time since the recording started.
    pub at: Duration,
    /// Selector of each watched Service (`None` if the Service does not exist).
    pub selectors: BTreeMap<String, Option<BTreeMap<String, String>>>,
    pub replica_sets: Vec<ReplicaSetSample>,
}

impl Sample {
    /// The ReplicaSets whose pod template labels match all of `selector`.
    pub fn selected<'a>(
        &'a self,
        selector: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a ReplicaSetSample> {
        self.replica_sets.iter().filter(move |rs| selector.iter().all(|(k, v)| rs.labels.get(k) == Some(v)))
    }
}

/// A running recording; `finish` stops it and returns the samples.
pub struct Recorder {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Recorder {
    /// Samples `services` and the ReplicaSets of `namespace` every `every`, until `finish`.
    pub fn start(client: Client, namespace: &str, services: &[&str], every: Duration) -> Self {
        let stop = CancellationToken::new();
        let services: Vec<String> = services.iter().map(|s| s.to_string()).collect();
        let svc_api: Api<Service> = Api::namespaced(client.clone(), namespace);
        let rs_api: Api<ReplicaSet> = Api::namespaced(client, namespace);
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut samples = Vec::new();
            loop {
                if let Some(sample) = take(&svc_api, &rs_api, &services, start).await {
                    samples.push(sample);
                }
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
            samples
        });
        Self { stop, task }
    }

    /// Stops sampling and returns the record.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

async fn take(
    svc_api: &Api<Service>,
    rs_api: &Api<ReplicaSet>,
    services: &[String],
    start: Instant,
) -> Option<Sample> {
    let at = start.elapsed();
    let mut selectors = BTreeMap::new();
    for name in services {
        let svc = svc_api.get_opt(name).await.ok()?;
        selectors.insert(name.clone(), svc.and_then(|s| s.spec).map(|s| s.selector.unwrap_or_default()));
    }
    let replica_sets = rs_api
        .list(&ListParams::default())
        .await
        .ok()?
        .into_iter()
        .map(|rs| replica_set_sample(&rs))
        .collect();
    Some(Sample { at, selectors, replica_sets })
}

/// What a sample keeps of a ReplicaSet.
pub fn replica_set_sample(rs: &ReplicaSet) -> ReplicaSetSample {
    ReplicaSetSample {
        name: rs.name_any(),
        labels: rs
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        desired: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        ready: rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0),
        available: rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0),
    }
}

/// Invariant 1 over a whole record: once the first deploy is available (the one exception, as in Argo
/// Rollouts), the active Service `active` only ever selects a revision whose pods are all available at
/// full size (`full` replicas), and never nothing.
pub fn assert_active_always_fully_available(
    samples: &[Sample],
    active: &str,
    full: i32,
) -> anyhow::Result<()> {
    use anyhow::ensure;
    let mut serving = false;
    for s in samples {
        let Some(Some(selector)) = s.selectors.get(active) else {
            ensure!(!serving, "{active}: the active Service disappeared at {:?}", s.at);
            continue;
        };
        let selected: Vec<_> = s.selected(selector).collect();
        let available: i32 = selected.iter().map(|rs| rs.available).sum();
        if !serving {
            serving = available >= full;
            continue;
        }
        ensure!(
            !selected.is_empty(),
            "{active}: the active Service selects no ReplicaSet at {:?}: {selector:?}",
            s.at
        );
        ensure!(
            available >= full,
            "{active}: at {:?} the active Service selected {selected:?} with {available} available of {full}",
            s.at
        );
    }
    ensure!(serving, "{active}: the active Service never served a fully available revision");
    Ok(())
}
