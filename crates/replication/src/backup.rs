//! Backups: encrypted, content-addressed, incremental snapshots of a bucket's current objects,
//! stored in a bucket of any peer region (another Feiyun, or any S3 endpoint), and restorable
//! into any region that holds the same backup key.
//!
//! Layout under the backup location `REGION/BUCKET[/PREFIX]`:
//! - `chunks/HH/ID`: one chunk of object data (up to [`CHUNK`] bytes), sealed with
//!   AES-256-GCM. `ID` is HMAC-SHA256 of the plaintext under a key derived from the backup key,
//!   so equal data is stored once (across objects, snapshots and buckets) and the name reveals
//!   nothing; the nonce comes from the id, which makes sealing deterministic (convergent) and
//!   dedup possible; the GCM tag and the id, recomputed on reading, catch any changed byte.
//! - `snapshots/SOURCE/SNAPSHOT/page-NNNNN`: the objects of a snapshot in key order, up to
//!   [`PAGE_ENTRIES`] per page (sealed, random nonce): key, version, ETag, size, time, headers,
//!   metadata, tags, lock settings and chunk ids.
//! - `snapshots/SOURCE/SNAPSHOT/done`: written last (sealed summary); a snapshot without it
//!   never finished and is ignored, then removed by `prune`.
//!
//! A snapshot is incremental: an object whose version and ETag match the previous complete
//! snapshot reuses its chunk list without being read, and a chunk already stored is not sent
//! again (one HEAD). Memory stays bounded: one chunk per object in flight, one page of entries.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use bytes::Bytes;
use feiyun_oss::{BlobStore, GetRequest, MetaStore, ObjectHeaders, OssError, VersionSelector};
use futures::StreamExt;
use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::ClientError;
use crate::{Peer, Replication, ReplicationError};

/// Largest chunk of object data.
pub const CHUNK: usize = 4 * 1024 * 1024;
/// Objects per snapshot page.
const PAGE_ENTRIES: usize = 2000;
const CHUNK_MAGIC: &[u8; 4] = b"FYC1";
const DOC_MAGIC: &[u8; 4] = b"FYD1";
/// Objects backed up or restored at once.
const CONCURRENCY: usize = 8;
const TIMEOUT: Duration = Duration::from_secs(120);
/// Largest sealed document read back (a page of entries).
const MAX_DOC: usize = 256 * 1024 * 1024;
/// Chunks younger than this are not pruned unless asked: a snapshot in progress may be about
/// to name them.
pub const CHUNK_GRACE: Duration = Duration::from_secs(3600);

/// The keys a backup key yields: chunk ids, chunk sealing, document sealing.
pub struct BackupKey {
    ids: hmac::Key,
    chunks: LessSafeKey,
    docs: LessSafeKey,
}

