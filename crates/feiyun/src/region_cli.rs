//! `feiyun region …` (peer regions), `feiyun replication …` (the worker's status, resyncs)
//! and `feiyun restore …` (point-in-time restore), over the region's `/replication/` API.

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
        /// The region name requests to the peer are signed for [default: the name the peer
        /// states when it refuses a scope naming another region]
        #[arg(long)]
        signing_region: Option<String>,
        /// A region of the same site (same account_id): it also receives this region's
        /// users, groups, roles, policies and access keys, so it accepts the same credentials
        #[arg(long)]
        site: bool,
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
    /// Lag (pending changes, oldest pending age), failures and throughput per destination,
    /// and resync progress
    Status,
    /// Re-send a bucket's existing versions and delete markers to a region (a new or rebuilt
    /// one, or after a failback); versions the region already holds are skipped
    Resync {
        bucket: String,
        /// The peer region to send to (every destination bucket there the rules name)
        #[arg(long = "to")]
        region: String,
        /// Only versions older than this: 90s, 30m, 12h, 7d
        #[arg(long, value_parser = parse_age)]
        older_than: Option<u64>,
        /// Return when the resync has finished, and fail if any version failed
        #[arg(long)]
        wait: bool,
    },
    /// Name the peer region a (replica) bucket belongs to: requests for it here are forwarded
    /// there while it is up, and served here while it is down
    Home {
        bucket: String,
        #[arg(long, required_unless_present = "clear")]
        region: Option<String>,
        /// Answer 307 Temporary Redirect to the home region instead of forwarding
        #[arg(long)]
        redirect: bool,
        /// Serve the bucket here again, whatever its home region's state
        #[arg(long, conflicts_with_all = ["region", "redirect"])]
        clear: bool,
    },
}

/// `90s`, `30m`, `12h`, `7d` (or plain seconds) → seconds.
fn parse_age(s: &str) -> Result<u64, String> {
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and one of s, m, h, d"))?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("{s:?}: the unit is one of s, m, h, d")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too long"))
}

fn print_resync(j: &Value) {
    outln!(
        "resync {} -> {}\t{}\tsent {} ({} bytes)\talready there {}\tfailed {}{}",
        j["bucket"].as_str().unwrap_or_default(),
        j["destination"].as_str().unwrap_or_default(),
        if j["finished"].is_null() {
            "running"
        } else {
            "finished"
        },
        j["sent"],
        j["bytes"],
        j["present"],
        j["failed"],
        j["error"]
            .as_str()
            .map(|e| format!("\terror: {e}"))
            .unwrap_or_default()
    );
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
            site,
        } => {
            let body = json!({
                "endpoint": url,
                "access_key": access_key,
                "secret_key": secret_key,
                "signing_region": signing_region,
                "site": site,
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
            for j in s["resyncs"].as_array().into_iter().flatten() {
                print_resync(j);
            }
            for h in s["homes"].as_array().into_iter().flatten() {
                outln!(
                    "home {} -> {}\t{}",
                    h["bucket"].as_str().unwrap_or_default(),
                    h["region"].as_str().unwrap_or_default(),
                    if h["home_up"] == true {
                        if h["redirect"] == true {
                            "redirecting"
                        } else {
                            "forwarding"
                        }
                    } else {
                        "home down: serving the replica here"
                    }
                );
            }
            let site = &s["site"];
            if site["peers"].as_array().is_some_and(|p| !p.is_empty()) {
                outln!(
                    "site identities\tlast sent {}\tlast received {}\tlast error: {}",
                    site["last_push"],
                    site["last_import"],
                    site["last_error"].as_str().unwrap_or("-")
                );
            }
            for p in s["regions"].as_array().into_iter().flatten() {
                print_region(p);
            }
        }
        ReplicationCommand::Home {
            bucket,
            region,
            redirect,
            clear,
        } => {
            let path = format!("/replication/home/{bucket}");
            let r = match (clear, region) {
                (false, Some(region)) => {
                    let body = json!({"region": region, "redirect": redirect});
                    call(&c, "PUT", &path, Bytes::from(body.to_string())).await?
                }
                _ => call(&c, "DELETE", &path, Bytes::new()).await?,
            };
            if args.conn.json {
                outln!("{r}");
            } else if r["home"].is_null() {
                outln!("{bucket} is served here");
            } else {
                outln!(
                    "{bucket}: home region {}, {}",
                    r["home"]["region"].as_str().unwrap_or_default(),
                    if r["home"]["redirect"] == true {
                        "redirected there while it is up"
                    } else {
                        "forwarded there while it is up"
                    }
                );
            }
        }
        ReplicationCommand::Resync {
            bucket,
            region,
            older_than,
            wait,
        } => {
            let body = json!({"bucket": bucket, "region": region, "older_than_secs": older_than});
            let started = call(
                &c,
                "POST",
                "/replication/resync",
                Bytes::from(body.to_string()),
            )
            .await?;
            let ids: Vec<(Value, Value, Value)> = started["resyncs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|j| {
                    (
                        j["bucket"].clone(),
                        j["destination"].clone(),
                        j["created"].clone(),
                    )
                })
                .collect();
            let mut jobs: Vec<Value> = started["resyncs"].as_array().cloned().unwrap_or_default();
            while wait && jobs.iter().any(|j| j["finished"].is_null()) {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                let s = call(&c, "GET", "/replication/status", Bytes::new()).await?;
                jobs = s["resyncs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|j| {
                        ids.contains(&(
                            j["bucket"].clone(),
                            j["destination"].clone(),
                            j["created"].clone(),
                        ))
                    })
                    .cloned()
                    .collect();
                if jobs.len() < ids.len() {
                    anyhow::bail!("the resync was replaced by another one");
                }
            }
            if args.conn.json {
                outln!("{}", json!({ "resyncs": jobs }));
            } else {
                for j in &jobs {
                    print_resync(j);
                }
            }
            if wait {
                let failed: u64 = jobs.iter().filter_map(|j| j["failed"].as_u64()).sum();
                if let Some(e) = jobs.iter().find_map(|j| j["error"].as_str()) {
                    anyhow::bail!("resync stopped: {e}");
                }
                if failed > 0 {
                    anyhow::bail!("resync finished with {failed} versions FAILED");
                }
            }
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    conn: Connection,
    bucket: String,
    /// The moment to go back to: RFC 3339 (2026-11-29T10:00:00Z) or milliseconds since the
    /// epoch
    #[arg(long, value_parser = parse_moment)]
    to_time: i64,
    /// Only keys under this prefix
    #[arg(long, default_value = "")]
    prefix: String,
    /// Write the state at that time into this bucket instead of the bucket itself
    #[arg(long)]
    target: Option<String>,
    /// List what would change, change nothing
    #[arg(long)]
    dry_run: bool,
}

