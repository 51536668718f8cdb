//! The Function Compute HTTP edge under `/fc/`: a JSON API for functions, versions,
//! aliases and logs, and the invocation endpoint `/fc/invoke/NAME[:QUALIFIER][/PATH]`.
//! Authentication happens before (SigV4, in the server); every action is authorized here as
//! `fc:ACTION` on the function's ARN through the caller's [`Gate`]. A function of another
//! account is not found, whatever the caller's policies say.
//!
//! | Request | Action |
//! |---|---|
//! | `GET /fc/functions` | `fc:ListFunctions` |
//! | `PUT /fc/functions/NAME` (body: wasm; query: configuration) | `fc:CreateFunction` |
//! | `GET /fc/functions/NAME` | `fc:GetFunction` |
//! | `DELETE /fc/functions/NAME` | `fc:DeleteFunction` |
//! | `POST /fc/functions/NAME/versions` | `fc:PublishVersion` |
//! | `DELETE /fc/functions/NAME/versions/N` | `fc:DeleteFunction` (qualified ARN) |
//! | `PUT /fc/functions/NAME/aliases/ALIAS?version=N` | `fc:UpdateAlias` |
//! | `DELETE /fc/functions/NAME/aliases/ALIAS` | `fc:DeleteAlias` |
//! | `GET /fc/functions/NAME/logs?after=ID&limit=N` | `fc:GetLogs` |
//! | `POST /fc/functions/NAME/invocations?qualifier=Q` | `fc:InvokeFunction` |
//! | `PUT /fc/functions/NAME/triggers/ID` (JSON) | `fc:CreateTrigger` (+ `s3:GetObject`, `s3:PutObject`) |
//! | `DELETE /fc/functions/NAME/triggers/ID` | `fc:DeleteTrigger` |
//! | `GET /fc/functions/NAME/dead-letters` | `fc:GetLogs` |
//! | any `/fc/invoke/NAME[:Q][/PATH]` | `fc:InvokeFunction`, none for a public function |
//! | any request to a function's route (`Host: its host`, under its path) | the same |

use std::collections::BTreeMap;

use bytes::Bytes;
use feiyun_meta::MetaStore;
use http::{HeaderMap, Method};
use serde_json::{Value, json};

use crate::records::{FunctionRecord, Trigger};
use crate::runtime::{self, Request};
use crate::service::{self, ConfigUpdate, Functions, ServiceError};

/// An error in the API's own form: `{"__type": CODE, "message": …}` as Lambda answers.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Who is calling, and what they may do.
pub trait Gate: Sync {
    /// The caller's account; `None` for an unsigned request.
    fn account(&self) -> Option<&str>;
    /// The caller's ARN; `None` for an unsigned request.
    fn principal(&self) -> Option<&str>;
    /// Allows or refuses `action` on `resource` (and records the decision for the audit).
    fn authorize(&self, action: &str, resource: &str) -> Result<(), ApiError>;
}

pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The IAM action the request mapped to (for metrics and the audit's operation).
    pub action: &'static str,
}

impl ApiResponse {
    fn json(status: u16, v: &Value, action: &'static str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(v.to_string()),
            action,
        }
    }

    pub fn error(e: ApiError, action: &'static str) -> Self {
        let mut r = Self::json(
            e.status,
            &json!({"__type": e.code, "message": e.message}),
            action,
        );
        r.headers.push(("x-amzn-errortype".into(), e.code.clone()));
        if let Some(s) = e.retry_after {
            r.headers.push(("retry-after".into(), s.to_string()));
        }
        r
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match &e {
            ServiceError::NotFound(m) => ApiError::new(404, "ResourceNotFoundException", m),
            ServiceError::InvalidParameter(m) => {
                ApiError::new(400, "InvalidParameterValueException", m)
            }
            ServiceError::Conflict(m) => ApiError::new(409, "ResourceConflictException", m),
            ServiceError::InvalidCode(inner) => {
                let code = match inner {
                    runtime::FcError::ModuleTooLarge(_) => "CodeStorageExceededException",
                    _ => "InvalidCodeException",
                };
                ApiError::new(400, code, e.to_string())
            }
            ServiceError::Throttled { retry_after } => ApiError {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..ApiError::new(429, "TooManyRequestsException", e.to_string())
            },
            ServiceError::Unavailable { retry_after } => ApiError {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..ApiError::new(503, "ServiceUnavailableException", e.to_string())
            },
            ServiceError::Function(inner) => ApiError::new(
                service::error_status(inner),
                service::error_kind(inner),
                e.to_string(),
            ),
            ServiceError::Meta(_) | ServiceError::Host(_) | ServiceError::Internal(_) => {
                tracing::error!(error = %e, "function service failure");
                ApiError::new(500, "ServiceException", "the function service failed")
            }
        }
    }
}

