//! The live-migration edge: `/migrate/live/BUCKET` behind `feiyun migrate live
//! start|status|finish`. Signed requests only; the caller must be of the bucket's account
//! and allowed `migrate:StartLive`, `migrate:GetLiveStatus` or `migrate:FinishLive` on the
//! bucket's ARN (its account root always is).

use std::net::SocketAddr;

use feiyun_oss::OssError;
use feiyun_oss::live::{LiveSetting, LiveStart, LiveStatus};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::App;

/// A start request carries a small JSON document.
const MAX_BODY: usize = 16 * 1024;

pub(crate) fn is_path(path: &str) -> bool {
    path.starts_with("/migrate/live/") || path.starts_with(JOURNAL)
}

/// `/migrate/journal/ID`: a migration's journal kept in the region.
const JOURNAL: &str = "/migrate/journal/";
/// A journal write carries up to `JOURNAL_BATCH` records.
const MAX_JOURNAL_BODY: usize = 8 * 1024 * 1024;

struct Answer {
    status: u16,
    body: Value,
    op: &'static str,
}

fn refuse(status: u16, code: &str, message: impl Into<String>, op: &'static str) -> Answer {
    Answer {
        status,
        body: json!({"__type": code, "message": message.into()}),
        op,
    }
}

/// The caller may do `action` on `resource`, or the refusal to answer with.
fn allowed(
    caller: &feiyun_iamapi::Authenticated,
    action: &str,
    resource: &str,
    op: &'static str,
) -> Result<(), Answer> {
    caller
        .authorize(action, resource)
        .map_err(|e| refuse(e.status.as_u16(), "AccessDeniedException", e.message, op))
}

/// A call's JSON answer, or its error in the API's form.
fn answered(done: Result<Value, OssError>, op: &'static str) -> Answer {
    match done {
        Ok(body) => Answer {
            status: 200,
            body,
            op,
        },
        Err(e) => oss_refusal(e, op),
    }
}

fn oss_refusal(e: OssError, op: &'static str) -> Answer {
    match e {
        OssError::NoSuchBucket => refuse(404, "NoSuchBucket", "no such bucket", op),
        OssError::InvalidBucketState(m) => refuse(409, "InvalidBucketState", m, op),
        OssError::InvalidRequest(m) => refuse(400, "NotInLiveMigration", m, op),
        OssError::InvalidArgument(m) => refuse(400, "InvalidParameterValue", m, op),
        OssError::Legacy(m) => refuse(502, "LegacyStoreFailed", m, op),
        other => {
            tracing::error!(error = %other, "live migration request failed");
            refuse(500, "InternalError", "internal error", op)
        }
    }
}

