//! One bucket of the region as an `object_store::ObjectStore`, the interface DataFusion's
//! file formats read and write through, bound to one statement's [`Scope`]: listings need
//! `s3:ListBucket`, every object read `s3:GetObject` (and `kms:Decrypt` for SSE-KMS), every
//! write `s3:PutObject`, all decided as the caller. Reads of an object all read the version
//! the statement first saw. Writes are staged as uploads and published by the engine when
//! the statement succeeds.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    Attributes, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, UploadPart,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::region::{ObjectInfo, RegionError, WriteAs};
use crate::scope::{Scope, Staged, lock};

/// Objects per listing page read from the metadata store.
const LIST_PAGE: usize = 1000;

#[derive(Debug)]
pub struct BucketStore {
    pub(crate) scope: Arc<Scope>,
    pub(crate) bucket: String,
}

impl std::fmt::Display for BucketStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}", self.bucket)
    }
}

fn generic(e: impl Into<String>) -> datafusion::object_store::Error {
    datafusion::object_store::Error::Generic {
        store: "region",
        source: e.into().into(),
    }
}

fn denied(path: &str, e: String) -> datafusion::object_store::Error {
    datafusion::object_store::Error::PermissionDenied {
        path: path.to_owned(),
        source: e.into(),
    }
}

fn region_error(bucket: &str, key: &str, e: RegionError) -> datafusion::object_store::Error {
    match e {
        RegionError::NotFound(m) => datafusion::object_store::Error::NotFound {
            path: format!("s3://{bucket}/{key}"),
            source: m.into(),
        },
        RegionError::NoSuchBucket(b) => generic(format!("the bucket {b} does not exist")),
        RegionError::Failed(m) => generic(m),
    }
}

/// A key as DataFusion's paths carry it, when it can be one: keys with empty segments
/// (`a//b`, a trailing `/` of a folder marker) or characters a path encodes cannot be
/// named by a path and are left out of listings.
fn path_of(key: &str) -> Option<Path> {
    let p = Path::parse(key).ok()?;
    (p.as_ref() == key).then_some(p)
}

fn meta_of(o: &ObjectInfo, location: Path) -> ObjectMeta {
    let modified = chrono::DateTime::from_timestamp_micros(o.modified_us).unwrap_or_default();
    ObjectMeta {
        location,
        last_modified: modified,
        size: o.size,
        e_tag: Some(format!("\"{}\"", o.etag)),
        version: Some(o.version.clone()),
    }
}

impl BucketStore {
    /// The version of `key` the statement reads: the one it saw first, else the current.
    async fn version_of(&self, key: &str) -> datafusion::object_store::Result<ObjectInfo> {
        if let Some(o) = self.scope.pinned(&self.bucket, key) {
            return Ok(o);
        }
        self.scope
            .may_get(&self.bucket, key)
            .await
            .map_err(|e| denied(&format!("s3://{}/{key}", self.bucket), e))?;
        let o = self
            .scope
            .region
            .head(&self.bucket, key)
            .await
            .map_err(|e| region_error(&self.bucket, key, e))?;
        self.pin(o)
    }

    fn pin(&self, o: ObjectInfo) -> datafusion::object_store::Result<ObjectInfo> {
        self.scope
            .pin(&self.bucket, o, self.scope.max_objects())
            .map_err(generic)
    }

    async fn list_page(
        &self,
        prefix: &str,
        after: Option<String>,
        delimiter: bool,
    ) -> datafusion::object_store::Result<crate::region::ObjectPage> {
        self.scope
            .may_list(&self.bucket, prefix)
            .await
            .map_err(|e| denied(&format!("s3://{}/{prefix}", self.bucket), e))?;
        self.scope
            .region
            .list(&self.bucket, prefix, after, LIST_PAGE, delimiter)
            .await
            .map_err(|e| region_error(&self.bucket, prefix, e))
    }

    async fn stage(&self, key: &str) -> datafusion::object_store::Result<(String, WriteAs)> {
        let who = WriteAs {
            account: self.scope.account().to_owned(),
            keys: self
                .scope
                .may_write(&self.bucket, key)
                .await
                .map_err(|e| denied(&format!("s3://{}/{key}", self.bucket), e))?,
        };
        let upload = self
            .scope
            .region
            .stage(&self.bucket, key, content_type(key), &who)
            .await
            .map_err(|e| region_error(&self.bucket, key, e))?;
        lock(&self.scope.staged).push(Staged {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload: upload.clone(),
            parts: None,
        });
        Ok((upload, who))
    }
}