/// An error answered before the API saw the request (too large, not signed).
pub fn error_response(e: ApiError, action: &'static str) -> ApiResponse {
    ApiResponse::error(e, action)
}

/// Whether a request belongs to this API.
pub fn is_fc_path(path: &str) -> bool {
    path == "/fc" || path.starts_with("/fc/")
}

/// The most body a request to `path` may carry.
pub fn body_limit(path: &str) -> usize {
    if path.starts_with("/fc/functions/") && !path.ends_with("/invocations") {
        runtime::MAX_MODULE_SIZE
    } else {
        service::MAX_REQUEST
    }
}

/// The function a public invocation URL names, so the server can let it through unsigned.
pub fn invoked_function(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/fc/invoke/")?;
    let target = rest.split('/').next()?;
    Some(target.split(':').next().unwrap_or(target))
}

pub struct Call<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

pub async fn handle<M: MetaStore>(
    svc: &Functions<M>,
    meta: &M,
    gate: &dyn Gate,
    call: Call<'_>,
) -> ApiResponse {
    let mut action = "";
    match route(svc, meta, gate, call, &mut action).await {
        Ok(r) => r,
        Err(e) => ApiResponse::error(e, action),
    }
}

/// A request that reached a function through one of its HTTP routes (`route` gave its name
/// and qualifier): authorized and invoked as `/fc/invoke/NAME[:QUALIFIER]` is, the path
/// handed to the function unchanged.
pub async fn handle_route<M: MetaStore>(
    svc: &Functions<M>,
    gate: &dyn Gate,
    name: &str,
    qualifier: Option<&str>,
    call: Call<'_>,
) -> ApiResponse {
    let r = async {
        let f = owned(svc, gate, name, true)?;
        if !f.latest.config.public {
            gate.authorize("fc:InvokeFunction", &qualified(svc, &f, qualifier))?;
        }
        invoke(svc, &f, qualifier, &call, call.path, Trigger::Http).await
    }
    .await;
    r.unwrap_or_else(|e| ApiResponse::error(e, "InvokeFunction"))
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "InvalidParameterValueException", message)
}

