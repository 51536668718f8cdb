//! One statement's view of the region: who runs it, what it may read (each object authorized
//! once, as the S3 GetObject of it would be), which version of each object it read (every
//! later range read of that object reads the same version), what it read (for the audit
//! record and the history), and the writes it staged, published only when the statement
//! succeeds.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use feiyun_iam::Caller;
use feiyun_oss::KeyCheck;

use crate::region::{ObjectInfo, Region};
use crate::{Access, FooterCache, Origin};

/// A write staged by the statement: an upload with its parts, published at the end.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub bucket: String,
    pub key: String,
    pub upload: String,
    /// `None` until the writer finished the object.
    pub parts: Option<Vec<(u32, String)>>,
}

pub struct Scope {
    pub(crate) caller: Arc<Caller>,
    pub(crate) origin: Option<Origin>,
    pub(crate) access: Arc<dyn Access>,
    pub(crate) region: Arc<dyn Region>,
    pub(crate) footers: Arc<FooterCache>,
    max_objects: usize,
    /// Objects authorized for reading (bucket, key, version label; `""` before the
    /// version is known), with the KMS check of their grant.
    granted: Mutex<HashMap<(String, String, String), KeyCheck>>,
    /// Buckets (and prefixes) the caller may list.
    listable: Mutex<HashSet<(String, String)>>,
    /// The version of each object the statement first saw.
    pinned: Mutex<HashMap<(String, String), ObjectInfo>>,
    /// Distinct objects read, and bytes read from them.
    read_objects: Mutex<HashSet<(String, String)>>,
    bytes: AtomicU64,
    /// The last objects whose reads began, to name in an error the reader did not name.
    recent: Mutex<std::collections::VecDeque<String>>,
    /// The first refusal of the statement: whatever error DataFusion wraps it in, the
    /// statement failed because of it.
    denied: Mutex<Option<String>>,
    pub(crate) staged: Mutex<Vec<Staged>>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("caller", &self.caller.principal.arn)
            .finish()
    }
}

impl Scope {
    pub(crate) fn new(
        caller: Arc<Caller>,
        origin: Option<Origin>,
        access: Arc<dyn Access>,
        region: Arc<dyn Region>,
        footers: Arc<FooterCache>,
        max_objects: usize,
    ) -> Self {
        Self {
            caller,
            origin,
            access,
            region,
            footers,
            max_objects,
            granted: Mutex::default(),
            listable: Mutex::default(),
            pinned: Mutex::default(),
            read_objects: Mutex::default(),
            bytes: AtomicU64::new(0),
            recent: Mutex::default(),
            denied: Mutex::default(),
            staged: Mutex::default(),
        }
    }

    pub fn account(&self) -> &str {
        &self.caller.principal.account
    }

    /// May the caller list `prefix` of `bucket` (`s3:ListBucket`, with `s3:prefix`).
    pub(crate) async fn may_list(&self, bucket: &str, prefix: &str) -> Result<(), String> {
        let k = (bucket.to_owned(), prefix.to_owned());
        if lock(&self.listable).contains(&k) {
            return Ok(());
        }
        self.access
            .bucket(&self.caller, self.origin, "s3:ListBucket", bucket, prefix)
            .await
            .map_err(|e| self.refused(e))?;
        lock(&self.listable).insert(k);
        Ok(())
    }

