//! Leader election: several operator replicas, one acting. The lease is short here (5 s) to keep the test
//! short; the default is 15 s.

use anyhow::{Result, ensure};
use mizzen_api::v1alpha1::ModelDeployment;
use mizzen_e2e::{Cluster, Operator, wait_until};
use std::time::{Duration, Instant};

const LEASE_SECONDS: u64 = 5;

/// Waits until `operator`'s /ready says `want` (`ready` or `standby...`); how long that took.
async fn ready_as(operator: &Operator, want: &str, within: Duration) -> Result<Duration> {
    let start = Instant::now();
    wait_until(&format!("/ready to say {want}"), within, || async {
        operator.get("/ready").await.ok().filter(|(code, body)| *code == 200 && body.starts_with(want))
    })
    .await?;
    Ok(start.elapsed())
}

/// How many reconciles `operator` has run, from its metrics.
async fn reconciles(operator: &Operator) -> Result<u64> {
    let (_, body) = operator.get("/metrics").await?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("mizzen_operator_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// Two replicas with `--leader-election`: the first holds the Lease and reconciles, the second stands by
/// (ready, reconciling nothing). Killed with SIGKILL, the leader's lease runs out and the standby takes over
/// within the lease's duration and reconciles; stopped with SIGTERM, a leader releases the lease and a
/// standby takes over at once.
pub(crate) async fn a_standby_takes_over_from_a_killed_or_stopped_leader(cluster: Cluster) -> Result<()> {
    let ns = cluster.namespace("leader")?;
    let lease = LEASE_SECONDS.to_string();
    let args = [
        "--namespace",
        &ns.name,
        "--leader-election",
        "--lease-namespace",
        &ns.name,
        "--lease-seconds",
        &lease,
    ];
    let mut first = Operator::start(&cluster, &args)?;
    ready_as(&first, "ready", Duration::from_secs(30)).await?;
    let second = Operator::start(&cluster, &args)?;
    ready_as(&second, "standby", Duration::from_secs(30)).await?;
    let holder = || ns.kubectl(&["get", "lease", "mizzen-operator", "-o", "jsonpath={.spec.holderIdentity}"]);
    let leader = holder().ok()?;
    ensure!(!leader.is_empty(), "the lease has no holder");

    ns.apply(&super::api::MDEP.replace("registry://iris@champion", "s3://models/iris.onnx"))?;
    ns.wait_for_condition::<ModelDeployment>("iris", "Ready", "True").await?;
    ensure!(reconciles(&first).await? > 0, "the leader reconciled nothing");
    ensure!(reconciles(&second).await? == 0, "the standby reconciled");

    // SIGKILL: the lease is not released; the standby takes it once it expires.
    first.kill()?;
    let killed = ready_as(&second, "ready", Duration::from_secs(LEASE_SECONDS * 3 + 10)).await?;
    ensure!(holder().ok()? != leader, "the lease still names the killed leader");
    ns.kubectl(&["scale", "mdep/iris", "--replicas", "2"]).ok()?;
    ns.wait_for::<ModelDeployment, _>("iris", "2 available", Duration::from_secs(30), |s| {
        (s.available_replicas == 2).then_some(())
    })
    .await?;

    // SIGTERM: the leader releases the lease on its way out, and a standby takes it at once.
    let mut second = second;
    let third = Operator::start(&cluster, &args)?;
    ready_as(&third, "standby", Duration::from_secs(30)).await?;
    let leader = holder().ok()?;
    let status = second.terminate(Duration::from_secs(10))?;
    ensure!(status.success(), "the leader's exit on SIGTERM: {status}\n{}", second.log());
    // Released before it exited: the lease no longer names it, though it had time left.
    let after = holder().ok()?;
    ensure!(after != leader, "the lease still names the stopped leader {leader}");
    let stopped = ready_as(&third, "ready", Duration::from_secs(LEASE_SECONDS * 3 + 10)).await?;
    ns.kubectl(&["scale", "mdep/iris", "--replicas", "1"]).ok()?;
    ns.wait_for::<ModelDeployment, _>("iris", "1 available", Duration::from_secs(30), |s| {
        (s.available_replicas == 1).then_some(())
    })
    .await?;
    println!(
        "    handover: {killed:.1?} after SIGKILL (lease {LEASE_SECONDS} s), {stopped:.1?} after SIGTERM"
    );
    Ok(())
}