async fn route<M: MetaStore>(
    svc: &Functions<M>,
    meta: &M,
    gate: &dyn Gate,
    call: Call<'_>,
    action: &mut &'static str,
) -> Result<ApiResponse, ApiError> {
    let segments: Vec<String> = call
        .path
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let q = query_pairs(call.query);
    let param = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let m = call.method;
    if segs.get(1) == Some(&"invoke") {
        *action = "InvokeFunction";
        let target = segs.get(2).copied().unwrap_or("");
        let (name, qualifier) = match target.split_once(':') {
            Some((n, q)) => (n, Some(q)),
            None => (target, None),
        };
        let f = owned(svc, gate, name, true)?;
        // A public function URL answers anyone, as a Lambda URL with auth type NONE does.
        if !f.latest.config.public {
            gate.authorize("fc:InvokeFunction", &qualified(svc, &f, qualifier))?;
        }
        let rest = format!("/{}", segs.get(3..).unwrap_or(&[]).join("/"));
        return invoke(svc, &f, qualifier, &call, &rest, Trigger::Http).await;
    }
    if segs.get(1) != Some(&"functions") {
        return Err(ApiError::new(
            404,
            "UnknownOperationException",
            "no such Function Compute operation",
        ));
    }
    let account = gate
        .account()
        .ok_or_else(|| ApiError::new(403, "AccessDenied", "the request is not signed"))?
        .to_owned();
    match (m.clone(), &segs[2..]) {
        (Method::GET, []) | (Method::GET, [""]) => {
            *action = "ListFunctions";
            gate.authorize("fc:ListFunctions", &svc.arn_of(&account, "*"))?;
            let list: Vec<Value> = svc
                .list()?
                .iter()
                .filter(|f| f.owner == account)
                .map(|f| summary(svc, f))
                .collect();
            Ok(ApiResponse::json(
                200,
                &json!({ "Functions": list }),
                action,
            ))
        }
        (Method::PUT, [name]) => {
            *action = "CreateFunction";
            gate.authorize("fc:CreateFunction", &svc.arn_of(&account, name))?;
            if call.body.is_empty() {
                return Err(bad("the request body must be the function's WebAssembly"));
            }
            let mut update = config_update(&q)?;
            if let Some(Some(role)) = &update.role {
                // As Lambda: giving a function a role is passing it, which the deployer
                // must be allowed on that role.
                let arn = svc.resolve_role(&account, role)?;
                gate.authorize("iam:PassRole", &arn)?;
                update.role = Some(Some(arn));
            }
            let f = svc.deploy(&account, name, call.body, update).await?;
            Ok(ApiResponse::json(200, &describe(svc, &f), action))
        }
        (Method::GET, [name]) => {
            *action = "GetFunction";
            let f = owned(svc, gate, name, false)?;
            gate.authorize("fc:GetFunction", &svc.arn(&f))?;
            Ok(ApiResponse::json(200, &describe(svc, &f), action))
        }
        (Method::DELETE, [name]) => {
            *action = "DeleteFunction";
            let f = owned(svc, gate, name, false)?;
            gate.authorize("fc:DeleteFunction", &svc.arn(&f))?;
            svc.delete(name).await?;
            Ok(ApiResponse::json(200, &json!({}), action))
        }
        (Method::POST, [name, "versions"]) => {
            *action = "PublishVersion";
            let f = owned(svc, gate, name, false)?;
            gate.authorize("fc:PublishVersion", &svc.arn(&f))?;
            let (_, n) = svc
                .publish(name, param("description").map(str::to_owned))
                .await?;
            Ok(ApiResponse::json(200, &json!({ "Version": n }), action))
        }
        (Method::DELETE, [name, "versions", v]) => {
            *action = "DeleteFunction";
            let f = owned(svc, gate, name, false)?;
            let n: u32 = v
                .parse()
                .map_err(|_| bad(format!("{v:?} is not a version number")))?;
            gate.authorize("fc:DeleteFunction", &qualified(svc, &f, Some(v)))?;
            svc.delete_version(name, n).await?;
            Ok(ApiResponse::json(200, &json!({}), action))
        }
        (Method::PUT, [name, "aliases", alias]) => {
            *action = "UpdateAlias";
            let f = owned(svc, gate, name, false)?;
            gate.authorize("fc:UpdateAlias", &qualified(svc, &f, Some(alias)))?;
            let v = param("version").ok_or_else(|| bad("version is required"))?;
            let n: u32 = v
                .parse()
                .map_err(|_| bad(format!("{v:?} is not a version number")))?;
            svc.set_alias(name, alias, n).await?;
            Ok(ApiResponse::json(
                200,
                &json!({ "Alias": alias, "Version": n }),
                action,
            ))
        }
        (Method::DELETE, [name, "aliases", alias]) => {
            *action = "DeleteAlias";
            let f = owned(svc, gate, name, false)?;
            gate.authorize("fc:DeleteAlias", &qualified(svc, &f, Some(alias)))?;
            svc.delete_alias(name, alias).await?;
            Ok(ApiResponse::json(200, &json!({}), action))
        }
        (Method::GET, [name, "logs"]) => {
            *action = "GetLogs";
            let f = owned(svc, gate, name, false)?;
            gate.authorize("fc:GetLogs", &svc.arn(&f))?;
            let limit = match param("limit") {
                None => 100,
                Some(l) => l
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| bad("limit must be between 1 and 1000"))?,
            };
            let after = param("after");
            if let Some(a) = after
                && !(a.len() == 24 && a.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(bad("after must be an invocation id"));
            }
            let records = svc.meter().logs(meta, name, after, limit).await?;
            Ok(ApiResponse::json(
                200,
                &json!({ "Invocations": records }),
                action,
            ))
        }
        (Method::PUT, [name, "triggers", id]) => {
            *action = "CreateTrigger";
            let f = owned(svc, gate, name, false)?;
            gate.authorize("fc:CreateTrigger", &svc.arn(&f))?;
            let spec = trigger_spec(svc, gate, &account, id, &call.body).await?;
            let f = svc.set_trigger(name, spec).await?;
            Ok(ApiResponse::json(200, &describe(svc, &f), action))
        }
        (Method::DELETE, [name, "triggers", id]) => {
            *action = "DeleteTrigger";
            let f = owned(svc, gate, name, false)?;
            gate.authorize("fc:DeleteTrigger", &svc.arn(&f))?;
            svc.delete_trigger(name, id).await?;
            Ok(ApiResponse::json(200, &json!({}), action))
        }
        (Method::GET, [name, "dead-letters"]) => {
            *action = "GetLogs";
            let f = owned(svc, gate, name, false)?;
            gate.authorize("fc:GetLogs", &svc.arn(&f))?;
            let letters = svc.dead_letters(name, 1000)?;
            Ok(ApiResponse::json(
                200,
                &json!({ "DeadLetters": letters }),
                action,
            ))
        }
        (Method::POST, [name, "invocations"]) => {
            *action = "InvokeFunction";
            let f = owned(svc, gate, name, false)?;
            let qualifier = param("qualifier");
            gate.authorize("fc:InvokeFunction", &qualified(svc, &f, qualifier))?;
            invoke(svc, &f, qualifier, &call, "/", Trigger::Api).await
        }
        _ => Err(ApiError::new(
            404,
            "UnknownOperationException",
            "no such Function Compute operation",
        )),
    }
}

