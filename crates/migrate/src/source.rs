//! Where objects come from: a directory tree (an NFS mount is one) or a prefix of an S3
//! bucket. Both list in S3's key order (bytewise), so a listing can be merged with the
//! destination's in one pass with bounded memory, and both read an object as one stream.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::client::{ClientError, S3Client, Streaming, header, retry};
use crate::limit::Limits;
use crate::{Error, xml};

/// The longest key S3 accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// One object at the source, `key` relative to the source prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    /// The S3 ETag (quotes removed), for S3 sources.
    pub etag: Option<String>,
    /// Nanoseconds since the epoch: a file's mtime, an object's Last-Modified.
    pub mtime_ns: i128,
    /// One version of a versioned S3 source (`--all-versions`); `None` is the current one.
    pub version_id: Option<String>,
}

impl Entry {
    /// What says the source object has not changed since it was copied.
    pub fn fingerprint(&self) -> String {
        match &self.etag {
            Some(e) => format!("s3:{}:{e}", self.size),
            None => format!("fs:{}:{}", self.size, self.mtime_ns),
        }
    }

    /// The ETag is the content's MD5 (a single-part, unencrypted-by-customer upload).
    pub fn md5_etag(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

/// What a listing yields: objects in key order, and what could not become an object.
#[derive(Debug)]
pub enum Listed {
    Object(Entry),
    /// A name that cannot be copied (not UTF-8, too long, a device), reported as a failure.
    Problem {
        name: String,
        reason: String,
    },
    /// A name left out on purpose (a symbolic link not followed, a loop), counted.
    Ignored {
        name: String,
        reason: String,
    },
}

#[derive(Clone)]
pub enum Source {
    Dir {
        root: PathBuf,
        follow_symlinks: bool,
    },
    S3 {
        client: S3Client,
        bucket: String,
        /// Empty, or ending in `/`.
        prefix: String,
    },
}

/// System headers and metadata read with an object, to be written with its copy.
#[derive(Debug, Default, Clone)]
pub struct ObjectMeta {
    /// `content-type`, `cache-control`, …, `x-amz-meta-*` (lowercase names).
    pub headers: Vec<(String, String)>,
    pub tag_count: u32,
    /// A full-object checksum the source stored: (header name, base64 value).
    pub checksum: Option<(String, String)>,
    /// The object's ETag is its MD5: not under SSE-KMS or SSE-C, whose ETags are not.
    pub etag_is_md5: bool,
    /// Its retention and legal hold, as the `x-amz-object-lock-*` headers a PUT takes
    /// (written only with `--bucket-config`).
    pub lock: Vec<(String, String)>,
}

/// An object being read, start to end.
pub struct Reader {
    kind: ReaderKind,
    pub meta: ObjectMeta,
    pending: Bytes,
    limits: Limits,
    /// A file's bytes still expected (its listed size less what was read): reads are sized
    /// by it, so a 4 KiB file does not cost a zeroed 1 MiB buffer (a fifth of a small-file
    /// migration's CPU when it did).
    expect: u64,
}

enum ReaderKind {
    File(tokio::fs::File),
    Http(hyper::body::Incoming),
}

const SYSTEM_HEADERS: [&str; 7] = [
    "content-type",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
    "x-amz-website-redirect-location",
];

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Dir { root, .. } => root.display().to_string(),
            Source::S3 {
                client,
                bucket,
                prefix,
            } => format!("s3://{bucket}/{prefix} at {}", client.url()),
        }
    }

    /// Whether the source can be read at all (the directory exists; the bucket lets these
    /// credentials list it — a GET, whose error document names the reason, where a HEAD
    /// would answer a bare status): checked before anything is created at the destination.
    pub async fn probe(&self, limits: &Limits, versions: bool) -> Result<(), Error> {
        match self {
            Source::Dir { root, .. } => match tokio::fs::metadata(root).await {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(Error::Source(format!(
                    "{} is not a directory",
                    root.display()
                ))),
                Err(e) => Err(Error::Source(format!("{}: {e}", root.display()))),
            },
            Source::S3 { client, bucket, .. } => {
                limits.request().await;
                // With `--all-versions` the versions listing, a permission of its own.
                let q: &[(&str, &str)] = match versions {
                    true => &[("versions", ""), ("max-keys", "1")],
                    false => &[("list-type", "2"), ("max-keys", "1")],
                };
                retry(|| client.call(Method::GET, Some(bucket), None, q, Vec::new(), Bytes::new()))
                    .await
                    .map(|_| ())
                    .map_err(|e| match e.code() {
                        Some("NoSuchBucket") => Error::NoSuchBucket(bucket.clone()),
                        _ => Error::Source(format!("s3://{bucket} at {}: {e}", client.url())),
                    })
            }
        }
    }

    /// Lists every object in key order into `tx`; ends early if the receiver goes.
    pub async fn list(&self, tx: mpsc::Sender<Listed>, limits: Limits) -> Result<(), Error> {
        match self {
            Source::Dir {
                root,
                follow_symlinks,
            } => {
                let root = root.clone();
                let follow = *follow_symlinks;
                tokio::task::spawn_blocking(move || walk(&root, follow, &tx))
                    .await
                    .map_err(|e| Error::Source(format!("the directory walk failed: {e}")))?
            }
            Source::S3 {
                client,
                bucket,
                prefix,
            } => {
                list_bucket(client, bucket, prefix, &limits, |e| {
                    let tx = tx.clone();
                    async move { tx.send(Listed::Object(e)).await.is_ok() }
                })
                .await
            }
        }
    }

    /// Opens `entry` for reading. An S3 object that changed since it was listed answers
    /// [`Error::Changed`].
    pub async fn open(&self, entry: &Entry, limits: &Limits) -> Result<Reader, Error> {
        match self {
            Source::Dir {
                root,
                follow_symlinks,
            } => {
                let path = root.join(&entry.key);
                let (p, follow) = (path.clone(), *follow_symlinks);
                let file = tokio::task::spawn_blocking(move || open_listed(&p, follow))
                    .await
                    .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?
                    .map(tokio::fs::File::from_std)
                    .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
                let mut headers = vec![("content-type".to_owned(), guess_type(&entry.key).into())];
                headers.push(("x-amz-meta-mtime".into(), mtime_text(entry.mtime_ns)));
                Ok(Reader {
                    kind: ReaderKind::File(file),
                    meta: ObjectMeta {
                        headers,
                        ..Default::default()
                    },
                    pending: Bytes::new(),
                    limits: limits.clone(),
                    expect: entry.size,
                })
            }
            Source::S3 {
                client,
                bucket,
                prefix,
            } => {
                let key = format!("{prefix}{}", entry.key);
                let mut hdrs = vec![("x-amz-checksum-mode".to_owned(), "ENABLED".to_owned())];
                if let Some(e) = &entry.etag {
                    hdrs.push(("if-match".into(), format!("\"{e}\"")));
                }
                limits.request().await;
                let q = version_query(entry);
                let resp: Streaming =
                    retry(|| client.stream(Method::GET, bucket, &key, &q, hdrs.clone()))
                        .await
                        .map_err(|e| get_error(&key, "", e))?;
                let meta = object_meta(&resp.headers, entry.mtime_ns);
                Ok(Reader {
                    kind: ReaderKind::Http(resp.body),
                    meta,
                    pending: Bytes::new(),
                    limits: limits.clone(),
                    expect: entry.size,
                })
            }
        }
    }

    /// Bytes `start..start + len` of an S3 `entry`, pinned to the listed version (its ETag
    /// with `If-Match`, or its version id). `None` for a directory source, or an S3 entry
    /// without an ETag or version to pin: those are read as one stream.
    pub async fn open_range(
        &self,
        entry: &Entry,
        start: u64,
        len: u64,
        limits: &Limits,
    ) -> Result<Option<Reader>, Error> {
        let Source::S3 {
            client,
            bucket,
            prefix,
        } = self
        else {
            return Ok(None);
        };
        if len == 0 || (entry.etag.is_none() && entry.version_id.is_none()) {
            return Ok(None);
        }
        let key = format!("{prefix}{}", entry.key);
        let end = start + len - 1;
        let mut hdrs = vec![("range".to_owned(), format!("bytes={start}-{end}"))];
        if let Some(e) = &entry.etag {
            hdrs.push(("if-match".into(), format!("\"{e}\"")));
        }
        limits.request().await;
        let q = version_query(entry);
        let resp: Streaming = retry(|| client.stream(Method::GET, bucket, &key, &q, hdrs.clone()))
            .await
            .map_err(|e| get_error(&key, &format!(" bytes {start}-{end}"), e))?;
        // A source that ignored the range would send the whole object as this part.
        let want = format!("bytes {start}-{end}/{}", entry.size);
        if header(&resp.headers, "content-range") != Some(want.as_str()) {
            return Err(Error::Source(format!(
                "GET {key} bytes {start}-{end}: the source answered Content-Range {:?}",
                header(&resp.headers, "content-range")
            )));
        }
        Ok(Some(Reader {
            kind: ReaderKind::Http(resp.body),
            meta: ObjectMeta::default(),
            pending: Bytes::new(),
            limits: limits.clone(),
            expect: len,
        }))
    }

    /// A directory file read whole in one blocking task — open, read, and the size and
    /// mtime of what was read — where [`Source::open`] hands each of those calls to the
    /// blocking pool in turn: a small-file migration spent its time switching threads.
    /// `None` for an S3 source. A file whose size or mtime moved answers
    /// [`Error::Changed`].
    pub async fn read_file(
        &self,
        entry: &Entry,
        limits: &Limits,
    ) -> Result<Option<(Bytes, ObjectMeta)>, Error> {
        let Source::Dir {
            root,
            follow_symlinks,
        } = self
        else {
            return Ok(None);
        };
        let path = root.join(&entry.key);
        let size = entry.size;
        let follow = *follow_symlinks;
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            use std::io::Read as _;
            let mut f = open_listed(&path, follow)?;
            let mut buf = Vec::with_capacity(size as usize);
            // One byte past the listed size, so a file that grew is noticed.
            (&mut f)
                .take(size.saturating_add(1))
                .read_to_end(&mut buf)?;
            let m = f.metadata()?;
            Ok((buf, m.len(), mtime_ns(&m)))
        })
        .await
        .map_err(|e| Error::Source(format!("reading {}: {e}", entry.key)))?
        .map_err(|e| Error::Source(format!("{}: {e}", root.join(&entry.key).display())))?;
        let (buf, len, mtime) = read;
        if buf.len() as u64 != entry.size || len != entry.size || mtime != entry.mtime_ns {
            return Err(Error::Changed(entry.key.clone()));
        }
        limits.bytes(buf.len()).await;
        let headers = vec![
            ("content-type".to_owned(), guess_type(&entry.key).into()),
            ("x-amz-meta-mtime".into(), mtime_text(entry.mtime_ns)),
        ];
        Ok(Some((
            Bytes::from(buf),
            ObjectMeta {
                headers,
                ..Default::default()
            },
        )))
    }

    /// The object's tags as an `x-amz-tagging` value, for S3 sources.
    pub async fn tagging(&self, entry: &Entry, limits: &Limits) -> Result<String, Error> {
        let Source::S3 {
            client,
            bucket,
            prefix,
        } = self
        else {
            return Ok(String::new());
        };
        let key = format!("{prefix}{}", entry.key);
        limits.request().await;
        let mut q = version_query(entry);
        q.push(("tagging", ""));
        let (_, body) = retry(|| {
            client.call(
                Method::GET,
                Some(bucket),
                Some(&key),
                &q,
                Vec::new(),
                Bytes::new(),
            )
        })
        .await
        .map_err(|e| Error::Source(format!("GET {key}?tagging: {e}")))?;
        Ok(tags_to_header(&String::from_utf8_lossy(&body)))
    }

    /// What the source says of an object without reading it: its system headers and
    /// metadata, and for S3 its stored checksum.
    pub async fn head(&self, entry: &Entry, limits: &Limits) -> Result<ObjectMeta, Error> {
        match self {
            Source::Dir { .. } => Ok(ObjectMeta {
                headers: vec![
                    ("content-type".into(), guess_type(&entry.key).into()),
                    ("x-amz-meta-mtime".into(), mtime_text(entry.mtime_ns)),
                ],
                ..Default::default()
            }),
            Source::S3 { .. } => Ok(object_meta(&self.head_s3(entry, limits).await?, 0)),
        }
    }

    async fn head_s3(&self, entry: &Entry, limits: &Limits) -> Result<http::HeaderMap, Error> {
        let Source::S3 {
            client,
            bucket,
            prefix,
        } = self
        else {
            return Err(Error::Source("not an S3 source".into()));
        };
        let key = format!("{prefix}{}", entry.key);
        limits.request().await;
        let q = version_query(entry);
        retry(|| {
            client.call(
                Method::HEAD,
                Some(bucket),
                Some(&key),
                &q,
                vec![("x-amz-checksum-mode".into(), "ENABLED".into())],
                Bytes::new(),
            )
        })
        .await
        .map(|(h, _)| h)
        .map_err(|e| match e.status() {
            Some(404) => Error::Vanished(key.clone()),
            _ => Error::Source(format!("HEAD {key}: {e}")),
        })
    }

    /// The object as it is now (after it changed while being read); `None` if it is gone.
    pub async fn restat(&self, entry: &Entry, limits: &Limits) -> Result<Option<Entry>, Error> {
        match self {
            Source::Dir { root, .. } => {
                let path = root.join(&entry.key);
                match tokio::fs::metadata(&path).await {
                    Ok(m) => Ok(Some(Entry {
                        key: entry.key.clone(),
                        size: m.len(),
                        etag: None,
                        mtime_ns: mtime_ns(&m),
                        version_id: None,
                    })),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::Source(format!("{}: {e}", path.display()))),
                }
            }
            Source::S3 { .. } => match self.head_s3(entry, limits).await {
                Ok(h) => Ok(Some(Entry {
                    key: entry.key.clone(),
                    size: header(&h, "content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    etag: header(&h, "etag").map(|e| e.trim_matches('"').to_owned()),
                    mtime_ns: header(&h, "last-modified")
                        .and_then(|t| {
                            time::OffsetDateTime::parse(
                                t,
                                &time::format_description::well_known::Rfc2822,
                            )
                            .ok()
                        })
                        .map(|d| d.unix_timestamp_nanos())
                        .unwrap_or(0),
                    version_id: entry.version_id.clone(),
                })),
                Err(Error::Vanished(_)) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Whether a directory source's file still is what was listed (size and mtime).
    pub async fn unchanged(&self, entry: &Entry) -> Result<bool, Error> {
        match self {
            Source::Dir { root, .. } => {
                let path = root.join(&entry.key);
                let m = tokio::fs::metadata(&path)
                    .await
                    .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
                Ok(m.len() == entry.size && mtime_ns(&m) == entry.mtime_ns)
            }
            // A GET with If-Match streams one version, whatever happens to the key meanwhile.
            Source::S3 { .. } => Ok(true),
        }
    }
}

impl Reader {
    /// Up to `max` more bytes; empty at the end.
    pub async fn read(&mut self, max: usize) -> Result<Bytes, Error> {
        if self.pending.is_empty() {
            self.pending = match &mut self.kind {
                ReaderKind::File(f) => {
                    // One byte past the expected end, so a file that grew is noticed.
                    let want = self.expect.saturating_add(1).min(max.min(1 << 20) as u64);
                    let mut buf = vec![0u8; want.max(1) as usize];
                    let n = f
                        .read(&mut buf)
                        .await
                        .map_err(|e| Error::Source(format!("reading: {e}")))?;
                    buf.truncate(n);
                    self.expect = self.expect.saturating_sub(n as u64);
                    Bytes::from(buf)
                }
                ReaderKind::Http(body) => loop {
                    let frame =
                        tokio::time::timeout(std::time::Duration::from_secs(120), body.frame())
                            .await
                            .map_err(|_| Error::Source("the source stopped sending".into()))?;
                    match frame {
                        None => break Bytes::new(),
                        Some(Err(e)) => return Err(Error::Source(format!("reading: {e}"))),
                        Some(Ok(f)) => {
                            if let Ok(data) = f.into_data()
                                && !data.is_empty()
                            {
                                break data;
                            }
                        }
                    }
                },
            };
            self.limits.bytes(self.pending.len()).await;
        }
        let n = self.pending.len().min(max);
        Ok(self.pending.split_to(n))
    }
}

/// One page of a bucket listing (`q` says which): throttled, retried, and a missing bucket
/// told apart from any other failure (`ListError::Other` is given its context by the caller).
pub(crate) async fn list_page(
    client: &S3Client,
    bucket: &str,
    q: &[(&str, &str)],
    limits: &Limits,
) -> Result<String, ListError> {
    limits.request().await;
    retry(|| client.call(Method::GET, Some(bucket), None, q, Vec::new(), Bytes::new()))
        .await
        .map(|(_, body)| String::from_utf8_lossy(&body).into_owned())
        .map_err(|e| match e.code() {
            Some("NoSuchBucket") => ListError::NoSuchBucket(bucket.to_owned()),
            _ => ListError::Other(e),
        })
}

pub(crate) enum ListError {
    NoSuchBucket(String),
    Other(ClientError),
}

impl ListError {
    pub(crate) fn context(self, what: &str) -> Error {
        match self {
            ListError::NoSuchBucket(b) => Error::NoSuchBucket(b),
            ListError::Other(e) => Error::List(format!("{what}: {e}")),
        }
    }
}

/// Pages through `bucket` under `prefix` (ListObjectsV2, URL-encoded keys), calling `each`
/// with keys relative to the prefix until it answers false.
pub async fn list_bucket<F, Fut>(
    client: &S3Client,
    bucket: &str,
    prefix: &str,
    limits: &Limits,
    mut each: F,
) -> Result<(), Error>
where
    F: FnMut(Entry) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut token: Option<String> = None;
    loop {
        let mut q = vec![
            ("list-type", "2"),
            ("encoding-type", "url"),
            ("prefix", prefix),
        ];
        if let Some(t) = &token {
            q.push(("continuation-token", t));
        }
        let text = list_page(client, bucket, &q, limits)
            .await
            .map_err(|e| e.context(&format!("s3://{bucket}/{prefix}")))?;
        let encoded = xml::field(&text, "EncodingType").as_deref() == Some("url");
        for c in xml::blocks(&text, "Contents") {
            let raw = xml::field(c, "Key").unwrap_or_default();
            let key = if encoded {
                xml::url_decode(&raw).ok_or_else(|| {
                    Error::List(format!(
                        "s3://{bucket}: a listed key does not decode: {raw}"
                    ))
                })?
            } else {
                raw
            };
            let Some(rel) = key.strip_prefix(prefix) else {
                continue;
            };
            let entry = Entry {
                key: rel.to_owned(),
                size: xml::field(c, "Size")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                etag: xml::field(c, "ETag").map(|e| e.trim_matches('"').to_owned()),
                mtime_ns: xml::field(c, "LastModified")
                    .and_then(|t| parse_time(&t))
                    .unwrap_or(0),
                version_id: None,
            };
            if !each(entry).await {
                return Ok(());
            }
        }
        match xml::field(&text, "NextContinuationToken") {
            Some(t) if xml::field(&text, "IsTruncated").as_deref() == Some("true") => {
                token = Some(t)
            }
            _ => return Ok(()),
        }
    }
}

/// The buckets the credentials can list (ListBuckets, every page).
pub async fn list_buckets(client: &S3Client) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut q = vec![("max-buckets", "1000")];
        if let Some(t) = &token {
            q.push(("continuation-token", t));
        }
        let (_, body) =
            retry(|| client.call(Method::GET, None, None, &q, Vec::new(), Bytes::new()))
                .await
                .map_err(|e| Error::List(format!("the buckets at {}: {e}", client.url())))?;
        let text = String::from_utf8_lossy(&body);
        out.extend(
            xml::blocks(&text, "Bucket")
                .iter()
                .filter_map(|b| xml::field(b, "Name")),
        );
        match xml::field(&text, "ContinuationToken") {
            Some(t) if token.as_deref() != Some(t.as_str()) => token = Some(t),
            _ => return Ok(out),
        }
    }
}

