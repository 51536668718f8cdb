//! The `feiyun` binary: parses the command line and hands over to the library crates.

/// `println!` for the command's output: when the reader has gone (`feiyun … | head`), the
/// command ends quietly instead of panicking on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            crate::output_failed(e)
        }
    }};
}

mod admin;
mod bench;
mod cluster_cli;
mod fc_cli;
mod iam_cli;
mod kms_cli;
mod migrate_cli;
mod migrate_live_cli;
mod region_cli;
mod sigv4;
mod sql_cli;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

// Small requests allocate and free many short-lived buffers across worker threads; glibc's
// allocator spent ~15 % of a 4 KiB GET profile in malloc/free and consolidation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use feiyun_common::{ConfigOverrides, CredentialSource};

#[derive(Parser)]
#[command(name = "feiyun", version, about = "A cloud region in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a region: S3 endpoint, metrics and health checks on one listener.
    Server(ServerArgs),
    /// Load generator for any S3 endpoint (PUT/GET ops/s, latency, throughput).
    Bench(bench::BenchArgs),
    /// Users, access keys and MFA on a running region (over its IAM API).
    Iam(iam_cli::IamArgs),
    /// Verify or read the audit log of a data directory (server running or stopped).
    Audit(iam_cli::AuditArgs),
    /// KMS keys on a running region: list, what depends on a key, deletion.
    Kms(kms_cli::KmsArgs),
    /// Functions on a running region: deploy, invoke, logs, versions and aliases.
    Fc(fc_cli::FcArgs),
    /// Peer regions this region replicates to: add, list, remove.
    Region(region_cli::RegionArgs),
    /// The nodes of a multi-node region: status, drain, remove.
    Cluster(cluster_cli::ClusterArgs),
    /// Cross-region replication: status (lag, failures, throughput) and resync.
    Replication(region_cli::ReplicationArgs),
    /// Point-in-time restore: bring a bucket (or a prefix, or a copy in another bucket) back
    /// to what it held at a moment, from its versions; --dry-run lists what would change.
    Restore(region_cli::RestoreArgs),
    /// Move data in: copy a directory or any S3 bucket into the region, verified,
    /// resumable and incremental; `migrate verify` lists every difference.
    Migrate(Box<migrate_cli::MigrateArgs>),
    /// Backups: encrypted, deduplicated, incremental snapshots of a bucket in a peer region's
    /// bucket; create, list, verify, restore, prune.
    Backup(region_cli::BackupArgs),
    /// SQL over the region's buckets: run a statement (an argument, --file or stdin) and
    /// print its result as a table, --json or --csv; `sql history`.
    Sql(sql_cli::SqlArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where data and metadata live [default: ./feiyun-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9000]
    #[arg(long)]
    listen: Option<String>,
    /// TOML configuration file
    #[arg(long)]
    config: Option<PathBuf>,
    /// Region name [default: us-east-1]
    #[arg(long)]
    region: Option<String>,
    /// PEM certificate chain for HTTPS (with --tls-key)
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS (with --tls-cert)
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a certificate generated once under the data directory (tls/cert.pem)
    #[arg(long)]
    tls_self_signed: bool,
    /// A second listener for HTTPS; without it, --listen itself serves HTTPS when TLS is set
    #[arg(long)]
    tls_listen: Option<String>,
    /// Keep metadata in a PostgreSQL, CockroachDB or YugabyteDB database
    /// (postgres://user:password@host:port/db[?sslmode=require]) instead of the embedded
    /// engine [env: FEIYUN_META_URL]
    #[arg(long, value_name = "URL")]
    meta_url: Option<String>,
    /// Join the region sharing --meta-url as this node (stable across restarts: a
    /// StatefulSet pod name) [env: FEIYUN_NODE_ID]
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// HOST:PORT the region's other nodes reach this one at [env: FEIYUN_ADVERTISE]
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// The failure domain (rack, room, site) this node is in [env: FEIYUN_ZONE]
    #[arg(long)]
    zone: Option<String>,
    /// IP:PORT to serve node-to-node traffic on (default: the --advertise port), signed
    /// with FEIYUN_CLUSTER_SECRET [env: FEIYUN_CLUSTER_LISTEN]
    #[arg(long, value_name = "IP:PORT")]
    cluster_listen: Option<String>,
    /// IP:PORT of the PostgreSQL-protocol listener for SQL (psql, JDBC, Grafana), or `off`
    /// [default: 127.0.0.1:9432] [env: FEIYUN_SQL_LISTEN]
    #[arg(long, value_name = "IP:PORT")]
    sql_listen: Option<String>,
}