fn derive(raw: &[u8], label: &str) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, raw);
    let tag = hmac::sign(&k, label.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

impl BackupKey {
    /// From the configuration's base64 text.
    pub fn from_base64(text: &str) -> Result<Self, ReplicationError> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| ReplicationError::Invalid(format!("the backup key is not base64: {e}")))?;
        Self::new(&raw)
    }

    /// From the 32 bytes of `backup_key`.
    pub fn new(raw: &[u8]) -> Result<Self, ReplicationError> {
        if raw.len() != 32 {
            return Err(ReplicationError::Invalid(
                "the backup key must be 32 bytes (base64 of `openssl rand 32`)".into(),
            ));
        }
        let aead = |label: &str| {
            UnboundKey::new(&AES_256_GCM, &derive(raw, label))
                .map(LessSafeKey::new)
                .map_err(|_| ReplicationError::Invalid("backup key".into()))
        };
        Ok(Self {
            ids: hmac::Key::new(hmac::HMAC_SHA256, &derive(raw, "feiyun-backup-chunk-id")),
            chunks: aead("feiyun-backup-chunk-seal")?,
            docs: aead("feiyun-backup-document-seal")?,
        })
    }

    fn chunk_id(&self, data: &[u8]) -> String {
        hex::encode(hmac::sign(&self.ids, data).as_ref())
    }

    fn seal_chunk(&self, id: &str, data: &[u8]) -> Result<Vec<u8>, ReplicationError> {
        let raw = hex::decode(id).map_err(|_| ReplicationError::Corrupt("chunk id".into()))?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[..NONCE_LEN]);
        let mut out = Vec::with_capacity(CHUNK_MAGIC.len() + data.len() + 16);
        out.extend_from_slice(CHUNK_MAGIC);
        let mut body = data.to_vec();
        self.chunks
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut body,
            )
            .map_err(|_| ReplicationError::Corrupt("sealing a chunk".into()))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The chunk's data, if `sealed` is exactly what [`BackupKey::seal_chunk`] made for `id`.
    fn open_chunk(&self, id: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let raw = hex::decode(id).map_err(|_| "not a chunk id".to_owned())?;
        if raw.len() != 32 || !sealed.starts_with(CHUNK_MAGIC) {
            return Err("not a backup chunk".into());
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[..NONCE_LEN]);
        let mut body = sealed[CHUNK_MAGIC.len()..].to_vec();
        let plain = self
            .chunks
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut body,
            )
            .map_err(|_| "damaged: its authentication tag does not match".to_owned())?;
        if self.chunk_id(plain) != id {
            return Err("damaged: its content does not match its id".into());
        }
        Ok(plain.to_vec())
    }

    fn seal_doc<T: Serialize>(&self, doc: &T) -> Result<Vec<u8>, ReplicationError> {
        let mut body = Vec::new();
        ciborium::into_writer(doc, &mut body)
            .map_err(|e| ReplicationError::Corrupt(e.to_string()))?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| ReplicationError::Corrupt("no randomness".into()))?;
        self.docs
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(DOC_MAGIC),
                &mut body,
            )
            .map_err(|_| ReplicationError::Corrupt("sealing a document".into()))?;
        let mut out = DOC_MAGIC.to_vec();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn open_doc<T: for<'de> Deserialize<'de>>(&self, sealed: &[u8]) -> Result<T, String> {
        let rest = sealed
            .strip_prefix(DOC_MAGIC.as_slice())
            .filter(|r| r.len() >= NONCE_LEN + 16)
            .ok_or_else(|| "not a backup document".to_owned())?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&rest[..NONCE_LEN]);
        let mut body = rest[NONCE_LEN..].to_vec();
        let plain = self
            .docs
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(DOC_MAGIC),
                &mut body,
            )
            .map_err(|_| {
                "cannot be opened: damaged, or sealed with another backup key".to_owned()
            })?;
        ciborium::from_reader(&plain[..]).map_err(|e| format!("unreadable: {e}"))
    }
}

/// One object of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub version: String,
    pub etag: String,
    pub size: u64,
    pub last_modified_ms: i64,
    /// Content headers, metadata, tags, storage class, retention and legal hold.
    pub headers: ObjectHeaders,
    pub chunks: Vec<String>,
}

/// A finished snapshot's summary (`done`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub id: String,
    pub bucket: String,
    pub created_ms: i64,
    pub objects: u64,
    pub bytes: u64,
    pub pages: u32,
    /// Chunks this snapshot had to send (the rest were already stored).
    pub new_chunks: u64,
    pub new_bytes: u64,
    /// Objects whose data was not read again (same version as in the previous snapshot).
    pub unchanged: u64,
}

/// Where backups go: a peer region's bucket and a prefix in it.
pub struct Location {
    pub peer: Arc<Peer>,
    pub bucket: String,
    pub prefix: String,
}

