//! Reading request bodies that the server (not s3s) buffers: the IAM/STS/KMS forms and the
//! Function Compute and replication JSON APIs.
//!
//! A body read before its signature is checked is work anyone can force, so such reads
//! draw from one region-wide budget ([`MAX_PREAUTH_BYTES`]) across all connections and
//! streams; a request that finds it spent waits briefly, then is refused with 503. Bodies
//! of callers already authenticated (their signature checked over the claimed payload hash)
//! are bounded per request only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::Semaphore;

/// Bytes all unauthenticated bodies may hold in memory at once.
pub(crate) const MAX_PREAUTH_BYTES: usize = 64 * 1024 * 1024;
/// A signed request without `x-amz-content-sha256` must have its body read to check its
/// signature: only this much is read for it.
pub(crate) const MAX_UNCLAIMED_BODY: usize = 64 * 1024;
/// How long a read waits for the budget before answering 503.
const BUDGET_WAIT: Duration = Duration::from_secs(2);
/// The budget's unit.
const UNIT: usize = 1024;

#[derive(Debug)]
pub(crate) enum BodyError {
    /// Over the request's limit.
    TooLarge(usize),
    /// The pre-authentication budget is spent.
    Busy,
    /// The client's body failed (reset, malformed chunking).
    Failed,
}

/// The region-wide budget for bodies read before authentication.
#[derive(Clone)]
pub(crate) struct PreauthBudget(Arc<Semaphore>);

impl Default for PreauthBudget {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(MAX_PREAUTH_BYTES / UNIT)))
    }
}

impl PreauthBudget {
    /// Reads a body of at most `limit` bytes. `authenticated`: the caller's signature was
    /// checked already, so the budget does not apply.
    pub async fn read(
        &self,
        headers: &http::HeaderMap,
        body: Incoming,
        limit: usize,
        authenticated: bool,
    ) -> Result<Bytes, BodyError> {
        let declared = crate::handle::content_length_opt(headers);
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(BodyError::TooLarge(limit));
        }
        let _permit = if authenticated {
            None
        } else {
            // Hold what the body may reach: its declared length, else the limit.
            let want = declared.map_or(limit, |n| n as usize).div_ceil(UNIT).max(1);
            let want = u32::try_from(want).map_err(|_| BodyError::TooLarge(limit))?;
            match tokio::time::timeout(BUDGET_WAIT, self.0.clone().acquire_many_owned(want)).await {
                Ok(Ok(p)) => Some(p),
                _ => return Err(BodyError::Busy),
            }
        };
        match http_body_util::Limited::new(body, limit).collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(BodyError::TooLarge(limit))
            }
            Err(_) => Err(BodyError::Failed),
        }
    }

    /// Units left, for tests.
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

/// Why a buffered edge's body (Function Compute, replication) was not read.
pub(crate) enum EdgeBodyError {
    /// The signature over the claimed payload hash does not hold.
    Auth(feiyun_iamapi::ApiError),
    /// Reading failed; `limit` is what this request was allowed.
    Read { error: BodyError, limit: usize },
    /// The body is not the one whose hash was signed.
    Payload(feiyun_iamapi::ApiError),
}

impl crate::App {
    /// Reads the body of an edge that buffers it. A signed request that claims its body's
    /// hash (`x-amz-content-sha256`) is authenticated on its headers first, and its body,
    /// up to `limit`, is then held to that hash; any other signed request has at most
    /// [`MAX_UNCLAIMED_BODY`] read for the signature check over it that follows; an
    /// unsigned body may reach `limit`. Returns the caller when it was authenticated here.
    pub(crate) async fn read_edge_body(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
        peer: std::net::SocketAddr,
        action_prefix: &str,
        audit: &feiyun_audit::Slot,
        limit: usize,
    ) -> Result<(Option<feiyun_iamapi::Authenticated>, Bytes), EdgeBodyError> {
        let signed = parts.headers.contains_key(http::header::AUTHORIZATION);
        let early = signed && parts.headers.contains_key("x-amz-content-sha256");
        let caller = if early {
            let c = self
                .query
                .sign_in_caller_head(parts, peer, action_prefix.into(), audit)
                .map_err(EdgeBodyError::Auth)?;
            Some(c)
        } else {
            None
        };
        let limit = if signed && !early {
            limit.min(MAX_UNCLAIMED_BODY)
        } else {
            limit
        };
        let body = self
            .preauth
            .read(&parts.headers, body, limit, caller.is_some())
            .await
            .map_err(|error| EdgeBodyError::Read { error, limit })?;
        if caller.is_some() {
            feiyun_iamapi::check_payload(&parts.headers, &body).map_err(EdgeBodyError::Payload)?;
        }
        Ok((caller, body))
    }
}

/// Why a signed admin request (`/replication/`, `/cluster/`) was refused before its API saw
/// it, in that API's JSON error form.
pub(crate) struct AdminRefusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The operation the audit and metrics record.
    pub op: &'static str,
}

impl crate::App {
    /// Authenticates a signed admin request and reads its body (at most `limit` bytes, and
    /// only once the signature over its claimed hash holds).
    /// `rejected` names refusals before authentication in the audit and metrics.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn signed_admin(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
        peer: std::net::SocketAddr,
        action_prefix: &str,
        audit: &feiyun_audit::Slot,
        limit: usize,
        rejected: &'static str,
    ) -> Result<(feiyun_iamapi::Authenticated, Bytes), AdminRefusal> {
        let refuse = |status: u16, code, message: String, op| AdminRefusal {
            status,
            code,
            message,
            op,
        };
        if !parts.headers.contains_key(http::header::AUTHORIZATION) {
            return Err(refuse(
                403,
                "MissingAuthenticationToken",
                format!(
                    "{} requests must be signed (SigV4)",
                    action_prefix.trim_end_matches(':')
                ),
                rejected,
            ));
        }
        let (caller, body) = match self
            .read_edge_body(parts, body, peer, action_prefix, audit, limit)
            .await
        {
            Ok(x) => x,
            Err(EdgeBodyError::Auth(e)) => {
                return Err(refuse(e.status.as_u16(), e.code, e.message, "AuthFailed"));
            }
            Err(EdgeBodyError::Payload(e)) => {
                return Err(refuse(e.status.as_u16(), e.code, e.message, rejected));
            }
            Err(EdgeBodyError::Read {
                error: BodyError::Busy,
                ..
            }) => {
                return Err(refuse(
                    503,
                    "ServiceUnavailable",
                    "too many unauthenticated request bodies in flight; retry".into(),
                    rejected,
                ));
            }
            Err(EdgeBodyError::Read { limit, .. }) => {
                return Err(refuse(
                    413,
                    "RequestEntityTooLarge",
                    format!("the body is over {} KiB", limit / 1024),
                    rejected,
                ));
            }
        };
        let caller = match caller {
            Some(c) => c,
            None => self
                .query
                .sign_in_caller(parts, &body, peer, action_prefix.into(), audit)
                .map_err(|e| refuse(e.status.as_u16(), e.code, e.message, "AuthFailed"))?,
        };
        Ok((caller, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_covers_many_max_size_forms() {
        let b = PreauthBudget::default();
        // 256 KiB query forms: a few hundred may be read at once, not unboundedly many.
        assert_eq!(b.available() * UNIT / (256 * 1024), 256);
    }
}
