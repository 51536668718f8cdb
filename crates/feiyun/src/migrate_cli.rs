//! `feiyun migrate SOURCE DEST` and `feiyun migrate verify SOURCE DEST`: parses where the
//! objects come from and go to, and hands over to `feiyun-migrate`.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use feiyun_migrate::client::{EndpointConfig, S3Client};
use feiyun_migrate::{Dest, Journal, Limits, Options, Progress, Source};
use sha2::Digest as _;

use crate::admin::Connection;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct MigrateArgs {
    #[command(subcommand)]
    command: Option<MigrateCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand)]
enum MigrateCommand {
    /// Re-check a migration: list every difference (missing, extra, size, checksum,
    /// metadata, tags) between SOURCE and DEST; exits non-zero when there is one
    Verify(EndsArgs),
    /// Serve a bucket from a legacy S3 store while it is copied in (read-through cut-over)
    #[command(subcommand)]
    Live(crate::migrate_live_cli::LiveCommand),
}

#[derive(clap::Args)]
struct EndsArgs {
    /// A directory, `s3://BUCKET[/PREFIX]` at --source-endpoint, or `s3://` for every bucket
    #[arg(required = true)]
    source: Option<String>,
    /// `s3://BUCKET[/PREFIX]` in the region (`s3://` with a SOURCE of `s3://`)
    #[arg(required = true)]
    dest: Option<String>,
    #[command(flatten)]
    source_at: SourceAt,
    /// PEM bundle of the CAs to trust for an https:// source
    #[arg(long)]
    source_ca_bundle: Option<PathBuf>,
    /// Follow symbolic links in a directory source (loops are reported, not followed)
    #[arg(long)]
    follow_symlinks: bool,
    /// Comparisons (HEADs, reads for checksums) at once
    #[arg(long, default_value_t = 16)]
    checkers: usize,
    /// Also the bucket's settings (versioning, object lock, encryption, CORS, tags,
    /// lifecycle, policy) and each object's retention and legal hold; bucket to bucket,
    /// from an S3 source
    #[arg(long)]
    bucket_config: bool,
    /// Every version of a versioned S3 source, delete markers included, oldest first
    #[arg(long)]
    all_versions: bool,
    #[command(flatten)]
    conn: Connection,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    ends: EndsArgs,
    /// Keep the journal only in this file [default: in the region, cached in
    /// ~/.local/state/feiyun/migrate/<hash of SOURCE and DEST>]
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Objects copied at once
    #[arg(long, default_value_t = 16)]
    transfers: usize,
    /// Part size of multipart copies (objects above it go in parts)
    #[arg(long, default_value = "16M")]
    part_size: String,
    /// Parts of one object in flight at once
    #[arg(long, default_value_t = 4)]
    part_concurrency: usize,
    /// Compare content (a CRC64NVME read from the source), not only size and fingerprint
    #[arg(long)]
    checksum: bool,
    /// Delete what has disappeared at the source
    #[arg(long)]
    delete: bool,
    /// Print what would be copied and deleted; change nothing
    #[arg(long)]
    dry_run: bool,
    /// Most bytes per second read from the source (`100M`, `1G`)
    #[arg(long)]
    bandwidth: Option<String>,
    /// Most requests per second sent to the source
    #[arg(long)]
    source_qps: Option<u32>,
    /// Also the source's identities (another Feiyun): managed policies, groups, users, their
    /// attachments, inline policies and memberships; access keys are reported, never copied
    #[arg(long)]
    iam: bool,
    /// Also the identities in a MinIO export (`mc admin cluster iam export`): policies,
    /// users with their own access keys and secrets, groups, and their policy mappings
    #[arg(long, value_name = "FILE")]
    iam_export: Option<PathBuf>,
    /// Where to write the failures, one JSON object a line [default: the journal's path
    /// with `.failures`]
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    match args.command {
        Some(MigrateCommand::Verify(ends)) => verify(ends).await,
        Some(MigrateCommand::Live(cmd)) => crate::migrate_live_cli::run(cmd).await,
        None => migrate(args.run).await,
    }
}

