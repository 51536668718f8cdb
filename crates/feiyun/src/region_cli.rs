//! `feiyun region …` (peer regions) and `feiyun replication …` (the worker's status), over
//! the region's `/replication/` API.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::admin::{AdminClient, Connection};

#[derive(clap::Subcommand)]
pub enum RegionCommand {
    /// Register a peer region (another Feiyun, or any S3 endpoint), or replace its settings
    Add {
        name: String,
        /// The peer's S3 endpoint, http(s)://HOST[:PORT] (`--endpoint` names the region
        /// being configured, as for every admin verb)
        #[arg(long)]
        url: String,
        #[arg(long)]
        access_key: String,
        #[arg(long)]
        secret_key: String,
        /// The region name requests to the peer are signed for [default: us-east-1]
        #[arg(long)]
        signing_region: Option<String>,
    },
    /// The peer regions, their health and last error
    List,
    /// Forget a peer region (refused while a replication rule names it)
    Remove { name: String },
}

#[derive(clap::Args)]
pub struct RegionArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: RegionCommand,
}

#[derive(clap::Subcommand)]
pub enum ReplicationCommand {
    /// Lag (pending changes, oldest pending age), failures and throughput per destination
    Status,
}

#[derive(clap::Args)]
pub struct ReplicationArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: ReplicationCommand,
}

async fn call(c: &AdminClient, method: &str, path: &str, body: Bytes) -> anyhow::Result<Value> {
    let (status, _, body) = c
        .send("replication", method, path, &[], Vec::new(), body)
        .await?;
    crate::admin::json_answer(status, &body)
}

fn print_region(r: &Value) {
    outln!(
        "{}\t{}\t{}\t{}",
        r["name"].as_str().unwrap_or_default(),
        r["endpoint"].as_str().unwrap_or_default(),
        if r["up"].as_bool() == Some(true) {
            "up"
        } else {
            "down"
        },
        r["last_error"].as_str().unwrap_or("-")
    );
}

pub async fn run_region(args: RegionArgs) -> anyhow::Result<()> {
    let c = AdminClient::new(&args.conn)?;
    let json_out = args.conn.json;
    match args.command {
        RegionCommand::Add {
            name,
            url,
            access_key,
            secret_key,
            signing_region,
        } => {
            let body = json!({
                "endpoint": url,
                "access_key": access_key,
                "secret_key": secret_key,
                "signing_region": signing_region,
            });
            let r = call(
                &c,
                "PUT",
                &format!("/replication/regions/{name}"),
                Bytes::from(body.to_string()),
            )
            .await?;
            if json_out {
                outln!("{r}");
            } else {
                outln!(
                    "region {} at {}",
                    name,
                    r["endpoint"].as_str().unwrap_or_default()
                );
            }
        }
        RegionCommand::List => {
            let r = call(&c, "GET", "/replication/regions", Bytes::new()).await?;
            if json_out {
                outln!("{r}");
            } else {
                for p in r["regions"].as_array().into_iter().flatten() {
                    print_region(p);
                }
            }
        }
        RegionCommand::Remove { name } => {
            call(
                &c,
                "DELETE",
                &format!("/replication/regions/{name}"),
                Bytes::new(),
            )
            .await?;
            if !json_out {
                outln!("removed region {name}");
            }
        }
    }
    Ok(())
}

pub async fn run_replication(args: ReplicationArgs) -> anyhow::Result<()> {
    let c = AdminClient::new(&args.conn)?;
    match args.command {
        ReplicationCommand::Status => {
            let s = call(&c, "GET", "/replication/status", Bytes::new()).await?;
            if args.conn.json {
                outln!("{s}");
                return Ok(());
            }
            outln!(
                "pending: {} changes, {} bytes, oldest {:.1} s",
                s["pending_events"],
                s["pending_bytes"],
                s["oldest_pending_ms"].as_f64().unwrap_or(0.0) / 1000.0
            );
            if let Some(d) = s["destinations"].as_object() {
                for (label, t) in d {
                    outln!(
                        "{label}\tcompleted {}\tfailed {}\t{:.1} obj/s\t{:.2} MiB/s\tlast error: {}",
                        t["completed"],
                        t["failed"],
                        t["objects_per_second"].as_f64().unwrap_or(0.0),
                        t["bytes_per_second"].as_f64().unwrap_or(0.0) / 1048576.0,
                        t["last_error"].as_str().unwrap_or("-")
                    );
                }
            }
            for p in s["regions"].as_array().into_iter().flatten() {
                print_region(p);
            }
        }
    }
    Ok(())
}
