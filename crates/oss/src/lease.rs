//! Read leases: a GET that is streaming an object keeps that object's blobs alive even if the
//! object is overwritten or deleted meanwhile, as S3 guarantees for reads in progress.
//!
//! A reader registers its leases, then checks its blobs exist; the janitor, under the same
//! lock, skips a leased blob and marks the one it deletes, so a reader either holds a blob
//! still stored or learns it is gone (and re-reads the record). Neither holds the lock
//! across the blob store's calls, which in a multi-node region are network round trips: a
//! lease released on a runtime worker must never wait behind one. Leases live in memory
//! only: after a restart no read is in progress.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use feiyun_blob::{BlobId, BlobStore};

use crate::OssError;

pub(crate) struct Leases {
    state: Mutex<State>,
    /// Wakes the janitor when a blob it had to skip is released.
    janitor: Arc<Notify>,
}

#[derive(Default)]
struct State {
    held: HashMap<BlobId, u32>,
    /// Garbage blobs the janitor skipped because they were leased.
    deferred: HashSet<BlobId>,
    /// Blobs the janitor is deleting now: no new lease on them.
    deleting: HashSet<BlobId>,
}

/// Released when the response body is dropped (finished, failed or abandoned).
pub(crate) struct Lease {
    leases: Arc<Leases>,
    ids: Vec<BlobId>,
}

impl Leases {
    pub fn new(janitor: Arc<Notify>) -> Self {
        Self {
            state: Mutex::default(),
            janitor,
        }
    }

    /// Leases every blob, or fails with [`OssError::BlobGone`] if one was already collected
    /// (the caller re-reads the record). Blocking: checks the blob store.
    pub fn acquire<B: BlobStore>(
        self: &Arc<Self>,
        blobs: &B,
        ids: Vec<BlobId>,
    ) -> Result<Lease, OssError> {
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(id) = ids.iter().find(|id| state.deleting.contains(id)) {
                return Err(OssError::BlobGone(*id));
            }
            for id in &ids {
                *state.held.entry(*id).or_insert(0) += 1;
            }
        }
        // Registered first: from here on the janitor skips them, so what exists now stays.
        let lease = Lease {
            leases: self.clone(),
            ids,
        };
        for id in &lease.ids {
            if !blobs.exists(*id)? {
                return Err(OssError::BlobGone(*id));
            }
        }
        Ok(lease)
    }

    /// Deletes the blob unless a reader holds it; returns whether it was deleted.
    pub fn delete_unleased<B: BlobStore>(&self, blobs: &B, id: BlobId) -> Result<bool, OssError> {
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.held.contains_key(&id) {
                state.deferred.insert(id);
                return Ok(false);
            }
            state.deferred.remove(&id);
            state.deleting.insert(id);
        }
        let result = blobs.delete(id);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.deleting.remove(&id);
        result?;
        Ok(true)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.leases.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut wake = false;
        for id in &self.ids {
            if let Some(n) = state.held.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    state.held.remove(id);
                    wake |= state.deferred.contains(id);
                }
            }
        }
        if wake {
            self.leases.janitor.notify_one();
        }
    }
}
