//! Multipart uploads: each part is its own blob; completion writes one record that lists the
//! part blobs in order, so the data is never copied again.

use std::sync::Arc;

use bytes::Bytes;
use feiyun_blob::{BlobId, BlobStore};
use feiyun_meta::{MetaError, MetaStore, Table, WriteBatch, prefix_end};
use futures::Stream;
use md5::{Digest as _, Md5};

use crate::checksum::{self, ChecksumAlgorithm, ChecksumKind, Digests, StoredChecksum};
use crate::put::{ObjectHeaders, PutOutcome, StagedData, WriteSpec};
use crate::records::{
    self, BlobRef, ObjectData, ObjectRecord, PartLayout, PartRecord, UploadRecord,
};
use crate::versions::Change;
use crate::{
    MAX_OBJECT_SIZE, MAX_PARTS, MAX_PUT_SIZE, MIN_PART_SIZE, ObjectService, OssError, keys,
    now_millis,
};

/// Most uploads or parts one listing page returns.
pub const MAX_LIST: usize = 1000;
/// Part number 0 (S3's start at 1) keys the upload's parts generation: every part commit
/// rewrites it, so completing or aborting an upload can check one row for "no part changed".
const GENERATION_ROW: u32 = 0;

/// One stored part row: its key, its bytes as read (for the commit's check) and the record.
struct StoredPart {
    key: Vec<u8>,
    raw: Vec<u8>,
    record: PartRecord,
}

/// An upload's part rows as one read saw them.
pub(crate) struct PartsSnapshot {
    generation: Option<Vec<u8>>,
    parts: Vec<StoredPart>,
}

impl PartsSnapshot {
    /// Adds to `batch` the checks that no part changed since this snapshot, the removal of
    /// every part row, and garbage entries for the blobs not in `used`.
    pub(crate) fn discard(&self, batch: &mut WriteBatch, upload_id: &str, used: &[BlobId]) {
        let generation = keys::part(upload_id, GENERATION_ROW);
        batch
            .check_value(Table::Parts, generation.clone(), self.generation.clone())
            .delete(Table::Parts, generation);
        for p in &self.parts {
            batch
                .check_value(Table::Parts, p.key.clone(), Some(p.raw.clone()))
                .delete(Table::Parts, p.key.clone());
            if !used.contains(&p.record.blob) {
                batch.put(
                    Table::Garbage,
                    p.record.blob.to_bytes().to_vec(),
                    Vec::new(),
                );
            }
        }
    }
}

/// What a completion commits: the new version and the upload's removal, with its checks.
pub(crate) struct PlannedCompletion {
    record: ObjectRecord,
    extra: WriteBatch,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PartInfo {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
    pub last_modified_ms: i64,
    pub checksum: Option<StoredChecksum>,
    /// The upload's encryption (UploadPart's response repeats it); not set by ListParts.
    pub sse: Option<crate::sse::SseMode>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UploadInfo {
    pub key: String,
    pub upload_id: String,
    pub initiated_ms: i64,
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
    pub checksum_kind: Option<ChecksumKind>,
    /// `None` is STANDARD.
    pub storage_class: Option<String>,
}

/// A part named in CompleteMultipartUpload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletePart {
    pub part_number: u32,
    pub etag: String,
}

#[derive(Debug, Clone, Default)]
pub struct UploadParams {
    pub prefix: String,
    pub key_marker: Option<String>,
    pub upload_id_marker: Option<String>,
    pub max_uploads: usize,
}

#[derive(Debug, Clone)]
pub struct UploadPage {
    pub uploads: Vec<UploadInfo>,
    pub is_truncated: bool,
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    pub async fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        headers: ObjectHeaders,
        checksum_algorithm: Option<ChecksumAlgorithm>,
        checksum_kind: Option<ChecksumKind>,
        sse: &WriteSpec,
    ) -> Result<(String, Option<crate::sse::SseMode>), OssError> {
        keys::validate_object_key(key)?;
        let sealing = self.sealing_for_new(bucket, key, sse).await?;
        if let (Some(alg), Some(ChecksumKind::FullObject)) = (checksum_algorithm, checksum_kind)
            && !alg.supports_full_object()
        {
            return Err(OssError::InvalidArgument(format!(
                "{} cannot be a FULL_OBJECT checksum",
                alg.as_str()
            )));
        }
        // Time-ordered, so uploads of one key list in initiation order.
        let upload_id = uuid::Uuid::now_v7().simple().to_string();
        let record = UploadRecord {
            initiated_ms: now_millis(),
            headers,
            checksum_algorithm,
            checksum_kind: checksum_algorithm
                .map(|_| checksum_kind.unwrap_or(ChecksumKind::Composite)),
            sse: sealing.map(|s| s.mode.clone()),
            replica: sse.replica,
        };
        let mut batch = WriteBatch::new();
        batch
            .check_present(Table::Buckets, keys::bucket(bucket))
            .put(
                Table::Uploads,
                keys::upload(bucket, key, &upload_id),
                records::encode(&record)?,
            );
        self.meta.commit(batch).await.map_err(|e| match e {
            MetaError::Conflict(_) => OssError::NoSuchBucket,
            e => e.into(),
        })?;
        Ok((upload_id, record.sse))
    }