impl Location {
    fn path(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_owned()
        } else {
            format!("{}/{rest}", self.prefix.trim_end_matches('/'))
        }
    }

    fn chunk_key(&self, id: &str) -> String {
        // Ids are 64 hex digits; the first two fan chunks out over 256 prefixes.
        self.path(&format!("chunks/{}/{id}", id.get(..2).unwrap_or("00")))
    }

    fn snapshot_dir(&self, bucket: &str, id: &str) -> String {
        self.path(&format!("snapshots/{bucket}/{id}"))
    }

    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), ClientError> {
        use http_body_util::BodyExt;
        use md5::Digest;
        let md5 = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            md5::Md5::digest(&data),
        );
        let sha = hex::encode(sha2::Sha256::digest(&data));
        let len = data.len();
        self.peer
            .client
            .send(
                Method::PUT,
                Some(&self.bucket),
                Some(key),
                &[],
                vec![
                    ("content-length".into(), len.to_string()),
                    ("content-md5".into(), md5),
                ],
                http_body_util::Full::new(Bytes::from(data))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
                &sha,
                TIMEOUT,
            )
            .await
            .map(|_| ())
    }

    async fn exists(&self, key: &str) -> Result<bool, ClientError> {
        match self
            .peer
            .client
            .bodiless(
                Method::HEAD,
                Some(&self.bucket),
                Some(key),
                &[],
                Vec::new(),
                TIMEOUT,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(ClientError::Status { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, ClientError> {
        match self
            .peer
            .client
            .get_object(&self.bucket, key, MAX_DOC, TIMEOUT)
            .await
        {
            Ok(b) => Ok(Some(b)),
            Err(ClientError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), ClientError> {
        self.peer
            .client
            .bodiless(
                Method::DELETE,
                Some(&self.bucket),
                Some(key),
                &[],
                Vec::new(),
                TIMEOUT,
            )
            .await
            .map(|_| ())
    }

    /// Every key under `prefix` (ListObjectsV2, page by page).
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ClientError> {
        Ok(self
            .list_dated(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Every key under `prefix` with its LastModified.
    async fn list_dated(&self, prefix: &str) -> Result<Vec<Listed>, ClientError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(t) = &token {
                q.push(("continuation-token", t.as_str()));
            }
            let (_, body) = self
                .peer
                .client
                .send_for_body(Method::GET, &self.bucket, &q, TIMEOUT)
                .await?;
            let (keys, next) = parse_keys(&body).map_err(|m| ClientError::Status {
                status: 200,
                code: "MalformedListing".into(),
                message: m,
            })?;
            out.extend(keys);
            match next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }
}

/// A listed object: key and LastModified (ms).
type Listed = (String, Option<i64>);

/// A ListObjectsV2 page: its objects, and the continuation token when truncated.
fn parse_keys(xml: &[u8]) -> Result<(Vec<Listed>, Option<String>), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut path: Vec<String> = Vec::new();
    let (mut keys, mut key, mut modified) = (Vec::new(), String::new(), String::new());
    let (mut truncated, mut token) = (false, String::new());
    let mut buf = Vec::new();
    loop {
        let text = match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                None
            }
            Ok(Event::End(_)) => {
                if path.pop().as_deref() == Some("Contents") && path.len() == 1 {
                    let at = time::OffsetDateTime::parse(
                        std::mem::take(&mut modified).trim(),
                        &time::format_description::well_known::Rfc3339,
                    )
                    .ok()
                    .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
                    keys.push((std::mem::take(&mut key), at));
                }
                None
            }
            Ok(Event::Text(t)) => Some(t.decode().map_err(|e| e.to_string())?.into_owned()),
            Ok(Event::GeneralRef(r)) => Some(
                match &r[..] {
                    b"amp" => "&",
                    b"lt" => "<",
                    b"gt" => ">",
                    b"quot" => "\"",
                    b"apos" => "'",
                    other => {
                        return Err(format!(
                            "unexpected entity &{};",
                            String::from_utf8_lossy(other)
                        ));
                    }
                }
                .to_owned(),
            ),
            Ok(Event::Eof) => break,
            Ok(_) => None,
            Err(e) => return Err(format!("ListBucketResult: {e}")),
        };
        if let Some(t) = text {
            match path
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                [_, "Contents", "Key"] => key.push_str(&t),
                [_, "Contents", "LastModified"] => modified.push_str(&t),
                [_, "IsTruncated"] => truncated = t.trim() == "true",
                [_, "NextContinuationToken"] => token.push_str(&t),
                _ => {}
            }
        }
        buf.clear();
    }
    Ok((keys, (truncated && !token.is_empty()).then_some(token)))
}

fn io(what: &str) -> impl Fn(ClientError) -> ReplicationError + '_ {
    move |e| ReplicationError::Invalid(format!("{what}: {e}"))
}

fn snapshot_id(now_ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut r = [0u8; 3];
    let _ = aws_lc_rs::rand::fill(&mut r);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z-{}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond(),
        hex::encode(r)
    )
}

/// Chunks one snapshot stored (the rest were there already).
#[derive(Default)]
struct Tally {
    ids: std::sync::Mutex<HashSet<String>>,
    bytes: std::sync::atomic::AtomicU64,
}

/// What `backup verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub snapshots: u64,
    pub objects: u64,
    pub chunks: u64,
    pub bytes: u64,
    /// `(what, why)` for every problem.
    pub problems: Vec<(String, String)>,
}