pub(crate) fn parse_time(t: &str) -> Option<i128> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|d| d.unix_timestamp_nanos())
}

pub fn object_meta(h: &http::HeaderMap, _mtime_ns: i128) -> ObjectMeta {
    let mut headers = Vec::new();
    for name in SYSTEM_HEADERS {
        if let Some(v) = header(h, name) {
            headers.push((name.to_owned(), v.to_owned()));
        }
    }
    for (name, v) in h {
        if name.as_str().starts_with("x-amz-meta-")
            && let Ok(v) = v.to_str()
        {
            headers.push((name.as_str().to_owned(), v.to_owned()));
        }
    }
    let full = header(h, "x-amz-checksum-type").is_none_or(|t| t == "FULL_OBJECT");
    let checksum = ["crc64nvme", "crc32", "crc32c", "sha256", "sha1"]
        .iter()
        .find_map(|alg| {
            let name = format!("x-amz-checksum-{alg}");
            // A composite checksum (`…-N`) describes parts, not bytes we can recompute.
            header(h, &name)
                .filter(|v| full && !v.contains('-'))
                .map(|v| (name.clone(), v.to_owned()))
        });
    let sse = header(h, "x-amz-server-side-encryption").unwrap_or_default();
    let lock = [
        "x-amz-object-lock-mode",
        "x-amz-object-lock-retain-until-date",
        "x-amz-object-lock-legal-hold",
    ]
    .iter()
    .filter_map(|n| header(h, n).map(|v| ((*n).to_owned(), v.to_owned())))
    .collect();
    ObjectMeta {
        lock,
        etag_is_md5: !sse.starts_with("aws:kms")
            && header(h, "x-amz-server-side-encryption-customer-algorithm").is_none(),
        headers,
        tag_count: header(h, "x-amz-tagging-count")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        checksum,
    }
}

