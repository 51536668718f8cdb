//! The SQL edge on the region endpoint: `POST /sql` runs one statement (the body, UTF-8,
//! at most 1 MiB) and answers JSON rows or, when `Accept` asks for
//! `application/vnd.apache.arrow.stream`, an Arrow IPC stream; `GET /sql/history` lists the
//! account's query history. Requests are SigV4-signed for the `sql` service (so a bucket
//! named `sql` stays reachable by S3 requests), the caller needs `sql:ExecuteStatement` (or
//! `sql:GetQueryHistory`) on the account's workgroup ARN, and the statement then reads and
//! writes only what the caller's S3 permissions allow, object by object. Also
//! [`SqlAccess`], the S3 authorization the engine asks.

use std::net::SocketAddr;
use std::sync::Arc;

use feiyun_iam::Caller;
use feiyun_oss::KeyCheck;
use feiyun_sql::{Origin, SqlError, Statement};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::{App, Blobs, Store};

/// A statement's text.
const MAX_BODY: usize = 1024 * 1024;
const ARROW: &str = "application/vnd.apache.arrow.stream";

/// A request for this edge: `/sql` or `/sql/…`, signed for the `sql` service.
pub(crate) fn is_request<B>(req: &Request<B>) -> bool {
    let p = req.uri().path();
    (p == "/sql" || p.starts_with("/sql/"))
        && req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("/sql/aws4_request"))
}

/// The ARN `sql:*` actions are authorized on.
pub(crate) fn workgroup_arn(region: &str, account: &str) -> String {
    format!("arn:aws:sql:{region}:{account}:workgroup/primary")
}

/// The S3 authorization of the objects and listings a statement touches.
pub(crate) struct SqlAccess {
    pub authorize: feiyun_s3api::Authorize<Store, Blobs>,
    pub region: String,
}

fn s3_origin(o: Option<Origin>) -> Option<feiyun_s3api::Origin> {
    o.map(|o| feiyun_s3api::Origin {
        peer: o.peer,
        secure: o.secure,
    })
}