/// The Content-Type of an object a statement writes, from its extension.
fn content_type(key: &str) -> &'static str {
    let k = key.to_ascii_lowercase();
    let k = k
        .trim_end_matches(".gz")
        .trim_end_matches(".zst")
        .trim_end_matches(".bz2");
    if k.ends_with(".parquet") {
        "application/vnd.apache.parquet"
    } else if k.ends_with(".csv") {
        "text/csv"
    } else if k.ends_with(".json") || k.ends_with(".ndjson") {
        "application/x-ndjson"
    } else {
        "application/octet-stream"
    }
}

fn finish_staged(scope: &Scope, upload: &str, parts: Vec<(u32, String)>) {
    if let Some(s) = lock(&scope.staged).iter_mut().find(|s| s.upload == upload) {
        s.parts = Some(parts);
    }
}

fn payload_bytes(p: PutPayload) -> Bytes {
    let mut out = BytesMut::with_capacity(p.content_length());
    for chunk in p.iter() {
        out.extend_from_slice(chunk);
    }
    out.freeze()
}

#[async_trait]
impl ObjectStore for BucketStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        _opts: PutOptions,
    ) -> datafusion::object_store::Result<PutResult> {
        let key = location.as_ref();
        let (upload, who) = self.stage(key).await?;
        let etag = self
            .scope
            .region
            .stage_part(&self.bucket, key, &upload, 1, payload_bytes(payload), &who)
            .await
            .map_err(|e| region_error(&self.bucket, key, e))?;
        finish_staged(&self.scope, &upload, vec![(1, etag)]);
        Ok(PutResult {
            e_tag: None,
            version: None,
        })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> datafusion::object_store::Result<Box<dyn MultipartUpload>> {
        let key = location.as_ref().to_owned();
        let (upload, who) = self.stage(&key).await?;
        Ok(Box::new(StagedUpload {
            scope: self.scope.clone(),
            bucket: self.bucket.clone(),
            key,
            upload,
            who,
            next: 1,
            parts: Arc::default(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> datafusion::object_store::Result<GetResult> {
        let key = location.as_ref();
        let o = self.version_of(key).await?;
        let check = self
            .scope
            .may_read(&self.bucket, &o)
            .await
            .map_err(|e| denied(&format!("s3://{}/{key}", self.bucket), e))?;
        let meta = meta_of(&o, location.clone());
        self.scope.reading(&self.bucket, key);
        if options.head {
            return Ok(GetResult {
                payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                meta,
                range: 0..o.size,
                attributes: Attributes::default(),
            });
        }
        let range = match &options.range {
            Some(r) => r
                .as_range(o.size)
                .map_err(|e| generic(format!("s3://{}/{key}: {e}", self.bucket)))?,
            None => 0..o.size,
        };
        let tail = matches!(options.range, Some(GetRange::Suffix(_))) || range.end == o.size;
        if tail && let Some(b) = self.scope.footers.get(&self.bucket, &o, &range) {
            self.scope.count_read(&self.bucket, key, b.len() as u64);
            return Ok(GetResult {
                payload: GetResultPayload::Stream(futures::stream::once(async { Ok(b) }).boxed()),
                meta,
                range,
                attributes: Attributes::default(),
            });
        }
        let span = (range != (0..o.size)).then_some((range.start, range.end));
        let (_, body) = if range.is_empty() {
            // An empty object: nothing to read.
            return Ok(GetResult {
                payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                meta,
                range,
                attributes: Attributes::default(),
            });
        } else {
            let (got, body) = self
                .scope
                .region
                .read(&self.bucket, key, &o.version, span, check)
                .await
                .map_err(|e| region_error(&self.bucket, key, e))?;
            // A null version is selected by its label: an overwrite since the listing is
            // another write, and its bytes must not mix with what the statement read before.
            if got.id != o.id {
                return Err(generic(format!(
                    "s3://{}/{key} was overwritten while the statement read it; run it again",
                    self.bucket
                )));
            }
            (got, body)
        };
        let scope = self.scope.clone();
        let (bucket, k) = (self.bucket.clone(), key.to_owned());
        let cacheable = tail && self.scope.footers.wants(&range);
        let payload = if cacheable {
            // A footer-sized tail: read it whole, keep it for later statements.
            let mut buf = BytesMut::with_capacity((range.end - range.start) as usize);
            let mut body = body;
            while let Some(c) = body.next().await {
                let c = c.map_err(|e| generic(format!("s3://{bucket}/{k}: {e}")))?;
                buf.extend_from_slice(&c);
            }
            let b = buf.freeze();
            scope.count_read(&bucket, &k, b.len() as u64);
            scope.footers.put(&bucket, &o, &range, b.clone());
            futures::stream::once(async { Ok(b) }).boxed()
        } else {
            body.map(move |c| match c {
                Ok(b) => {
                    scope.count_read(&bucket, &k, b.len() as u64);
                    Ok(b)
                }
                Err(e) => Err(generic(format!("s3://{bucket}/{k}: {e}"))),
            })
            .boxed()
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta,
            range,
            attributes: Attributes::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, datafusion::object_store::Result<Path>>,
    ) -> BoxStream<'static, datafusion::object_store::Result<Path>> {
        locations
            .map(|_| {
                Err(datafusion::object_store::Error::NotSupported {
                    source: "a statement does not delete objects".into(),
                })
            })
            .boxed()
    }

    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> BoxStream<'static, datafusion::object_store::Result<ObjectMeta>> {
        let prefix = prefix
            .map(|p| format!("{}/", p.as_ref()))
            .unwrap_or_default();
        let prefix = if prefix == "/" { String::new() } else { prefix };
        let me = BucketStore {
            scope: self.scope.clone(),
            bucket: self.bucket.clone(),
        };
        futures::stream::try_unfold((me, Some(None::<String>)), move |(me, after)| {
            let prefix = prefix.clone();
            async move {
                let Some(after) = after else {
                    return Ok::<_, datafusion::object_store::Error>(None);
                };
                let page = me.list_page(&prefix, after, false).await?;
                let metas: Vec<datafusion::object_store::Result<ObjectMeta>> = page
                    .objects
                    .into_iter()
                    .filter_map(|o| {
                        let p = path_of(&o.key)?;
                        Some(me.pin(o).map(|o| meta_of(&o, p)))
                    })
                    .collect();
                let next = page.next.map(Some);
                Ok(Some((futures::stream::iter(metas), (me, next))))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> datafusion::object_store::Result<ListResult> {
        let base = prefix
            .map(|p| format!("{}/", p.as_ref()))
            .unwrap_or_default();
        let base = if base == "/" { String::new() } else { base };
        let mut objects = Vec::new();
        let mut prefixes: Vec<Path> = Vec::new();
        let mut after = None;
        loop {
            // The object service rolls keys below the next `/` up into one prefix, so a
            // partition level costs one entry per partition, not a walk of its subtree.
            let page = self.list_page(&base, after, true).await?;
            for dir in page.prefixes {
                if let Some(p) = path_of(dir.trim_end_matches('/')) {
                    prefixes.push(p);
                }
            }
            for o in page.objects {
                if let Some(p) = path_of(&o.key) {
                    let o = self.pin(o)?;
                    objects.push(meta_of(&o, p));
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        Ok(ListResult {
            common_prefixes: prefixes,
            objects,
        })
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> datafusion::object_store::Result<()> {
        Err(datafusion::object_store::Error::NotSupported {
            source: "a statement does not copy objects".into(),
        })
    }
}

/// A multipart write staged as an upload; `complete` marks it ready to publish.
#[derive(Debug)]
struct StagedUpload {
    scope: Arc<Scope>,
    bucket: String,
    key: String,
    upload: String,
    who: WriteAs,
    next: u32,
    parts: Arc<std::sync::Mutex<Vec<(u32, String)>>>,
}

#[async_trait]
impl MultipartUpload for StagedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let number = self.next;
        self.next += 1;
        let scope = self.scope.clone();
        let (bucket, key, upload) = (self.bucket.clone(), self.key.clone(), self.upload.clone());
        let who = self.who.clone();
        let parts = self.parts.clone();
        Box::pin(async move {
            let etag = scope
                .region
                .stage_part(&bucket, &key, &upload, number, payload_bytes(data), &who)
                .await
                .map_err(|e| region_error(&bucket, &key, e))?;
            lock(&parts).push((number, etag));
            Ok(())
        })
    }

    async fn complete(&mut self) -> datafusion::object_store::Result<PutResult> {
        let mut parts = lock(&self.parts).clone();
        parts.sort_by_key(|(n, _)| *n);
        if parts.len() as u32 != self.next - 1 {
            return Err(generic(format!(
                "s3://{}/{}: a part was not written",
                self.bucket, self.key
            )));
        }
        finish_staged(&self.scope, &self.upload, parts);
        Ok(PutResult {
            e_tag: None,
            version: None,
        })
    }

    async fn abort(&mut self) -> datafusion::object_store::Result<()> {
        lock(&self.scope.staged).retain(|s| s.upload != self.upload);
        self.scope
            .region
            .discard(&self.bucket, &self.key, &self.upload)
            .await
            .map_err(|e| region_error(&self.bucket, &self.key, e))
    }
}
