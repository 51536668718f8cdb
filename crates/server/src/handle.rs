//! One request from arrival to answer: built-in endpoints, CORS preflights, screening, the
//! peer and function-call marks, back-off, then the edge that serves it (S3, IAM/STS/KMS,
//! functions, replication, or the bucket's home region), with its audit record and metrics.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use feiyun_iam::SecureTransport;
use feiyun_s3api::{ClientAddr, OpSlot, RequestId};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::reject::{
    self, add_request_id_to_error, home_unreachable, plain, redirect_response,
    reject_oversized_xml, throttle_response,
};
use crate::screening::Edge;
use crate::{App, bodies, cors, guard};

/// The audit record of a request refused for its shape before its signature was checked:
/// under the key it claimed (unproven) and the path it named, decided `Rejected` — not a
/// failed sign-in, which would charge the key's back-off.
fn refused_before_auth(exit: &Exit<'_>, req: &Request<Incoming>) -> feiyun_audit::Decided {
    feiyun_audit::Decided {
        principal: exit.claimed.unwrap_or("anonymous").to_owned(),
        access_key: exit.claimed.unwrap_or_default().to_owned(),
        resource: req.uri().path().to_owned(),
        decision: "Rejected".into(),
        ..Default::default()
    }
}

/// What every answer past screening is recorded with: the request id, when it arrived, who
/// policies judge it to come from (set once relay and function-call marks are checked),
/// and the access key it claimed.
struct Exit<'a> {
    id: &'a str,
    start: Instant,
    peer: SocketAddr,
    claimed: Option<&'a str>,
}

fn set_request_id(resp: &mut Response<s3s::Body>, name: &'static str, id: &str) {
    if let Ok(v) = http::HeaderValue::from_str(id) {
        resp.headers_mut().insert(name, v);
    }
}

impl App {
    /// `/metrics` names functions, buckets' traffic and peers: with `metrics_token` set it
    /// needs `Authorization: Bearer TOKEN`; without one, only loopback clients are served.
    fn metrics_refused(
        &self,
        headers: &http::HeaderMap,
        peer: SocketAddr,
    ) -> Option<Response<s3s::Body>> {
        match &self.metrics_token {
            Some(token) => {
                let presented = headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("");
                let ok = feiyun_iam::sigv4::constant_time_eq(
                    presented.trim().as_bytes(),
                    token.expose().as_bytes(),
                );
                (!ok).then(|| {
                    let mut r = plain(StatusCode::UNAUTHORIZED, "metrics need a bearer token\n");
                    r.headers_mut().insert(
                        http::header::WWW_AUTHENTICATE,
                        http::HeaderValue::from_static("Bearer"),
                    );
                    r
                })
            }
            None => (!peer.ip().is_loopback()).then(|| {
                plain(
                    StatusCode::FORBIDDEN,
                    "metrics are served to loopback only unless metrics_token is set\n",
                )
            }),
        }
    }