/// The function, if it exists and the caller may know it does (its account, or anyone for
/// a public function's invocation URL).
fn owned<M: MetaStore>(
    svc: &Functions<M>,
    gate: &dyn Gate,
    name: &str,
    invoking: bool,
) -> Result<std::sync::Arc<FunctionRecord>, ApiError> {
    let not_found = || {
        ApiError::new(
            404,
            "ResourceNotFoundException",
            format!("Function not found: {name}"),
        )
    };
    let f = match svc.function(name) {
        Ok(f) => f,
        Err(ServiceError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let public = invoking && f.latest.config.public;
    if gate.account() != Some(f.owner.as_str()) && !public {
        return Err(not_found());
    }
    Ok(f)
}

fn qualified<M: MetaStore>(svc: &Functions<M>, f: &FunctionRecord, q: Option<&str>) -> String {
    match q {
        Some(q) => format!("{}:{q}", svc.arn(f)),
        None => svc.arn(f),
    }
}

fn summary<M: MetaStore>(svc: &Functions<M>, f: &FunctionRecord) -> Value {
    json!({
        "FunctionName": f.name,
        "FunctionArn": svc.arn(f),
        "CodeSha256": f.latest.code.sha256,
        "CodeSize": f.latest.code.size,
        "MemorySize": f.latest.config.memory >> 20,
        "Timeout": f.latest.config.timeout_ms,
        "LastModified": service::rfc3339(f.latest.modified_ms),
        "Versions": f.versions.len(),
    })
}

fn describe<M: MetaStore>(svc: &Functions<M>, f: &FunctionRecord) -> Value {
    serde_json::to_value(svc.info(f)).unwrap_or(Value::Null)
}

/// A trigger as `PUT …/triggers/ID` sends it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    bucket: Option<String>,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    suffix: String,
    events: Option<Vec<String>>,
    /// `object` (the default) or `event`.
    input: Option<String>,
    output_bucket: Option<String>,
    #[serde(default)]
    output_prefix: String,
    schedule: Option<String>,
    /// An HTTP route: the function's own host name, and a path prefix under it.
    host: Option<String>,
    path: Option<String>,
    qualifier: Option<String>,
    max_attempts: Option<u32>,
}

/// Parses a trigger and checks the caller may read (and write) the buckets it names: they
/// must be the caller's, and its policies must allow `s3:GetObject` on what the trigger
/// reads and `s3:PutObject` on where it writes.
async fn trigger_spec<M: MetaStore>(
    svc: &Functions<M>,
    gate: &dyn Gate,
    account: &str,
    id: &str,
    body: &[u8],
) -> Result<crate::records::TriggerSpec, ApiError> {
    use crate::records::{ObjectSource, Output, Source, TriggerSpec};
    let b: TriggerBody = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the trigger is not valid JSON: {e}")))?;
    let max_attempts = b.max_attempts.unwrap_or(3);
    if !(1..=10).contains(&max_attempts) {
        return Err(bad("max_attempts must be between 1 and 10"));
    }
    if b.path.is_some() && b.host.is_none() {
        return Err(bad("a route's path goes with a host name"));
    }
    let source = match (b.bucket, b.schedule, b.host) {
        (None, None, Some(host)) => Source::Http {
            host: crate::records::route_host(&host).ok_or_else(|| {
                bad(format!(
                    "{host:?} is not a host name for a route (a DNS name with a dot, no port)"
                ))
            })?,
            path: crate::records::route_path(b.path.as_deref().unwrap_or("/")).ok_or_else(
                || {
                    bad(format!(
                        "{:?} is not a route path (/ then segments, no . or .., no query)",
                        b.path.unwrap_or_default()
                    ))
                },
            )?,
        },
        (None, Some(schedule), None) => Source::Timer { schedule },
        (Some(bucket), None, None) => {
            let mine = |bucket: String| async move {
                match svc.host().bucket_owner(&bucket).await {
                    Ok(Some(owner)) if owner == account => Ok(()),
                    Ok(_) => Err(ApiError::new(
                        404,
                        "ResourceNotFoundException",
                        format!("no bucket {bucket} in this account"),
                    )),
                    Err(e) => Err(ApiError::from(ServiceError::Host(e))),
                }
            };
            mine(bucket.clone()).await?;
            gate.authorize(
                "s3:GetObject",
                &format!("arn:aws:s3:::{bucket}/{}*", b.prefix),
            )?;
            let output = match b.output_bucket {
                None => None,
                Some(out) => {
                    mine(out.clone()).await?;
                    gate.authorize(
                        "s3:PutObject",
                        &format!("arn:aws:s3:::{out}/{}*", b.output_prefix),
                    )?;
                    Some(Output {
                        bucket: out,
                        prefix: b.output_prefix,
                    })
                }
            };
            let events = b
                .events
                .unwrap_or_else(|| vec!["ObjectCreated:*".to_owned()]);
            for e in &events {
                let stem = e.strip_suffix('*').unwrap_or(e);
                if !(stem.is_empty()
                    || stem.starts_with("ObjectCreated")
                    || stem.starts_with("ObjectRemoved")
                    || stem.starts_with("LifecycleTransition"))
                {
                    return Err(bad(format!("{e:?} is not an S3 event name")));
                }
            }
            Source::Object(ObjectSource {
                bucket,
                prefix: b.prefix,
                suffix: b.suffix,
                events,
                object_body: match b.input.as_deref() {
                    None | Some("object") => true,
                    Some("event") => false,
                    Some(other) => {
                        return Err(bad(format!("input must be object or event, not {other:?}")));
                    }
                },
                output,
            })
        }
        _ => {
            return Err(bad(
                "a trigger has one of: a bucket (object events), a schedule (cron), a host (an HTTP route)",
            ));
        }
    };
    Ok(TriggerSpec {
        id: id.to_owned(),
        qualifier: b.qualifier,
        max_attempts,
        source,
        after_event: 0,
        acting_as: gate.principal().map(str::to_owned),
    })
}

/// Parses a deploy's configuration parameters.
fn config_update(q: &[(String, String)]) -> Result<ConfigUpdate, ApiError> {
    let mut u = ConfigUpdate::default();
    let num = |k: &str, v: &str| -> Result<u64, ApiError> {
        v.parse::<u64>()
            .map_err(|_| bad(format!("{k} must be a whole number, not {v:?}")))
    };
    let small = |k: &str, v: &str| -> Result<u32, ApiError> {
        u32::try_from(num(k, v)?).map_err(|_| bad(format!("{k} is too large")))
    };
    let mut env: Option<BTreeMap<String, String>> = None;
    let mut allow: Option<Vec<String>> = None;
    for (k, v) in q {
        match k.as_str() {
            "memory" => u.memory = Some(num(k, v)?),
            "timeout-ms" => u.timeout_ms = Some(num(k, v)?),
            "fuel" => u.fuel = Some(if v.is_empty() { None } else { Some(num(k, v)?) }),
            "env" => {
                let env = env.get_or_insert_with(BTreeMap::new);
                if !v.is_empty() {
                    let (name, value) = v
                        .split_once('=')
                        .ok_or_else(|| bad(format!("env must be NAME=VALUE, not {v:?}")))?;
                    env.insert(name.to_owned(), value.to_owned());
                }
            }
            "max-concurrency" => u.max_concurrency = Some(small(k, v)?),
            "min-instances" => u.min_instances = Some(small(k, v)?),
            "max-instances" => u.max_instances = Some(small(k, v)?),
            "public" => {
                u.public = Some(match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("public must be true or false")),
                })
            }
            "description" => u.description = Some(v.clone()),
            "role" => u.role = Some(Some(v.clone()).filter(|r| !r.is_empty())),
            "allow-host" => {
                let hosts = allow.get_or_insert_with(Vec::new);
                if !v.is_empty() {
                    hosts.push(v.clone());
                }
            }
            _ => return Err(bad(format!("unknown parameter {k:?}"))),
        }
    }
    u.env = env;
    u.allow_hosts = allow;
    Ok(u)
}

