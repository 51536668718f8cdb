//! `feiyun iam …` and `feiyun audit …`: convenience verbs for the common identity tasks,
//! spoken over the region's own IAM API, and the audit log read straight from disk.

use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::json;

use crate::admin::{AdminClient, Connection, field, fields};

#[derive(clap::Subcommand)]
pub enum IamCommand {
    /// Create a user with an access key (printed once) and optional policies and groups
    CreateUser {
        name: String,
        /// A managed policy ARN to attach (repeatable), e.g. arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess
        #[arg(long = "policy-arn")]
        policy_arns: Vec<String>,
        /// A JSON policy document to put as the inline policy "default"
        #[arg(long = "policy-file")]
        policy_file: Option<PathBuf>,
        /// A group to add the user to (repeatable)
        #[arg(long)]
        group: Vec<String>,
    },
    /// List users with their access keys
    ListUsers,
    /// Disable an access key: the next request signed with it fails
    DisableKey { access_key_id: String },
    /// Enable a disabled access key
    EnableKey { access_key_id: String },
    /// Delete a user together with its keys, inline and attached policies and memberships
    DeleteUser { name: String },
    /// Create a virtual MFA device and print its otpauth:// URI for an authenticator app
    CreateMfa { user: String },
    /// Enable a user's MFA device with two consecutive codes
    EnableMfa {
        user: String,
        serial: String,
        code1: String,
        code2: String,
    },
    /// Show who the credentials in use belong to
    Whoami,
}

#[derive(clap::Args)]
pub struct IamArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: IamCommand,
}