/// What `backup restore` did.
#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub objects: u64,
    pub bytes: u64,
    pub failed: Vec<(String, String)>,
}

/// What `backup prune` removed.
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub kept: Vec<String>,
    pub removed: Vec<String>,
    pub chunks_removed: u64,
    /// Objects the backup bucket's Object Lock kept.
    pub locked: u64,
}

impl<M: MetaStore, B: BlobStore> Replication<M, B> {
    /// Installs the backup key (from the configuration).
    pub fn set_backup_key(&self, key: BackupKey) {
        let _ = self.backup_key.set(key);
    }

    fn backup_key(&self) -> Result<&BackupKey, ReplicationError> {
        self.backup_key.get().ok_or_else(|| {
            ReplicationError::Invalid(
                "no backup key: set backup_key_file or FEIYUN_BACKUP_KEY (base64 of 32 bytes)"
                    .into(),
            )
        })
    }

    /// `REGION/BUCKET[/PREFIX]`, REGION a registered peer.
    pub fn location(&self, spec: &str) -> Result<Location, ReplicationError> {
        let mut parts = spec.splitn(3, '/');
        let (Some(region), Some(bucket)) = (parts.next(), parts.next()) else {
            return Err(ReplicationError::Invalid(format!(
                "backup location {spec:?}: expected REGION/BUCKET[/PREFIX]"
            )));
        };
        if bucket.is_empty() {
            return Err(ReplicationError::Invalid(format!(
                "backup location {spec:?}: expected REGION/BUCKET[/PREFIX]"
            )));
        }
        let peer = self
            .peer(region)
            .ok_or_else(|| ReplicationError::NoSuchRegion(region.to_owned()))?;
        Ok(Location {
            peer,
            bucket: bucket.to_owned(),
            prefix: parts
                .next()
                .unwrap_or_default()
                .trim_matches('/')
                .to_owned(),
        })
    }

    /// The finished snapshots of `bucket` at `loc`, oldest first.
    pub async fn snapshots(
        &self,
        loc: &Location,
        bucket: &str,
    ) -> Result<Vec<Summary>, ReplicationError> {
        let key = self.backup_key()?;
        let dir = loc.path(&format!("snapshots/{bucket}/"));
        let mut out = Vec::new();
        for k in loc.list(&dir).await.map_err(io("listing snapshots"))? {
            if !k.ends_with("/done") {
                continue;
            }
            let Some(doc) = loc.get(&k).await.map_err(io("reading a snapshot"))? else {
                continue;
            };
            let s: Summary = key
                .open_doc(&doc)
                .map_err(|m| ReplicationError::Invalid(format!("snapshot {k}: {m}")))?;
            out.push(s);
        }
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(out)
    }

    async fn read_page(
        &self,
        loc: &Location,
        bucket: &str,
        id: &str,
        n: u32,
    ) -> Result<Vec<Entry>, ReplicationError> {
        let k = format!("{}/page-{n:05}", loc.snapshot_dir(bucket, id));
        let doc = loc
            .get(&k)
            .await
            .map_err(io("reading a snapshot page"))?
            .ok_or_else(|| ReplicationError::Invalid(format!("{k} is missing")))?;
        self.backup_key()?
            .open_doc(&doc)
            .map_err(|m| ReplicationError::Invalid(format!("{k}: {m}")))
    }