/// A GET of one pinned version that failed: the version moved on (412), the key is gone
/// (404), or the source failed.
fn get_error(key: &str, range: &str, e: ClientError) -> Error {
    match e.status() {
        Some(412) => Error::Changed(key.to_owned()),
        Some(404) => Error::Vanished(key.to_owned()),
        _ => Error::Source(format!("GET {key}{range}: {e}")),
    }
}

/// The query that names the entry's version, if it is one.
fn version_query(entry: &Entry) -> Vec<(&'static str, &str)> {
    entry
        .version_id
        .as_deref()
        .map(|v| ("versionId", v))
        .into_iter()
        .collect()
}

/// `GetObjectTagging`'s document as `k=v&…`, each part URL-encoded.
pub fn tags_to_header(doc: &str) -> String {
    xml::blocks(doc, "Tag")
        .iter()
        .map(|t| {
            format!(
                "{}={}",
                feiyun_iam::sigv4::uri_encode(&xml::field(t, "Key").unwrap_or_default()),
                feiyun_iam::sigv4::uri_encode(&xml::field(t, "Value").unwrap_or_default())
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// rclone's `mtime` metadata: seconds since the epoch with a fraction.
pub fn mtime_text(ns: i128) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    format!("{secs}.{frac:09}")
}

/// Opens a listed file for reading, as it is now: not through a symbolic link unless links
/// are followed (a file swapped for a link to a secret after the listing is not read), never
/// blocking on a FIFO or device swapped in, and only if it is still a regular file.
fn open_listed(path: &Path, follow_symlinks: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut flags = libc::O_NONBLOCK;
    if !follow_symlinks {
        flags |= libc::O_NOFOLLOW;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("no longer a regular file"));
    }
    Ok(f)
}

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

/// A Content-Type from the name's extension, as web servers and rclone guess it.
pub fn guess_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "txt" | "log" | "md" => "text/plain",
        "csv" => "text/csv",
        "xml" => "application/xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp4" => "video/mp4",
        "wasm" => "application/wasm",
        "parquet" => "application/vnd.apache.parquet",
        _ => "application/octet-stream",
    }
}