    /// Serves one request. Every way out past the built-in endpoints is audited and counted
    /// (`finish`), the fail-closed refusal alone excepted: it exists because nothing can be
    /// audited.
    pub(crate) async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        secure: bool,
    ) -> Response<s3s::Body> {
        let start = Instant::now();
        req.extensions_mut().insert(SecureTransport(secure));
        // A v4 UUID from the thread's userspace generator: `Uuid::new_v4` asks the kernel
        // (getrandom) every time, a system call per request.
        let id = uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .simple()
            .to_string();
        // A host name a function routes belongs to that function, whatever the path.
        let routed = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(req.uri().authority().map(|a| a.as_str()))
            .and_then(|host| self.fc.route(host, req.uri().path()));
        // `/metrics` and `/health/*` answer unsigned GETs only, so a bucket named "metrics" or
        // "health" stays reachable by signed S3 requests.
        if routed.is_none()
            && req.method() == http::Method::GET
            && !is_signed(&req)
            && let Some(r) = self.builtin(req.uri().path(), req.headers(), peer)
        {
            return r;
        }
        if self.audit_fail_closed && self.audit.health().failing() {
            let resp = reject::s3_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The audit log cannot be written; requests are refused until it can.",
                &id,
            );
            self.metrics
                .observe("AuditClosed", 503, start.elapsed().as_secs_f64());
            return resp;
        }
        let claimed = guard::claimed_key(req.headers(), req.uri().query());
        let mut exit = Exit {
            id: &id,
            start,
            peer,
            claimed: claimed.as_deref(),
        };
        if routed.is_none() && req.method() == http::Method::OPTIONS {
            return self.preflight(&req, &exit).await;
        }
        let service = feiyun_iamapi::service_of(req.method(), req.uri().path(), req.headers());
        let edge = if routed.is_some() || feiyun_fc::api::is_fc_path(req.uri().path()) {
            Edge::Functions
        } else if feiyun_replication::api::is_path(req.uri().path()) {
            Edge::Replication
        } else if feiyun_cluster::api::is_path(req.uri().path()) {
            Edge::Cluster
        } else if crate::live_edge::is_path(req.uri().path()) {
            Edge::Migrate
        } else if crate::sql_edge::is_request(&req) {
            Edge::Sql
        } else {
            match service {
                Some(feiyun_iamapi::Service::Kms) => Edge::Kms,
                Some(_) => Edge::Query,
                None => Edge::S3,
            }
        };
        match self.screen(&req, edge) {
            Ok(kind) => {
                req.extensions_mut().insert(kind);
            }
            Err(e) => {
                let resp = edge.screen_error(&e, req.uri().query(), &id);
                return self.finish(&exit, "Rejected", 0, resp, None, false).await;
            }
        }
        let (peer, secure, relayed) = match self.speaker(&req, peer, secure, &id) {
            Ok(s) => s,
            Err(resp) => return self.finish(&exit, "Rejected", 0, *resp, None, false).await,
        };
        exit.peer = peer;
        req.extensions_mut().insert(SecureTransport(secure));
        if let Some(wait) = self.throttled(peer, exit.claimed) {
            let resp = throttle_response(service.is_some(), wait, &id);
            let d = feiyun_audit::Decided {
                principal: exit.claimed.unwrap_or("anonymous").to_owned(),
                access_key: exit.claimed.unwrap_or_default().to_owned(),
                decision: "Throttled".into(),
                ..Default::default()
            };
            return self
                .finish(&exit, "Throttled", 0, resp, Some(d), false)
                .await;
        }
        let audit = feiyun_audit::Slot::default();
        let bytes_in = content_length(req.headers());
        match (edge, service) {
            (Edge::Functions, _) => {
                let (mut resp, op) = self.functions(req, peer, &audit, routed).await;
                set_request_id(&mut resp, "x-amzn-requestid", &id);
                self.finish(&exit, op, bytes_in, resp, audit.take(), true)
                    .await
            }
            (Edge::Replication, _) => {
                let (mut resp, op) = self.replication(req, peer, &audit).await;
                set_request_id(&mut resp, "x-amzn-requestid", &id);
                self.finish(&exit, op, 0, resp, audit.take(), true).await
            }
            (Edge::Migrate, _) => {
                let (mut resp, op) = self.live(req, peer, &audit).await;
                set_request_id(&mut resp, "x-amzn-requestid", &id);
                self.finish(&exit, op, 0, resp, audit.take(), true).await
            }
            (Edge::Sql, _) => {
                let (mut resp, op) = self.sql(req, peer, secure, &audit).await;
                set_request_id(&mut resp, "x-amzn-requestid", &id);
                self.finish(&exit, op, 0, resp, audit.take(), true).await
            }
            (Edge::Cluster, _) => {
                let (mut resp, op) = self.cluster(req, peer, &audit).await;
                set_request_id(&mut resp, "x-amzn-requestid", &id);
                self.finish(&exit, op, 0, resp, audit.take(), true).await
            }
            (_, Some(service)) => {
                let resp = self.query(service, req, peer, &id, &audit).await;
                let decided = audit.take();
                self.judge(peer, exit.claimed, resp.status(), decided.as_ref());
                // Audited under the action it named; counted as one operation.
                self.audit(&id, peer, "", bytes_in, &resp, decided).await;
                self.metrics.observe(
                    "IamQuery",
                    resp.status().as_u16(),
                    start.elapsed().as_secs_f64(),
                );
                resp
            }
            _ => self.s3_request(req, &exit, secure, relayed).await,
        }
    }

    /// Audits and counts a response; `judge` charges (or forgives) the claimed key's failed
    /// sign-ins by it, for the edges that authenticate.
    async fn finish(
        &self,
        exit: &Exit<'_>,
        op: &str,
        bytes_in: u64,
        resp: Response<s3s::Body>,
        decided: Option<feiyun_audit::Decided>,
        judge: bool,
    ) -> Response<s3s::Body> {
        if judge {
            self.judge(exit.peer, exit.claimed, resp.status(), decided.as_ref());
        }
        self.audit(exit.id, exit.peer, op, bytes_in, &resp, decided)
            .await;
        self.metrics.observe(
            op,
            resp.status().as_u16(),
            exit.start.elapsed().as_secs_f64(),
        );
        resp
    }

    /// A CORS preflight, judged by the bucket's CORS rules alone (it carries no credentials).
    async fn preflight(&self, req: &Request<Incoming>, exit: &Exit<'_>) -> Response<s3s::Body> {
        let mut resp = cors::preflight(&self.oss, &self.hosts, req, exit.id).await;
        set_request_id(&mut resp, "x-amz-request-id", exit.id);
        let d = feiyun_audit::Decided {
            principal: "anonymous".into(),
            action: "PreflightRequest".into(),
            resource: req.uri().path().to_owned(),
            decision: if resp.status().is_success() {
                "Allow"
            } else {
                "ImplicitDeny"
            }
            .into(),
            ..Default::default()
        };
        self.finish(exit, "PreflightRequest", 0, resp, Some(d), false)
            .await
    }

    /// Who policies judge: the client itself, or — under a peer region's relay mark whose MAC
    /// and holder check out — the client the relaying region saw (and forwarding stops
    /// there); a function's call to its region comes from no address at all. A mark that
    /// does not check out refuses the request. Returns the address, the TLS state and
    /// whether the request was relayed.
    fn speaker(
        &self,
        req: &Request<Incoming>,
        peer: SocketAddr,
        secure: bool,
        id: &str,
    ) -> Result<(SocketAddr, bool, bool), Box<Response<s3s::Body>>> {
        let denied = |message: &str| {
            Box::new(reject::s3_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                message,
                id,
            ))
        };
        let (mut peer, secure, relayed) = match req
            .headers()
            .get(feiyun_replication::home::FORWARDED_HEADER)
        {
            None => (peer, secure, false),
            Some(mark) => {
                let mark = mark.to_str().unwrap_or_default();
                let m = self
                    .query
                    .verify_relay(mark, req.method(), req.uri(), req.headers())
                    .map_err(|e| denied(&e.message))?;
                (
                    m.client_ip.map_or(peer, |ip| SocketAddr::new(ip, 0)),
                    m.secure.unwrap_or(secure),
                    true,
                )
            }
        };
        // A function calling its region arrives over loopback; it must not pass for a
        // loopback client in `aws:SourceIp` conditions.
        if let Some(mark) = req.headers().get(feiyun_fc::outbound::CALL_HEADER) {
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let verified = mark.to_str().ok().and_then(|m| {
                feiyun_fc::outbound::verify_call(
                    &self.fc_call_key,
                    m,
                    req.method().as_str(),
                    pq,
                    now,
                )
            });
            if verified.is_none() {
                return Err(denied(
                    "x-feiyun-function-call is set only by the region's own function runtime",
                ));
            }
            peer = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
        }
        Ok((peer, secure, relayed))
    }

    /// An S3 request: sent on to the bucket's home region when that is elsewhere, refused
    /// when it is a form upload or an oversized document, else served by the S3 edge (and,
    /// when nothing is found here, perhaps by a replica peer).
    async fn s3_request(
        &self,
        mut req: Request<Incoming>,
        exit: &Exit<'_>,
        secure: bool,
        relayed: bool,
    ) -> Response<s3s::Body> {
        let (id, peer) = (exit.id, exit.peer);
        let bytes_in = content_length(req.headers());
        if let Some(bucket) = self.bucket_for(&req) {
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            if let Some(route) = self.replication.route(&bucket, relayed, pq) {
                return self.to_home(req, route, &bucket, exit, secure).await;
            }
        }
        if is_post_object(&req) {
            // s3s would buffer the whole form (file included) before checking its policy
            // signature; browser uploads wait for a streaming implementation.
            let resp = reject::s3_error(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                "POST Object (browser form upload) is not supported by this region; use PUT or a presigned PUT URL.",
                id,
            );
            let d = refused_before_auth(exit, &req);
            return self
                .finish(exit, "PostObject", 0, resp, Some(d), false)
                .await;
        }
        if let Some(resp) = reject_oversized_xml(&req, id) {
            let d = refused_before_auth(exit, &req);
            return self
                .finish(exit, "Rejected", bytes_in, resp, Some(d), false)
                .await;
        }
        let cors = cors::CorsRequest::of(&req, &self.hosts);
        let slot = OpSlot::default();
        req.extensions_mut().insert(RequestId(id.to_owned()));
        req.extensions_mut().insert(slot.clone());
        req.extensions_mut().insert(ClientAddr(peer));
        let audit = feiyun_audit::Slot::default();
        req.extensions_mut().insert(audit.clone());
        // A read may be answered by a peer holding a version not replicated here yet.
        let proxy = (self.proxy_reads
            && matches!(*req.method(), http::Method::GET | http::Method::HEAD)
            && !relayed)
            .then(|| {
                let mut r = http::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
                *r.method_mut() = req.method().clone();
                *r.uri_mut() = req.uri().clone();
                *r.headers_mut() = req.headers().clone();
                r
            });
        let span = tracing::debug_span!("request", id = %id, method = %req.method(), %peer);
        let mut resp = match self
            .s3
            .call(req.map(s3s::Body::from))
            .instrument(span)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(id = %id, error = ?e, "unhandled S3 service error");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
            }
        };
        if resp.status() == StatusCode::NOT_FOUND
            && let Some(read) = proxy
            && let Some(answer) = self.proxy_read(read, peer, secure).await
        {
            resp = answer;
        }
        set_request_id(&mut resp, "x-amz-request-id", id);
        add_request_id_to_error(&mut resp, id);
        if let Some(c) = cors {
            c.decorate(&self.oss, &mut resp).await;
        }
        let op = slot
            .0
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .unwrap_or_else(|| "Unresolved".to_owned());
        let status = resp.status().as_u16();
        let resp = self
            .finish(exit, &op, bytes_in, resp, audit.take(), true)
            .await;
        if resp.status().is_server_error() {
            tracing::warn!(id = %id, op, status, "request failed");
        } else {
            tracing::debug!(id = %id, op, status, elapsed_us = exit.start.elapsed().as_micros() as u64, "request");
        }
        resp
    }

    /// A request for a bucket whose home is another region: redirected, or forwarded and
    /// its answer streamed back. The home region authenticates and audits the decision;
    /// the record here says where the request went.
    async fn to_home(
        &self,
        req: Request<Incoming>,
        route: feiyun_replication::home::Route,
        bucket: &str,
        exit: &Exit<'_>,
        secure: bool,
    ) -> Response<s3s::Body> {
        let bytes_in = content_length(req.headers());
        let (op, mut resp) = match route {
            feiyun_replication::home::Route::Redirect(location) => {
                ("Redirected", redirect_response(&location, bucket))
            }
            feiyun_replication::home::Route::Forward(home) => {
                let client = feiyun_replication::RelayedFor {
                    client_ip: exit.peer.ip(),
                    secure,
                };
                match self.replication.forward(&home, req, &client).await {
                    Ok(r) => ("Forwarded", r.map(s3s::Body::from)),
                    Err(e) => {
                        tracing::warn!(id = %exit.id, bucket = %bucket, error = %e,
                            "forwarding to the home region failed");
                        ("Forwarded", home_unreachable(exit.id))
                    }
                }
            }
        };
        set_request_id(&mut resp, "x-amz-request-id", exit.id);
        let d = feiyun_audit::Decided {
            principal: exit.claimed.unwrap_or("anonymous").to_owned(),
            access_key: exit.claimed.unwrap_or_default().to_owned(),
            resource: format!("arn:aws:s3:::{bucket}"),
            decision: op.into(),
            ..Default::default()
        };
        self.finish(exit, op, bytes_in, resp, Some(d), false).await
    }

    /// An IAM or STS query request: read the (bounded) form body, answer in XML.
    async fn query(
        &self,
        service: feiyun_iamapi::Service,
        req: Request<Incoming>,
        peer: SocketAddr,
        id: &str,
        audit: &feiyun_audit::Slot,
    ) -> Response<s3s::Body> {
        let (parts, body) = req.into_parts();
        // Query forms are signed over their body's hash: read (bounded) before the check.
        let body = match self
            .preauth
            .read(&parts.headers, body, feiyun_iamapi::MAX_BODY, false)
            .await
        {
            Ok(b) => b,
            Err(bodies::BodyError::Busy) => {
                return reject::query_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "too many unauthenticated request bodies in flight; retry",
                    id,
                );
            }
            Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
        };
        let (status, xml, code) = self
            .query
            .handle(service, &parts, body, peer, id, audit)
            .await;
        if !code.is_empty() {
            tracing::debug!(id, code, "query API error");
        }
        let mut r = plain(status, &xml);
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(if service == feiyun_iamapi::Service::Kms {
                "application/x-amz-json-1.1"
            } else {
                "text/xml"
            }),
        );
        if let Ok(v) = http::HeaderValue::from_str(id) {
            r.headers_mut().insert("x-amzn-requestid", v);
        }
        r
    }

    /// The bucket an S3 request addresses: its virtual host, or its path's first segment.
    fn bucket_for(&self, req: &Request<Incoming>) -> Option<String> {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(req.uri().authority().map(|a| a.as_str()));
        if let Some(b) = host.and_then(|h| self.hosts.bucket_of(h)) {
            return Some(b.to_owned());
        }
        let first = req.uri().path().trim_start_matches('/').split('/').next()?;
        (!first.is_empty()).then(|| first.to_owned())
    }

    /// Appends the request's audit record. Requests that never reached authorization (a
    /// bad signature, an unknown key) are recorded as `AuthFailed` under the key they claimed.
    async fn audit(
        &self,
        id: &str,
        peer: SocketAddr,
        op: &str,
        bytes_in: u64,
        resp: &Response<s3s::Body>,
        decided: Option<feiyun_audit::Decided>,
    ) {
        let d = decided.unwrap_or_else(|| feiyun_audit::Decided {
            principal: "unknown".into(),
            decision: "AuthFailed".into(),
            ..Default::default()
        });
        let record = feiyun_audit::AuditRecord {
            time: feiyun_audit::now_rfc3339(),
            request_id: id.to_owned(),
            tenant: d.tenant,
            principal: d.principal,
            access_key: d.access_key,
            source_ip: peer.ip().to_string(),
            operation: if op.is_empty() {
                d.action.clone()
            } else {
                op.to_owned()
            },
            action: d.action,
            resource: d.resource,
            decision: d.decision,
            statement: d.statement,
            status: resp.status().as_u16(),
            bytes_in,
            bytes_out: content_length(resp.headers()),
            items: d.items,
            query: d.query,
        };
        if self.audit.append(record).await.is_err() {
            tracing::error!(id, "audit writer stopped; record lost");
        }
    }

    /// Whether the source or the claimed key is backing off after failed authentications.
    fn throttled(&self, peer: SocketAddr, claimed: Option<&str>) -> Option<Duration> {
        if self.guard.idle() {
            return None;
        }
        let now = Instant::now();
        let by_source = self.guard.blocked(&guard::Subject::Source(peer.ip()), now);
        let by_key = claimed.and_then(|k| {
            self.guard
                .blocked(&guard::Subject::Key(k.to_owned(), peer.ip()), now)
        });
        by_source.max(by_key)
    }

    /// Counts a failed authentication against the source and the key it claimed from that
    /// source; forgives the key there when it authenticated.
    fn judge(
        &self,
        peer: SocketAddr,
        claimed: Option<&str>,
        status: StatusCode,
        decided: Option<&feiyun_audit::Decided>,
    ) {
        let Some(key) = claimed else { return };
        let failed = decided.is_none_or(|d| d.decision == "AuthFailed");
        if failed && (status == StatusCode::FORBIDDEN || status == StatusCode::BAD_REQUEST) {
            let now = Instant::now();
            self.guard.failure(guard::Subject::Source(peer.ip()), now);
            self.guard
                .failure(guard::Subject::Key(key.to_owned(), peer.ip()), now);
        } else if !failed {
            self.guard.success(key, peer.ip());
        }
    }

    fn builtin(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        peer: SocketAddr,
    ) -> Option<Response<s3s::Body>> {
        match path {
            "/metrics" => {
                if let Some(refused) = self.metrics_refused(headers, peer) {
                    return Some(refused);
                }
                let mut r = plain(StatusCode::OK, &self.metrics.render());
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Some(r)
            }
            "/health/live" => Some(plain(StatusCode::OK, "ok\n")),
            "/health/ready" => Some(if self.audit.health().failing() {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "audit log cannot be written\n",
                )
            } else if self.membership.as_ref().is_some_and(|m| !m.is_ready()) {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not registered in the region (metadata store unreachable, or removed)\n",
                )
            } else if self.ready.load(std::sync::atomic::Ordering::SeqCst) {
                plain(StatusCode::OK, "ready\n")
            } else {
                plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            }),
            _ => None,
        }
    }
}

pub(crate) fn content_length(h: &http::HeaderMap) -> u64 {
    content_length_opt(h).unwrap_or(0)
}

pub(crate) fn content_length_opt(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// POST with a form body: S3's browser upload (the only multipart/form-data S3 request).
fn is_post_object<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::POST
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/form-data")
            })
}

/// Signed the AWS way (a bearer token for `/metrics` is not a signature).
fn is_signed<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"AWS"))
        || req
            .uri()
            .query()
            .is_some_and(|q| q.contains("X-Amz-Signature=") || q.contains("Signature="))
}