/// `s3://bucket/prefix` as (bucket, prefix ending in `/` unless empty).
pub(crate) fn parse_s3(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let mut prefix = prefix.to_owned();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    Some((bucket.to_owned(), prefix))
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// Where an S3 source is and how to sign for it: a migration's source, or a live
/// migration's legacy store.
#[derive(clap::Args)]
pub(crate) struct SourceAt {
    /// The source's S3 endpoint (http:// or https://) [env: FEIYUN_SOURCE_ENDPOINT]
    #[arg(long, value_name = "URL")]
    source_endpoint: Option<String>,
    /// A profile in ~/.aws/credentials for the source
    #[arg(long)]
    source_profile: Option<String>,
    /// [env: FEIYUN_SOURCE_ACCESS_KEY]
    #[arg(long)]
    source_access_key: Option<String>,
    /// [env: FEIYUN_SOURCE_SECRET_KEY]
    #[arg(long)]
    source_secret_key: Option<String>,
    /// The source's signing region [env: FEIYUN_SOURCE_REGION] [default: us-east-1]
    #[arg(long)]
    source_region: Option<String>,
    /// Address the source's buckets as BUCKET.host (AWS, OSS) rather than host/BUCKET
    #[arg(long)]
    pub(crate) source_virtual_hosted: bool,
}

/// A source's endpoint, keys and signing region, as resolved from flags and environment.
pub(crate) struct SourceAccess {
    pub(crate) url: String,
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) session_token: Option<String>,
    pub(crate) region: String,
}

impl SourceAt {
    /// The flags, else `FEIYUN_SOURCE_*` (and a profile for the keys); `missing` is the
    /// error when no endpoint is given.
    pub(crate) fn resolve(&self, missing: &'static str) -> anyhow::Result<SourceAccess> {
        let url = self
            .source_endpoint
            .clone()
            .or_else(|| env("FEIYUN_SOURCE_ENDPOINT"))
            .context(missing)?;
        let (access_key, secret_key, session_token) = source_credentials(
            self.source_access_key.as_deref(),
            self.source_secret_key.as_deref(),
            self.source_profile.as_deref(),
        )?;
        let region = self
            .source_region
            .clone()
            .or_else(|| env("FEIYUN_SOURCE_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        Ok(SourceAccess {
            url,
            access_key,
            secret_key,
            session_token,
            region,
        })
    }
}

fn source_client(a: &EndsArgs) -> anyhow::Result<S3Client> {
    let s = a
        .source_at
        .resolve("an s3:// SOURCE needs --source-endpoint (or FEIYUN_SOURCE_ENDPOINT)")?;
    Ok(S3Client::new(EndpointConfig {
        url: s.url,
        access_key: s.access_key,
        secret_key: s.secret_key,
        session_token: s.session_token,
        region: s.region,
        virtual_hosted: a.source_at.source_virtual_hosted,
        tls: crate::admin::tls_config(a.source_ca_bundle.as_deref())?,
        allow: None,
    })?)
}

/// The source's keys: the flags, else `FEIYUN_SOURCE_*`, else a profile.
fn source_credentials(
    access_key: Option<&str>,
    secret_key: Option<&str>,
    profile: Option<&str>,
) -> anyhow::Result<(String, String, Option<String>)> {
    Ok(
        match (
            access_key
                .map(str::to_owned)
                .or_else(|| env("FEIYUN_SOURCE_ACCESS_KEY")),
            secret_key
                .map(str::to_owned)
                .or_else(|| env("FEIYUN_SOURCE_SECRET_KEY")),
        ) {
            (Some(ak), Some(sk)) => (ak, sk, env("FEIYUN_SOURCE_SESSION_TOKEN")),
            (None, None) => match profile {
                Some(p) => crate::admin::profile_credentials(p)?,
                None => bail!(
                    "no source credentials: give --source-access-key and --source-secret-key, FEIYUN_SOURCE_ACCESS_KEY/FEIYUN_SOURCE_SECRET_KEY, or --source-profile"
                ),
            },
            _ => bail!("give both the source's access key and its secret key"),
        },
    )
}

fn dest_client(c: &Connection) -> anyhow::Result<S3Client> {
    let (url, bundle) = crate::admin::endpoint_of(c)?;
    let (access_key, secret_key, session_token) = crate::admin::credentials(c.profile.as_deref())?;
    Ok(S3Client::new(EndpointConfig {
        url,
        access_key,
        secret_key,
        session_token,
        region: env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into()),
        virtual_hosted: false,
        tls: crate::admin::tls_config(bundle.as_deref())?,
        allow: None,
    })?)
}

