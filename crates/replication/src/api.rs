//! The `/replication/` JSON edge behind `feiyun region …` and `feiyun replication …`:
//! register, list and remove peer regions, and read the worker's status. Every call is
//! signed and authorized as `replication:ACTION` on `arn:aws:replication:::region/NAME`.

use bytes::Bytes;
use feiyun_oss::{BlobStore, MetaStore};
use serde_json::{Value, json};

use crate::{NewPeer, Replication, ReplicationError};

/// Largest site push accepted (every identity of a region).
pub const MAX_SITE_BODY: usize = 32 * 1024 * 1024;

pub fn is_path(path: &str) -> bool {
    path == "/replication" || path.starts_with("/replication/")
}

#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl From<ReplicationError> for ApiError {
    fn from(e: ReplicationError) -> Self {
        match e {
            ReplicationError::Invalid(m) => ApiError::new(400, "InvalidParameterValue", m),
            ReplicationError::NoSuchRegion(n) => {
                ApiError::new(404, "NoSuchRegion", format!("no region named {n}"))
            }
            ReplicationError::InUse(m) => ApiError::new(409, "RegionInUse", m),
            other => ApiError::new(500, "InternalError", other.to_string()),
        }
    }
}

/// Who is calling, and what they may do.
pub trait Gate: Sync {
    fn authorize(&self, action: &str, resource: &str) -> Result<(), ApiError>;
    /// Whether the caller is its account's root (site membership is root's decision).
    fn is_root(&self) -> bool;
    /// A key only the caller and this region share, derived from the caller's secret for
    /// `purpose` (site pushes are sealed with it).
    fn shared_key(&self, purpose: &str) -> [u8; 32];
}

pub struct ApiResponse {
    pub status: u16,
    pub body: Bytes,
    /// The action the request mapped to (metrics and the audit's operation).
    pub action: &'static str,
}

fn ok(v: Value, action: &'static str) -> ApiResponse {
    ApiResponse {
        status: 200,
        body: Bytes::from(v.to_string()),
        action,
    }
}

pub fn error_response(e: ApiError, action: &'static str) -> ApiResponse {
    ApiResponse {
        status: e.status,
        body: Bytes::from(json!({"__type": e.code, "message": e.message}).to_string()),
        action,
    }
}

/// A request's JSON body, or 400 InvalidRequestContent saying what is wrong with it.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "InvalidRequestContent", format!("body: {e}")))
}

fn arn(name: &str) -> String {
    format!("arn:aws:replication:::region/{name}")
}

