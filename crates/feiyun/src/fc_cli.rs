//! `feiyun fc …`: deploy and run functions on a region over its `/fc/` API.

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::Value;

use crate::admin::{AdminClient, Connection};

#[derive(clap::Subcommand)]
pub enum FcCommand {
    /// Create a function, or replace its $LATEST code and the settings given
    Deploy {
        name: String,
        /// The WebAssembly: a WASI 0.2 component exporting wasi:http/incoming-handler, or a
        /// WASI command module speaking CGI
        #[arg(long)]
        wasm: std::path::PathBuf,
        /// Memory limit per invocation: 128M, 1G, or bytes
        #[arg(long, value_parser = parse_size)]
        memory: Option<u64>,
        /// Time limit per invocation: 30s, 500ms, 2m
        #[arg(long, value_parser = parse_duration_ms)]
        timeout: Option<u64>,
        /// An environment variable for the function (repeatable); replaces all of them
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// CPU fuel per invocation (instructions, roughly)
        #[arg(long)]
        fuel: Option<u64>,
        /// Concurrent requests per instance
        #[arg(long)]
        max_concurrency: Option<u32>,
        /// Instances kept warm while idle
        #[arg(long)]
        min_instances: Option<u32>,
        #[arg(long)]
        max_instances: Option<u32>,
        /// Whether /fc/invoke/NAME answers unsigned requests
        #[arg(long)]
        public: Option<bool>,
        #[arg(long)]
        description: Option<String>,
        /// A host (or host:port) a component may send HTTP requests to (repeatable);
        /// replaces the list; none by default
        #[arg(long = "allow-host", value_name = "HOST")]
        allow_hosts: Vec<String>,
        /// The execution role (a name or ARN; its trust policy must allow the service
        /// principal fc.amazonaws.com): invocations get temporary credentials of it and the
        /// region's endpoint in AWS_* variables; "" removes it
        #[arg(long)]
        role: Option<String>,
    },
    /// Functions of this account
    List,
    /// A function's settings, versions, aliases, instances and totals
    Describe { name: String },
    /// Invoke a function; its response body goes to stdout
    Invoke {
        name: String,
        /// A version number or an alias (default $LATEST)
        #[arg(long)]
        qualifier: Option<String>,
        /// The request body; @FILE reads a file, - reads stdin
        #[arg(long)]
        data: Option<String>,
        /// Print the status line and response headers to stderr
        #[arg(long, short)]
        verbose: bool,
    },
    /// Invocation records and the functions' logs, oldest first
    Logs {
        name: String,
        /// Keep printing new invocations
        #[arg(long)]
        follow: bool,
        /// Most records per page
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Delete a function with all its versions, aliases and logs
    Delete { name: String },
    /// Publish $LATEST as a new immutable version
    Publish {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Add or replace a trigger: object events of a bucket (--bucket), a cron schedule
    /// (--cron, UTC, 5 fields or 6 with seconds first), or an HTTP route on a host name of
    /// its own (--host, --path)
    Trigger {
        name: String,
        id: String,
        #[arg(long, conflicts_with = "cron")]
        bucket: Option<String>,
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value = "")]
        suffix: String,
        /// S3 event names (repeatable) [default: ObjectCreated:*]
        #[arg(long = "event")]
        events: Vec<String>,
        /// What the function receives: the object's bytes, or the S3 event JSON
        #[arg(long, value_parser = ["object", "event"])]
        input: Option<String>,
        /// Write each 2xx response body to this bucket, under --output-prefix + the key
        #[arg(long)]
        output_bucket: Option<String>,
        #[arg(long, default_value = "")]
        output_prefix: String,
        #[arg(long)]
        cron: Option<String>,
        /// An HTTP route: requests with this Host reach the function (point its DNS name at
        /// the region)
        #[arg(long, conflicts_with_all = ["bucket", "cron"])]
        host: Option<String>,
        /// With --host: only requests under this path prefix [default: /]
        #[arg(long, requires = "host")]
        path: Option<String>,
        /// The version or alias to invoke
        #[arg(long)]
        qualifier: Option<String>,
        /// Attempts before a dead-letter record
        #[arg(long)]
        max_attempts: Option<u32>,
    },
    /// Remove a trigger
    Untrigger { name: String, id: String },
    /// Events and firings that failed every attempt
    DeadLetters { name: String },
    /// Point an alias at a version (roll out or roll back), or delete it
    Alias {
        name: String,
        alias: String,
        /// The version it points to
        version: Option<u32>,
        #[arg(long, conflicts_with = "version")]
        delete: bool,
    },
}

#[derive(clap::Args)]
pub struct FcArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: FcCommand,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (128M, 1G, or bytes)"))
}

fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not a duration (30s, 500ms, 2m)");
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else {
        return Err(bad());
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(bad)
}

/// One call of the `/fc/` API; the JSON answer, or the API's error as one line.
async fn call(
    c: &AdminClient,
    method: &str,
    path: &str,
    query: &[(&str, String)],
    body: Bytes,
) -> anyhow::Result<Value> {
    let (status, _, body) = c.send("fc", method, path, query, Vec::new(), body).await?;
    crate::admin::json_answer(status, &body)
}

