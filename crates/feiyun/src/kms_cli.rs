//! `feiyun kms …`: the operator's view of the built-in KMS over its own API — keys with their
//! state, what depends on a key, and deletion that shows what it will erase first.

use anyhow::bail;
use serde_json::{Value, json};

use crate::admin::{AdminClient, Connection};

#[derive(clap::Subcommand)]
pub enum KmsCommand {
    /// List keys with their state, aliases and current material version
    ListKeys,
    /// Which buckets depend on a key: bucket defaults and object versions sealed under it
    Dependents { key: String },
    /// Schedule a key's deletion after showing what depends on it; refuses while anything
    /// does unless --force (deleting the key makes those objects unreadable for good)
    ScheduleDeletion {
        key: String,
        /// Waiting period, 7 to 30 days
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args)]
pub struct KmsArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: KmsCommand,
}

pub async fn run(args: KmsArgs) -> anyhow::Result<()> {
    let c = AdminClient::new(&args.conn)?;
    let json_out = args.conn.json;
    match args.command {
        KmsCommand::ListKeys => {
            let keys = c.kms("ListKeys", json!({})).await?;
            let aliases = c.kms("ListAliases", json!({})).await?;
            let mut out = Vec::new();
            for k in keys["Keys"].as_array().into_iter().flatten() {
                let id = k["KeyId"].as_str().unwrap_or_default();
                let d = c.kms("DescribeKey", json!({"KeyId": id})).await?;
                let names: Vec<&str> = aliases["Aliases"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| a["TargetKeyId"].as_str() == Some(id))
                    .filter_map(|a| a["AliasName"].as_str())
                    .collect();
                out.push(json!({
                    "KeyId": id,
                    "State": d["KeyMetadata"]["KeyState"],
                    "Aliases": names,
                    "Description": d["KeyMetadata"]["Description"],
                }));
            }
            if json_out {
                outln!("{}", Value::Array(out));
            } else {
                for k in &out {
                    outln!(
                        "{}\t{}\t{}\t{}",
                        k["KeyId"].as_str().unwrap_or_default(),
                        k["State"].as_str().unwrap_or_default(),
                        k["Aliases"]
                            .as_array()
                            .map(|a| a
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(","))
                            .unwrap_or_default(),
                        k["Description"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        KmsCommand::Dependents { key } => {
            let d = c
                .kms("FeiyunListKeyDependents", json!({"KeyId": key}))
                .await?;
            print_dependents(&d, json_out);
        }
        KmsCommand::ScheduleDeletion { key, days, force } => {
            let d = c
                .kms("FeiyunListKeyDependents", json!({"KeyId": key}))
                .await?;
            let users = d["Buckets"].as_array().map_or(0, Vec::len);
            if users > 0 {
                print_dependents(&d, false);
                if !force {
                    bail!(
                        "{users} bucket(s) depend on this key; deleting it makes their objects unreadable for good (pass --force to schedule anyway)"
                    );
                }
            }
            let out = c
                .kms(
                    "ScheduleKeyDeletion",
                    json!({"KeyId": key, "PendingWindowInDays": days}),
                )
                .await?;
            outln!(
                "{} is pending deletion; it will be deleted at {} unless cancelled (aws kms cancel-key-deletion)",
                out["KeyId"].as_str().unwrap_or_default(),
                out["DeletionDate"]
            );
        }
    }
    Ok(())
}

fn print_dependents(d: &Value, json_out: bool) {
    if json_out {
        outln!("{d}");
        return;
    }
    let buckets = d["Buckets"].as_array().cloned().unwrap_or_default();
    if buckets.is_empty() {
        outln!(
            "nothing depends on {}",
            d["KeyArn"].as_str().unwrap_or_default()
        );
        return;
    }
    outln!("bucket\tdefault\tversions\tbytes\tstale");
    for b in buckets {
        outln!(
            "{}\t{}\t{}\t{}\t{}",
            b["Bucket"].as_str().unwrap_or_default(),
            if b["BucketDefault"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            b["Versions"],
            b["Bytes"],
            b["StaleVersions"]
        );
    }
}