    pub(crate) async fn load_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(Vec<u8>, UploadRecord), OssError> {
        self.require_bucket(bucket).await?;
        let k = keys::upload(bucket, key, upload_id);
        let v = self
            .blocking(move |m, _| Ok(m.get(Table::Uploads, &k)?))
            .await?;
        match v {
            Some(bytes) => {
                let r = records::decode(&bytes)?;
                Ok((bytes, r))
            }
            None => Err(OssError::NoSuchUpload),
        }
    }

    /// Stores one part; `verify` checks client-sent digests before the part is recorded.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_part<S, E>(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        mut spec: WriteSpec,
        body: S,
        verify: impl FnOnce(&Digests) -> Result<(), OssError>,
    ) -> Result<PartInfo, OssError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Into<OssError>,
    {
        if !(1..=MAX_PARTS).contains(&part_number) {
            return Err(OssError::InvalidArgument(format!(
                "part number must be between 1 and {MAX_PARTS}"
            )));
        }
        let (_, upload) = self.load_upload(bucket, key, upload_id).await?;
        if let Some(alg) = upload.checksum_algorithm {
            match spec.checksum_algorithm {
                Some(a) if a != alg => {
                    return Err(OssError::InvalidArgument(format!(
                        "the upload was created with {} checksums",
                        alg.as_str()
                    )));
                }
                _ => spec.checksum_algorithm = Some(alg),
            }
        }
        spec.cold = upload.headers.storage_class.is_some();
        let customer = match spec.sse.take() {
            Some(crate::sse::SseRequest::Customer(c)) => Some(c),
            Some(_) => {
                return Err(OssError::InvalidArgument(
                    "UploadPart takes the encryption of its CreateMultipartUpload; only SSE-C keys may be sent".into(),
                ));
            }
            None => None,
        };
        self.check_customer_key(upload.sse.as_ref(), customer.as_ref(), bucket, key)?;
        let sealing = upload
            .sse
            .clone()
            .map(|mode| crate::sse::Sealing::of(mode, customer));
        let seal = sealing.as_ref().map(|sealing| crate::put::SealAt {
            sealing,
            bucket,
            key,
        });
        // Parts always go to blobs: completion references them without copying.
        let staged = self.stage(body, &spec, MAX_PUT_SIZE, 0, seal).await?;
        verify(&staged.digests)?;
        self.record_part(
            bucket,
            key,
            upload_id,
            part_number,
            (upload.checksum_algorithm, upload.sse.as_ref()),
            staged,
        )
        .await
    }

    pub(crate) async fn record_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        (upload_algorithm, sse): (Option<ChecksumAlgorithm>, Option<&crate::sse::SseMode>),
        mut staged: crate::put::Staged,
    ) -> Result<PartInfo, OssError> {
        let StagedData::Blob(blob) = staged.data else {
            return Err(OssError::Internal("part staged inline".into()));
        };
        let key_pair = staged.key.take();
        let record = PartRecord {
            blob: blob.id,
            size: blob.len,
            etag: crate::sse::etag_for(
                sse,
                staged.digests.md5_hex(),
                key_pair.as_ref().map(|k| &k.0),
            ),
            last_modified_ms: now_millis(),
            checksum: upload_algorithm.map(|_| staged.digests.checksum.clone()),
            sealed_key: key_pair.map(|k| serde_bytes::ByteBuf::from(k.1)),
        };
        let pkey = keys::part(upload_id, part_number);
        let mut retry = crate::retry::Retry::new();
        loop {
            let k = pkey.clone();
            let old = self
                .blocking(move |m, _| Ok(m.get(Table::Parts, &k)?))
                .await?;
            let mut batch = WriteBatch::new();
            batch
                .check_present(Table::Uploads, keys::upload(bucket, key, upload_id))
                .check_value(Table::Parts, pkey.clone(), old.clone())
                .put(Table::Parts, pkey.clone(), records::encode(&record)?)
                // A blind write (parts of one upload never conflict with each other over
                // it) that any completion or abort planned before this commit will notice.
                .put(
                    Table::Parts,
                    keys::part(upload_id, GENERATION_ROW),
                    uuid::Uuid::new_v4().as_bytes().to_vec(),
                )
                // Still pending: an abandoned request's guard has not taken it back.
                .check_present(Table::PendingBlobs, blob.id.to_bytes().to_vec())
                .delete(Table::PendingBlobs, blob.id.to_bytes().to_vec());
            if let Some(o) = &old {
                let o: PartRecord = records::decode(o)?;
                batch.put(Table::Garbage, o.blob.to_bytes().to_vec(), Vec::new());
            }
            match self.meta.commit(batch).await {
                Ok(()) => {
                    if let Some(g) = staged.guard.as_mut() {
                        g.disarm();
                    }
                    if old.is_some() {
                        self.janitor.notify_one();
                    }
                    return Ok(PartInfo {
                        part_number,
                        etag: record.etag,
                        size: record.size,
                        last_modified_ms: record.last_modified_ms,
                        checksum: record.checksum,
                        sse: sse.cloned(),
                    });
                }
                Err(MetaError::Conflict(_)) => {
                    // Gone (completed or aborted meanwhile) answers NoSuchUpload.
                    self.load_upload(bucket, key, upload_id).await?;
                    if !retry.again().await {
                        return Err(OssError::Busy);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Every part row of an upload, read in one snapshot, with the generation row.
    pub(crate) async fn all_parts(&self, upload_id: &str) -> Result<PartsSnapshot, OssError> {
        let start = keys::upload_parts(upload_id);
        let end = prefix_end(&start);
        let rows = self
            .blocking(move |m, _| {
                Ok(m.scan(Table::Parts, &start, end.as_deref(), MAX_PARTS as usize + 2)?)
            })
            .await?;
        let generation_key = keys::part(upload_id, GENERATION_ROW);
        let mut snapshot = PartsSnapshot {
            generation: None,
            parts: Vec::with_capacity(rows.len()),
        };
        for (k, v) in rows {
            if k == generation_key {
                snapshot.generation = Some(v);
                continue;
            }
            let r = records::decode(&v)?;
            snapshot.parts.push(StoredPart {
                key: k,
                raw: v,
                record: r,
            });
        }
        Ok(snapshot)
    }

    pub async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number_marker: u32,
        max_parts: usize,
    ) -> Result<(UploadInfo, Vec<PartInfo>, bool), OssError> {
        let (_, upload) = self.load_upload(bucket, key, upload_id).await?;
        let start = keys::part(upload_id, part_number_marker.saturating_add(1));
        let end = prefix_end(&keys::upload_parts(upload_id));
        let limit = max_parts.min(MAX_LIST);
        let rows = self
            .blocking(move |m, _| Ok(m.scan(Table::Parts, &start, end.as_deref(), limit + 1)?))
            .await?;
        let truncated = rows.len() > limit;
        let mut parts = Vec::new();
        for (k, v) in rows.into_iter().take(limit) {
            let r: PartRecord = records::decode(&v)?;
            let n = k
                .get(k.len().saturating_sub(4)..)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| OssError::Corrupt("part key".into()))?;
            parts.push(PartInfo {
                part_number: n,
                etag: r.etag,
                size: r.size,
                last_modified_ms: r.last_modified_ms,
                checksum: r.checksum,
                sse: None,
            });
        }
        let info = UploadInfo {
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            initiated_ms: upload.initiated_ms,
            checksum_algorithm: upload.checksum_algorithm,
            checksum_kind: upload.checksum_kind,
            storage_class: upload.headers.storage_class.clone(),
        };
        Ok((info, parts, truncated))
    }

    pub async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), OssError> {
        let mut retry = crate::retry::Retry::new();
        loop {
            let (ubytes, _) = self.load_upload(bucket, key, upload_id).await?;
            let snapshot = self.all_parts(upload_id).await?;
            let mut batch = WriteBatch::new();
            let ukey = keys::upload(bucket, key, upload_id);
            batch
                .check_value(Table::Uploads, ukey.clone(), Some(ubytes))
                .delete(Table::Uploads, ukey);
            snapshot.discard(&mut batch, upload_id, &[]);
            match self.meta.commit(batch).await {
                Ok(()) => break,
                // A part landed meanwhile (read again), or the upload went (NoSuchUpload).
                Err(MetaError::Conflict(_)) if retry.again().await => continue,
                Err(MetaError::Conflict(_)) => return Err(OssError::Busy),
                Err(e) => return Err(e.into()),
            }
        }
        self.janitor.notify_one();
        Ok(())
    }

    /// Assembles the listed parts into the object; unlisted parts are discarded.
    ///
    /// The commit checks the upload's generation row and every part row for the value read
    /// while planning: a part re-uploaded meanwhile (an SDK retry) moved its old blob to
    /// garbage, so a completion planned before it must not commit the old blob. It plans
    /// again from the new parts instead.
    pub async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        requested: &[CompletePart],
        object_checksum: Option<(ChecksumAlgorithm, String)>,
    ) -> Result<PutOutcome, OssError> {
        let mut retry = crate::retry::Retry::new();
        loop {
            let planned = self
                .plan_completion(bucket, key, upload_id, requested, object_checksum.as_ref())
                .await?;
            match self
                .commit_completion(bucket, key, upload_id, planned)
                .await
            {
                Err(OssError::Raced) if retry.again().await => continue,
                Err(OssError::Raced) => return Err(OssError::Busy),
                other => return other,
            }
        }
    }

    /// Reads the upload and its parts and builds the record and the batch that completes it.
    pub(crate) async fn plan_completion(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        requested: &[CompletePart],
        object_checksum: Option<&(ChecksumAlgorithm, String)>,
    ) -> Result<PlannedCompletion, OssError> {
        let (ubytes, upload) = self.load_upload(bucket, key, upload_id).await?;
        if requested.is_empty() {
            return Err(OssError::InvalidArgument(
                "you must specify at least one part".into(),
            ));
        }
        if requested.len() > MAX_PARTS as usize {
            return Err(OssError::InvalidArgument(format!(
                "at most {MAX_PARTS} parts"
            )));
        }
        for w in requested.windows(2) {
            if w[0].part_number >= w[1].part_number {
                return Err(OssError::InvalidPartOrder);
            }
        }
        let stored = self.all_parts(upload_id).await?;
        let by_number = |n: u32| {
            stored
                .parts
                .iter()
                .find(|p| p.key == keys::part(upload_id, n))
                .map(|p| (p.key.clone(), p.record.clone()))
        };
        let mut chosen = Vec::with_capacity(requested.len());
        for (i, r) in requested.iter().enumerate() {
            let Some((k, p)) = by_number(r.part_number) else {
                return Err(OssError::InvalidPart(format!(
                    "part {} was not uploaded",
                    r.part_number
                )));
            };
            if r.etag.trim().trim_matches('"') != p.etag {
                return Err(OssError::InvalidPart(format!(
                    "part {} has a different ETag",
                    r.part_number
                )));
            }
            if i + 1 < requested.len() && p.size < MIN_PART_SIZE {
                return Err(OssError::EntityTooSmall {
                    part: r.part_number,
                });
            }
            chosen.push((k, p));
        }
        let size: u64 = chosen.iter().map(|(_, p)| p.size).sum();
        if size > MAX_OBJECT_SIZE {
            return Err(OssError::EntityTooLarge);
        }
        let mut md5s = Md5::new();
        for (_, p) in &chosen {
            let raw = hex::decode(&p.etag).map_err(|_| OssError::Corrupt("part etag".into()))?;
            md5s.update(&raw);
        }
        let etag = format!("{}-{}", hex::encode(md5s.finalize()), chosen.len());
        let checksum = match (upload.checksum_algorithm, upload.checksum_kind) {
            (Some(alg), kind) => {
                let parts: Vec<(StoredChecksum, u64)> = chosen
                    .iter()
                    .map(|(_, p)| {
                        p.checksum
                            .clone()
                            .map(|c| (c, p.size))
                            .ok_or_else(|| OssError::InvalidPart("a part has no checksum".into()))
                    })
                    .collect::<Result<_, _>>()?;
                Some(checksum::combine_parts(
                    alg,
                    kind.unwrap_or(ChecksumKind::Composite),
                    &parts,
                )?)
            }
            (None, _) => None,
        };
        if let (Some((alg, sent)), Some(c)) = (object_checksum, &checksum)
            && (*alg != c.algorithm || sent.trim() != c.render())
        {
            return Err(OssError::BadDigest(format!(
                "The {} you specified did not match the calculated checksum.",
                alg.as_str()
            )));
        }
        let encryption = match &upload.sse {
            None => None,
            Some(mode) => Some(crate::sse::Encryption {
                mode: mode.clone(),
                keys: chosen
                    .iter()
                    .map(|(_, p)| {
                        p.sealed_key
                            .clone()
                            .ok_or_else(|| OssError::Corrupt("a part has no data key".into()))
                    })
                    .collect::<Result<_, _>>()?,
            }),
        };
        let mut record = ObjectRecord::new(
            upload.headers.clone(),
            size,
            etag.clone(),
            checksum.clone(),
            chosen
                .iter()
                .map(|(_, p)| PartLayout {
                    size: p.size,
                    checksum: p.checksum.clone(),
                })
                .collect(),
            ObjectData::Blobs(
                chosen
                    .iter()
                    .map(|(_, p)| BlobRef {
                        id: p.blob,
                        len: p.size,
                    })
                    .collect(),
            ),
        );
        record.encryption = encryption;
        if let Some(r) = upload.replica {
            record.version = r.version;
            record.last_modified_ms = r.last_modified_ms;
            record.replication = Some(crate::replication::ReplicationState::Replica);
        }
        let used: Vec<BlobId> = chosen.iter().map(|(_, p)| p.blob).collect();
        let mut extra = WriteBatch::new();
        let ukey = keys::upload(bucket, key, upload_id);
        extra
            .check_value(Table::Uploads, ukey.clone(), Some(ubytes))
            .delete(Table::Uploads, ukey);
        stored.discard(&mut extra, upload_id, &used);
        Ok(PlannedCompletion { record, extra })
    }

    /// Commits a planned completion; [`OssError::Raced`] when a part changed since it was
    /// planned.
    pub(crate) async fn commit_completion(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        planned: PlannedCompletion,
    ) -> Result<PutOutcome, OssError> {
        let change = Change::Put {
            record: Box::new(planned.record),
            pending: Vec::new(),
        };
        let applied = self
            .apply_change(
                bucket,
                key,
                change,
                crate::events::EventCause::CompleteMultipartUpload,
                planned.extra,
            )
            .await?;
        // A replica delivered twice: the version is already here and nothing was committed;
        // the upload's parts go.
        if applied.duplicate {
            match self.abort_multipart_upload(bucket, key, upload_id).await {
                Ok(()) | Err(OssError::NoSuchUpload) => {}
                Err(e) => return Err(e),
            }
        }
        self.janitor.notify_one();
        PutOutcome::of(applied)
    }

    /// Aborts every unfinished upload of the bucket, a page at a time (DeleteBucket).
    pub(crate) async fn abort_all_uploads(&self, bucket: &str) -> Result<usize, OssError> {
        let mut aborted = 0;
        loop {
            let page = self
                .list_multipart_uploads(
                    bucket,
                    UploadParams {
                        max_uploads: MAX_LIST,
                        ..Default::default()
                    },
                )
                .await?;
            for u in &page.uploads {
                match self
                    .abort_multipart_upload(bucket, &u.key, &u.upload_id)
                    .await
                {
                    Ok(()) => aborted += 1,
                    // Completed or aborted by someone else meanwhile.
                    Err(OssError::NoSuchUpload) => {}
                    Err(e) => return Err(e),
                }
            }
            if page.uploads.is_empty() || !page.is_truncated {
                return Ok(aborted);
            }
        }
    }

    pub async fn list_multipart_uploads(
        &self,
        bucket: &str,
        params: UploadParams,
    ) -> Result<UploadPage, OssError> {
        self.require_bucket(bucket).await?;
        let base = keys::bucket_objects(bucket);
        let mut start = keys::object(bucket, &params.prefix);
        if let Some(km) = &params.key_marker {
            let marker_start = match &params.upload_id_marker {
                // Uploads of the marker key after the given id.
                Some(id) => {
                    let mut k = keys::upload(bucket, km, id);
                    k.push(0);
                    k
                }
                // Everything after all uploads of the marker key.
                None => {
                    let mut k = keys::object(bucket, km);
                    k.push(1);
                    k
                }
            };
            start = start.max(marker_start);
        }
        let end = prefix_end(&keys::object(bucket, &params.prefix));
        let limit = params.max_uploads.min(MAX_LIST);
        let rows = self
            .blocking(move |m, _| Ok(m.scan(Table::Uploads, &start, end.as_deref(), limit + 1)?))
            .await?;
        let is_truncated = rows.len() > limit;
        let mut uploads = Vec::new();
        for (k, v) in rows.into_iter().take(limit) {
            let rest = &k[base.len()..];
            let sep = rest
                .iter()
                .rposition(|b| *b == 0)
                .ok_or_else(|| OssError::Corrupt("upload key".into()))?;
            let key = String::from_utf8(rest[..sep].to_vec())
                .map_err(|_| OssError::Corrupt("upload key".into()))?;
            let upload_id = String::from_utf8(rest[sep + 1..].to_vec())
                .map_err(|_| OssError::Corrupt("upload id".into()))?;
            let r: UploadRecord = records::decode(&v)?;
            uploads.push(UploadInfo {
                key,
                upload_id,
                initiated_ms: r.initiated_ms,
                checksum_algorithm: r.checksum_algorithm,
                checksum_kind: r.checksum_kind,
                storage_class: r.headers.storage_class.clone(),
            });
        }
        Ok(UploadPage {
            uploads,
            is_truncated,
        })
    }
}
