//! `feiyun cluster …`: the nodes of a multi-node region, over its `/cluster/` API.

use bytes::Bytes;
use serde_json::Value;

use crate::admin::{AdminClient, Connection};

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// The region's nodes: up, down or draining, address, zone, disk, blobs
    Status,
    /// Move a node's data to the other nodes and place nothing new on it
    Drain {
        id: String,
        /// Stop draining: the node takes new data again
        #[arg(long)]
        cancel: bool,
    },
    /// Forget a node that is down (a node that is up is refused: stop it first)
    Remove { id: String },
}

#[derive(clap::Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: ClusterCommand,
}

async fn call(c: &AdminClient, method: &str, path: &str) -> anyhow::Result<Value> {
    let (status, _, body) = c
        .send("cluster", method, path, &[], Vec::new(), Bytes::new())
        .await?;
    crate::admin::json_answer(status, &body)
}

/// A node id goes into the request path as one segment.
fn checked_id(id: &str) -> anyhow::Result<&str> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        anyhow::bail!("{id:?} is not a node id (a-z, 0-9 and '-')");
    }
    Ok(id)
}

fn state(n: &Value) -> String {
    let up = n["state"].as_str().unwrap_or("down");
    match (up, n["draining"].as_bool() == Some(true)) {
        ("up", true) => "draining".into(),
        ("up", false) => "up".into(),
        (_, true) => "down (draining)".into(),
        (s, false) => s.into(),
    }
}

fn gib(bytes: &Value) -> String {
    format!(
        "{:.1}",
        bytes.as_u64().unwrap_or(0) as f64 / (1u64 << 30) as f64
    )
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let c = AdminClient::new(&args.conn)?;
    let json_out = args.conn.json;
    match args.command {
        ClusterCommand::Status => {
            let r = call(&c, "GET", "/cluster/nodes").await?;
            if json_out {
                outln!("{r}");
                return Ok(());
            }
            outln!(
                "NODE\tSTATE\tADDRESS\tZONE\tVERSION\tSILENT_S\tBLOBS\tBLOB_GIB\tFREE_GIB/DISK_GIB"
            );
            for n in r["nodes"].as_array().into_iter().flatten() {
                outln!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}/{}",
                    n["id"].as_str().unwrap_or_default(),
                    state(n),
                    n["advertise"].as_str().unwrap_or_default(),
                    n["zone"].as_str().unwrap_or("-"),
                    n["version"].as_str().unwrap_or_default(),
                    n["silent_secs"],
                    n["blobs"],
                    gib(&n["blob_bytes"]),
                    gib(&n["free_bytes"]),
                    gib(&n["capacity_bytes"]),
                );
            }
        }
        ClusterCommand::Drain { id, cancel } => {
            let path = format!("/cluster/nodes/{}/drain", checked_id(&id)?);
            let r = call(&c, if cancel { "DELETE" } else { "PUT" }, &path).await?;
            if json_out {
                outln!("{r}");
            } else {
                outln!("{}\t{}", id, state(&r));
            }
        }
        ClusterCommand::Remove { id } => {
            let path = format!("/cluster/nodes/{}", checked_id(&id)?);
            let r = call(&c, "DELETE", &path).await?;
            if json_out {
                outln!("{r}");
            } else {
                outln!("removed {id}");
            }
        }
    }
    Ok(())
}