pub async fn run(args: IamArgs) -> anyhow::Result<()> {
    let c = AdminClient::new(&args.conn)?;
    let json_out = args.conn.json;
    match args.command {
        IamCommand::CreateUser {
            name,
            policy_arns,
            policy_file,
            group,
        } => {
            let doc = match &policy_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))?,
                ),
                None => None,
            };
            c.call("iam", &[("Action", "CreateUser"), ("UserName", &name)])
                .await?;
            for arn in &policy_arns {
                c.call(
                    "iam",
                    &[
                        ("Action", "AttachUserPolicy"),
                        ("UserName", &name),
                        ("PolicyArn", arn),
                    ],
                )
                .await?;
            }
            if let Some(doc) = &doc {
                c.call(
                    "iam",
                    &[
                        ("Action", "PutUserPolicy"),
                        ("UserName", &name),
                        ("PolicyName", "default"),
                        ("PolicyDocument", doc),
                    ],
                )
                .await?;
            }
            for g in &group {
                c.call(
                    "iam",
                    &[
                        ("Action", "AddUserToGroup"),
                        ("UserName", &name),
                        ("GroupName", g),
                    ],
                )
                .await?;
            }
            let key = c
                .call("iam", &[("Action", "CreateAccessKey"), ("UserName", &name)])
                .await?;
            let (id, secret) = (
                field(&key, "AccessKeyId").unwrap_or_default(),
                field(&key, "SecretAccessKey").unwrap_or_default(),
            );
            if json_out {
                outln!(
                    "{}",
                    json!({"UserName": name, "AccessKeyId": id, "SecretAccessKey": secret})
                );
            } else {
                outln!("user {name} created");
                outln!("access key id:     {id}");
                outln!("secret access key: {secret}");
                outln!("(the secret is shown only now; store it safely)");
            }
        }
        IamCommand::ListUsers => {
            let users = c
                .call("iam", &[("Action", "ListUsers"), ("MaxItems", "1000")])
                .await?;
            let mut out = Vec::new();
            for name in fields(&users, "UserName") {
                let keys = match c
                    .call("iam", &[("Action", "ListAccessKeys"), ("UserName", &name)])
                    .await
                {
                    Ok(k) => k,
                    // Deleted, or replaced by a peer region's push, between the two calls:
                    // not a user any more, so not listed (the listing is not a snapshot).
                    Err(e) if e.to_string().starts_with("NoSuchEntity:") => continue,
                    Err(e) => return Err(e),
                };
                let ids = fields(&keys, "AccessKeyId");
                let status = fields(&keys, "Status");
                out.push((name, ids.into_iter().zip(status).collect::<Vec<_>>()));
            }
            if json_out {
                let v: Vec<_> = out
                    .iter()
                    .map(|(n, k)| json!({"UserName": n, "AccessKeys": k.iter().map(|(i, s)| json!({"AccessKeyId": i, "Status": s})).collect::<Vec<_>>()}))
                    .collect();
                outln!("{}", serde_json::Value::Array(v));
            } else {
                for (n, keys) in out {
                    let k: Vec<String> = keys.iter().map(|(i, s)| format!("{i} ({s})")).collect();
                    outln!(
                        "{n}\t{}",
                        if k.is_empty() {
                            "-".into()
                        } else {
                            k.join(", ")
                        }
                    );
                }
            }
        }
        IamCommand::DisableKey { access_key_id } => {
            set_key_status(&c, &access_key_id, "Inactive", json_out).await?;
        }
        IamCommand::EnableKey { access_key_id } => {
            set_key_status(&c, &access_key_id, "Active", json_out).await?;
        }
        IamCommand::DeleteUser { name } => {
            let keys = c
                .call("iam", &[("Action", "ListAccessKeys"), ("UserName", &name)])
                .await?;
            for id in fields(&keys, "AccessKeyId") {
                c.call(
                    "iam",
                    &[
                        ("Action", "DeleteAccessKey"),
                        ("UserName", &name),
                        ("AccessKeyId", &id),
                    ],
                )
                .await?;
            }
            let inline = c
                .call(
                    "iam",
                    &[("Action", "ListUserPolicies"), ("UserName", &name)],
                )
                .await?;
            for p in fields(&inline, "member") {
                c.call(
                    "iam",
                    &[
                        ("Action", "DeleteUserPolicy"),
                        ("UserName", &name),
                        ("PolicyName", &p),
                    ],
                )
                .await?;
            }
            let attached = c
                .call(
                    "iam",
                    &[("Action", "ListAttachedUserPolicies"), ("UserName", &name)],
                )
                .await?;
            for arn in fields(&attached, "PolicyArn") {
                c.call(
                    "iam",
                    &[
                        ("Action", "DetachUserPolicy"),
                        ("UserName", &name),
                        ("PolicyArn", &arn),
                    ],
                )
                .await?;
            }
            let groups = c
                .call(
                    "iam",
                    &[("Action", "ListGroupsForUser"), ("UserName", &name)],
                )
                .await?;
            for g in fields(&groups, "GroupName") {
                c.call(
                    "iam",
                    &[
                        ("Action", "RemoveUserFromGroup"),
                        ("UserName", &name),
                        ("GroupName", &g),
                    ],
                )
                .await?;
            }
            let mfa = c
                .call("iam", &[("Action", "ListMFADevices"), ("UserName", &name)])
                .await?;
            for serial in fields(&mfa, "SerialNumber") {
                c.call(
                    "iam",
                    &[
                        ("Action", "DeactivateMFADevice"),
                        ("UserName", &name),
                        ("SerialNumber", &serial),
                    ],
                )
                .await?;
                c.call(
                    "iam",
                    &[
                        ("Action", "DeleteVirtualMFADevice"),
                        ("SerialNumber", &serial),
                    ],
                )
                .await?;
            }
            c.call("iam", &[("Action", "DeleteUser"), ("UserName", &name)])
                .await?;
            if json_out {
                outln!("{}", json!({"UserName": name, "Deleted": true}));
            } else {
                outln!("user {name} deleted");
            }
        }
        IamCommand::CreateMfa { user } => {
            let out = c
                .call(
                    "iam",
                    &[
                        ("Action", "CreateVirtualMFADevice"),
                        ("VirtualMFADeviceName", &user),
                    ],
                )
                .await?;
            let serial = field(&out, "SerialNumber").context("no serial number in the answer")?;
            let seed = base64::engine::general_purpose::STANDARD
                .decode(field(&out, "Base32StringSeed").unwrap_or_default())
                .context("bad seed in the answer")?;
            let seed = String::from_utf8_lossy(&seed).into_owned();
            let uri = format!(
                "otpauth://totp/Feiyun:{user}?secret={seed}&issuer=Feiyun&algorithm=SHA1&digits=6&period=30"
            );
            if json_out {
                outln!(
                    "{}",
                    json!({"SerialNumber": serial, "Base32StringSeed": seed, "ProvisioningUri": uri})
                );
            } else {
                outln!("serial number: {serial}");
                outln!("provisioning URI (show it as a QR code to an authenticator app):");
                outln!("{uri}");
                outln!("then: feiyun iam enable-mfa {user} {serial} CODE1 CODE2");
            }
        }
        IamCommand::EnableMfa {
            user,
            serial,
            code1,
            code2,
        } => {
            c.call(
                "iam",
                &[
                    ("Action", "EnableMFADevice"),
                    ("UserName", &user),
                    ("SerialNumber", &serial),
                    ("AuthenticationCode1", &code1),
                    ("AuthenticationCode2", &code2),
                ],
            )
            .await?;
            if json_out {
                outln!(
                    "{}",
                    json!({"UserName": user, "SerialNumber": serial, "Enabled": true})
                );
            } else {
                outln!("MFA device {serial} enabled for {user}");
            }
        }
        IamCommand::Whoami => {
            let out = c.call("sts", &[("Action", "GetCallerIdentity")]).await?;
            let (arn, account, id) = (
                field(&out, "Arn").unwrap_or_default(),
                field(&out, "Account").unwrap_or_default(),
                field(&out, "UserId").unwrap_or_default(),
            );
            if json_out {
                outln!("{}", json!({"Arn": arn, "Account": account, "UserId": id}));
            } else {
                outln!("{arn} (account {account}, id {id})");
            }
        }
    }
    Ok(())
}