pub async fn run(args: FcArgs) -> anyhow::Result<()> {
    let c = AdminClient::new(&args.conn)?;
    let json_out = args.conn.json;
    match args.command {
        FcCommand::Deploy {
            name,
            wasm,
            memory,
            timeout,
            env,
            fuel,
            max_concurrency,
            min_instances,
            max_instances,
            public,
            description,
            allow_hosts,
            role,
        } => {
            let code =
                std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
            let mut q: Vec<(&str, String)> = Vec::new();
            let mut opt = |k: &'static str, v: Option<String>| {
                if let Some(v) = v {
                    q.push((k, v));
                }
            };
            opt("memory", memory.map(|v| v.to_string()));
            opt("timeout-ms", timeout.map(|v| v.to_string()));
            opt("fuel", fuel.map(|v| v.to_string()));
            opt("max-concurrency", max_concurrency.map(|v| v.to_string()));
            opt("min-instances", min_instances.map(|v| v.to_string()));
            opt("max-instances", max_instances.map(|v| v.to_string()));
            opt("public", public.map(|v| v.to_string()));
            opt("description", description);
            opt("role", role);
            for h in allow_hosts {
                q.push(("allow-host", h));
            }
            for e in env {
                if !e.contains('=') {
                    bail!("--env takes NAME=VALUE, not {e:?}");
                }
                q.push(("env", e));
            }
            let f = call(
                &c,
                "PUT",
                &format!("/fc/functions/{name}"),
                &q,
                Bytes::from(code),
            )
            .await?;
            if json_out {
                outln!("{f}");
            } else {
                outln!(
                    "deployed {} ({} bytes, sha256 {})",
                    f["arn"].as_str().unwrap_or(&name),
                    f["code_size"],
                    f["code_sha256"].as_str().unwrap_or_default()
                );
            }
        }
        FcCommand::List => {
            let r = call(&c, "GET", "/fc/functions", &[], Bytes::new()).await?;
            if json_out {
                outln!("{r}");
            } else {
                for f in r["Functions"].as_array().into_iter().flatten() {
                    outln!(
                        "{}\t{}M\t{}ms\t{}\t{}",
                        f["FunctionName"].as_str().unwrap_or_default(),
                        f["MemorySize"],
                        f["Timeout"],
                        f["LastModified"].as_str().unwrap_or_default(),
                        f["CodeSha256"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        FcCommand::Describe { name } => {
            let f = call(
                &c,
                "GET",
                &format!("/fc/functions/{name}"),
                &[],
                Bytes::new(),
            )
            .await?;
            if json_out {
                outln!("{f}");
            } else {
                outln!("{}", serde_json::to_string_pretty(&f)?);
            }
        }
        FcCommand::Invoke {
            name,
            qualifier,
            data,
            verbose,
        } => {
            let body = match data.as_deref() {
                None => Vec::new(),
                Some("-") => {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
                    v
                }
                Some(d) => match d.strip_prefix('@') {
                    Some(path) => {
                        std::fs::read(path).with_context(|| format!("cannot read {path}"))?
                    }
                    None => d.as_bytes().to_vec(),
                },
            };
            let q: Vec<(&str, String)> = qualifier.map(|q| ("qualifier", q)).into_iter().collect();
            let (status, headers, body) = c
                .send(
                    "fc",
                    "POST",
                    &format!("/fc/functions/{name}/invocations"),
                    &q,
                    Vec::new(),
                    Bytes::from(body),
                )
                .await?;
            if verbose {
                eprintln!("{status}");
                for (k, v) in &headers {
                    eprintln!("{k}: {}", v.to_str().unwrap_or_default());
                }
            }
            let failed = headers.get("x-fc-function-error").is_some()
                || headers.get("x-amzn-errortype").is_some();
            if failed {
                // Function errors and API errors share the JSON error shape.
                let status = if status.is_success() {
                    hyper::StatusCode::BAD_GATEWAY
                } else {
                    status
                };
                crate::admin::json_answer(status, &body)?;
            }
            use std::io::Write;
            std::io::stdout().write_all(&body)?;
            if !status.is_success() {
                bail!("the function answered {status}");
            }
        }
        FcCommand::Logs {
            name,
            follow,
            limit,
        } => {
            let mut after: Option<String> = None;
            loop {
                let mut q = vec![("limit", limit.to_string())];
                if let Some(a) = &after {
                    q.push(("after", a.clone()));
                }
                let r = call(
                    &c,
                    "GET",
                    &format!("/fc/functions/{name}/logs"),
                    &q,
                    Bytes::new(),
                )
                .await?;
                let list = r["Invocations"].as_array().cloned().unwrap_or_default();
                for i in &list {
                    print_invocation(i, json_out);
                }
                if let Some(last) = list.last().and_then(|i| i["id"].as_str()) {
                    after = Some(last.to_owned());
                }
                if list.len() as u32 >= limit {
                    continue;
                }
                if !follow {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        FcCommand::Trigger {
            name,
            id,
            bucket,
            prefix,
            suffix,
            events,
            input,
            output_bucket,
            output_prefix,
            cron,
            host,
            path,
            qualifier,
            max_attempts,
        } => {
            let mut body = serde_json::Map::new();
            let mut set = |k: &str, v: Value| {
                if !v.is_null() {
                    body.insert(k.to_owned(), v);
                }
            };
            match (&bucket, &cron, &host) {
                (Some(_), None, None) => {
                    set("prefix", Value::from(prefix));
                    set("suffix", Value::from(suffix));
                    if !events.is_empty() {
                        set("events", Value::from(events));
                    }
                    set("input", input.map(Value::from).unwrap_or(Value::Null));
                    set(
                        "output_bucket",
                        output_bucket.map(Value::from).unwrap_or(Value::Null),
                    );
                    set("output_prefix", Value::from(output_prefix));
                }
                (None, Some(_), None) | (None, None, Some(_)) => {}
                _ => bail!(
                    "give --bucket (object events), --cron (a schedule) or --host (an HTTP route)"
                ),
            }
            set("host", host.map(Value::from).unwrap_or(Value::Null));
            set("path", path.map(Value::from).unwrap_or(Value::Null));
            set("bucket", bucket.map(Value::from).unwrap_or(Value::Null));
            set("schedule", cron.map(Value::from).unwrap_or(Value::Null));
            set(
                "qualifier",
                qualifier.map(Value::from).unwrap_or(Value::Null),
            );
            set(
                "max_attempts",
                max_attempts.map(Value::from).unwrap_or(Value::Null),
            );
            call(
                &c,
                "PUT",
                &format!("/fc/functions/{name}/triggers/{id}"),
                &[],
                Bytes::from(Value::Object(body).to_string()),
            )
            .await?;
            if !json_out {
                outln!("trigger {id} of {name} set");
            }
        }
        FcCommand::Untrigger { name, id } => {
            call(
                &c,
                "DELETE",
                &format!("/fc/functions/{name}/triggers/{id}"),
                &[],
                Bytes::new(),
            )
            .await?;
            if !json_out {
                outln!("trigger {id} of {name} removed");
            }
        }
        FcCommand::DeadLetters { name } => {
            let r = call(
                &c,
                "GET",
                &format!("/fc/functions/{name}/dead-letters"),
                &[],
                Bytes::new(),
            )
            .await?;
            for d in r["DeadLetters"].as_array().into_iter().flatten() {
                if json_out {
                    outln!("{d}");
                } else {
                    outln!(
                        "{} trigger={} attempts={} {}/{} {}: {}",
                        d["id"].as_str().unwrap_or_default(),
                        d["trigger"].as_str().unwrap_or_default(),
                        d["attempts"],
                        d["bucket"].as_str().unwrap_or("-"),
                        d["key"].as_str().unwrap_or("-"),
                        d["event"].as_str().unwrap_or("timer"),
                        d["error"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        FcCommand::Delete { name } => {
            call(
                &c,
                "DELETE",
                &format!("/fc/functions/{name}"),
                &[],
                Bytes::new(),
            )
            .await?;
            if !json_out {
                outln!("deleted {name}");
            }
        }
        FcCommand::Publish { name, description } => {
            let q: Vec<(&str, String)> = description
                .map(|d| ("description", d))
                .into_iter()
                .collect();
            let r = call(
                &c,
                "POST",
                &format!("/fc/functions/{name}/versions"),
                &q,
                Bytes::new(),
            )
            .await?;
            if json_out {
                outln!("{r}");
            } else {
                outln!("{name} version {}", r["Version"]);
            }
        }
        FcCommand::Alias {
            name,
            alias,
            version,
            delete,
        } => {
            let path = format!("/fc/functions/{name}/aliases/{alias}");
            if delete {
                call(&c, "DELETE", &path, &[], Bytes::new()).await?;
                if !json_out {
                    outln!("deleted alias {alias} of {name}");
                }
            } else {
                let Some(v) = version else {
                    bail!("give the VERSION the alias points to, or --delete");
                };
                call(
                    &c,
                    "PUT",
                    &path,
                    &[("version", v.to_string())],
                    Bytes::new(),
                )
                .await?;
                if !json_out {
                    outln!("{name}:{alias} -> version {v}");
                }
            }
        }
    }
    Ok(())
}

fn print_invocation(i: &Value, json_out: bool) {
    if json_out {
        outln!("{i}");
        return;
    }
    let started = i["started_ms"].as_i64().unwrap_or(0);
    let when = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(started) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    outln!(
        "{when} {} v{} {} {} {}us{}{}",
        i["id"].as_str().unwrap_or_default(),
        i["version"].as_str().unwrap_or_default(),
        i["status"],
        i["result"].as_str().unwrap_or_default(),
        i["duration_us"],
        if i["cold"].as_bool() == Some(true) {
            " cold"
        } else {
            ""
        },
        i["error"]
            .as_str()
            .map(|e| format!(" error: {e}"))
            .unwrap_or_default()
    );
    for line in i["log"].as_str().unwrap_or_default().lines() {
        outln!("  | {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("128M"), Ok(128 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert!(parse_duration_ms("30").is_err());
    }
}
