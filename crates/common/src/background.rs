//! Whether this process runs the region's once-per-region background work now: lifecycle,
//! data-key re-wrapping, event delivery and trimming, the replication follower, function
//! triggers and timers, KMS key purges.
//!
//! A process alone in its region always does. A node of a multi-node region does while it
//! holds the region's background lease (see `feiyun-cluster`), which the server installs
//! here as the gate at start; each worker asks before every round, so one that lost the
//! lease stops within a round and the node that took it over carries on from the durable
//! cursors in the metadata store. One gate per process: a process serves one region.

use std::sync::OnceLock;

type Gate = Box<dyn Fn() -> bool + Send + Sync>;

static GATE: OnceLock<Gate> = OnceLock::new();

/// Installs the gate; only the first call counts.
pub fn set_gate(gate: impl Fn() -> bool + Send + Sync + 'static) {
    let _ = GATE.set(Box::new(gate));
}

/// Whether background work should run now.
pub fn runs() -> bool {
    GATE.get().is_none_or(|g| g())
}