async fn set_key_status(
    c: &AdminClient,
    id: &str,
    status: &str,
    json_out: bool,
) -> anyhow::Result<()> {
    let owner = c
        .call(
            "iam",
            &[("Action", "GetAccessKeyLastUsed"), ("AccessKeyId", id)],
        )
        .await?;
    let user = field(&owner, "UserName").context("the key has no user")?;
    c.call(
        "iam",
        &[
            ("Action", "UpdateAccessKey"),
            ("UserName", &user),
            ("AccessKeyId", id),
            ("Status", status),
        ],
    )
    .await?;
    if json_out {
        outln!(
            "{}",
            json!({"AccessKeyId": id, "UserName": user, "Status": status})
        );
    } else {
        outln!("{id} of {user} is now {status}");
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Check the keyed chain of every record and HEAD; names the first broken one (exit 1).
    /// Needs the master key (FEIYUN_MASTER_KEY, FEIYUN_MASTER_KEY_FILE, or the data
    /// directory's master.key)
    Verify {
        /// Also pass records written before the chain was keyed, checked by hash only
        #[arg(long)]
        accept_unkeyed: bool,
    },
    /// Print the newest records
    Tail {
        /// How many records
        #[arg(short = 'n', default_value_t = 20)]
        lines: usize,
        /// Keep printing new records as they arrive
        #[arg(long)]
        follow: bool,
    },
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// The region's data directory (works while the server runs or is stopped)
    #[arg(long, global = true, default_value = "./feiyun-data")]
    data_dir: PathBuf,
    /// Print JSON instead of text
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AuditCommand,
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.join("audit");
    if !dir.is_dir() {
        bail!("no audit log at {}", dir.display());
    }
    match args.command {
        AuditCommand::Verify { accept_unkeyed } => {
            let env = feiyun_common::ConfigOverrides::from_env(|k| std::env::var(k).ok())?;
            let config = feiyun_common::ConfigOverrides {
                data_dir: Some(args.data_dir.clone()),
                ..Default::default()
            }
            .over(env)
            .resolve()?;
            let key = feiyun_server::keys::offline_audit_key(&config)?;
            let s = feiyun_audit::verify(&dir, &key, accept_unkeyed)?;
            if args.json {
                outln!(
                    "{}",
                    json!({"ok": true, "records": s.records, "segments": s.segments, "head": s.head, "unkeyed": s.unkeyed})
                );
            } else {
                outln!(
                    "ok: {} records in {} segment(s), chain head {}{}",
                    s.records,
                    s.segments,
                    s.head,
                    if s.unkeyed > 0 {
                        format!(" ({} unkeyed records checked by hash only)", s.unkeyed)
                    } else {
                        String::new()
                    }
                );
            }
        }
        AuditCommand::Tail { lines, follow } => {
            let print = |r: &feiyun_audit::AuditRecord| -> anyhow::Result<()> {
                if args.json {
                    outln!("{}", serde_json::to_string(r)?);
                } else {
                    outln!(
                        "{} {} {} {} {} {} {} -> {}",
                        r.time,
                        r.request_id,
                        r.source_ip,
                        r.principal,
                        r.operation,
                        r.resource,
                        r.decision,
                        r.status
                    );
                }
                Ok(())
            };
            let (_, mut seen) = feiyun_audit::tail_after(&dir, u64::MAX)?;
            for r in feiyun_audit::tail(&dir, lines)? {
                print(&r)?;
            }
            if follow {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    let (new, total) = feiyun_audit::tail_after(&dir, seen)?;
                    for r in &new {
                        print(r)?;
                    }
                    seen = total;
                }
            }
        }
    }
    Ok(())
}