#[async_trait::async_trait]
impl feiyun_sql::Access for SqlAccess {
    async fn object(
        &self,
        caller: &Arc<Caller>,
        origin: Option<Origin>,
        action: &str,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<KeyCheck, String> {
        let version = match version {
            Some(v) => Some(feiyun_oss::VersionSelector::parse(v).map_err(|e| e.to_string())?),
            None => None,
        };
        let grant = self
            .authorize
            .object_grant_from(
                caller.clone(),
                action,
                bucket,
                key,
                version,
                s3_origin(origin),
            )
            .await?;
        Ok(grant.key_check())
    }

    fn table(
        &self,
        caller: &Caller,
        origin: Option<Origin>,
        action: &str,
        name: &str,
    ) -> Result<(), String> {
        let arn = format!(
            "arn:aws:sql:{}:{}:table/{name}",
            self.region, caller.principal.account
        );
        self.authorize
            .identity_grant(caller, action, &arn, s3_origin(origin))
    }

    async fn bucket(
        &self,
        caller: &Arc<Caller>,
        origin: Option<Origin>,
        action: &str,
        bucket: &str,
        prefix: &str,
    ) -> Result<(), String> {
        self.authorize
            .bucket_grant(caller.clone(), action, bucket, prefix, s3_origin(origin))
            .await
    }
}

/// The HTTP status and `__type` of an engine error.
pub(crate) fn status_of(e: &SqlError) -> StatusCode {
    match e {
        SqlError::Invalid(_) | SqlError::Data(_) | SqlError::ResourcesExhausted(_) => {
            StatusCode::BAD_REQUEST
        }
        SqlError::AccessDenied(_) => StatusCode::FORBIDDEN,
        SqlError::NotFound(_) => StatusCode::NOT_FOUND,
        SqlError::AlreadyExists(_) => StatusCode::CONFLICT,
        SqlError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
        SqlError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
        SqlError::Cancelled => StatusCode::BAD_REQUEST,
        SqlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<s3s::Body> {
    let mut resp = Response::new(s3s::Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn refusal(status: u16, code: &str, message: &str) -> Response<s3s::Body> {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        json!({"__type": code, "message": message}),
    )
}

impl App {
    pub(crate) async fn sql(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        secure: bool,
        audit: &feiyun_audit::Slot,
    ) -> (Response<s3s::Body>, &'static str) {
        let (parts, body) = req.into_parts();
        let caller = self
            .signed_admin(&parts, body, peer, "sql:", audit, MAX_BODY, "SqlRejected")
            .await;
        let (caller, body) = match caller {
            Ok(x) => x,
            Err(e) => return (refusal(e.status, e.code, &e.message), e.op),
        };
        let arn = workgroup_arn(&self.region, caller.account());
        let (resp, op) = match (parts.method.clone(), parts.uri.path()) {
            (Method::POST, "/sql") => match caller.authorize("sql:ExecuteStatement", &arn) {
                Err(e) => (
                    refusal(e.status.as_u16(), "AccessDenied", &e.message),
                    "SqlExecute",
                ),
                Ok(()) => {
                    let origin = Origin { peer, secure };
                    let resp = self.sql_execute(&caller, &parts, &body, origin).await;
                    (resp, "SqlExecute")
                }
            },
            (Method::GET, "/sql/history") => match caller.authorize("sql:GetQueryHistory", &arn) {
                Err(e) => (
                    refusal(e.status.as_u16(), "AccessDenied", &e.message),
                    "SqlHistory",
                ),
                Ok(()) => (self.sql_history(&caller, &parts).await, "SqlHistory"),
            },
            _ => (
                refusal(404, "UnknownOperation", "POST /sql or GET /sql/history"),
                "SqlRejected",
            ),
        };
        caller.finish(audit, resp.status());
        (resp, op)
    }

    async fn sql_execute(
        &self,
        caller: &feiyun_iamapi::Authenticated,
        parts: &http::request::Parts,
        body: &[u8],
        origin: Origin,
    ) -> Response<s3s::Body> {
        let Ok(text) = std::str::from_utf8(body) else {
            return refusal(400, "InvalidQuery", "the statement is not UTF-8 text");
        };
        let arrow = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains(ARROW));
        let (result, stats) = self
            .sql
            .execute(Statement {
                caller: caller.caller(),
                text,
                source: "http",
                origin: Some(origin),
            })
            .await;
        caller.note(|d| {
            d.query = Some(feiyun_audit::QueryAudit {
                text: feiyun_sql::history::truncate(text, 2048),
                objects_read: stats.objects_read,
                bytes_read: stats.bytes_read,
                rows: result.as_ref().map(|o| o.rows).unwrap_or(0),
                error: result
                    .as_ref()
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            });
            d.items = stats
                .objects
                .iter()
                .map(|o| feiyun_audit::AuditItem {
                    resource: o.clone(),
                    version_id: String::new(),
                    decision: "Allow".into(),
                })
                .collect();
        });
        let out = match result {
            Ok(o) => o,
            Err(e) => return refusal(status_of(&e).as_u16(), e.code(), &e.to_string()),
        };
        let encoded = if arrow {
            feiyun_sql::results::to_ipc(&out).map(|b| (b, ARROW))
        } else {
            feiyun_sql::results::to_json(&out, &stats, self.sql.limits().max_bytes)
                .map(|v| (v.to_string().into_bytes(), "application/json"))
        };
        let (bytes, kind) = match encoded {
            Ok(x) => x,
            Err(e) => return refusal(500, e.code(), &e.to_string()),
        };
        let mut resp = Response::new(s3s::Body::from(bytes::Bytes::from(bytes)));
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(kind),
        );
        for (name, value) in [
            ("x-feiyun-sql-rows", out.rows.to_string()),
            ("x-feiyun-sql-truncated", out.truncated.to_string()),
            ("x-feiyun-sql-tag", out.tag.clone()),
            ("x-feiyun-sql-objects-read", stats.objects_read.to_string()),
            ("x-feiyun-sql-bytes-scanned", stats.bytes_read.to_string()),
        ] {
            if let Ok(v) = http::HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        resp
    }

    async fn sql_history(
        &self,
        caller: &feiyun_iamapi::Authenticated,
        parts: &http::request::Parts,
    ) -> Response<s3s::Body> {
        let limit = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("limit="))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(50)
            .clamp(1, 1000);
        // An account's root sees every statement; anyone else sees their own: statement
        // texts and errors may quote data the others may not read.
        let only = (!caller.is_root()).then(|| caller.principal_arn().to_owned());
        let rows = feiyun_sql::history::list(
            self.sql.region().as_ref(),
            caller.account(),
            only.as_deref(),
            limit,
        );
        match rows.await {
            Ok(rows) => json_response(StatusCode::OK, json!({ "queries": rows })),
            Err(e) => refusal(500, e.code(), &e.to_string()),
        }
    }
}