/// Headers a function may not set on its response (hop-by-hop, or the server's own).
fn reserved_header(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authenticate"
            | "content-length"
            | "x-amz-request-id"
    ) || name.starts_with("x-fc-")
}

async fn invoke<M: MetaStore>(
    svc: &Functions<M>,
    f: &FunctionRecord,
    qualifier: Option<&str>,
    call: &Call<'_>,
    path: &str,
    trigger: Trigger,
) -> Result<ApiResponse, ApiError> {
    let headers = call
        .headers
        .iter()
        .filter(|(k, _)| !k.as_str().starts_with("x-amz-"))
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let req = Request {
        method: call.method.as_str().to_owned(),
        path: path.to_owned(),
        query: call.query.to_owned(),
        headers,
        body: call.body.to_vec(),
    };
    match svc.invoke(f, qualifier, req, trigger).await {
        Ok(done) => {
            let mut headers: Vec<(String, String)> = done
                .response
                .headers
                .into_iter()
                .filter(|(k, v)| {
                    http::HeaderName::from_bytes(k.as_bytes()).is_ok()
                        && http::HeaderValue::from_str(v).is_ok()
                        && !reserved_header(k)
                })
                .collect();
            headers.push(("x-fc-invocation-id".into(), done.id));
            headers.push(("x-fc-version".into(), done.version));
            headers.push((
                "x-fc-duration-us".into(),
                done.duration.as_micros().to_string(),
            ));
            if done.cold {
                headers.push(("x-fc-cold-start".into(), "true".into()));
            }
            Ok(ApiResponse {
                status: done.response.status,
                headers,
                body: Bytes::from(done.response.body),
                action: "InvokeFunction",
            })
        }
        Err(ServiceError::Function(e)) => {
            let kind = service::error_kind(&e);
            let mut r = ApiResponse::json(
                service::error_status(&e),
                &json!({"__type": kind, "message": e.to_string()}),
                "InvokeFunction",
            );
            r.headers.push(("x-fc-function-error".into(), kind.into()));
            Ok(r)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(decode("a%3Db+c%2"), "a=b c%2");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%C3%A9%"), "é%");
        let q = query_pairs("env=A%3D1&env=B%3Dx%20y&memory=1048576");
        let u = config_update(&q).expect("valid");
        assert_eq!(u.memory, Some(1 << 20));
        let env = u.env.expect("env");
        assert_eq!(env.get("A").map(String::as_str), Some("1"));
        assert_eq!(env.get("B").map(String::as_str), Some("x y"));
        assert!(config_update(&query_pairs("memory=lots")).is_err());
        assert!(config_update(&query_pairs("colour=red")).is_err());
        assert!(config_update(&query_pairs("env=novalue")).is_err());
    }

    #[test]
    fn invocation_paths_name_their_function() {
        assert_eq!(invoked_function("/fc/invoke/hello"), Some("hello"));
        assert_eq!(invoked_function("/fc/invoke/hello:live/a/b"), Some("hello"));
        assert_eq!(invoked_function("/fc/functions/hello"), None);
        assert!(is_fc_path("/fc/functions"));
        assert!(!is_fc_path("/fcx/a"));
    }
}