/// The (source, destination) pairs of a command: one, or one per bucket for `s3://`.
async fn pairs(a: &EndsArgs) -> anyhow::Result<Vec<(Source, Dest)>> {
    let (src, dst) = (
        a.source.as_deref().unwrap_or_default(),
        a.dest.as_deref().unwrap_or_default(),
    );
    let Some((dbucket, dprefix)) = parse_s3(dst) else {
        bail!("DEST must be s3://BUCKET[/PREFIX] in the region, not {dst}");
    };
    let dclient = dest_client(&a.conn)?;
    let dest = |bucket: String, prefix: String| Dest {
        client: dclient.clone(),
        bucket,
        prefix,
    };
    match parse_s3(src) {
        None => {
            let root = PathBuf::from(src);
            if !root.is_dir() {
                bail!("SOURCE {src} is not a directory (nor s3://BUCKET)");
            }
            if dbucket.is_empty() {
                bail!("DEST names no bucket");
            }
            Ok(vec![(
                Source::Dir {
                    root,
                    follow_symlinks: a.follow_symlinks,
                },
                dest(dbucket, dprefix),
            )])
        }
        Some((sbucket, sprefix)) if sbucket.is_empty() => {
            if !dbucket.is_empty() {
                bail!(
                    "with SOURCE s3:// (every bucket), DEST is s3:// too: each bucket keeps its name"
                );
            }
            let client = source_client(a)?;
            let buckets = feiyun_migrate::source::list_buckets(&client).await?;
            let _ = sprefix;
            Ok(buckets
                .into_iter()
                .map(|b| {
                    (
                        Source::S3 {
                            client: client.clone(),
                            bucket: b.clone(),
                            prefix: String::new(),
                        },
                        dest(b, String::new()),
                    )
                })
                .collect())
        }
        Some((sbucket, sprefix)) => {
            if dbucket.is_empty() {
                bail!("DEST names no bucket");
            }
            Ok(vec![(
                Source::S3 {
                    client: source_client(a)?,
                    bucket: sbucket,
                    prefix: sprefix,
                },
                dest(dbucket, dprefix),
            )])
        }
    }
}

