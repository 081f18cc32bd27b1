//! The complete history of a namespace's Services and ReplicaSets, from watches: every change the API
//! server made, in the order it made them (by resourceVersion, which is etcd's revision on a cluster with
//! one etcd, as the local cluster has). Unlike the sampling [`crate::recorder::Recorder`], nothing that
//! happens between two samples can be missed, so a rollout invariant checked over it holds at every
//! moment, not only at the sampled ones.

use crate::recorder::{ReplicaSetSample, Sample};
use anyhow::{Context as _, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What one change left: a Service's selector or a ReplicaSet's state, or nothing (deleted).
#[derive(Clone, Debug)]
pub enum State {
    Service(Option<BTreeMap<String, String>>),
    ReplicaSet(ReplicaSetSample),
    Deleted,
}

/// One change to one object.
#[derive(Clone, Debug)]
pub struct Change {
    /// The object's resourceVersion after the change.
    pub version: u64,
    /// When the watch delivered it, since the recording started.
    pub at: Duration,
    /// `Service` or `ReplicaSet`.
    pub kind: &'static str,
    pub name: String,
    pub state: State,
}

/// A running recording of a namespace; `finish` stops it and returns every change in order.
pub struct History {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<Change>>>>,
}

impl History {
    /// Starts watching the Services and ReplicaSets of `namespace` (best started while it is empty). Returns
    /// once both watches have begun, so nothing made after this returns is missed.
    pub async fn start(client: Client, namespace: &str) -> Result<Self> {
        let stop = CancellationToken::new();
        let services = record(Api::<Service>::namespaced(client.clone(), namespace), "Service", &stop, |s| {
            State::Service(s.spec.as_ref().and_then(|s| s.selector.clone()))
        })
        .await?;
        let replica_sets =
            record(Api::<ReplicaSet>::namespaced(client, namespace), "ReplicaSet", &stop, |rs| {
                State::ReplicaSet(crate::recorder::replica_set_sample(rs))
            })
            .await?;
        Ok(Self { stop, tasks: vec![services, replica_sets] })
    }

    /// Stops watching; every change, ordered by resourceVersion. Fails if a watch lost part of the history.
    pub async fn finish(self) -> Result<Vec<Change>> {
        self.stop.cancel();
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.context("a history watch panicked")??);
        }
        all.sort_by_key(|c| c.version);
        Ok(all)
    }
}

/// Lists `api` (the starting point) and spawns a task that watches it from there until `stop`, re-watching
/// from the last version seen whenever the server ends a watch.
async fn record<K>(
    api: Api<K>,
    kind: &'static str,
    stop: &CancellationToken,
    state: fn(&K) -> State,
) -> Result<tokio::task::JoinHandle<Result<Vec<Change>>>>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let start = Instant::now();
    let listed = api.list(&ListParams::default()).await?;
    let mut version = listed.metadata.resource_version.clone().context("a list without a resourceVersion")?;
    let mut changes: Vec<Change> = Vec::new();
    for object in &listed.items {
        changes.push(change(object, kind, state(object), start)?);
    }
    let stop = stop.clone();
    Ok(tokio::spawn(async move {
        let params = WatchParams::default().timeout(60);
        loop {
            let mut stream = tokio::select! {
                _ = stop.cancelled() => return Ok(changes),
                s = api.watch(&params, &version) => s.with_context(|| format!("watching {kind}s"))?.boxed(),
            };
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return Ok(changes),
                    e = stream.try_next() => e,
                };
                let event = match event {
                    Ok(Some(event)) => event,
                    // The server ended the watch (its timeout) or the connection broke: watch again from
                    // the last version seen, which misses nothing as long as that version is not compacted.
                    Ok(None) | Err(_) => break,
                };
                let (object, gone) = match event {
                    WatchEvent::Added(o) | WatchEvent::Modified(o) => (o, false),
                    WatchEvent::Deleted(o) => (o, true),
                    WatchEvent::Bookmark(b) => {
                        version = b.metadata.resource_version;
                        continue;
                    }
                    WatchEvent::Error(e) => bail!("the {kind} history has a gap: {e:?}"),
                };
                let c = change(&object, kind, if gone { State::Deleted } else { state(&object) }, start)?;
                version = c.version.to_string();
                changes.push(c);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }))
}

