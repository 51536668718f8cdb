//! The cluster edge: the `/cluster/` admin API (`feiyun cluster status|drain|remove`),
//! signed requests only, authorized as the caller like every admin verb.

use std::net::SocketAddr;

use feiyun_cluster::api::{self, ApiError, ApiResponse};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::App;

/// The API's requests carry no body.
const MAX_BODY: usize = 1024;

impl App {
    pub(crate) async fn cluster(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        audit: &feiyun_audit::Slot,
    ) -> (Response<s3s::Body>, &'static str) {
        let (parts, body) = req.into_parts();
        let (caller, _) = match self
            .signed_admin(
                &parts,
                body,
                peer,
                "cluster:",
                audit,
                MAX_BODY,
                "ClusterRejected",
            )
            .await
        {
            Ok(x) => x,
            Err(e) => {
                let r = api::error_response(ApiError::new(e.status, e.code, e.message), e.op);
                return (json_response(r), e.op);
            }
        };
        let r = api::handle(
            self.membership.as_deref(),
            &ClusterGate(&caller),
            &parts.method,
            parts.uri.path(),
        )
        .await;
        caller.finish(
            audit,
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
        );
        let op = r.action;
        (json_response(r), op)
    }
}

struct ClusterGate<'a>(&'a feiyun_iamapi::Authenticated);

impl api::Gate for ClusterGate<'_> {
    fn authorize(&self, action: &str, resource: &str) -> Result<(), ApiError> {
        self.0
            .authorize(action, resource)
            .map_err(|e| ApiError::new(e.status.as_u16(), "AccessDeniedException", e.message))
    }
}

fn json_response(r: ApiResponse) -> Response<s3s::Body> {
    let mut resp = Response::new(s3s::Body::from(r.body));
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