impl App {
    pub(crate) async fn live(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        audit: &feiyun_audit::Slot,
    ) -> (Response<s3s::Body>, &'static str) {
        let (parts, body) = req.into_parts();
        let journal = parts.uri.path().starts_with(JOURNAL);
        let limit = if journal { MAX_JOURNAL_BODY } else { MAX_BODY };
        let caller = self
            .signed_admin(
                &parts,
                body,
                peer,
                "migrate:",
                audit,
                limit,
                "MigrateRejected",
            )
            .await;
        let (caller, body) = match caller {
            Ok(x) => x,
            Err(e) => return respond(refuse(e.status, e.code, e.message, e.op)),
        };
        let a = if journal {
            self.journal_call(&caller, &parts, &body).await
        } else {
            self.live_call(&caller, &parts, &body).await
        };
        caller.finish(
            audit,
            StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK),
        );
        respond(a)
    }

    async fn live_call(
        &self,
        caller: &feiyun_iamapi::Authenticated,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Answer {
        let bucket = parts
            .uri
            .path()
            .trim_start_matches("/migrate/live/")
            .to_owned();
        let (action, op) = match parts.method {
            Method::PUT => ("migrate:StartLive", "MigrateLiveStart"),
            Method::GET => ("migrate:GetLiveStatus", "MigrateLiveStatus"),
            Method::DELETE => ("migrate:FinishLive", "MigrateLiveFinish"),
            _ => {
                return refuse(
                    405,
                    "MethodNotAllowed",
                    "PUT, GET or DELETE",
                    "MigrateRejected",
                );
            }
        };
        if bucket.is_empty() || bucket.contains('/') {
            return refuse(400, "InvalidParameterValue", "name one bucket", op);
        }
        if let Err(a) = allowed(caller, action, &format!("arn:aws:s3:::{bucket}"), op) {
            return a;
        }
        // The migration lists, reads, writes and deletes the bucket's objects in the
        // caller's name for as long as it runs: the caller must be allowed all of that.
        if parts.method == Method::PUT {
            let objects = format!("arn:aws:s3:::{bucket}/*");
            let needed = [
                ("s3:ListBucket", format!("arn:aws:s3:::{bucket}")),
                ("s3:GetObject", objects.clone()),
                ("s3:PutObject", objects.clone()),
                ("s3:DeleteObject", objects),
            ];
            for (a, r) in needed {
                if let Err(a) = allowed(caller, a, &r, op) {
                    return a;
                }
            }
        }
        // Identity policies speak for their own account only: the bucket must be theirs.
        match self.oss.bucket(&bucket).await {
            Ok(b) if b.owner.as_deref().unwrap_or(&self.default_account) == caller.account() => {}
            Ok(_) => {
                return refuse(
                    403,
                    "AccessDeniedException",
                    "the bucket belongs to another account",
                    op,
                );
            }
            Err(e) => return oss_refusal(e, op),
        }
        let done = match parts.method {
            Method::PUT => match start_request(body, caller.principal_arn()) {
                Ok(start) => self
                    .oss
                    .live_start(&bucket, start)
                    .await
                    .map(|s| status_json(&bucket, &s, &LiveStatus::default())),
                Err(m) => return refuse(400, "InvalidParameterValue", m, op),
            },
            Method::GET => self
                .oss
                .live_status(&bucket)
                .await
                .map(|(s, st)| status_json(&bucket, &s, &st)),
            _ => {
                let force = parts
                    .uri
                    .query()
                    .is_some_and(|q| q.split('&').any(|p| p == "force"));
                self.oss
                    .live_finish(&bucket, force)
                    .await
                    .map(|st| json!({"bucket": bucket, "finished": true, "copied": st.copied}))
            }
        };
        answered(done, op)
    }
}

/// A legacy bucket name: what S3 and its clones accept (legacy us-east-1 names too), and
/// nothing that could change the host or path it is sent to.
fn legacy_bucket_ok(b: &str) -> bool {
    (1..=255).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
}

