//! Which edge a request is for, and the signature screening every edge shares
//! (`feiyun_iam::screen`): applied before any body is read or secret looked up.

use feiyun_iam::screen::{AuthKind, Expect, ScreenError, Shape};
use http::{Request, Response, StatusCode};

use crate::{App, reject};

/// The protocol edges of the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge {
    S3,
    /// IAM and STS (query protocol).
    Query,
    Kms,
    Functions,
    Replication,
    Cluster,
    /// `feiyun migrate live` (`/migrate/live/BUCKET`).
    Migrate,
    /// SQL analytics (`/sql`, signed for the `sql` service).
    Sql,
}

impl Edge {
    /// The credential-scope services the edge serves; IAM also takes the global region.
    fn expect<'a>(self, region: &'a str) -> Expect<'a> {
        let (services, global): (&'static [&'static str], bool) = match self {
            Edge::S3 => (&["s3"], false),
            Edge::Query => (&["iam", "sts"], true),
            Edge::Kms => (&["kms"], false),
            Edge::Functions => (&["fc"], false),
            Edge::Replication => (&["replication"], false),
            Edge::Cluster => (&["cluster"], false),
            Edge::Migrate => (&["migrate"], false),
            Edge::Sql => (&["sql"], false),
        };
        Expect {
            region,
            services,
            global,
        }
    }

    /// The refusal, in the edge's own error form.
    pub fn screen_error(
        self,
        e: &ScreenError,
        query: Option<&str>,
        id: &str,
    ) -> Response<s3s::Body> {
        let presigned = query.is_some_and(|q| q.contains("X-Amz-Signature="));
        let status = match e {
            ScreenError::HeadersNotSigned(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        let code = match e {
            ScreenError::SignatureV2 => "InvalidRequest",
            ScreenError::HeadersNotSigned(_) => "AccessDenied",
            _ => "IncompleteSignature",
        };
        let mut r = match self {
            Edge::S3 => return reject::screen_error(e, presigned, id),
            Edge::Query => reject::query_error(status, code, &e.to_string(), id),
            Edge::Kms
            | Edge::Functions
            | Edge::Replication
            | Edge::Cluster
            | Edge::Migrate
            | Edge::Sql => reject::json_error(status, code, &e.to_string()),
        };
        if let Ok(v) = http::HeaderValue::from_str(id) {
            r.headers_mut().insert("x-amzn-requestid", v);
        }
        r
    }
}

impl App {
    /// Screens a request's signature for `edge`; returns how it is signed.
    pub(crate) fn screen<B>(&self, req: &Request<B>, edge: Edge) -> Result<AuthKind, ScreenError> {
        let names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
        let shape = Shape {
            authorization: req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
            query: req.uri().query().unwrap_or(""),
            header_names: &names,
        };
        feiyun_iam::screen::screen(&shape, &edge.expect(&self.region))
    }
}
