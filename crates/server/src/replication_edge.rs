//! The replication edge: the `/replication/` admin API (peers, site pushes, status),
//! authenticated before its body is read, and reads proxied to a bucket's replica peers.

use std::net::SocketAddr;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::App;

impl App {
    /// The `/replication/` admin API (peer regions, status): signed requests only.
    pub(crate) async fn replication(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        audit: &feiyun_audit::Slot,
    ) -> (Response<s3s::Body>, &'static str) {
        use feiyun_replication::api::{self, ApiError};
        let (parts, body) = req.into_parts();
        // A site push carries every identity of the region; the rest are small documents.
        // Either is read only for a caller whose signature over its claimed hash holds.
        let limit = if parts.uri.path() == "/replication/site" {
            api::MAX_SITE_BODY
        } else {
            64 * 1024
        };
        let caller = self
            .signed_admin(
                &parts,
                body,
                peer,
                "replication:",
                audit,
                limit,
                "ReplicationRejected",
            )
            .await;
        let (caller, body) = match caller {
            Ok(x) => x,
            Err(e) => {
                let r = api::error_response(ApiError::new(e.status, e.code, e.message), e.op);
                return (json_response(r), e.op);
            }
        };
        let gate = ReplicationGate(&caller);
        let r = api::handle(
            &self.replication,
            &gate,
            &parts.method,
            parts.uri.path(),
            &parts.headers,
            body,
        )
        .await;
        caller.finish(
            audit,
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
        );
        let op = r.action;
        (json_response(r), op)
    }

    /// Asks the peers holding a replica of the bucket for a read that found nothing here;
    /// the first that has it answers (`x-feiyun-read-from` names it).
    pub(crate) async fn proxy_read(
        &self,
        read: Request<http_body_util::Empty<bytes::Bytes>>,
        client: SocketAddr,
        secure: bool,
    ) -> Option<Response<s3s::Body>> {
        let first = read
            .uri()
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()?;
        let host = read
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let bucket = match self.hosts.bucket_of(host) {
            Some(b) => b.to_owned(),
            None if !first.is_empty() => first.to_owned(),
            None => return None,
        };
        for peer in self.replication.read_peers(&bucket).await {
            let (parts, body) = read.clone().into_parts();
            let relayed_for = feiyun_replication::RelayedFor {
                client_ip: client.ip(),
                secure,
            };
            match self
                .replication
                .forward(&peer, Request::from_parts(parts, body), &relayed_for)
                .await
            {
                Ok(r) if r.status().is_success() => {
                    let mut r = r.map(s3s::Body::from);
                    if let Ok(v) = http::HeaderValue::from_str(&peer.record.name) {
                        r.headers_mut().insert("x-feiyun-read-from", v);
                    }
                    return Some(r);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(region = %peer.record.name, error = %e, "proxied read failed")
                }
            }
        }
        None
    }
}

struct ReplicationGate<'a>(&'a feiyun_iamapi::Authenticated);

impl feiyun_replication::api::Gate for ReplicationGate<'_> {
    fn is_root(&self) -> bool {
        self.0.is_root()
    }

    fn shared_key(&self, purpose: &str) -> [u8; 32] {
        self.0.shared_key(purpose)
    }

    fn authorize(
        &self,
        action: &str,
        resource: &str,
    ) -> Result<(), feiyun_replication::api::ApiError> {
        self.0.authorize(action, resource).map_err(|e| {
            feiyun_replication::api::ApiError::new(
                e.status.as_u16(),
                "AccessDeniedException",
                e.message,
            )
        })
    }
}

fn json_response(r: feiyun_replication::api::ApiResponse) -> Response<s3s::Body> {
    let mut resp = Response::new(s3s::Body::from(r.body));
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
