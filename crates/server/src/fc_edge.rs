//! The Function Compute edge: authentication before large bodies are read, the gates the
//! function API authorizes through, and its answers as HTTP responses.

use std::net::SocketAddr;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::{App, bodies};

impl App {
    /// A Function Compute request: signed callers are authenticated here and authorized by
    /// the API per action; unsigned requests reach only public functions' invocation URLs
    /// and routes. `routed` is the function (and qualifier) a route gave the request.
    pub(crate) async fn functions(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        audit: &feiyun_audit::Slot,
        routed: Option<(String, Option<String>)>,
    ) -> (Response<s3s::Body>, &'static str) {
        use feiyun_fc::api::{self, ApiError, ApiResponse, Call};
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let limit = match routed {
            Some(_) => feiyun_fc::service::MAX_REQUEST,
            None => api::body_limit(&path),
        };
        let fail = |e: ApiError| {
            (
                fc_response(api::error_response(e, "Rejected")),
                "FcRejected",
            )
        };
        let signed = parts.headers.contains_key(http::header::AUTHORIZATION);
        let (caller, body) = match self
            .read_edge_body(&parts, body, peer, "fc:", audit, limit)
            .await
        {
            Ok(x) => x,
            Err(bodies::EdgeBodyError::Auth(e)) => {
                let r = api::error_response(
                    ApiError::new(e.status.as_u16(), e.code, e.message),
                    "AuthFailed",
                );
                return (fc_response(r), "AuthFailed");
            }
            Err(bodies::EdgeBodyError::Payload(e)) => {
                return fail(ApiError::new(e.status.as_u16(), e.code, e.message));
            }
            Err(bodies::EdgeBodyError::Read {
                error: bodies::BodyError::Busy,
                ..
            }) => {
                return fail(ApiError::new(
                    503,
                    "ServiceException",
                    "too many unauthenticated request bodies in flight; retry",
                ));
            }
            Err(bodies::EdgeBodyError::Read {
                error: bodies::BodyError::TooLarge(n),
                ..
            }) if n < limit => {
                return fail(ApiError::new(
                    413,
                    "RequestEntityTooLargeException",
                    format!("a body over {n} bytes must be signed with x-amz-content-sha256"),
                ));
            }
            Err(bodies::EdgeBodyError::Read { .. }) => {
                return fail(ApiError::new(
                    413,
                    "RequestEntityTooLargeException",
                    format!("the request body is larger than {limit} bytes"),
                ));
            }
        };
        let call = Call {
            method: &parts.method,
            path: &path,
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            body: body.clone(),
        };
        let meta = self.oss.meta();
        let target = routed.as_ref().map(|(f, q)| (f.as_str(), q.as_deref()));
        let r: ApiResponse = if signed {
            let caller = match caller {
                Some(c) => Ok(c),
                None => self
                    .query
                    .sign_in_caller(&parts, &body, peer, "fc:".into(), audit),
            };
            match caller {
                Ok(caller) => {
                    let gate = SignedGate(&caller);
                    let r = match target {
                        Some((f, q)) => api::handle_route(&self.fc, &gate, f, q, call).await,
                        None => api::handle(&self.fc, meta, &gate, call).await,
                    };
                    caller.finish(
                        audit,
                        StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
                    );
                    r
                }
                Err(e) => api::error_response(
                    ApiError::new(e.status.as_u16(), e.code, e.message),
                    "AuthFailed",
                ),
            }
        } else if target.is_some() || api::invoked_function(&path).is_some() {
            let r = match target {
                Some((f, q)) => api::handle_route(&self.fc, &AnonymousGate, f, q, call).await,
                None => api::handle(&self.fc, meta, &AnonymousGate, call).await,
            };
            audit.set(feiyun_audit::Decided {
                principal: "anonymous".into(),
                action: "fc:InvokeFunction".into(),
                resource: path.clone(),
                // Only a public function answers an unsigned request.
                decision: if r.status == 404 || r.status == 403 {
                    "ImplicitDeny"
                } else {
                    "Allow"
                }
                .into(),
                ..Default::default()
            });
            r
        } else {
            api::error_response(
                ApiError::new(
                    403,
                    "MissingAuthenticationToken",
                    "Function Compute requests must be signed (SigV4)",
                ),
                "AuthFailed",
            )
        };
        let op = match r.action {
            "" => "Fc",
            a => a,
        };
        (fc_response(r), op)
    }
}

/// A Function Compute caller who signed the request.
struct SignedGate<'a>(&'a feiyun_iamapi::Authenticated);

impl feiyun_fc::api::Gate for SignedGate<'_> {
    fn account(&self) -> Option<&str> {
        Some(self.0.account())
    }

    fn principal(&self) -> Option<&str> {
        Some(self.0.principal_arn())
    }

    fn authorize(&self, action: &str, resource: &str) -> Result<(), feiyun_fc::api::ApiError> {
        self.0.authorize(action, resource).map_err(|e| {
            feiyun_fc::api::ApiError::new(e.status.as_u16(), "AccessDeniedException", e.message)
        })
    }
}

struct AnonymousGate;

impl feiyun_fc::api::Gate for AnonymousGate {
    fn account(&self) -> Option<&str> {
        None
    }

    fn principal(&self) -> Option<&str> {
        None
    }

    fn authorize(&self, action: &str, _resource: &str) -> Result<(), feiyun_fc::api::ApiError> {
        Err(feiyun_fc::api::ApiError::new(
            403,
            "AccessDeniedException",
            format!("{action} needs a signed request"),
        ))
    }
}

fn fc_response(r: feiyun_fc::api::ApiResponse) -> Response<s3s::Body> {
    let mut resp = Response::new(s3s::Body::from(r.body));
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}