/// A depth-first walk in S3 key order: a directory's entries sorted by name, a subdirectory
/// as `name/`, so every key of `a/` sorts where `a/` does (before `a0`, after `a-b`).
fn walk(root: &Path, follow: bool, tx: &mpsc::Sender<Listed>) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let top =
        std::fs::metadata(root).map_err(|e| Error::Source(format!("{}: {e}", root.display())))?;
    if !top.is_dir() {
        return Err(Error::Source(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    // (directory, key prefix, the (dev, inode) of every directory above it): a symlink back
    // up the tree is a loop, reported once and not followed.
    let mut stack: Vec<Frame> = vec![Frame {
        items: read_sorted(root, "", follow, tx)?,
        ancestors: vec![(top.dev(), top.ino())],
    }];
    while let Some(frame) = stack.last_mut() {
        let Some(item) = frame.items.pop() else {
            stack.pop();
            continue;
        };
        match item {
            Item::File(entry) => {
                if tx.blocking_send(Listed::Object(entry)).is_err() {
                    return Ok(());
                }
            }
            Item::Dir { path, key, id } => {
                if frame.ancestors.contains(&id) {
                    let _ = tx.blocking_send(Listed::Ignored {
                        name: key,
                        reason: "a symbolic link loops back to a directory above it".into(),
                    });
                    continue;
                }
                let mut ancestors = frame.ancestors.clone();
                ancestors.push(id);
                let items = read_sorted(&path, &key, follow, tx)?;
                stack.push(Frame { items, ancestors });
            }
        }
    }
    Ok(())
}

struct Frame {
    /// Reverse key order, so `pop` yields the next.
    items: Vec<Item>,
    ancestors: Vec<(u64, u64)>,
}

enum Item {
    File(Entry),
    Dir {
        path: PathBuf,
        key: String,
        id: (u64, u64),
    },
}

fn read_sorted(
    dir: &Path,
    prefix: &str,
    follow: bool,
    tx: &mpsc::Sender<Listed>,
) -> Result<Vec<Item>, Error> {
    use std::os::unix::fs::MetadataExt;
    let rd =
        std::fs::read_dir(dir).map_err(|e| Error::Source(format!("{}: {e}", dir.display())))?;
    let mut items: Vec<(String, Item)> = Vec::new();
    let problem = |name: String, reason: &str| {
        let _ = tx.blocking_send(Listed::Problem {
            name,
            reason: reason.to_owned(),
        });
    };
    for de in rd {
        let de = de.map_err(|e| Error::Source(format!("{}: {e}", dir.display())))?;
        let path = de.path();
        let Some(name) = de.file_name().to_str().map(str::to_owned) else {
            problem(
                path.display().to_string(),
                "the name is not UTF-8, so it cannot be an S3 key",
            );
            continue;
        };
        let key = format!("{prefix}{name}");
        let lmeta = de
            .metadata()
            .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
        let meta = if lmeta.file_type().is_symlink() {
            if !follow {
                let _ = tx.blocking_send(Listed::Ignored {
                    name: key,
                    reason: "a symbolic link (--follow-symlinks follows them)".into(),
                });
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    problem(key, &format!("a broken symbolic link: {e}"));
                    continue;
                }
            }
        } else {
            lmeta
        };
        if meta.is_dir() {
            let sort = format!("{key}/");
            items.push((
                sort.clone(),
                Item::Dir {
                    path,
                    key: sort,
                    id: (meta.dev(), meta.ino()),
                },
            ));
        } else if meta.is_file() {
            if key.len() > MAX_KEY_BYTES {
                problem(key, "longer than S3's 1,024-byte key limit");
                continue;
            }
            items.push((
                key.clone(),
                Item::File(Entry {
                    key,
                    size: meta.len(),
                    etag: None,
                    mtime_ns: mtime_ns(&meta),
                    version_id: None,
                }),
            ));
        } else {
            problem(
                key,
                "not a regular file (a device, socket or pipe), skipped",
            );
        }
    }
    items.sort_by(|a, b| b.0.as_bytes().cmp(a.0.as_bytes()));
    Ok(items.into_iter().map(|(_, i)| i).collect())
}

/// Turns a client error into the migration's own, naming what was asked.
pub fn dest_error(what: &str, e: ClientError) -> Error {
    Error::Dest(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_lists_in_key_order_and_reports_what_it_skips() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::create_dir_all(r.join("empty")).unwrap();
        for f in ["a-c", "a/b/x", "a/z", "a0", "sp ace", "ü+%"] {
            std::fs::write(r.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink(r.join("a"), r.join("a/loop")).unwrap();
        std::os::unix::fs::symlink(r.join("a0"), r.join("link")).unwrap();
        let run = |follow: bool| {
            let (tx, mut rx) = mpsc::channel(100);
            walk(r, follow, &tx).unwrap();
            drop(tx);
            let mut keys = Vec::new();
            let mut problems = Vec::new();
            while let Ok(l) = rx.try_recv() {
                match l {
                    Listed::Object(e) => keys.push(e.key),
                    Listed::Problem { name, .. } | Listed::Ignored { name, .. } => {
                        problems.push(name)
                    }
                }
            }
            // Problems are reported as each directory is read, not in key order.
            problems.sort();
            (keys, problems)
        };
        let (keys, problems) = run(false);
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys, ["a-c", "a/b/x", "a/z", "a0", "sp ace", "ü+%"]);
        assert_eq!(problems, ["a/loop", "link"]);
        let (keys, problems) = run(true);
        assert!(keys.contains(&"link".to_owned()));
        assert_eq!(problems, ["a/loop/"]);
    }

    #[test]
    fn fingerprints_and_md5_etags() {
        let mut e = Entry {
            key: "k".into(),
            size: 3,
            etag: Some("0123456789abcdef0123456789abcdef".into()),
            mtime_ns: 5,
            version_id: None,
        };
        assert!(e.md5_etag().is_some());
        assert_eq!(e.fingerprint(), "s3:3:0123456789abcdef0123456789abcdef");
        e.etag = Some("0123456789abcdef0123456789abcdef-2".into());
        assert!(e.md5_etag().is_none());
        e.etag = None;
        assert_eq!(e.fingerprint(), "fs:3:5");
        assert_eq!(mtime_text(1_500_000_000), "1.500000000");
    }

    #[test]
    fn tags_become_a_header() {
        let doc = "<Tagging><TagSet><Tag><Key>a b</Key><Value>1&amp;2</Value></Tag><Tag><Key>c</Key><Value></Value></Tag></TagSet></Tagging>";
        assert_eq!(tags_to_header(doc), "a%20b=1%262&c=");
    }
}