pub async fn handle<M: MetaStore, B: BlobStore>(
    r: &std::sync::Arc<Replication<M, B>>,
    gate: &dyn Gate,
    method: &http::Method,
    path: &str,
    headers: &http::HeaderMap,
    body: Bytes,
) -> ApiResponse {
    let generation = headers
        .get(crate::site::GENERATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let segs: Vec<&str> = path
        .trim_start_matches("/replication")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (action, result) = match (method.as_str(), segs.as_slice()) {
        ("GET", ["regions"]) => ("ListRegions", list(r, gate)),
        ("PUT", ["regions", name]) => ("AddRegion", add(r, gate, name, &body).await),
        ("DELETE", ["regions", name]) => ("RemoveRegion", remove(r, gate, name).await),
        ("POST", ["resync"]) => ("StartResync", resync(r, gate, &body).await),
        ("POST", ["restore"]) => ("RestoreBucket", restore(r, gate, &body).await),
        ("POST", ["backup", verb]) => ("Backup", backup(r, gate, verb, &body).await),
        ("PUT", ["home", bucket]) => ("SetHomeRegion", home(r, gate, bucket, Some(&body)).await),
        ("DELETE", ["home", bucket]) => ("ClearHomeRegion", home(r, gate, bucket, None).await),
        ("POST", ["site"]) => (
            "ImportSite",
            match site_import_allowed(r, gate) {
                Ok(()) => r
                    .import_site(
                        &body,
                        generation,
                        &gate.shared_key(crate::site::PUSH_PURPOSE),
                    )
                    .await
                    .map(|n| json!({"changed": n}))
                    .map_err(|e| match e {
                        ReplicationError::InUse(m) => ApiError::new(409, "SiteMismatch", m),
                        ReplicationError::Stale(m) => ApiError::new(409, "StaleSite", m),
                        other => other.into(),
                    }),
                Err(e) => Err(e),
            },
        ),
        ("GET", ["status"]) => (
            "GetReplicationStatus",
            match gate.authorize("replication:GetReplicationStatus", &arn("*")) {
                Ok(()) => Ok(crate::worker::status_json(r).await),
                Err(e) => Err(e),
            },
        ),
        _ => (
            "Unknown",
            Err(ApiError::new(
                404,
                "UnknownOperationException",
                format!("no replication operation {method} {path}"),
            )),
        ),
    };
    match result {
        Ok(v) => ok(v, action),
        Err(e) => error_response(e, action),
    }
}

fn list<M: MetaStore, B: BlobStore>(
    r: &Replication<M, B>,
    gate: &dyn Gate,
) -> Result<Value, ApiError> {
    gate.authorize("replication:ListRegions", &arn("*"))?;
    Ok(json!({
        "regions": r.peers().iter().map(|p| crate::peer_json(p)).collect::<Vec<_>>()
    }))
}

/// A site push is taken only from this account's root (the credentials a site peer was
/// given) and only by a region that has joined a site itself (it names a site peer): both
/// sides' roots agreed.
fn site_import_allowed<M: MetaStore, B: BlobStore>(
    r: &Replication<M, B>,
    gate: &dyn Gate,
) -> Result<(), ApiError> {
    gate.authorize("replication:ImportSite", &arn("*"))?;
    if !gate.is_root() {
        return Err(ApiError::new(
            403,
            "AccessDenied",
            "site pushes are taken from the account's root only",
        ));
    }
    if !r.peers().iter().any(|p| p.record.site) {
        return Err(ApiError::new(
            403,
            "AccessDenied",
            "this region has not joined a site: add the sending region here with --site first",
        ));
    }
    Ok(())
}

async fn add<M: MetaStore, B: BlobStore>(
    r: &Replication<M, B>,
    gate: &dyn Gate,
    name: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    gate.authorize("replication:AddRegion", &arn(name))?;
    let mut v: Value = parse_body(body)?;
    v["name"] = Value::String(name.to_owned());
    let new: NewPeer = serde_json::from_value(v)
        .map_err(|e| ApiError::new(400, "InvalidRequestContent", format!("body: {e}")))?;
    // A site peer receives every identity's secret: only root may name one.
    if new.site && !gate.is_root() {
        return Err(ApiError::new(
            403,
            "AccessDenied",
            "only the account's root may add a site peer (it receives every identity's secret)",
        ));
    }
    let rec = r.add_peer(new).await?;
    let peer = r
        .peer(&rec.name)
        .ok_or_else(|| ApiError::new(500, "InternalError", "the region vanished"))?;
    Ok(crate::peer_json(&peer))
}

/// `{"bucket": B, "region": R, "older_than_secs": N?}`: resync B to every destination in R.
async fn resync<M: MetaStore, B: BlobStore>(
    r: &std::sync::Arc<Replication<M, B>>,
    gate: &dyn Gate,
    body: &[u8],
) -> Result<Value, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        bucket: String,
        region: String,
        #[serde(default)]
        older_than_secs: Option<u64>,
    }
    let req: Req = parse_body(body)?;
    gate.authorize("replication:StartResync", &arn(&req.region))?;
    let jobs = r
        .start_resync(
            &req.bucket,
            &req.region,
            req.older_than_secs.map(std::time::Duration::from_secs),
        )
        .await
        .map_err(|e| match e {
            ReplicationError::Oss(feiyun_oss::OssError::NoSuchBucket) => ApiError::new(
                404,
                "NoSuchBucket",
                format!("no bucket named {}", req.bucket),
            ),
            other => other.into(),
        })?;
    Ok(json!({"resyncs": jobs.iter().map(crate::resync::job_json).collect::<Vec<_>>()}))
}

/// `feiyun backup VERB`: `{"bucket", "location", "snapshot"?, "into"?, "keep_last"?,
/// "keep_within_secs"?}`.
async fn backup<M: MetaStore, B: BlobStore>(
    r: &std::sync::Arc<Replication<M, B>>,
    gate: &dyn Gate,
    verb: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        bucket: String,
        location: String,
        #[serde(default)]
        snapshot: Option<String>,
        #[serde(default)]
        into: Option<String>,
        #[serde(default)]
        keep_last: Option<usize>,
        #[serde(default)]
        keep_within_secs: Option<u64>,
        #[serde(default)]
        chunk_grace_secs: Option<u64>,
    }
    let req: Req = parse_body(body)?;
    let action = match verb {
        "create" => "replication:CreateBackup",
        "list" | "verify" => "replication:ReadBackup",
        "restore" => "replication:RestoreBackup",
        "prune" => "replication:PruneBackup",
        other => {
            return Err(ApiError::new(
                404,
                "UnknownOperationException",
                format!("no backup operation {other}"),
            ));
        }
    };
    gate.authorize(action, &format!("arn:aws:s3:::{}", req.bucket))?;
    let loc = r.location(&req.location)?;
    let oss_err = |e: ReplicationError| match e {
        ReplicationError::Oss(feiyun_oss::OssError::NoSuchBucket) => {
            ApiError::new(404, "NoSuchBucket", "no such bucket in this region")
        }
        other => other.into(),
    };
    fn json<T: serde::Serialize>(v: &T) -> Value {
        serde_json::to_value(v).unwrap_or(Value::Null)
    }
    let out = match verb {
        "create" => json(&r.backup_create(&req.bucket, &loc).await.map_err(oss_err)?),
        "list" => json(&r.snapshots(&loc, &req.bucket).await.map_err(oss_err)?),
        "verify" => json(
            &r.backup_verify(&loc, &req.bucket, req.snapshot.as_deref())
                .await
                .map_err(oss_err)?,
        ),
        "restore" => {
            let into = req.into.clone().unwrap_or_else(|| req.bucket.clone());
            gate.authorize(action, &format!("arn:aws:s3:::{into}"))?;
            json(
                &r.backup_restore(&loc, &req.bucket, req.snapshot.as_deref(), &into)
                    .await
                    .map_err(oss_err)?,
            )
        }
        _ => json(
            &r.backup_prune(
                &loc,
                &req.bucket,
                req.keep_last.unwrap_or(1),
                req.keep_within_secs.map(std::time::Duration::from_secs),
                req.chunk_grace_secs
                    .map_or(crate::backup::CHUNK_GRACE, std::time::Duration::from_secs),
            )
            .await
            .map_err(oss_err)?,
        ),
    };
    Ok(out)
}

