//! Reliability under faults, on fake nodes: the operator killed with SIGKILL at random moments during 50
//! blue-green rollouts, etcd paused mid-rollout, and 1,000 objects created, updated and deleted at random.
//! Each runs alone (it loads or stalls the whole cluster) and checks invariant 1 over the complete history
//! of the namespace's Services and ReplicaSets (from watches, every change in etcd's order), not samples.

use anyhow::{Context as _, Result, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use mizzen_api::v1alpha1::model_deployment::{ModelDeployment, ModelDeploymentPhase};
use mizzen_e2e::history::{self, History};
use mizzen_e2e::recorder::assert_active_always_fully_available;
use mizzen_e2e::{Cluster, Kind, Namespace, Operator, Rng, wait_until};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const REPLICAS: i32 = 2;

/// ModelDeployments `m-0`..`m-{n-1}` serving `uri` as one multi-document YAML. A revision is available
/// 3 s after its pods are ready and the old one is scaled down 5 s after the switch, so a rollout spans
/// several seconds (and the faults land in its middle).
fn model_deployments(n: usize, uri: &str) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: mizzen.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: m-{i}}}\nspec:\n  \
                 model: {{uri: \"{uri}\"}}\n  replicas: {REPLICAS}\n  \
                 strategy: {{blueGreen: {{minReadySeconds: 3, scaleDownDelaySeconds: 5}}}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The active revision of every ModelDeployment of `ns` once each has converged on its latest spec: the
/// generation observed, serving `model` (a suffix of the URI), Healthy with no rollout in flight (the
/// preview is the active revision), the active Deployment at the spec's size and fully available, every
/// other one scaled to zero; `None` until all `n` have.
async fn converged(ns: &Namespace, n: usize, model: &str) -> Option<BTreeMap<String, String>> {
    let mdeps = ns.list::<ModelDeployment>().await.ok()?;
    let deployments = ns.list::<Deployment>().await.ok()?;
    let mut active = BTreeMap::new();
    for md in &mdeps {
        let name = md.name_any();
        let replicas = md.spec.replicas;
        let s = md.status.as_ref()?;
        let done = s.observed_generation == md.metadata.generation
            && md.spec.model.uri.0.ends_with(model)
            && s.phase == ModelDeploymentPhase::Healthy
            && s.preview_revision == s.active_revision
            && s.available_replicas == replicas
            && ModelDeployment::condition(s, "Ready").is_some_and(|c| c.status == "True");
        let revision = s.active_revision.clone().filter(|_| done)?;
        for d in deployments.iter().filter(|d| d.name_any().starts_with(&format!("{name}-"))) {
            let want = if d.name_any() == format!("{name}-{revision}") { replicas } else { 0 };
            let available = d.status.as_ref()?.available_replicas.unwrap_or(0);
            if d.spec.as_ref()?.replicas.unwrap_or(1) != want || available < want {
                return None;
            }
        }
        active.insert(name, revision);
    }
    (active.len() == n).then_some(active)
}

/// A new model for `m-0`..`m-{n-1}` at once (16 patches in flight), so their rollouts overlap.
async fn new_model_for_all(cluster: &Cluster, ns: &Namespace, n: usize, uri: &str) -> Result<()> {
    let api: Api<ModelDeployment> = Api::namespaced(cluster.client.clone(), &ns.name);
    let patch = serde_json::json!({"spec": {"model": {"uri": uri}}});
    let patches = (0..n).map(|i| {
        let (api, patch) = (&api, &patch);
        async move { api.patch(&format!("m-{i}"), &PatchParams::default(), &Patch::Merge(patch)).await }
    });
    for result in futures::stream::iter(patches).buffer_unordered(16).collect::<Vec<_>>().await {
        result?;
    }
    Ok(())
}

/// How many ModelDeployments of `ns` are in the middle of a rollout: a preview apart from the active
/// revision, or an old revision not yet scaled down.
async fn rolling(ns: &Namespace) -> Result<usize> {
    let deployments = ns.list::<Deployment>().await?;
    let mdeps = ns.list::<ModelDeployment>().await?;
    Ok(mdeps
        .iter()
        .filter(|md| {
            let name = md.name_any();
            let scaled = deployments
                .iter()
                .filter(|d| d.name_any().starts_with(&format!("{name}-")))
                .filter(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) > 0)
                .count();
            let s = md.status.clone().unwrap_or_default();
            scaled != 1
                || s.preview_revision != s.active_revision
                || s.observed_generation != md.metadata.generation
        })
        .count())
}

/// Invariant 1 for each of `m-0`..`m-{n-1}` over the namespace's whole history; the number of changes.
fn invariant_1_held(changes: &[history::Change], n: usize) -> Result<usize> {
    for i in 0..n {
        let name = format!("m-{i}");
        let samples = history::samples(changes, &[&name], &format!("{name}-"));
        assert_active_always_fully_available(&samples, &name, REPLICAS)?;
    }
    Ok(changes.len())
}

/// Waits until all `n` have converged on `model`; their active revisions.
async fn all_converged(
    ns: &Namespace,
    n: usize,
    model: &str,
    seconds: u64,
) -> Result<BTreeMap<String, String>> {
    let what = format!("all {n} ModelDeployments converged on {model}");
    wait_until(&what, Duration::from_secs(seconds), || converged(ns, n, model)).await
}

/// 50 ModelDeployments roll a new model out at once while the operator is killed with SIGKILL at random
/// moments (and started again after a random pause): every rollout converges once it runs, and the active
/// Service of each only ever selected a fully available revision, at every change in the recorded history.
pub(crate) async fn fifty_rollouts_survive_the_operator_killed_at_random(cluster: Cluster) -> Result<()> {
    const N: usize = 50;
    const KILLS: usize = 8;
    let mut rng = Rng::seeded("kill -9");
    let ns = cluster.namespace("chaos-kill")?;
    let args = ["--namespace", ns.name.as_str()];
    let mut operator = Operator::start(&cluster, &args)?;
    let history = History::start(cluster.client.clone(), &ns.name).await?;
    ns.apply(&model_deployments(N, "s3://models/iris-v1.onnx"))?;
    let first = all_converged(&ns, N, "iris-v1.onnx", 120).await?;

    new_model_for_all(&cluster, &ns, N, "s3://models/iris-v2.onnx").await?;
    let mut in_flight = Vec::new();
    for _ in 0..KILLS {
        tokio::time::sleep(rng.millis(100, 1500)).await;
        in_flight.push(rolling(&ns).await?);
        operator.kill()?;
        tokio::time::sleep(rng.millis(0, 700)).await;
        operator = Operator::start(&cluster, &args)?;
    }
    let restarted = Instant::now();
    let second = all_converged(&ns, N, "iris-v2.onnx", 180).await?;
    let converged_in = restarted.elapsed();
    for (name, revision) in &second {
        ensure!(first.get(name) != Some(revision), "{name} still serves {revision}");
    }
    let changes = invariant_1_held(&history.finish().await?, N)?;
    println!(
        "    {N} blue-green rollouts, {KILLS} kill -9s at random moments (rollouts in flight at each: {in_flight:?}): \
         all converged {:.1} s after the last restart; invariant 1 held over all {changes} recorded changes",
        converged_in.as_secs_f64()
    );
    ensure!(in_flight[0] > 0, "the first kill came after every rollout had finished");
    Ok(())
}

/// Stops etcd with SIGSTOP while it is alive; SIGCONT when dropped, whatever happens in between.
struct Paused(String);

impl Paused {
    fn etcd(cluster: &Cluster) -> Result<Option<Self>> {
        let dir = cluster.kubeconfig.parent().context("kubeconfig has a directory")?;
        let Ok(pid) = std::fs::read_to_string(dir.join("etcd.pid")) else { return Ok(None) };
        let pid = pid.trim().to_string();
        let stopped = std::process::Command::new("kill").args(["-STOP", &pid]).status()?;
        ensure!(stopped.success(), "kill -STOP {pid}");
        Ok(Some(Self(pid)))
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

/// etcd is paused for 5 s in the middle of 20 blue-green rollouts (every API call hangs, then the operator's
/// calls time out or fail), and a change to half of them is made right after: no update is lost (each
/// converges on its latest spec: the new model, and the new replica count where it changed) and nothing is
/// left half-applied (every child owned and at the size its revision's role asks), with invariant 1 held
/// over the whole history. Needs the local cluster (etcd as a process); with kind it is skipped.
pub(crate) async fn an_etcd_pause_loses_no_update(cluster: Cluster) -> Result<()> {
    const N: usize = 20;
    let mut rng = Rng::seeded("etcd pause");
    let ns = cluster.namespace("chaos-etcd")?;
    let _operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    let history = History::start(cluster.client.clone(), &ns.name).await?;
    ns.apply(&model_deployments(N, "s3://models/iris-v1.onnx"))?;
    all_converged(&ns, N, "iris-v1.onnx", 120).await?;

    new_model_for_all(&cluster, &ns, N, "s3://models/iris-v2.onnx").await?;
    tokio::time::sleep(rng.millis(200, 1500)).await;
    let Some(paused) = Paused::etcd(&cluster)? else {
        println!("    skipped: not the local cluster (no etcd process to pause)");
        return Ok(());
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(paused);
    let resumed = Instant::now();
    // Half of them scaled up right after: a change made while the operator is still catching up.
    let mdeps: Api<ModelDeployment> = Api::namespaced(cluster.client.clone(), &ns.name);
    for i in (0..N).step_by(2) {
        let patch = serde_json::json!({"spec": {"replicas": REPLICAS + 1}});
        wait_until("the scale to be accepted after the pause", Duration::from_secs(30), || async {
            mdeps.patch(&format!("m-{i}"), &PatchParams::default(), &Patch::Merge(&patch)).await.ok()
        })
        .await?;
    }
    let active = all_converged(&ns, N, "iris-v2.onnx", 180).await?;
    // The scale made after the pause is there, and served at its size.
    for md in ns.list::<ModelDeployment>().await? {
        let even = md.name_any().trim_start_matches("m-").parse::<usize>()? % 2 == 0;
        let want = if even { REPLICAS + 1 } else { REPLICAS };
        ensure!(md.spec.replicas == want, "{}: {} replicas, not {want}", md.name_any(), md.spec.replicas);
    }
    let converged_in = resumed.elapsed();
    // Nothing half-applied: each has exactly its two Services and its Deployments, all owned by it.
    for name in active.keys() {
        let owned = |refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.is_some_and(|r| r.iter().any(|o| o.kind == "ModelDeployment" && &o.name == name))
        };
        let services: Vec<Service> = ns.list::<Service>().await?;
        let mine: Vec<_> = services
            .iter()
            .filter(|s| s.name_any() == *name || s.name_any() == format!("{name}-preview"))
            .collect();
        ensure!(
            mine.len() == 2 && mine.iter().all(|s| owned(s.metadata.owner_references.as_ref())),
            "{name}: {mine:?}"
        );
        let deployments: Vec<Deployment> = ns.list::<Deployment>().await?;
        let mine: Vec<_> =
            deployments.iter().filter(|d| d.name_any().starts_with(&format!("{name}-"))).collect();
        ensure!(mine.len() == 2, "{name}: the first and second revisions, no other: {mine:?}");
        ensure!(mine.iter().all(|d| owned(d.metadata.owner_references.as_ref())), "{name}: {mine:?}");
    }
    // Invariant 1 at two replicas, the least either size allows: a revision scaled to three is fully
    // available at its old size while the third pod starts.
    let changes = invariant_1_held(&history.finish().await?, N)?;
    println!(
        "    etcd paused 5 s during {N} rollouts: every update applied, all converged {:.1} s after it resumed; \
         invariant 1 held over all {changes} recorded changes",
        converged_in.as_secs_f64()
    );
    Ok(())
}

/// 1,000 ModelDeployments created, updated (model and size) and deleted in a random order, at most 200 at a
/// time, in two rounds of 500: the garbage collector removes every child (Deployments, ReplicaSets, pods,
/// Services) of every deleted one, and the operator's memory is flat: the second round, with every object
/// gone again, ends where the first ended (what the first adds over the start is the high-water mark of the
/// caches and the allocator, which the second reuses; a leak per object would add to it again).
pub(crate) async fn a_thousand_objects_churned_leave_flat_memory_and_no_children(
    cluster: Cluster,
) -> Result<()> {
    const ROUNDS: usize = 2;
    const PER_ROUND: usize = 500;
    let mut rng = Rng::seeded("churn");
    let ns = cluster.namespace("chaos-churn")?;
    let operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    wait_until("the operator ready", Duration::from_secs(30), || async {
        operator.get("/ready").await.ok().filter(|(code, _)| *code == 200)
    })
    .await?;
    let mut rss = vec![operator.rss_kib()?];
    let mut peak = rss[0];
    let (mut updates, started) = (0usize, Instant::now());
    for round in 0..ROUNDS {
        let (u, p) = churn(&cluster, &ns, &operator, &mut rng, &format!("churn-{round}"), PER_ROUND).await?;
        updates += u;
        peak = peak.max(p);
        all_children_collected(&cluster, &ns).await?;
        // Let the operator's caches settle on the empty namespace before reading.
        tokio::time::sleep(Duration::from_secs(3)).await;
        rss.push(operator.rss_kib()?);
    }
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    println!(
        "    {} ModelDeployments created, {updates} updates, all deleted, in {:.0} s: operator RSS {} MiB at the \
         start, {} MiB peak, {} MiB after each round of {PER_ROUND}; every child garbage-collected",
        ROUNDS * PER_ROUND,
        started.elapsed().as_secs_f64(),
        mib(rss[0]),
        mib(peak),
        rss[1..].iter().map(|&r| mib(r)).collect::<Vec<_>>().join(" -> "),
    );
    let (first, last) = (rss[1], rss[ROUNDS]);
    ensure!(
        last <= first + 4 * 1024,
        "memory grew from {first} KiB after round 1 to {last} KiB after round {ROUNDS}"
    );
    Ok(())
}

/// One round: `n` ModelDeployments `{prefix}-{i}`, each created, updated 0-2 times and deleted, their lives
/// interleaved at random, 8 calls at a time. The number of updates and the operator's peak RSS.
async fn churn(
    cluster: &Cluster,
    ns: &Namespace,
    operator: &Operator,
    rng: &mut Rng,
    prefix: &str,
    n: usize,
) -> Result<(usize, u64)> {
    const AT_ONCE: usize = 200;
    let api: Api<ModelDeployment> = Api::namespaced(cluster.client.clone(), &ns.name);
    let spec = |version: u64, replicas: u64| {
        serde_json::json!({"model": {"uri": format!("s3://models/iris-v{version}.onnx")}, "replicas": replicas,
                           "strategy": {"blueGreen": {"scaleDownDelaySeconds": 0}}})
    };
    let (mut live, mut created, mut updates, mut peak) = (Vec::<(usize, u64)>::new(), 0, 0, 0);
    while created < n || !live.is_empty() {
        let create = created < n && live.len() < AT_ONCE && (live.is_empty() || rng.below(2) == 0);
        // A batch's calls run at once, so it touches each object once.
        let (mut batch, mut touched) = (Vec::new(), std::collections::HashSet::new());
        for _ in 0..8 {
            if create && created < n {
                touched.insert(created);
                let object = serde_json::json!({
                    "apiVersion": "mizzen.dev/v1alpha1", "kind": "ModelDeployment",
                    "metadata": {"name": format!("{prefix}-{created}")}, "spec": spec(1, 1 + rng.below(2))});
                batch.push(Op::Create(Box::new(serde_json::from_value(object)?)));
                live.push((created, 1));
                created += 1;
            } else if !live.is_empty() {
                let at = rng.below(live.len() as u64) as usize;
                let (i, version) = live[at];
                if !touched.insert(i) {
                    continue;
                }
                if version < 3 && rng.below(2) == 0 {
                    live[at].1 += 1;
                    updates += 1;
                    let patch = serde_json::json!({"spec": spec(version + 1, 1 + rng.below(2))});
                    batch.push(Op::Update(format!("{prefix}-{i}"), patch));
                } else {
                    live.swap_remove(at);
                    batch.push(Op::Delete(format!("{prefix}-{i}")));
                }
            }
        }
        let results = futures::stream::iter(batch.into_iter().map(|op| op.run(&api))).buffer_unordered(8);
        for result in results.collect::<Vec<_>>().await {
            result?;
        }
        peak = peak.max(operator.rss_kib()?);
    }
    Ok((updates, peak))
}

/// Waits until nothing the operator made is left in `ns`: no ModelDeployment, and (the garbage collector's
/// work) no Deployment, ReplicaSet, pod or Service.
async fn all_children_collected(cluster: &Cluster, ns: &Namespace) -> Result<()> {
    let client = &cluster.client;
    let left = || async {
        let all = kube::api::ListParams::default();
        let m =
            Api::<ModelDeployment>::namespaced(client.clone(), &ns.name).list(&all).await.ok()?.items.len();
        let d = Api::<Deployment>::namespaced(client.clone(), &ns.name).list(&all).await.ok()?.items.len();
        let s = Api::<Service>::namespaced(client.clone(), &ns.name).list(&all).await.ok()?.items.len();
        let r = Api::<ReplicaSet>::namespaced(client.clone(), &ns.name).list(&all).await.ok()?.items.len();
        let p = Api::<Pod>::namespaced(client.clone(), &ns.name).list(&all).await.ok()?.items.len();
        Some([m, d, s, r, p])
    };
    let done = wait_until("every child garbage-collected", Duration::from_secs(300), || async {
        (left().await? == [0; 5]).then_some(())
    })
    .await;
    if done.is_err() {
        bail!("left (ModelDeployments, Deployments, Services, ReplicaSets, pods): {:?}", left().await);
    }
    Ok(())
}

enum Op {
    Create(Box<ModelDeployment>),
    Update(String, serde_json::Value),
    Delete(String),
}

impl Op {
    async fn run(self, api: &Api<ModelDeployment>) -> Result<()> {
        match self {
            Op::Create(md) => drop(api.create(&PostParams::default(), &md).await.context("create")?),
            Op::Update(name, patch) => drop(
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.context("update")?,
            ),
            Op::Delete(name) => drop(api.delete(&name, &DeleteParams::background()).await.context("delete")?),
        }
        Ok(())
    }
}