fn journal_path(state: &Option<PathBuf>, source: &str, dest: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = state {
        return Ok(p.clone());
    }
    let dir = env("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .context("no HOME to keep the journal under: give --state FILE")?
        .join("feiyun/migrate");
    Ok(dir.join(format!("{}.journal", journal_id(source, dest))))
}

/// The name of a migration's journal, locally and in the region.
fn journal_id(source: &str, dest: &str) -> String {
    hex::encode(&sha2::Sha256::digest(format!("{source}\n{dest}"))[..8])
}

async fn migrate(a: RunArgs) -> anyhow::Result<()> {
    let part_size = feiyun_migrate::limit::parse_size(&a.part_size)
        .filter(|p| (5 << 20..=5 << 30).contains(p))
        .context("--part-size must be between 5M and 5G")?;
    let bandwidth = match &a.bandwidth {
        Some(b) => Some(
            feiyun_migrate::limit::parse_size(b)
                .filter(|b| *b > 0)
                .with_context(|| format!("--bandwidth {b} is not a rate like 100M"))?,
        ),
        None => None,
    };
    // A MinIO export is read and checked whole before anything else is touched.
    let minio = match &a.iam_export {
        Some(file) => Some(feiyun_migrate::iam_minio::read_export(file)?),
        None => None,
    };
    let list = pairs(&a.ends).await?;
    for (source, dest) in &list {
        if let Source::S3 {
            client,
            bucket,
            prefix,
        } = source
            && client.url().trim_end_matches('/') == dest.client.url().trim_end_matches('/')
            && *bucket == dest.bucket
            && (prefix.starts_with(&dest.prefix) || dest.prefix.starts_with(prefix.as_str()))
        {
            bail!("SOURCE and DEST overlap in s3://{bucket}: the copies would be copied again");
        }
    }
    if a.ends.bucket_config {
        whole_buckets(&list)?;
    }
    if a.ends.all_versions {
        if a.delete {
            bail!(
                "--delete is not available with --all-versions: a history is only ever appended to"
            );
        }
        s3_source(&list)?;
    }
    if list.len() > 1 && (a.state.is_some() || a.report.is_some()) {
        bail!("--state and --report name one migration's files: leave them out with SOURCE s3://");
    }
    let progress = if a.ends.conn.json {
        Progress::Off
    } else if std::io::stderr().is_terminal() {
        Progress::Bar
    } else {
        Progress::Lines
    };
    let opts = Options {
        transfers: a.transfers.max(1),
        checkers: a.ends.checkers.max(1),
        part_size,
        multipart_threshold: part_size,
        part_concurrency: a.part_concurrency.max(1),
        checksum: a.checksum,
        delete: a.delete,
        dry_run: a.dry_run,
        bucket_config: a.ends.bucket_config,
        all_versions: a.ends.all_versions,
        limits: Limits::new(bandwidth, a.source_qps),
        progress,
    };
    let mut failed = 0u64;
    // Identity failures are printed with the identities, not in the objects' report.
    let mut identities_failed = 0u64;
    if a.iam {
        identities_failed += copy_identities(&list, a.dry_run, a.ends.conn.json).await?;
    }
    if let Some(export) = &minio {
        identities_failed +=
            import_minio_identities(export, &list, a.dry_run, a.ends.conn.json).await?;
    }
    let mut reports = Vec::new();
    for (source, dest) in list {
        let (sd, dd) = (source.describe(), dest.describe());
        let path = journal_path(&a.state, &sd, &dd)?;
        // Without --state the journal is kept in the region (the file is its cache), so a
        // run from another machine, or after this one's disk is lost, resumes all the same.
        let journal = match &a.state {
            Some(_) => Journal::open(&path, &sd, &dd)?,
            None => {
                let region = feiyun_migrate::journal::RegionJournal::new(
                    &dest_client(&a.ends.conn)?,
                    &journal_id(&sd, &dd),
                );
                Journal::open_in_region(&path, &sd, &dd, region).await?
            }
        };
        let kept = journal.clone();
        let summary = feiyun_migrate::migrate(source, dest, journal, opts.clone()).await;
        let flushed = kept.flush().await;
        drop(kept);
        let summary = summary?;
        let report = a
            .report
            .clone()
            .unwrap_or_else(|| path.with_extension("failures"));
        let mut text = String::new();
        for f in &summary.failures {
            text.push_str(&serde_json::to_string(f)?);
            text.push('\n');
        }
        std::fs::write(&report, text)
            .with_context(|| format!("cannot write the report {}", report.display()))?;
        flushed.context(
            "the region did not keep the end of this migration's journal (the objects are copied; the next run recognises them at the destination)",
        )?;
        let bad = summary.failed + summary.problems;
        failed += bad;
        if a.ends.conn.json {
            let mut v = serde_json::to_value(&summary)?;
            v["source"] = sd.clone().into();
            v["dest"] = dd.clone().into();
            v["journal"] = path.display().to_string().into();
            v["report"] = report.display().to_string().into();
            outln!("{v}");
        } else {
            for line in &summary.plan {
                outln!("{line}");
            }
            if !a.dry_run {
                for line in &summary.settings {
                    outln!("{line}");
                }
            }
            let mib = summary.bytes as f64 / 1048576.0;
            let secs = summary.seconds.max(0.001);
            let inside = match summary.server_side {
                0 => String::new(),
                n => format!(", {n} of them inside the region"),
            };
            outln!(
                "{sd} -> {dd}: {} copied{inside} ({mib:.1} MiB) in {:.1} s ({:.0} objects/s, {:.1} MiB/s), {} unchanged, {} deleted, {} failed",
                summary.copied,
                summary.seconds,
                summary.copied as f64 / secs,
                mib / secs,
                summary.skipped,
                summary.deleted,
                bad
            );
            if bad > 0 {
                for f in summary.failures.iter().take(10) {
                    outln!("  failed: {}: {}", f.key, f.error);
                }
                outln!("  every failure: {}", report.display());
            }
        }
        reports.push(report);
    }
    let identities = match identities_failed {
        0 => String::new(),
        n => format!("{n} identity change(s) failed (listed above)"),
    };
    if failed > 0 {
        bail!(
            "{failed} object(s) were not copied; see {}{}",
            reports
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if identities.is_empty() {
                String::new()
            } else {
                format!("; {identities}")
            }
        );
    }
    if !identities.is_empty() {
        bail!("{identities}");
    }
    Ok(())
}

/// `--iam-export FILE`: a MinIO deployment's identities. Answers how many failed.
async fn import_minio_identities(
    export: &feiyun_migrate::iam_minio::MinioExport,
    list: &[(Source, Dest)],
    dry_run: bool,
    json: bool,
) -> anyhow::Result<u64> {
    let Some((_, dest)) = list.first() else {
        bail!("--iam-export needs a destination");
    };
    let s = feiyun_migrate::iam_minio::import(export, &dest.client, dry_run).await?;
    report_identities(&s, dry_run, json, "not imported")
}

/// `--iam`: the source's identities, once for the whole run. Answers how many failed.
async fn copy_identities(
    list: &[(Source, Dest)],
    dry_run: bool,
    json: bool,
) -> anyhow::Result<u64> {
    let Some((source @ Source::S3 { client, .. }, dest)) = list.first() else {
        bail!("--iam needs an S3 source whose endpoint also answers IAM (another Feiyun)");
    };
    // Nothing is created here before the source has shown it can be read.
    source.probe(&Limits::default(), false).await?;
    let s = feiyun_migrate::iam::copy_iam(client, &dest.client, dry_run).await?;
    report_identities(
        &s,
        dry_run,
        json,
        "not copied (IAM cannot give a secret back; issue new keys)",
    )
}

/// Prints what an identity copy did; answers how many failed.
fn report_identities(
    s: &feiyun_migrate::iam::IamSummary,
    dry_run: bool,
    json: bool,
    not_copied: &str,
) -> anyhow::Result<u64> {
    if json {
        outln!("{}", serde_json::json!({ "iam": s }));
    } else {
        for c in &s.created {
            outln!("{} {c}", if dry_run { "would create" } else { "created" });
        }
        for e in &s.existing {
            outln!("exists already, left as it is: {e}");
        }
        for k in &s.keys_not_copied {
            outln!("{not_copied}: {k}");
        }
        for m in &s.mfa_not_copied {
            outln!("not copied (IAM cannot give a device's seed back; enrol it anew): {m}");
        }
        for f in &s.failures {
            outln!("  failed: {}: {}", f.key, f.error);
        }
        outln!(
            "identities: {} created, {} existing, {} attachments and memberships, {} failed",
            s.created.len(),
            s.existing.len(),
            s.links,
            s.failures.len()
        );
    }
    Ok(s.failures.len() as u64)
}

/// Settings belong to a bucket: `--bucket-config` copies bucket to bucket, never between
/// prefixes (a lifecycle filter or a policy's resources would mean other keys there).
fn whole_buckets(list: &[(Source, Dest)]) -> anyhow::Result<()> {
    for (source, dest) in list {
        match source {
            Source::S3 { prefix, .. } if prefix.is_empty() && dest.prefix.is_empty() => {}
            Source::S3 { .. } => bail!(
                "--bucket-config copies a whole bucket: give SOURCE and DEST as s3://BUCKET, without a prefix"
            ),
            Source::Dir { .. } => bail!("--bucket-config needs an S3 bucket as SOURCE"),
        }
    }
    Ok(())
}

fn s3_source(list: &[(Source, Dest)]) -> anyhow::Result<()> {
    if list.iter().any(|(s, _)| matches!(s, Source::Dir { .. })) {
        bail!("--all-versions needs a versioned S3 bucket as SOURCE");
    }
    Ok(())
}

async fn verify(a: EndsArgs) -> anyhow::Result<()> {
    let mut total = 0usize;
    let list = pairs(&a).await?;
    if a.bucket_config {
        whole_buckets(&list)?;
    }
    if a.all_versions {
        s3_source(&list)?;
    }
    for (source, dest) in list {
        let (sd, dd) = (source.describe(), dest.describe());
        let mut diffs = Vec::new();
        if a.bucket_config {
            diffs =
                feiyun_migrate::verify_bucket_config(&source, &dest, &Limits::default()).await?;
        }
        diffs.extend(match a.all_versions {
            true => {
                feiyun_migrate::verify_histories(source, dest, Limits::default(), a.bucket_config)
                    .await?
            }
            false => {
                feiyun_migrate::verify(source, dest, a.checkers, Limits::default(), a.bucket_config)
                    .await?
            }
        });
        total += diffs.len();
        if a.conn.json {
            outln!(
                "{}",
                serde_json::json!({"source": sd, "dest": dd, "differences": diffs})
            );
        } else {
            for d in &diffs {
                if d.detail.is_empty() {
                    outln!("{}\t{}", d.kind, d.key);
                } else {
                    outln!("{}\t{}\t{}", d.kind, d.key, d.detail);
                }
            }
            outln!("{sd} -> {dd}: {} difference(s)", diffs.len());
        }
    }
    if total > 0 {
        bail!("{total} difference(s) between the source and the region");
    }
    Ok(())
}