    /// `s3:GetObject` on the key, decided with the tags of `version` (the current version
    /// when `None`), remembered for the statement.
    async fn grant(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<KeyCheck, String> {
        let k = (
            bucket.to_owned(),
            key.to_owned(),
            version.unwrap_or_default().to_owned(),
        );
        let known = lock(&self.granted).get(&k).cloned();
        match known {
            Some(c) => Ok(c),
            None => {
                let c = self
                    .access
                    .object(
                        &self.caller,
                        self.origin,
                        "s3:GetObject",
                        bucket,
                        key,
                        version,
                    )
                    .await
                    .map_err(|e| self.refused(e))?;
                lock(&self.granted).insert(k, c.clone());
                Ok(c)
            }
        }
    }

    /// May the caller read `key` at all: asked before the key is looked up, so whether it
    /// exists is told only to those who may read it (or list the bucket).
    pub(crate) async fn may_get(&self, bucket: &str, key: &str) -> Result<(), String> {
        self.grant(bucket, key, None).await.map(|_| ())
    }

    /// May the caller read this version of the object: `s3:GetObject` decided with the
    /// version's own tags, and `kms:Decrypt` on its key when it is sealed under a KMS key
    /// (checked here too, since a cached footer is served without decrypting anything).
    pub(crate) async fn may_read(&self, bucket: &str, o: &ObjectInfo) -> Result<KeyCheck, String> {
        let check = self.grant(bucket, &o.key, Some(&o.version)).await?;
        if let Some(key) = &o.kms_key
            && !(check.0)("kms:Decrypt", key)
        {
            return Err(self.refused(format!(
                "{} is not allowed kms:Decrypt on {key}, which s3://{bucket}/{} is encrypted under",
                self.caller.principal.arn, o.key
            )));
        }
        Ok(check)
    }

    /// The check of a write of `key`: `s3:PutObject`, and the KMS permissions of its key.
    pub(crate) async fn may_write(&self, bucket: &str, key: &str) -> Result<KeyCheck, String> {
        self.access
            .object(&self.caller, self.origin, "s3:PutObject", bucket, key, None)
            .await
            .map_err(|e| self.refused(e))
    }

    /// May the caller create or drop the account's table `name` (`sql:CreateTable`,
    /// `sql:DropTable`).
    pub(crate) fn table_action(&self, action: &str, name: &str) -> Result<(), crate::SqlError> {
        self.access
            .table(&self.caller, self.origin, action, name)
            .map_err(|e| crate::SqlError::AccessDenied(format!("access denied: {e}")))
    }

    fn refused(&self, e: String) -> String {
        lock(&self.denied).get_or_insert_with(|| e.clone());
        e
    }

    /// Remembers the version a listing or HEAD saw, unless one was seen already; returns
    /// the version the statement reads. A statement remembers at most `limit` objects.
    pub(crate) fn pin(
        &self,
        bucket: &str,
        o: ObjectInfo,
        limit: usize,
    ) -> Result<ObjectInfo, String> {
        let mut g = lock(&self.pinned);
        let k = (bucket.to_owned(), o.key.clone());
        if let Some(seen) = g.get(&k) {
            return Ok(seen.clone());
        }
        if g.len() >= limit {
            return Err(format!(
                "the statement lists more than {limit} objects; narrow its locations or partitions"
            ));
        }
        g.insert(k, o.clone());
        Ok(o)
    }

    pub(crate) fn max_objects(&self) -> usize {
        self.max_objects
    }

    pub(crate) fn pinned(&self, bucket: &str, key: &str) -> Option<ObjectInfo> {
        lock(&self.pinned)
            .get(&(bucket.to_owned(), key.to_owned()))
            .cloned()
    }

    /// Notes that a read of the object began.
    pub(crate) fn reading(&self, bucket: &str, key: &str) {
        let name = format!("s3://{bucket}/{key}");
        let mut g = lock(&self.recent);
        if g.back() != Some(&name) {
            g.retain(|n| n != &name);
            g.push_back(name);
            if g.len() > 3 {
                g.pop_front();
            }
        }
    }

    /// A failed statement's error as the user should see it: a refusal of access, however
    /// DataFusion wrapped it, is AccessDenied; a data error that names no object gets the
    /// objects the statement was reading.
    pub(crate) fn name_objects(&self, e: crate::SqlError) -> crate::SqlError {
        if let Some(d) = lock(&self.denied).clone()
            && !matches!(e, crate::SqlError::Timeout(_) | crate::SqlError::Cancelled)
        {
            return crate::SqlError::AccessDenied(format!("access denied: {d}"));
        }
        match e {
            crate::SqlError::Data(m) if !m.contains("s3://") => {
                let recent: Vec<String> = lock(&self.recent).iter().cloned().collect();
                if recent.is_empty() {
                    crate::SqlError::Data(m)
                } else {
                    crate::SqlError::Data(format!("{m} (while reading {})", recent.join(", ")))
                }
            }
            other => other,
        }
    }

    pub(crate) fn count_read(&self, bucket: &str, key: &str, bytes: u64) {
        lock(&self.read_objects).insert((bucket.to_owned(), key.to_owned()));
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Objects read and bytes read so far.
    pub fn read_stats(&self) -> (u64, u64) {
        (
            lock(&self.read_objects).len() as u64,
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// The objects read, sorted (for the audit record; at most `limit`).
    pub fn objects_read(&self, limit: usize) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.read_objects)
            .iter()
            .map(|(b, k)| format!("s3://{b}/{k}"))
            .collect();
        v.sort();
        v.truncate(limit);
        v
    }

    /// Publishes every staged write. A write the writer never finished fails the statement.
    pub(crate) async fn publish(&self) -> Result<u64, String> {
        let staged = std::mem::take(&mut *lock(&self.staged));
        let mut unfinished = Vec::new();
        let mut ready = Vec::new();
        for s in staged {
            match &s.parts {
                Some(_) => ready.push(s),
                None => unfinished.push(s),
            }
        }
        if !unfinished.is_empty() {
            let first = format!("s3://{}/{}", unfinished[0].bucket, unfinished[0].key);
            ready.extend(unfinished);
            self.discard_all(ready).await;
            return Err(format!("the write of {first} was not finished"));
        }
        let mut published = 0;
        let mut rest = ready.into_iter();
        while let Some(s) = rest.next() {
            let parts = s.parts.clone().unwrap_or_default();
            if let Err(e) = self
                .region
                .publish(&s.bucket, &s.key, &s.upload, parts)
                .await
            {
                self.discard_all(rest.collect()).await;
                return Err(format!(
                    "s3://{}/{} could not be published ({published} objects were): {e}",
                    s.bucket, s.key
                ));
            }
            published += 1;
        }
        Ok(published)
    }

    /// Drops every staged write (the statement failed or was cancelled).
    pub(crate) async fn discard(&self) {
        let staged = std::mem::take(&mut *lock(&self.staged));
        self.discard_all(staged).await;
    }

    async fn discard_all(&self, staged: Vec<Staged>) {
        for s in staged {
            if let Err(e) = self.region.discard(&s.bucket, &s.key, &s.upload).await {
                tracing::warn!(bucket = %s.bucket, key = %s.key, error = %e, "a staged write could not be dropped");
            }
        }
    }

    pub(crate) fn has_staged(&self) -> bool {
        !lock(&self.staged).is_empty()
    }
}

impl Drop for Scope {
    /// A statement dropped mid-way (a cancelled query) leaves staged uploads behind; they
    /// are dropped in the background so nothing half-written stays around.
    fn drop(&mut self) {
        let staged = std::mem::take(&mut *lock(&self.staged));
        if staged.is_empty() {
            return;
        }
        let region = self.region.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for s in staged {
                    let _ = region.discard(&s.bucket, &s.key, &s.upload).await;
                }
            });
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
