//! `feiyun migrate live start|status|finish BUCKET`: the read-through cut-over, over the
//! region's `/migrate/live/` API. The region does the work; this only asks and reports.

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::admin::{AdminClient, Connection};

#[derive(clap::Subcommand)]
pub enum LiveCommand {
    /// Make BUCKET serve what it does not hold yet from the legacy store, and copy the rest
    /// in the background
    Start(StartArgs),
    /// The copier's progress and whether the migration may be finished
    Status(BucketArgs),
    /// End read-through once a complete pass found every legacy object here
    Finish(FinishArgs),
}

#[derive(clap::Args)]
pub struct StartArgs {
    /// The region's bucket (it must exist)
    bucket: String,
    /// The legacy bucket: `s3://LEGACY[/PREFIX]`
    #[arg(long, value_name = "S3_URL")]
    from: String,
    /// The legacy store: its endpoint, keys, signing region and addressing
    #[command(flatten)]
    source_at: crate::migrate_cli::SourceAt,
    /// Also replay every write and delete to the legacy store, so a rollback loses nothing
    #[arg(long)]
    write_through: bool,
    #[command(flatten)]
    conn: Connection,
}

#[derive(clap::Args)]
pub struct BucketArgs {
    bucket: String,
    #[command(flatten)]
    conn: Connection,
}

#[derive(clap::Args)]
pub struct FinishArgs {
    bucket: String,
    /// Finish even though the copier has not completed a clean pass (keys not copied yet
    /// become missing)
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    conn: Connection,
}

/// One call of `/migrate/live/BUCKET`: its JSON answer, or the API's error as the error.
async fn call(
    conn: &Connection,
    method: &str,
    bucket: &str,
    query: &[(&str, String)],
    body: Option<Value>,
) -> anyhow::Result<Value> {
    if bucket.is_empty() || bucket.contains('/') || bucket.contains('?') {
        bail!("{bucket:?} is not a bucket name");
    }
    let (headers, body) = match body {
        Some(doc) => (
            vec![("content-type", "application/json".into())],
            Bytes::from(doc.to_string()),
        ),
        None => (Vec::new(), Bytes::new()),
    };
    let path = format!("/migrate/live/{bucket}");
    let (status, _, answer) = AdminClient::new(conn)?
        .send("migrate", method, &path, query, headers, body)
        .await?;
    crate::admin::json_answer(status, &answer)
}

pub async fn run(cmd: LiveCommand) -> anyhow::Result<()> {
    match cmd {
        LiveCommand::Start(a) => start(a).await,
        LiveCommand::Status(a) => {
            let r = call(&a.conn, "GET", &a.bucket, &[], None).await?;
            if a.conn.json {
                outln!("{r}");
            } else {
                print_status(&r);
            }
            Ok(())
        }
        LiveCommand::Finish(a) => {
            let query: Vec<(&str, String)> = if a.force {
                vec![("force", String::new())]
            } else {
                Vec::new()
            };
            let r = call(&a.conn, "DELETE", &a.bucket, &query, None).await?;
            if a.conn.json {
                outln!("{r}");
            } else {
                outln!(
                    "{}: live migration finished; {} objects were copied in. The bucket no longer reads the legacy store.",
                    a.bucket,
                    r["copied"]
                );
            }
            Ok(())
        }
    }
}

async fn start(a: StartArgs) -> anyhow::Result<()> {
    let (bucket, prefix) = crate::migrate_cli::parse_s3(&a.from)
        .filter(|(b, _)| !b.is_empty())
        .context("--from must be s3://LEGACY_BUCKET[/PREFIX]")?;
    let s = a
        .source_at
        .resolve("give the legacy store's --source-endpoint (or FEIYUN_SOURCE_ENDPOINT)")?;
    if s.session_token.is_some() {
        bail!(
            "the region keeps the legacy credentials for the whole migration: give a long-term access key, not a session"
        );
    }
    let doc = json!({
        "endpoint": s.url,
        "bucket": bucket,
        "prefix": prefix,
        "region": s.region,
        "virtual_hosted": a.source_at.source_virtual_hosted,
        "access_key": s.access_key,
        "secret_key": s.secret_key,
        "write_through": a.write_through,
    });
    let r = call(&a.conn, "PUT", &a.bucket, &[], Some(doc)).await?;
    if a.conn.json {
        outln!("{r}");
    } else {
        outln!(
            "{}: serving from the region, reading through to {} at {}{}; the copier has started. Follow it with `feiyun migrate live status {}`.",
            a.bucket,
            r["source"].as_str().unwrap_or_default(),
            r["endpoint"].as_str().unwrap_or_default(),
            if a.write_through {
                " (writes and deletes also go to the legacy store)"
            } else {
                ""
            },
            a.bucket
        );
    }
    Ok(())
}

fn print_status(r: &Value) {
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    outln!(
        "bucket:        {}",
        r["bucket"].as_str().unwrap_or_default()
    );
    outln!(
        "legacy:        {} at {}{}",
        r["source"].as_str().unwrap_or_default(),
        r["endpoint"].as_str().unwrap_or_default(),
        if r["write_through"].as_bool() == Some(true) {
            " (write-through)"
        } else {
            ""
        }
    );
    outln!(
        "copied:        {} objects, {:.1} MiB",
        n("copied"),
        n("bytes") as f64 / (1u64 << 20) as f64
    );
    let cursor = r["cursor"]
        .as_str()
        .map(|c| format!(" (this pass is at {c:?})"));
    outln!(
        "passes:        {} complete{}",
        n("passes"),
        cursor.unwrap_or_default()
    );
    outln!(
        "last pass:     {} already here, {} deleted here, {} copied, {} failed",
        n("present"),
        n("deleted_here"),
        n("pass_copied"),
        n("pass_failed")
    );
    for e in r["errors"].as_array().into_iter().flatten() {
        outln!("error:         {}", e.as_str().unwrap_or_default());
    }
    for e in r["write_through_errors"].as_array().into_iter().flatten() {
        outln!("not written through: {}", e.as_str().unwrap_or_default());
    }
    outln!(
        "finish:        {}",
        if r["ready_to_finish"].as_bool() == Some(true) {
            "ready (a complete pass found every legacy object here)"
        } else {
            "not yet (waiting for a pass that copies nothing and fails nothing)"
        }
    );
}