impl App {
    /// `/migrate/journal/ID`: POST applies records, GET pages through them (`?after=`,
    /// base64url of the table letter and key), DELETE removes the journal. Each account
    /// has its own journals.
    async fn journal_call(
        &self,
        caller: &feiyun_iamapi::Authenticated,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Answer {
        use base64::Engine as _;
        use feiyun_oss::live::journal::{JOURNAL_BATCH, JournalRecord, journal_id_ok};
        let b64 = base64::engine::general_purpose::STANDARD;
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let id = parts.uri.path().trim_start_matches(JOURNAL);
        let (action, op) = match parts.method {
            Method::POST => ("migrate:WriteJournal", "MigrateJournalWrite"),
            Method::GET => ("migrate:ReadJournal", "MigrateJournalRead"),
            Method::DELETE => ("migrate:DeleteJournal", "MigrateJournalDelete"),
            _ => {
                return refuse(
                    405,
                    "MethodNotAllowed",
                    "POST, GET or DELETE",
                    "MigrateRejected",
                );
            }
        };
        if !journal_id_ok(id) {
            return refuse(
                400,
                "InvalidParameterValue",
                "a journal id is 1 to 64 hex digits",
                op,
            );
        }
        let account = caller.account();
        let arn = format!("arn:aws:migrate:{}:{account}:journal/{id}", self.region);
        if let Err(a) = allowed(caller, action, &arn, op) {
            return a;
        }
        let done = match parts.method {
            Method::POST => {
                // Typed, so a body of millions of tiny values is refused at the first one
                // that is not a record instead of becoming a tree in memory.
                #[derive(serde::Deserialize)]
                struct Rec {
                    t: String,
                    k: String,
                    v: Option<String>,
                }
                #[derive(serde::Deserialize)]
                struct Doc {
                    records: Vec<Rec>,
                }
                let parsed: Result<Vec<JournalRecord>, String> = (|| {
                    let doc: Doc = serde_json::from_slice(body).map_err(|e| e.to_string())?;
                    if doc.records.len() > JOURNAL_BATCH {
                        return Err(format!("at most {JOURNAL_BATCH} records a call"));
                    }
                    doc.records
                        .into_iter()
                        .map(|r| {
                            let table = match r.t.as_str() {
                                "d" => 'd',
                                "u" => 'u',
                                _ => return Err("a record's t is d or u".to_owned()),
                            };
                            let value = match r.v {
                                None => None,
                                Some(s) => Some(b64.decode(s).map_err(|_| "v is not base64")?),
                            };
                            Ok(JournalRecord {
                                table,
                                key: r.k,
                                value,
                            })
                        })
                        .collect()
                })();
                match parsed {
                    Ok(records) => self
                        .oss
                        .journal_apply(account, id, &records)
                        .await
                        .map(|()| json!({"applied": records.len()})),
                    Err(m) => return refuse(400, "InvalidParameterValue", m, op),
                }
            }
            Method::GET => {
                let after = parts
                    .uri
                    .query()
                    .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("after=")))
                    .map(|a| url.decode(a).ok().and_then(|b| String::from_utf8(b).ok()));
                let after = match after {
                    None => None,
                    // The table letter is ASCII, so splitting after it is on a char boundary.
                    Some(Some(s)) if s.starts_with(['d', 'u']) => {
                        let (t, k) = s.split_at(1);
                        Some((if t == "u" { 'u' } else { 'd' }, k.to_owned()))
                    }
                    Some(_) => {
                        return refuse(400, "InvalidParameterValue", "after is not valid", op);
                    }
                };
                self.oss
                    .journal_page(account, id, after, JOURNAL_BATCH)
                    .await
                    .map(|(records, truncated)| {
                        let list: Vec<Value> = records
                            .iter()
                            .map(|r| {
                                json!({"t": r.table.to_string(), "k": r.key,
                                       "v": r.value.as_ref().map(|v| b64.encode(v))})
                            })
                            .collect();
                        json!({"records": list, "truncated": truncated})
                    })
            }
            _ => self
                .oss
                .journal_drop(account, id)
                .await
                .map(|n| json!({"deleted": n})),
        };
        answered(done, op)
    }
}

fn start_request(body: &[u8], principal: &str) -> Result<LiveStart, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let text = |name: &str| -> Result<String, String> {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{name} is required"))
    };
    let endpoint = text("endpoint")?;
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err("endpoint must be an http:// or https:// URL".into());
    }
    let bucket = text("bucket")?;
    if !legacy_bucket_ok(&bucket) {
        return Err(format!("{bucket:?} is not a bucket name"));
    }
    Ok(LiveStart {
        principal: principal.to_owned(),
        endpoint,
        bucket,
        prefix: v
            .get("prefix")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        region: v
            .get("region")
            .and_then(Value::as_str)
            .unwrap_or("us-east-1")
            .to_owned(),
        virtual_hosted: v
            .get("virtual_hosted")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        access_key: text("access_key")?,
        secret_key: text("secret_key")?,
        write_through: v
            .get("write_through")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

fn status_json(bucket: &str, s: &LiveSetting, st: &LiveStatus) -> Value {
    json!({
        "bucket": bucket,
        "source": format!("s3://{}/{}", s.bucket, s.prefix),
        "endpoint": s.endpoint,
        "write_through": s.write_through,
        "started_ms": s.started_ms,
        "passes": st.passes,
        "cursor": st.cursor,
        "copied": st.copied,
        "bytes": st.bytes,
        "present": st.present,
        "deleted_here": st.deleted_here,
        "pass_copied": st.pass_copied,
        "pass_failed": st.pass_failed,
        "clean_pass_ms": st.clean_pass_ms,
        "ready_to_finish": st.clean_pass_ms.is_some(),
        "errors": st.errors,
        "write_through_errors": st.write_through_errors,
        "updated_ms": st.updated_ms,
    })
}

fn respond(a: Answer) -> (Response<s3s::Body>, &'static str) {
    let mut resp = Response::new(s3s::Body::from(a.body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    (resp, a.op)
}