fn parse_moment(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|e| format!("{s:?}: expected RFC 3339 (2026-11-29T10:00:00Z) or epoch ms: {e}"))
}

pub async fn run_restore(args: RestoreArgs) -> anyhow::Result<()> {
    let c = AdminClient::new(&args.conn)?;
    let body = json!({
        "bucket": args.bucket,
        "to_time_ms": args.to_time,
        "prefix": args.prefix,
        "target": args.target,
        "dry_run": args.dry_run,
    });
    let r = call(
        &c,
        "POST",
        "/replication/restore",
        Bytes::from(body.to_string()),
    )
    .await?;
    if args.conn.json {
        outln!("{r}");
    } else {
        for ch in r["changes"].as_array().into_iter().flatten() {
            let key = ch["key"].as_str().unwrap_or_default();
            match ch["action"].as_str() {
                Some("restore") => outln!(
                    "restore\t{key}\tversion {}\t{} bytes",
                    ch["version"].as_str().unwrap_or_default(),
                    ch["size"]
                ),
                Some("delete") => outln!("delete\t{key}"),
                _ => outln!("skip\t{key}\t{}", ch["reason"].as_str().unwrap_or_default()),
            }
        }
        let n = |f: &str| r[f].as_u64().unwrap_or(0);
        if n("changes_listed") < n("restored") + n("deleted") + n("skipped") {
            outln!(
                "(only the first {} changes are listed)",
                n("changes_listed")
            );
        }
        outln!(
            "{}{} keys: {} restored ({} bytes), {} deleted, {} unchanged, {} skipped, {} failed",
            if args.dry_run {
                "dry run, nothing changed: "
            } else {
                ""
            },
            n("keys"),
            n("restored"),
            n("bytes"),
            n("deleted"),
            n("unchanged"),
            n("skipped"),
            n("failed")
        );
    }
    let failed = r["failed"].as_u64().unwrap_or(0);
    if failed > 0 {
        anyhow::bail!("{failed} keys could not be restored (see the skip lines)");
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum BackupCommand {
    /// Take a snapshot of BUCKET's current objects into LOCATION (incremental: only new data
    /// is sent)
    Create {
        bucket: String,
        /// REGION/BUCKET[/PREFIX]: a bucket of a registered peer region (any S3 endpoint)
        #[arg(long = "to")]
        location: String,
    },
    /// The finished snapshots of BUCKET at LOCATION
    List {
        bucket: String,
        #[arg(long = "from")]
        location: String,
    },
    /// Re-read and check every chunk of BUCKET's snapshots (or one); fails on any problem
    Verify {
        bucket: String,
        #[arg(long = "from")]
        location: String,
        #[arg(long)]
        snapshot: Option<String>,
    },
    /// Restore a snapshot (the latest by default) of BUCKET into a bucket of this region
    Restore {
        bucket: String,
        #[arg(long = "from")]
        location: String,
        #[arg(long)]
        snapshot: Option<String>,
        /// The bucket to restore into [default: BUCKET]
        #[arg(long)]
        into: Option<String>,
    },
    /// Remove snapshots beyond the retention policy, then chunks no snapshot uses
    Prune {
        bucket: String,
        #[arg(long = "from")]
        location: String,
        /// Keep this many newest snapshots
        #[arg(long, default_value_t = 1)]
        keep_last: usize,
        /// Also keep every snapshot younger than this: 90s, 30m, 12h, 7d
        #[arg(long, value_parser = parse_age)]
        keep_within: Option<u64>,
        /// Unused chunks younger than this stay (a backup running meanwhile may need them)
        #[arg(long, value_parser = parse_age, default_value = "1h")]
        chunk_grace: u64,
    },
}

#[derive(clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: BackupCommand,
}

pub async fn run_backup(args: BackupArgs) -> anyhow::Result<()> {
    let c = AdminClient::new(&args.conn)?;
    let (verb, body) = match &args.command {
        BackupCommand::Create { bucket, location } => {
            ("create", json!({"bucket": bucket, "location": location}))
        }
        BackupCommand::List { bucket, location } => {
            ("list", json!({"bucket": bucket, "location": location}))
        }
        BackupCommand::Verify {
            bucket,
            location,
            snapshot,
        } => (
            "verify",
            json!({"bucket": bucket, "location": location, "snapshot": snapshot}),
        ),
        BackupCommand::Restore {
            bucket,
            location,
            snapshot,
            into,
        } => (
            "restore",
            json!({"bucket": bucket, "location": location, "snapshot": snapshot, "into": into}),
        ),
        BackupCommand::Prune {
            bucket,
            location,
            keep_last,
            keep_within,
            chunk_grace,
        } => (
            "prune",
            json!({"bucket": bucket, "location": location, "keep_last": keep_last,
                   "keep_within_secs": keep_within, "chunk_grace_secs": chunk_grace}),
        ),
    };
    let r = call(
        &c,
        "POST",
        &format!("/replication/backup/{verb}"),
        Bytes::from(body.to_string()),
    )
    .await?;
    if args.conn.json {
        outln!("{r}");
    }
    let n = |v: &Value, f: &str| v[f].as_u64().unwrap_or(0);
    match verb {
        "create" if !args.conn.json => outln!(
            "snapshot {}\t{} objects, {} bytes\t{} unchanged\t{} new chunks ({} bytes sent)",
            r["id"].as_str().unwrap_or_default(),
            n(&r, "objects"),
            n(&r, "bytes"),
            n(&r, "unchanged"),
            n(&r, "new_chunks"),
            n(&r, "new_bytes")
        ),
        "list" if !args.conn.json => {
            for s in r.as_array().into_iter().flatten() {
                outln!(
                    "{}\t{} objects\t{} bytes",
                    s["id"].as_str().unwrap_or_default(),
                    n(s, "objects"),
                    n(s, "bytes")
                );
            }
        }
        "verify" => {
            let problems = r["problems"].as_array().cloned().unwrap_or_default();
            if !args.conn.json {
                outln!(
                    "{} snapshots, {} objects, {} chunks ({} bytes) checked",
                    n(&r, "snapshots"),
                    n(&r, "objects"),
                    n(&r, "chunks"),
                    n(&r, "bytes")
                );
                for p in &problems {
                    outln!(
                        "BAD\t{}\t{}",
                        p[0].as_str().unwrap_or_default(),
                        p[1].as_str().unwrap_or_default()
                    );
                }
            }
            if !problems.is_empty() {
                anyhow::bail!("the backup has {} damaged or missing parts", problems.len());
            }
        }
        "restore" => {
            let failed = r["failed"].as_array().cloned().unwrap_or_default();
            if !args.conn.json {
                outln!(
                    "restored snapshot {}: {} objects, {} bytes",
                    r["snapshot"].as_str().unwrap_or_default(),
                    n(&r, "objects"),
                    n(&r, "bytes")
                );
                for f in &failed {
                    outln!(
                        "FAILED\t{}\t{}",
                        f[0].as_str().unwrap_or_default(),
                        f[1].as_str().unwrap_or_default()
                    );
                }
            }
            if !failed.is_empty() {
                anyhow::bail!("{} objects could not be restored", failed.len());
            }
        }
        "prune" if !args.conn.json => outln!(
            "kept {}, removed {} snapshots and {} chunks, {} kept by Object Lock",
            r["kept"].as_array().map_or(0, Vec::len),
            r["removed"].as_array().map_or(0, Vec::len),
            n(&r, "chunks_removed"),
            n(&r, "locked")
        ),
        _ => {}
    }
    Ok(())
}