    /// Takes a snapshot of `bucket`'s current objects into `loc`.
    pub async fn backup_create(
        self: &Arc<Self>,
        bucket: &str,
        loc: &Location,
    ) -> Result<Summary, ReplicationError> {
        let key = self.backup_key()?;
        self.oss.bucket(bucket).await?;
        let previous = self.snapshots(loc, bucket).await?.pop();
        let mut prev_pages = previous.as_ref().map(|p| (p.clone(), 0u32));
        let mut prev_buf: std::collections::VecDeque<Entry> = Default::default();
        let now = feiyun_oss::now_millis();
        let mut summary = Summary {
            id: snapshot_id(now),
            bucket: bucket.to_owned(),
            created_ms: now,
            objects: 0,
            bytes: 0,
            pages: 0,
            new_chunks: 0,
            new_bytes: 0,
            unchanged: 0,
        };
        let dir = loc.snapshot_dir(bucket, &summary.id);
        let sent = Tally::default();
        let mut after: Option<String> = None;
        let mut page: Vec<Entry> = Vec::new();
        loop {
            let listed = self
                .oss
                .list_objects(
                    bucket,
                    feiyun_oss::ListParams {
                        prefix: String::new(),
                        delimiter: None,
                        after: after.clone(),
                        max_keys: 1000,
                    },
                )
                .await?;
            let mut todo = Vec::new();
            for e in listed.entries {
                let feiyun_oss::ListEntry::Object(k, rec) = e else {
                    continue;
                };
                after = Some(k.clone());
                // The previous snapshot's entry for this key, if its data is the same.
                let mut reuse = None;
                loop {
                    if prev_buf.is_empty()
                        && let Some((p, n)) = prev_pages.as_mut()
                    {
                        if *n < p.pages {
                            let entries = self.read_page(loc, bucket, &p.id, *n).await?;
                            *n += 1;
                            prev_buf.extend(entries);
                        } else {
                            prev_pages = None;
                        }
                    }
                    match prev_buf.front() {
                        Some(f) if f.key < k => {
                            prev_buf.pop_front();
                        }
                        Some(f) if f.key == k => {
                            if let Some(f) = prev_buf.pop_front()
                                && f.version == rec.version.render()
                                && f.etag == rec.etag
                            {
                                reuse = Some(f.chunks);
                            }
                            break;
                        }
                        _ => break,
                    }
                    if prev_pages.is_none() && prev_buf.is_empty() {
                        break;
                    }
                }
                todo.push((k, rec, reuse));
            }
            let done: Vec<Result<(Entry, bool), ReplicationError>> = futures::stream::iter(todo)
                .map(|(k, rec, reuse)| {
                    let sent = &sent;
                    async move {
                        let mut headers = ObjectHeaders::of(&rec);
                        // A backup keeps the version's lock settings for its restore.
                        headers.retention = rec.retention;
                        headers.legal_hold = rec.legal_hold;
                        let mut entry = Entry {
                            key: k.clone(),
                            version: rec.version.render(),
                            etag: rec.etag.clone(),
                            size: rec.size,
                            last_modified_ms: rec.last_modified_ms,
                            headers,
                            chunks: Vec::new(),
                        };
                        if let Some(chunks) = reuse {
                            entry.chunks = chunks;
                            return Ok((entry, true));
                        }
                        entry.chunks = self
                            .send_object(key, loc, bucket, &k, rec.version, sent)
                            .await?;
                        Ok((entry, false))
                    }
                })
                .buffered(CONCURRENCY)
                .collect()
                .await;
            for d in done {
                let (entry, unchanged) = d?;
                summary.objects += 1;
                summary.bytes += entry.size;
                summary.unchanged += u64::from(unchanged);
                page.push(entry);
                if page.len() >= PAGE_ENTRIES {
                    let doc = key.seal_doc(&page)?;
                    loc.put(&format!("{dir}/page-{:05}", summary.pages), doc)
                        .await
                        .map_err(io("writing a snapshot page"))?;
                    summary.pages += 1;
                    page.clear();
                }
            }
            if !listed.is_truncated {
                break;
            }
        }
        if !page.is_empty() || summary.pages == 0 {
            let doc = key.seal_doc(&page)?;
            loc.put(&format!("{dir}/page-{:05}", summary.pages), doc)
                .await
                .map_err(io("writing a snapshot page"))?;
            summary.pages += 1;
        }
        summary.new_chunks = sent.ids.lock().map(|s| s.len() as u64).unwrap_or(0);
        summary.new_bytes = sent.bytes.load(std::sync::atomic::Ordering::Relaxed);
        loc.put(&format!("{dir}/done"), key.seal_doc(&summary)?)
            .await
            .map_err(io("finishing the snapshot"))?;
        tracing::info!(bucket, snapshot = %summary.id, objects = summary.objects,
            new_chunks = summary.new_chunks, "backup snapshot taken");
        Ok(summary)
    }

