//! The `/cluster/` admin API behind `feiyun cluster`: list the nodes, drain one, remove
//! one. Requests arrive signed and authenticated by the edge; each names an IAM action
//! (`cluster:ListNodes`, `cluster:DrainNode`, `cluster:RemoveNode`) on
//! `arn:aws:cluster:::node/ID`, denied unless a policy allows it (root may do all).

use bytes::Bytes;
use feiyun_meta::MetaStore;
use serde_json::{Value, json};

use crate::{ClusterError, Membership, NodeView};

pub fn is_path(path: &str) -> bool {
    path == "/cluster" || path.starts_with("/cluster/")
}

#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        let status = match &e {
            ClusterError::NoSuchNode(_) => 404,
            ClusterError::NodeUp(_) => 409,
            ClusterError::Busy(_) | ClusterError::Meta(_) => 503,
            _ => 500,
        };
        let code = match &e {
            ClusterError::NoSuchNode(_) => "NoSuchNode",
            ClusterError::NodeUp(_) => "NodeUp",
            ClusterError::Busy(_) | ClusterError::Meta(_) => "ServiceUnavailable",
            _ => "InternalError",
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Who is calling and what they may do; the edge implements it over IAM.
pub trait Gate: Sync {
    fn authorize(&self, action: &str, resource: &str) -> Result<(), ApiError>;
}

pub struct ApiResponse {
    pub status: u16,
    pub body: Bytes,
    /// The action the request mapped to (metrics and the audit's operation).
    pub action: &'static str,
}

pub fn error_response(e: ApiError, action: &'static str) -> ApiResponse {
    ApiResponse {
        status: e.status,
        body: Bytes::from(json!({"__type": e.code, "message": e.message}).to_string()),
        action,
    }
}

fn arn(id: &str) -> String {
    format!("arn:aws:cluster:::node/{id}")
}

pub fn node_json(n: &NodeView) -> Value {
    let r = &n.record;
    json!({
        "id": r.id,
        "advertise": r.advertise,
        "zone": r.zone,
        "state": if n.up { "up" } else { "down" },
        "draining": r.draining,
        "version": r.version,
        "started_ms": r.started_ms,
        "heartbeat_ms": r.heartbeat_ms,
        "silent_secs": n.silent_secs,
        "capacity_bytes": r.capacity_bytes,
        "free_bytes": r.free_bytes,
        "blobs": r.blobs,
        "blob_bytes": r.blob_bytes,
        "repair_backlog": r.repair_backlog,
    })
}

/// Serves one request. `membership` is `None` on a region started without `--node-id`.
pub async fn handle<M: MetaStore>(
    membership: Option<&Membership<M>>,
    gate: &dyn Gate,
    method: &http::Method,
    path: &str,
) -> ApiResponse {
    let segs: Vec<&str> = path
        .trim_start_matches("/cluster")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let action = match (method.as_str(), segs.as_slice()) {
        ("GET", ["nodes"]) => "ListNodes",
        ("PUT" | "DELETE", ["nodes", _, "drain"]) => "DrainNode",
        ("DELETE", ["nodes", _]) => "RemoveNode",
        _ => {
            return error_response(
                ApiError::new(
                    404,
                    "UnknownOperationException",
                    format!("no cluster operation {method} {path}"),
                ),
                "Unknown",
            );
        }
    };
    let resource = arn(segs.get(1).copied().unwrap_or("*"));
    if let Err(e) = gate.authorize(&format!("cluster:{action}"), &resource) {
        return error_response(e, action);
    }
    let Some(m) = membership else {
        return error_response(
            ApiError::new(
                409,
                "NotClustered",
                "this region is a single process (started without --node-id)",
            ),
            action,
        );
    };
    let result: Result<Value, ClusterError> = match (method.as_str(), segs.as_slice()) {
        ("GET", ["nodes"]) => m.nodes().map(|nodes| {
            let lease = m
                .lease()
                .ok()
                .flatten()
                .filter(|l| l.expires_ms > crate::now_ms());
            json!({
                "answered_by": m.id(),
                "node_down_secs": m.down_secs(),
                "background_lease": lease.map(|l| json!({"holder": l.holder, "fence": l.fence})),
                "nodes": nodes.iter().map(node_json).collect::<Vec<_>>(),
            })
        }),
        ("PUT", ["nodes", id, "drain"]) => m.set_draining(id, true).await.map(|n| node_json(&n)),
        ("DELETE", ["nodes", id, "drain"]) => {
            m.set_draining(id, false).await.map(|n| node_json(&n))
        }
        ("DELETE", ["nodes", id]) => m.remove(id).await.map(|r| json!({"removed": r.id})),
        _ => Err(ClusterError::NoSuchNode(String::new())),
    };
    match result {
        Ok(v) => ApiResponse {
            status: 200,
            body: Bytes::from(v.to_string()),
            action,
        },
        Err(e) => error_response(e.into(), action),
    }
}
