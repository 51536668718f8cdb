//! Whether this process runs the region's once-per-region background work now: lifecycle,
//! data-key re-wrapping, event delivery and trimming, the replication follower, function
//! triggers and timers, KMS key purges.
//!
//! A process alone in its region always does. A node of a multi-node region does while it
//! holds the region's background lease (see `feiyun-cluster`), which the server installs
//! here as the gate at start; each worker asks before every round, so one that lost the
//! lease stops within a round and the node that took it over carries on from the durable
//! cursors in the metadata store. One gate per process: a process serves one region.
//!
//! The gate alone is timing: a holder paused past its lease (a stopped process, a stalled
//! disk) would find out only at its next question. So a worker also runs each round inside
//! [`fenced`], and the metadata engine adds to every commit made there a check that the
//! region's fencing token is still the one this node took the lease with: a deposed
//! holder's late commits fail as conflicts instead of landing after its successor's.

use std::future::Future;
use std::sync::OnceLock;

type Gate = Box<dyn Fn() -> bool + Send + Sync>;
type Fence = Box<dyn Fn() -> u64 + Send + Sync>;

static GATE: OnceLock<Gate> = OnceLock::new();
static FENCE: OnceLock<Fence> = OnceLock::new();

tokio::task_local! {
    /// The fencing token the round started under.
    static ROUND: u64;
}

/// Installs the gate; only the first call counts.
pub fn set_gate(gate: impl Fn() -> bool + Send + Sync + 'static) {
    let _ = GATE.set(Box::new(gate));
}

/// Installs the source of this node's fencing token (the lease's, 0 before it held one);
/// only the first call counts. A process alone in its region installs none.
pub fn set_fence(fence: impl Fn() -> u64 + Send + Sync + 'static) {
    let _ = FENCE.set(Box::new(fence));
}

/// Runs one round of background work with its commits fenced (see the module doc), under
/// the token this node holds as the round starts: a round that outlives its lease stays
/// fenced out even if the node takes the lease again meanwhile. Work the round spawns onto
/// another task is fenced only when it is started through [`with_fence`].
pub async fn fenced<F: Future>(round: F) -> F::Output {
    with_fence(FENCE.get().map(|f| f()), round).await
}

/// Runs `work` under `token` (from [`fence`] on the task that spawns it), or unfenced.
pub async fn with_fence<F: Future>(token: Option<u64>, work: F) -> F::Output {
    match token {
        Some(t) => ROUND.scope(t, work).await,
        None => work.await,
    }
}

/// The fencing token a commit made now must find in the store, when it is made inside a
/// [`fenced`] round of a multi-node region.
pub fn fence() -> Option<u64> {
    ROUND.try_with(|t| *t).ok()
}

/// Whether background work should run now.
pub fn runs() -> bool {
    GATE.get().is_none_or(|g| g())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_commits_inside_a_round_are_fenced() {
        set_fence(|| 7);
        assert_eq!(fence(), None);
        assert_eq!(fenced(async { fence() }).await, Some(7));
        // A task spawned from a round is outside it, unless the round's token goes along.
        let spawned = fenced(async { tokio::spawn(async { fence() }).await.unwrap() }).await;
        assert_eq!(spawned, None);
        let carried = fenced(async {
            let token = fence();
            tokio::spawn(with_fence(token, async { fence() }))
                .await
                .unwrap()
        })
        .await;
        assert_eq!(carried, Some(7));
        assert_eq!(with_fence(None, async { fence() }).await, None);
    }
}