fn change<K: Resource>(object: &K, kind: &'static str, state: State, start: Instant) -> Result<Change> {
    let version = object.meta().resource_version.as_deref().context("an object without a resourceVersion")?;
    Ok(Change {
        version: version.parse().with_context(|| format!("resourceVersion {version:?} is not a number"))?,
        at: start.elapsed(),
        kind,
        name: object.name_any(),
        state,
    })
}

/// The history of the objects of one owner as [`Sample`]s, one after each change: the Services `services`
/// and the ReplicaSets named `{prefix}...`. Changes to other objects are skipped.
pub fn samples(changes: &[Change], services: &[&str], prefix: &str) -> Vec<Sample> {
    let mut selectors: BTreeMap<String, Option<BTreeMap<String, String>>> =
        services.iter().map(|s| (s.to_string(), None)).collect();
    let mut replica_sets: BTreeMap<String, ReplicaSetSample> = BTreeMap::new();
    let mut out = Vec::new();
    for c in changes {
        match (&c.state, c.kind) {
            (State::Service(selector), _) if selectors.contains_key(&c.name) => {
                selectors.insert(c.name.clone(), Some(selector.clone().unwrap_or_default()));
            }
            (State::Deleted, "Service") if selectors.contains_key(&c.name) => {
                selectors.insert(c.name.clone(), None);
            }
            (State::ReplicaSet(rs), _) if c.name.starts_with(prefix) => {
                replica_sets.insert(c.name.clone(), rs.clone());
            }
            (State::Deleted, "ReplicaSet") if c.name.starts_with(prefix) => {
                replica_sets.remove(&c.name);
            }
            _ => continue,
        }
        out.push(Sample {
            at: c.at,
            selectors: selectors.clone(),
            replica_sets: replica_sets.values().cloned().collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::assert_active_always_fully_available;

    fn rs(version: u64, name: &str, revision: &str, available: i32) -> Change {
        let labels = BTreeMap::from([("rev".to_string(), revision.to_string())]);
        let sample = ReplicaSetSample { name: name.into(), labels, desired: 2, ready: available, available };
        Change {
            version,
            at: Duration::ZERO,
            kind: "ReplicaSet",
            name: name.into(),
            state: State::ReplicaSet(sample),
        }
    }

    fn svc(version: u64, name: &str, revision: &str) -> Change {
        let selector = BTreeMap::from([("rev".to_string(), revision.to_string())]);
        Change {
            version,
            at: Duration::ZERO,
            kind: "Service",
            name: name.into(),
            state: State::Service(Some(selector)),
        }
    }

    #[test]
    fn a_switch_before_the_new_revision_is_available_is_caught_at_the_change_that_made_it() {
        let mut changes = vec![
            rs(1, "m-1-a", "a", 2),
            svc(2, "m-1", "a"),
            rs(3, "m-1-b", "b", 1),
            // Another object's changes are skipped: m-10 is not m-1.
            rs(4, "m-10-x", "b", 0),
            rs(6, "m-1-b", "b", 2),
            svc(7, "m-1", "b"),
        ];
        let samples = samples(&changes, &["m-1"], "m-1-");
        assert_eq!(samples.len(), 5);
        assert_active_always_fully_available(&samples, "m-1", 2).unwrap();
        // The Service switched at version 5, before b's second pod was available at version 6.
        changes.push(svc(5, "m-1", "b"));
        changes.sort_by_key(|c| c.version);
        let err = assert_active_always_fully_available(&samples_of(&changes), "m-1", 2).unwrap_err();
        assert!(err.to_string().contains("1 available of 2"), "{err}");
        // A deleted active Service is caught too.
        changes.push(Change {
            version: 8,
            at: Duration::ZERO,
            kind: "Service",
            name: "m-1".into(),
            state: State::Deleted,
        });
        changes.retain(|c| c.version != 5);
        let err = assert_active_always_fully_available(&samples_of(&changes), "m-1", 2).unwrap_err();
        assert!(err.to_string().contains("disappeared"), "{err}");
    }

    fn samples_of(changes: &[Change]) -> Vec<Sample> {
        samples(changes, &["m-1"], "m-1-")
    }
}
