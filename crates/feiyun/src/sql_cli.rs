//! `feiyun sql "SELECT …"` (or `-f FILE`, or the statement on stdin) over the region's
//! `POST /sql`: an aligned table on a terminal, `--json` (one object per row) or `--csv`;
//! `feiyun sql history`.

use std::io::{IsTerminal, Read, Write};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::Value;

use crate::admin::{AdminClient, Connection};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SqlArgs {
    #[command(subcommand)]
    command: Option<SqlCommand>,
    /// The statement; read from --file or stdin when absent
    statement: Option<String>,
    /// Read the statement from a file
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<std::path::PathBuf>,
    /// Print CSV (a header row, then the rows)
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    #[command(flatten)]
    conn: Connection,
}

#[derive(clap::Subcommand)]
enum SqlCommand {
    /// The account's recent statements: text, caller, start, duration, rows, bytes scanned,
    /// status, error
    History(HistoryArgs),
}

#[derive(clap::Args)]
struct HistoryArgs {
    /// How many, newest first
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[command(flatten)]
    conn: Connection,
}

pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    match args.command {
        Some(SqlCommand::History(h)) => history(h).await,
        None => execute(args).await,
    }
}

fn statement_text(args: &SqlArgs) -> anyhow::Result<String> {
    if let Some(s) = &args.statement {
        if args.file.is_some() {
            bail!("give the statement or --file, not both");
        }
        return Ok(s.clone());
    }
    if let Some(f) = &args.file {
        return std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()));
    }
    if std::io::stdin().is_terminal() {
        bail!("no statement: give one as an argument, with --file, or on stdin");
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("cannot read the statement from stdin")?;
    Ok(s)
}

async fn execute(args: SqlArgs) -> anyhow::Result<()> {
    let text = statement_text(&args)?;
    if text.trim().is_empty() {
        bail!("the statement is empty");
    }
    let (status, _, body) = AdminClient::new(&args.conn)?
        .send(
            "sql",
            "POST",
            "/sql",
            &[],
            vec![("content-type", "application/sql".into())],
            Bytes::from(text),
        )
        .await?;
    let answer = crate::admin::json_answer(status, &body)?;
    let mut out = std::io::stdout().lock();
    let written = if args.conn.json {
        write_json(&mut out, &answer)
    } else if args.csv {
        write_csv(&mut out, &answer)
    } else {
        write_table(&mut out, &answer)
    };
    written.unwrap_or_else(|e| crate::output_failed(e));
    if answer["truncated"].as_bool() == Some(true) {
        eprintln!(
            "feiyun: the result was cut at {} rows (the inline limit); COPY it to a bucket for all of it",
            answer["row_count"]
        );
    }
    Ok(())
}

fn columns(answer: &Value) -> Vec<String> {
    answer["columns"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn rows(answer: &Value) -> &[Value] {
    answer["rows"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn write_json(out: &mut impl Write, answer: &Value) -> std::io::Result<()> {
    let cols = columns(answer);
    for r in rows(answer) {
        let mut obj = serde_json::Map::new();
        if let Some(cells) = r.as_array() {
            for (c, v) in cols.iter().zip(cells) {
                obj.insert(c.clone(), v.clone());
            }
        }
        writeln!(out, "{}", Value::Object(obj))?;
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn write_csv(out: &mut impl Write, answer: &Value) -> std::io::Result<()> {
    let cols = columns(answer);
    writeln!(
        out,
        "{}",
        cols.iter()
            .map(|c| csv_field(c))
            .collect::<Vec<_>>()
            .join(",")
    )?;
    for r in rows(answer) {
        let cells: Vec<String> = r
            .as_array()
            .map(|a| a.iter().map(|v| csv_field(&text_of(v))).collect())
            .unwrap_or_default();
        writeln!(out, "{}", cells.join(","))?;
    }
    Ok(())
}

/// An aligned table: numbers right-aligned, the row count (or the command tag) after it.
fn write_table(out: &mut impl Write, answer: &Value) -> std::io::Result<()> {
    let cols = columns(answer);
    if cols.is_empty() {
        return writeln!(out, "{}", answer["tag"].as_str().unwrap_or("OK"));
    }
    let cells: Vec<Vec<(String, bool)>> = rows(answer)
        .iter()
        .map(|r| {
            r.as_array()
                .map(|a| a.iter().map(|v| (text_of(v), v.is_number())).collect())
                .unwrap_or_default()
        })
        .collect();
    let mut width: Vec<usize> = cols.iter().map(|c| c.chars().count()).collect();
    for r in &cells {
        for (i, (s, _)) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(s.chars().count());
            }
        }
    }
    let line = |out: &mut dyn Write, parts: Vec<String>| writeln!(out, " {} ", parts.join(" | "));
    line(
        out,
        cols.iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:^w$}"))
            .collect(),
    )?;
    writeln!(
        out,
        "{}",
        width
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    )?;
    for r in &cells {
        line(
            out,
            r.iter()
                .zip(&width)
                .map(|((s, num), w)| {
                    if *num {
                        format!("{s:>w$}")
                    } else {
                        format!("{s:<w$}")
                    }
                })
                .collect(),
        )?;
    }
    let n = cells.len();
    writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" })
}

async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let (status, _, body) = AdminClient::new(&args.conn)?
        .send(
            "sql",
            "GET",
            "/sql/history",
            &[("limit", args.limit.to_string())],
            vec![],
            Bytes::new(),
        )
        .await?;
    let answer = crate::admin::json_answer(status, &body)?;
    let mut out = std::io::stdout().lock();
    let queries = answer["queries"].as_array().cloned().unwrap_or_default();
    let written = (|| -> std::io::Result<()> {
        if args.conn.json {
            for q in &queries {
                writeln!(out, "{q}")?;
            }
            return Ok(());
        }
        for q in &queries {
            let start = time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(q["start_ms"].as_i64().unwrap_or(0)) * 1_000_000,
            )
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
            writeln!(
                out,
                "{start}  {:<9} {:>8} ms  {:>8} rows  {:>12} bytes  {}",
                q["status"].as_str().unwrap_or_default(),
                q["duration_ms"],
                q["rows"],
                q["bytes_scanned"],
                q["caller"].as_str().unwrap_or_default(),
            )?;
            writeln!(
                out,
                "    {}",
                q["text"].as_str().unwrap_or_default().replace('\n', " ")
            )?;
            if let Some(e) = q["error"].as_str().filter(|e| !e.is_empty()) {
                writeln!(out, "    error: {e}")?;
            }
        }
        Ok(())
    })();
    written.unwrap_or_else(|e| crate::output_failed(e));
    Ok(())
}