/// Ends the process when its output cannot be written: quietly with success when the reader
/// closed the pipe (it has read what it wanted), else with one line on stderr.
fn output_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("feiyun: cannot write the output: {e}");
    std::process::exit(1);
}

fn main() -> std::process::ExitCode {
    // With RUST_BACKTRACE set, every library error value would capture a backtrace —
    // wasmtime makes one each time a component's store is dropped, 3 % of a warm function's
    // CPU. Panics keep their backtraces; RUST_LIB_BACKTRACE=1 brings the others back.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet (the runtime is built below).
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    // Compiling a function allocates on this thread and on rayon's (wasmtime compiles in
    // parallel there); each thread's mimalloc heap keeps what it freed until it runs again.
    feiyun_fc::runtime::set_reclaimer(|| {
        // SAFETY: mi_collect only hands mimalloc's free pages back to the system.
        let collect = || unsafe { libmimalloc_sys::mi_collect(true) };
        collect();
        rayon::broadcast(|_| collect());
    });
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("feiyun: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => run_server(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Iam(args) => iam_cli::run(args).await,
            Command::Audit(args) => iam_cli::audit(args).await,
            Command::Kms(args) => kms_cli::run(args).await,
            Command::Fc(args) => fc_cli::run(args).await,
            Command::Region(args) => region_cli::run_region(args).await,
            Command::Cluster(args) => cluster_cli::run(args).await,
            Command::Replication(args) => region_cli::run_replication(args).await,
            Command::Restore(args) => region_cli::run_restore(args).await,
            Command::Backup(args) => region_cli::run_backup(args).await,
            Command::Migrate(args) => migrate_cli::run(*args).await,
            Command::Sql(args) => sql_cli::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("feiyun: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    init_logging();
    let file = match &args.config {
        Some(path) => ConfigOverrides::from_file(path)?,
        None => ConfigOverrides::default(),
    };
    let env = ConfigOverrides::from_env(|k| std::env::var(k).ok())?;
    let flags = ConfigOverrides {
        data_dir: args.data_dir,
        listen: args.listen,
        region: args.region,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        tls_self_signed: args.tls_self_signed.then_some(true),
        tls_listen: args.tls_listen,
        meta_url: args.meta_url.map(feiyun_common::Secret::new),
        node_id: args.node_id,
        advertise: args.advertise,
        zone: args.zone,
        cluster_listen: args.cluster_listen,
        sql_listen: args.sql_listen,
        ..Default::default()
    };
    let config = flags.over(env.over(file)).resolve()?;
    let server = feiyun_server::Server::start(config.clone())
        .await
        .context("cannot start the server")?;
    let addr = server.local_addr();
    // The first stdout line is part of the command-line contract: scripts wait for it. A
    // script that read it and closed the pipe must not take the server down: write errors
    // here are ignored.
    use std::io::Write as _;
    let mut out = std::io::stdout();
    for (i, endpoint) in server.endpoints().iter().enumerate() {
        if i == 0 {
            let _ = writeln!(out, "S3 endpoint: {endpoint}");
        } else {
            let _ = writeln!(out, "S3 endpoint (also): {endpoint}");
        }
    }
    if let Some(ca) = server.self_signed_cert() {
        let _ = writeln!(
            out,
            "TLS certificate (self-signed; trust it with --ca-bundle): {}",
            ca.display()
        );
    }
    let (creds, source) = server.credentials();
    if *source == CredentialSource::Generated {
        let _ = writeln!(out, "Root access key: {}", creds.access_key);
        let _ = writeln!(out, "Root secret key: {}", creds.secret_key);
        let _ = writeln!(
            out,
            "(generated once and stored in {}; set FEIYUN_ROOT_ACCESS_KEY/FEIYUN_ROOT_SECRET_KEY to choose your own)",
            config
                .data_dir
                .join(feiyun_common::credentials::CREDENTIALS_FILE)
                .display()
        );
    }
    tracing::info!(%addr, data_dir = %config.data_dir.display(), region = %config.region, "ready");
    server.serve(shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FEIYUN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,s3s=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