/// `{"region": R, "redirect": false}` names the bucket's home region; no body forgets it.
async fn home<M: MetaStore, B: BlobStore>(
    r: &std::sync::Arc<Replication<M, B>>,
    gate: &dyn Gate,
    bucket: &str,
    body: Option<&[u8]>,
) -> Result<Value, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        region: String,
        #[serde(default)]
        redirect: bool,
    }
    gate.authorize(
        "replication:SetHomeRegion",
        &format!("arn:aws:s3:::{bucket}"),
    )?;
    let home = match body {
        Some(b) => {
            let req: Req = parse_body(b)?;
            Some((req.region, req.redirect))
        }
        None => None,
    };
    let rec = r.set_home(bucket, home).await.map_err(|e| match e {
        ReplicationError::Oss(feiyun_oss::OssError::NoSuchBucket) => {
            ApiError::new(404, "NoSuchBucket", format!("no bucket named {bucket}"))
        }
        other => other.into(),
    })?;
    Ok(
        json!({"bucket": bucket, "home": rec.map(|h| json!({"region": h.region, "redirect": h.redirect}))}),
    )
}

/// Point-in-time restore: `{"bucket", "to_time_ms", "prefix"?, "target"?, "dry_run"?}`.
async fn restore<M: MetaStore, B: BlobStore>(
    r: &std::sync::Arc<Replication<M, B>>,
    gate: &dyn Gate,
    body: &[u8],
) -> Result<Value, ApiError> {
    use feiyun_oss::restore::{RestoreChange, RestoreRequest};
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        bucket: String,
        to_time_ms: i64,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        target: Option<String>,
        #[serde(default)]
        dry_run: bool,
    }
    let req: Req = parse_body(body)?;
    gate.authorize(
        "replication:RestoreBucket",
        &format!("arn:aws:s3:::{}", req.bucket),
    )?;
    if let Some(t) = &req.target {
        gate.authorize("replication:RestoreBucket", &format!("arn:aws:s3:::{t}"))?;
    }
    let report = r
        .oss()
        .restore_to_time(&RestoreRequest {
            bucket: req.bucket,
            to_time_ms: req.to_time_ms,
            prefix: req.prefix,
            target: req.target,
            dry_run: req.dry_run,
        })
        .await
        .map_err(|e| match e {
            feiyun_oss::OssError::NoSuchBucket => ApiError::new(
                404,
                "NoSuchBucket",
                "the bucket or the target does not exist",
            ),
            feiyun_oss::OssError::InvalidArgument(m) => {
                ApiError::new(400, "InvalidParameterValue", m)
            }
            other => ApiError::new(500, "InternalError", other.to_string()),
        })?;
    let changes: Vec<Value> = report
        .changes
        .iter()
        .map(|c| match c {
            RestoreChange::Restore { key, version, size } => {
                json!({"action": "restore", "key": key, "version": version.render(), "size": size})
            }
            RestoreChange::Delete { key } => json!({"action": "delete", "key": key}),
            RestoreChange::Skip { key, reason } => {
                json!({"action": "skip", "key": key, "reason": reason})
            }
        })
        .collect();
    Ok(json!({
        "dry_run": req.dry_run,
        "keys": report.keys,
        "restored": report.restored,
        "deleted": report.deleted,
        "unchanged": report.unchanged,
        "skipped": report.skipped,
        "failed": report.failed,
        "bytes": report.bytes,
        "changes": changes,
        "changes_listed": changes.len() as u64,
    }))
}

async fn remove<M: MetaStore, B: BlobStore>(
    r: &Replication<M, B>,
    gate: &dyn Gate,
    name: &str,
) -> Result<Value, ApiError> {
    gate.authorize("replication:RemoveRegion", &arn(name))?;
    r.remove_peer(name).await?;
    Ok(json!({"removed": name}))
}