    /// Reads one object version in chunks, stores the chunks the location lacks; their ids.
    async fn send_object(
        &self,
        key: &BackupKey,
        loc: &Location,
        bucket: &str,
        object: &str,
        version: feiyun_oss::VersionId,
        sent: &Tally,
    ) -> Result<Vec<String>, ReplicationError> {
        let read = self
            .oss
            .get_object(
                bucket,
                object,
                &GetRequest {
                    version: Some(VersionSelector::Id(version)),
                    ..Default::default()
                },
            )
            .await?;
        let mut ids = Vec::new();
        let Some(mut body) = read.body else {
            return Ok(ids);
        };
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK.min(read.record.size as usize));
        let mut finished = false;
        while !finished {
            match body.next().await {
                Some(piece) => {
                    let piece = piece?;
                    let mut rest = &piece[..];
                    while !rest.is_empty() {
                        let take = (CHUNK - buf.len()).min(rest.len());
                        buf.extend_from_slice(&rest[..take]);
                        rest = &rest[take..];
                        if buf.len() == CHUNK {
                            ids.push(self.store_chunk(key, loc, &buf, sent).await?);
                            buf.clear();
                        }
                    }
                }
                None => finished = true,
            }
        }
        if !buf.is_empty() {
            ids.push(self.store_chunk(key, loc, &buf, sent).await?);
        }
        Ok(ids)
    }

    async fn store_chunk(
        &self,
        key: &BackupKey,
        loc: &Location,
        data: &[u8],
        sent: &Tally,
    ) -> Result<String, ReplicationError> {
        let id = key.chunk_id(data);
        let known = sent.ids.lock().map(|s| s.contains(&id)).unwrap_or(false);
        if known {
            return Ok(id);
        }
        let path = loc.chunk_key(&id);
        if !loc.exists(&path).await.map_err(io("checking a chunk"))? {
            loc.put(&path, key.seal_chunk(&id, data)?)
                .await
                .map_err(io("writing a chunk"))?;
            sent.bytes
                .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if let Ok(mut s) = sent.ids.lock() {
                s.insert(id.clone());
            }
        }
        Ok(id)
    }

    /// Re-reads every chunk of the snapshots of `bucket` (or of `only`) and checks it.
    pub async fn backup_verify(
        &self,
        loc: &Location,
        bucket: &str,
        only: Option<&str>,
    ) -> Result<VerifyReport, ReplicationError> {
        let key = self.backup_key()?;
        let mut report = VerifyReport::default();
        let mut checked: HashSet<String> = HashSet::new();
        for snap in self.snapshots(loc, bucket).await? {
            if only.is_some_and(|o| o != snap.id) {
                continue;
            }
            report.snapshots += 1;
            for n in 0..snap.pages {
                let entries = match self.read_page(loc, bucket, &snap.id, n).await {
                    Ok(e) => e,
                    Err(e) => {
                        report
                            .problems
                            .push((format!("snapshot {} page {n}", snap.id), e.to_string()));
                        continue;
                    }
                };
                for e in entries {
                    report.objects += 1;
                    for id in &e.chunks {
                        if !checked.insert(id.clone()) {
                            continue;
                        }
                        report.chunks += 1;
                        let what = format!("chunk {id} (of {} in snapshot {})", e.key, snap.id);
                        match loc.get(&loc.chunk_key(id)).await {
                            Ok(Some(sealed)) => match key.open_chunk(id, &sealed) {
                                Ok(plain) => report.bytes += plain.len() as u64,
                                Err(why) => report.problems.push((what, why)),
                            },
                            Ok(None) => report.problems.push((what, "missing".into())),
                            Err(e) => report.problems.push((what, e.to_string())),
                        }
                    }
                }
            }
        }
        if let Some(o) = only
            && report.snapshots == 0
        {
            return Err(ReplicationError::Invalid(format!(
                "no finished snapshot {o} of bucket {bucket}"
            )));
        }
        Ok(report)
    }

    /// Restores snapshot `id` (the latest when `None`) of `bucket` into local bucket `into`.
    pub async fn backup_restore(
        self: &Arc<Self>,
        loc: &Location,
        bucket: &str,
        id: Option<&str>,
        into: &str,
    ) -> Result<RestoreReport, ReplicationError> {
        let key = self.backup_key()?;
        let snaps = self.snapshots(loc, bucket).await?;
        let snap = match id {
            Some(id) => snaps.into_iter().find(|s| s.id == id),
            None => snaps.into_iter().last(),
        }
        .ok_or_else(|| {
            ReplicationError::Invalid(format!(
                "no finished snapshot {} of bucket {bucket}",
                id.unwrap_or("at all")
            ))
        })?;
        self.oss.bucket(into).await?;
        let mut report = RestoreReport {
            snapshot: snap.id.clone(),
            ..Default::default()
        };
        for n in 0..snap.pages {
            let entries = self.read_page(loc, bucket, &snap.id, n).await?;
            let results: Vec<(String, u64, Result<(), String>)> = futures::stream::iter(entries)
                .map(|e| async move {
                    let r = self.restore_entry(key, loc, into, &e).await;
                    (e.key, e.size, r)
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for (k, size, r) in results {
                match r {
                    Ok(()) => {
                        report.objects += 1;
                        report.bytes += size;
                    }
                    Err(why) => report.failed.push((k, why)),
                }
            }
        }
        Ok(report)
    }

    async fn restore_entry(
        &self,
        key: &BackupKey,
        loc: &Location,
        into: &str,
        e: &Entry,
    ) -> Result<(), String> {
        let chunks = e.chunks.clone();
        let stream = futures::stream::unfold(0usize, move |i| {
            let id = chunks.get(i).cloned();
            async move {
                let id = id?;
                let got = match loc.get(&loc.chunk_key(&id)).await {
                    Ok(Some(sealed)) => key
                        .open_chunk(&id, &sealed)
                        .map(Bytes::from)
                        .map_err(|why| OssError::Internal(format!("chunk {id}: {why}"))),
                    Ok(None) => Err(OssError::Internal(format!("chunk {id} is missing"))),
                    Err(err) => Err(OssError::Internal(format!("chunk {id}: {err}"))),
                };
                Some((got, i + 1))
            }
        });
        let mut headers = e.headers.clone();
        // Retention that has run out protects nothing and may not be set on a new version.
        if headers
            .retention
            .is_some_and(|r| r.until_ms <= feiyun_oss::now_millis())
        {
            headers.retention = None;
        }
        let size = e.size;
        self.oss
            .put_object(
                into,
                &e.key,
                headers,
                feiyun_oss::WriteSpec {
                    declared_len: Some(size),
                    ..Default::default()
                },
                Box::pin(stream),
                |_| Ok(()),
            )
            .await
            .map(|_| ())
            .map_err(|err| err.to_string())
    }

    /// Keeps the newest `keep_last` snapshots of `bucket` and those younger than `keep_within`,
    /// removes the others, and then every chunk no remaining snapshot of any bucket uses and
    /// older than `grace` (younger ones may belong to a snapshot being taken).
    pub async fn backup_prune(
        &self,
        loc: &Location,
        bucket: &str,
        keep_last: usize,
        keep_within: Option<Duration>,
        grace: Duration,
    ) -> Result<PruneReport, ReplicationError> {
        let snaps = self.snapshots(loc, bucket).await?;
        let now = feiyun_oss::now_millis();
        let mut report = PruneReport::default();
        let n = snaps.len();
        for (i, s) in snaps.into_iter().enumerate() {
            let young = keep_within.is_some_and(|w| now - s.created_ms <= w.as_millis() as i64);
            if i + keep_last >= n || young {
                report.kept.push(s.id);
                continue;
            }
            let dir = loc.snapshot_dir(bucket, &s.id);
            // `done` first: a snapshot half removed is an unfinished one, never a broken one.
            let mut keys = vec![format!("{dir}/done")];
            keys.extend((0..s.pages).map(|p| format!("{dir}/page-{p:05}")));
            let mut locked = false;
            for k in keys {
                match loc.delete(&k).await {
                    Ok(()) => {}
                    Err(ClientError::Status { status: 403, .. }) => {
                        locked = true;
                        report.locked += 1;
                    }
                    Err(e) => return Err(io("removing a snapshot")(e)),
                }
            }
            if locked {
                report.kept.push(s.id);
            } else {
                report.removed.push(s.id);
            }
        }
        // Unfinished snapshots of this bucket (no `done`) are removed with their pages.
        let finished: HashSet<String> = report.kept.iter().cloned().collect();
        let dir = loc.path(&format!("snapshots/{bucket}/"));
        let mut in_use: HashSet<String> = HashSet::new();
        for k in loc.list(&dir).await.map_err(io("listing snapshots"))? {
            // Only what the listing was asked for: a key outside it is never deleted.
            let Some(rest) = k.strip_prefix(dir.as_str()) else {
                continue;
            };
            let id = rest.split('/').next().unwrap_or_default().to_owned();
            if !finished.contains(&id) {
                match loc.delete(&k).await {
                    Ok(()) => {}
                    Err(ClientError::Status { status: 403, .. }) => report.locked += 1,
                    Err(e) => return Err(io("removing a snapshot")(e)),
                }
            }
        }
        // Chunks: whatever no finished snapshot of any bucket here references.
        let all = loc.path("snapshots/");
        for k in loc.list(&all).await.map_err(io("listing snapshots"))? {
            let Some(stem) = k.strip_suffix("/done") else {
                continue;
            };
            // The listing was asked for this prefix; a peer answering otherwise is ignored.
            let Some(rest) = stem.strip_prefix(all.as_str()) else {
                continue;
            };
            let Some((b, id)) = rest.split_once('/') else {
                continue;
            };
            let Some(doc) = loc.get(&k).await.map_err(io("reading a snapshot"))? else {
                continue;
            };
            let s: Summary = self
                .backup_key()?
                .open_doc(&doc)
                .map_err(|m| ReplicationError::Invalid(format!("{k}: {m}")))?;
            for p in 0..s.pages {
                for e in self.read_page(loc, b, id, p).await? {
                    in_use.extend(e.chunks);
                }
            }
        }
        let chunks = loc.path("chunks/");
        for (k, at) in loc
            .list_dated(&chunks)
            .await
            .map_err(io("listing chunks"))?
        {
            if !k.starts_with(chunks.as_str()) {
                continue;
            }
            let id = k.rsplit('/').next().unwrap_or_default();
            // A snapshot being taken right now has stored chunks no finished one names yet.
            let recent = at.is_none_or(|t| now - t < grace.as_millis() as i64);
            if in_use.contains(id) || recent {
                continue;
            }
            match loc.delete(&k).await {
                Ok(()) => report.chunks_removed += 1,
                Err(ClientError::Status { status: 403, .. }) => report.locked += 1,
                Err(e) => return Err(io("removing a chunk")(e)),
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_convergent_and_any_change_is_caught() {
        let k = BackupKey::new(&[7u8; 32]).unwrap();
        let data = b"the same bytes".repeat(100);
        let id = k.chunk_id(&data);
        let sealed = k.seal_chunk(&id, &data).unwrap();
        // Same data, same key: the same stored chunk (what makes dedup work).
        assert_eq!(k.seal_chunk(&id, &data).unwrap(), sealed);
        assert_eq!(k.open_chunk(&id, &sealed).unwrap(), data);
        assert!(!sealed.windows(14).any(|w| w == b"the same bytes"));
        for i in [0, 4, 20, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(k.open_chunk(&id, &bad).is_err(), "flip at {i}");
        }
        // Stored under another chunk's name, it is refused.
        let other = k.chunk_id(b"other");
        assert!(k.open_chunk(&other, &sealed).is_err());
        // Another backup key opens nothing and names chunks differently.
        let k2 = BackupKey::new(&[8u8; 32]).unwrap();
        assert_ne!(k2.chunk_id(&data), id);
        assert!(k2.open_chunk(&id, &sealed).is_err());
        let doc = k.seal_doc(&vec!["a".to_owned()]).unwrap();
        assert_eq!(k.open_doc::<Vec<String>>(&doc).unwrap(), vec!["a"]);
        assert!(k2.open_doc::<Vec<String>>(&doc).is_err());
        assert!(BackupKey::new(&[1u8; 16]).is_err());
    }

    #[test]
    fn object_listings_parse() {
        let (keys, next) = parse_keys(
            br#"<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a&amp;b</Key>
            <LastModified>2026-11-29T10:00:00.000Z</LastModified>
            <Size>1</Size></Contents><Contents><Key>c</Key></Contents>
            <NextContinuationToken>tok</NextContinuationToken></ListBucketResult>"#,
        )
        .unwrap();
        let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, vec!["a&b", "c"]);
        assert_eq!(next.as_deref(), Some("tok"));
        assert_eq!(keys[0].1, Some(1_795_946_400_000));
        assert_eq!(keys[1].1, None);
        let (keys, next) =
            parse_keys(b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>")
                .unwrap();
        assert!(keys.is_empty() && next.is_none());
    }

    #[test]
    fn snapshot_ids_sort_by_time() {
        let a = snapshot_id(1_795_000_000_000);
        let b = snapshot_id(1_795_000_000_001);
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with("2026"), "{a}");
    }
}
