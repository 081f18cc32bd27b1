//! Leader election: with `--leader-election`, replicas compete for a `coordination.k8s.io` Lease
//! (through kube-lease-manager, which takes it with server-side apply so two can never hold it), and only
//! the holder runs the controllers. A standby waits, ready; the holder renews the lease before it expires,
//! releases it when it stops (so a rolling update hands over at once), and exits if it ever loses it (the
//! pod restarts as a standby) rather than act alongside a new leader.

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where and how long the lease is held.
#[derive(Clone, Debug)]
pub struct Election {
    pub lease: String,
    pub namespace: String,
    /// This replica's name in the lease (`holderIdentity`): the pod's name in a cluster.
    pub identity: String,
    /// How long the lease lasts without a renewal: how long a standby waits after the leader dies.
    pub duration_seconds: u64,
}

impl Election {
    /// Renewals start this long before the lease expires.
    fn grace_seconds(&self) -> u64 {
        (self.duration_seconds / 3).max(1)
    }
}

/// The lease, held.
pub struct Leadership {
    state: watch::Receiver<bool>,
    manager: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// Waits until this replica holds the lease; `None` when `shutdown` comes first. The lease manager looks
/// at a held lease again only when it would expire, so this also watches the Lease: when its holder
/// releases it (a leader stopping), the manager is started afresh and takes it at once.
pub async fn acquire(
    client: kube::Client,
    election: &Election,
    shutdown: &CancellationToken,
) -> Result<Option<Leadership>, LeaseManagerError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &election.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", election.lease));
    let mut released =
        std::pin::pin!(watcher(leases, config).default_backoff().applied_objects().filter(|lease| {
            let free = lease.as_ref().is_ok_and(|l| {
                l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).is_none_or(str::is_empty)
            });
            std::future::ready(free)
        }));
    loop {
        let manager = LeaseManagerBuilder::new(client.clone(), &election.lease)
            .with_namespace(&election.namespace)
            .with_identity(&election.identity)
            .with_duration(election.duration_seconds)
            .with_grace(election.grace_seconds())
            .build()
            .await?;
        let (mut state, manager) = manager.watch().await;
        loop {
            if *state.borrow_and_update() {
                return Ok(Some(Leadership { state, manager }));
            }
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        // The manager stopped: its error says why.
                        return match manager.await {
                            Ok(Err(e)) => Err(e),
                            _ => Ok(None),
                        };
                    }
                }
                Some(_) = released.next() => {
                    drop(state);
                    let _ = manager.await;
                    break;
                }
                () = shutdown.cancelled() => {
                    drop(state);
                    let _ = manager.await;
                    return Ok(None);
                }
            }
        }
    }
}

impl Leadership {
    /// Resolves when the lease is lost (another replica took it, or the manager stopped).
    pub async fn lost(&mut self) {
        loop {
            if self.state.changed().await.is_err() || !*self.state.borrow_and_update() {
                return;
            }
        }
    }

    /// Gives the lease up so a standby takes over at once, and waits until that is written.
    pub async fn release(self) {
        drop(self.state);
        match self.manager.await {
            Ok(Ok(_)) => tracing::info!("released the lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease"),
            Err(e) => tracing::warn!(error = %e, "the lease manager ended"),
        }
    }
}
