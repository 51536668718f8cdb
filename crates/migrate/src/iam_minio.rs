//! `--iam-export FILE`: identities from a MinIO deployment, as `mc admin cluster iam export`
//! writes them — a zip holding `iam-assets/policies.json` (name → policy document),
//! `users.json` (access key → secret and status), `groups.json` (name → members and
//! status), `user_mappings.json` and `group_mappings.json` (name → comma-separated policy
//! names), `svcaccts.json` and `stsuser_mappings.json`.
//!
//! In MinIO a user *is* its access key, and the export carries the secret, so each user
//! becomes an IAM user of that name holding that very key (the region's root-only
//! `ImportAccessKey`): applications keep their credentials across the move. Policies keep
//! their names; mappings become attachments to the policies this run created. What has no
//! place here is reported, never approximated: service accounts (restricted keys of a
//! parent user), STS and LDAP mappings, and disabled groups. As with `--iam`, an identity
//! that exists here already is left exactly as it is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::client::S3Client;
use crate::iam::{IamSummary, Writer, list};
use crate::{Error, xml};

/// Largest export file read, and most bytes inflated from it (a deployment of ten thousand
/// users exports a few MiB).
const MAX_EXPORT: u64 = 16 << 20;

#[derive(Default)]
pub struct MinioExport {
    policies: BTreeMap<String, serde_json::Value>,
    users: BTreeMap<String, MinioUser>,
    groups: BTreeMap<String, MinioGroup>,
    user_policies: BTreeMap<String, Vec<String>>,
    group_policies: BTreeMap<String, Vec<String>>,
    /// Service accounts: (access key, parent user).
    service_accounts: Vec<(String, String)>,
    sts_mappings: Vec<String>,
}

#[derive(serde::Deserialize)]
struct MinioUser {
    #[serde(rename = "secretKey")]
    secret_key: String,
    #[serde(default)]
    status: String,
}

impl std::fmt::Debug for MinioUser {
    /// Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MinioUser")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct MinioGroup {
    #[serde(default)]
    members: Option<Vec<String>>,
    #[serde(default)]
    status: String,
}

#[derive(serde::Deserialize)]
struct Mapped {
    #[serde(default)]
    policy: String,
}

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Source(format!("{}: not a MinIO IAM export: {why}", path.display()))
}

/// A JSON file of the export that does not parse. serde's own message may quote a value,
/// and a value here may be a secret, so only where it failed is said.
fn bad_json(path: &Path, name: &str, e: &serde_json::Error) -> Error {
    bad(
        path,
        format!(
            "{name} is not the JSON MinIO writes (line {}, column {})",
            e.line(),
            e.column()
        ),
    )
}

/// Reads and checks an export file; nothing is sent anywhere.
pub fn read_export(path: &Path) -> Result<MinioExport, Error> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| bad(path, e))?;
    if !file.metadata().map_err(|e| bad(path, e))?.is_file() {
        return Err(bad(path, "not a regular file"));
    }
    let mut data = Vec::new();
    file.take(MAX_EXPORT + 1)
        .read_to_end(&mut data)
        .map_err(|e| bad(path, e))?;
    if data.len() as u64 > MAX_EXPORT {
        return Err(bad(path, format!("larger than {MAX_EXPORT} bytes")));
    }
    let files = zip::entries(&data).map_err(|e| bad(path, e))?;
    let json = |name: &str| -> Result<Option<serde_json::Value>, Error> {
        match files.get(&format!("iam-assets/{name}")) {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice::<serde_json::Value>(bytes)
                .map(|v| (!v.is_null()).then_some(v))
                .map_err(|e| bad_json(path, name, &e)),
        }
    };
    fn typed<T: serde::de::DeserializeOwned>(
        path: &Path,
        name: &str,
        v: Option<serde_json::Value>,
    ) -> Result<BTreeMap<String, T>, Error> {
        match v {
            None => Ok(BTreeMap::new()),
            Some(v) => serde_json::from_value(v).map_err(|e| bad_json(path, name, &e)),
        }
    }
    if !files.keys().any(|k| k.starts_with("iam-assets/")) {
        return Err(bad(path, "it holds no iam-assets/ directory"));
    }
    let split = |m: BTreeMap<String, Mapped>| -> BTreeMap<String, Vec<String>> {
        m.into_iter()
            .map(|(k, v)| {
                let names: Vec<String> = v
                    .policy
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect();
                (k, names)
            })
            .collect()
    };
    let service_accounts: BTreeMap<String, serde_json::Value> =
        typed(path, "svcaccts.json", json("svcaccts.json")?)?;
    let sts: BTreeMap<String, serde_json::Value> = typed(
        path,
        "stsuser_mappings.json",
        json("stsuser_mappings.json")?,
    )?;
    Ok(MinioExport {
        policies: typed(path, "policies.json", json("policies.json")?)?,
        users: typed(path, "users.json", json("users.json")?)?,
        groups: typed(path, "groups.json", json("groups.json")?)?,
        user_policies: split(typed(
            path,
            "user_mappings.json",
            json("user_mappings.json")?,
        )?),
        group_policies: split(typed(
            path,
            "group_mappings.json",
            json("group_mappings.json")?,
        )?),
        service_accounts: service_accounts
            .into_iter()
            .map(|(k, v)| {
                let parent = v["parent"].as_str().unwrap_or("?").to_owned();
                (k, parent)
            })
            .collect(),
        sts_mappings: sts.into_keys().collect(),
    })
}

/// Creates the export's identities in the region `dst` (as its root: importing a key with
/// its secret is root's alone).
pub async fn import(
    export: &MinioExport,
    dst: &S3Client,
    dry_run: bool,
) -> Result<IamSummary, Error> {
    // Only the account's root may import a key: found out before anything is created, so a
    // run with other credentials does not leave users without their keys.
    if !export.users.is_empty() {
        let me = crate::iam::caller(dst).await?;
        if !xml::field(&me, "Arn").is_some_and(|a| a.ends_with(":root")) {
            return Err(Error::Dest(
                "--iam-export imports users' own keys, which only the account's root may do: sign as root"
                    .into(),
            ));
        }
    }
    let mut w = Writer::new(dst, dry_run);
    // Policies first, by name; the ARNs they got here, for the attachments.
    let mut created = Vec::new();
    for (name, doc) in &export.policies {
        let text = doc.to_string();
        let params = [
            ("Action", "CreatePolicy"),
            ("PolicyName", name.as_str()),
            ("PolicyDocument", text.as_str()),
        ];
        if w.create(format!("policy {name}"), &params).await == Ok(true) {
            created.push(name.clone());
        }
    }
    let arns: HashMap<String, String> = if dry_run {
        created
            .iter()
            .map(|n| (n.clone(), format!("(policy {n})")))
            .collect()
    } else {
        let here = list(dst, &[("Action", "ListPolicies"), ("Scope", "Local")])
            .await
            .map_err(|e| Error::Dest(format!("IAM ListPolicies: {e}")))?;
        let by_name: HashMap<String, String> = here
            .iter()
            .filter_map(|p| Some((xml::field(p, "PolicyName")?, xml::field(p, "Arn")?)))
            .collect();
        created
            .iter()
            .filter_map(|n| Some((n.clone(), by_name.get(n)?.clone())))
            .collect()
    };
    let mut users = HashSet::new();
    for (key, u) in &export.users {
        let what = format!("user {key}");
        // A key this region cannot hold is reported before its user is created.
        if let Err(e) = feiyun_iam::store::check_imported_key(key, &u.secret_key) {
            w.fail(what, e);
            continue;
        }
        let params = [("Action", "CreateUser"), ("UserName", key.as_str())];
        if w.create(what.clone(), &params).await != Ok(true) {
            continue;
        }
        users.insert(key.clone());
        // A disabled user's key is imported inactive, in the same commit.
        let status = if u.status == "disabled" {
            "Inactive"
        } else {
            "Active"
        };
        let imported = w
            .link(
                format!("{what}: its access key"),
                &[
                    ("Action", "ImportAccessKey"),
                    ("UserName", key.as_str()),
                    ("AccessKeyId", key.as_str()),
                    ("SecretAccessKey", u.secret_key.as_str()),
                    ("Status", status),
                ],
            )
            .await;
        if imported {
            attach(&mut w, &arns, "User", key, export.user_policies.get(key)).await;
        }
    }
    for (name, g) in &export.groups {
        let what = format!("group {name}");
        let params = [("Action", "CreateGroup"), ("GroupName", name.as_str())];
        if w.create(what.clone(), &params).await != Ok(true) {
            continue;
        }
        for m in g.members.iter().flatten() {
            if !users.contains(m) {
                w.fail(
                    format!("{what}: member {m}"),
                    "that user was not created by this run; add it by hand",
                );
                continue;
            }
            w.link(
                format!("{what}: member {m}"),
                &[
                    ("Action", "AddUserToGroup"),
                    ("UserName", m.as_str()),
                    ("GroupName", name.as_str()),
                ],
            )
            .await;
        }
        if g.status == "disabled" {
            // IAM groups cannot be disabled: without its policies it grants nothing, as at
            // the source.
            w.fail(
                format!("{what}: disabled at the source"),
                "created without its policies (IAM has no disabled groups)",
            );
            continue;
        }
        attach(
            &mut w,
            &arns,
            "Group",
            name,
            export.group_policies.get(name),
        )
        .await;
    }
    let mut out = w.finish();
    for (key, parent) in &export.service_accounts {
        out.keys_not_copied.push(format!(
            "service account {key} of {parent}: not imported (IAM has no restricted keys); issue the user a key"
        ));
    }
    for name in &export.sts_mappings {
        out.keys_not_copied.push(format!(
            "STS/LDAP policy mapping of {name}: not imported (configure the identity provider here)"
        ));
    }
    Ok(out)
}

/// Attaches the policies a mapping names, each only if this run created it.
async fn attach(
    w: &mut Writer<'_>,
    arns: &HashMap<String, String>,
    kind: &str,
    name: &str,
    policies: Option<&Vec<String>>,
) {
    let name_param = format!("{kind}Name");
    let action = format!("Attach{kind}Policy");
    for p in policies.into_iter().flatten() {
        let what = format!("{} {name}: policy {p}", kind.to_lowercase());
        let Some(arn) = arns.get(p) else {
            w.fail(
                what,
                "that policy was not created by this run; attach it by hand",
            );
            continue;
        };
        w.link(
            what,
            &[
                ("Action", action.as_str()),
                (name_param.as_str(), name),
                ("PolicyArn", arn.as_str()),
            ],
        )
        .await;
    }
}

/// The few parts of the zip format an export uses: the central directory, stored and
/// deflated entries, each checked against its CRC-32.
mod zip {
    use std::collections::HashMap;

    fn u16_at(d: &[u8], at: usize) -> Result<usize, String> {
        d.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| "truncated".to_owned())
    }

    fn u32_at(d: &[u8], at: usize) -> Result<usize, String> {
        d.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| "truncated".to_owned())
    }

    /// Every file's name and bytes.
    pub(super) fn entries(d: &[u8]) -> Result<HashMap<String, Vec<u8>>, String> {
        const EOCD: u32 = 0x0605_4b50;
        const CENTRAL: usize = 0x0201_4b50;
        const LOCAL: usize = 0x0403_4b50;
        // The end record sits in the last 22 bytes plus a comment of at most 64 KiB.
        let from = d.len().saturating_sub(22 + 65_535);
        let eocd = (from..d.len().saturating_sub(21))
            .rev()
            .find(|&i| d[i..i + 4] == EOCD.to_le_bytes())
            .ok_or("no end of central directory (not a zip file)")?;
        let count = u16_at(d, eocd + 10)?;
        let mut at = u32_at(d, eocd + 16)?;
        let mut out = HashMap::new();
        // Inflated bytes in all: a small file of many entries must not expand without end.
        let mut total = 0u64;
        for _ in 0..count {
            if u32_at(d, at)? != CENTRAL {
                return Err("damaged central directory".into());
            }
            let method = u16_at(d, at + 10)?;
            let crc = u32_at(d, at + 16)? as u32;
            let packed = u32_at(d, at + 20)?;
            let size = u32_at(d, at + 24)?;
            let (name_len, extra_len, comment_len) = (
                u16_at(d, at + 28)?,
                u16_at(d, at + 30)?,
                u16_at(d, at + 32)?,
            );
            let local = u32_at(d, at + 42)?;
            let name = d.get(at + 46..at + 46 + name_len).ok_or("truncated")?;
            let name = String::from_utf8_lossy(name).into_owned();
            at += 46 + name_len + extra_len + comment_len;
            if !name.starts_with("iam-assets/") || name.ends_with('/') {
                continue;
            }
            total += size as u64;
            if total > super::MAX_EXPORT {
                return Err(format!(
                    "more than {} bytes once inflated",
                    super::MAX_EXPORT
                ));
            }
            if u32_at(d, local)? != LOCAL {
                return Err(format!("{name}: damaged local header"));
            }
            let start = local + 30 + u16_at(d, local + 26)? + u16_at(d, local + 28)?;
            let raw = d.get(start..start + packed).ok_or("truncated entry")?;
            let bytes = match method {
                0 => raw.to_vec(),
                8 => miniz_oxide::inflate::decompress_to_vec_with_limit(raw, size)
                    .map_err(|e| format!("{name}: {e:?}"))?,
                m => return Err(format!("{name}: compression method {m} is not read")),
            };
            if bytes.len() != size {
                return Err(format!("{name}: size does not match its directory entry"));
            }
            let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32IsoHdlc);
            digest.update(&bytes);
            if digest.finalize() as u32 != crc {
                return Err(format!("{name}: failed its CRC-32"));
            }
            out.insert(name, bytes);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    /// A zip of stored (uncompressed) entries, as a minimal writer makes it.
    fn stored_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in files {
            let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32IsoHdlc);
            d.update(data);
            let crc = d.finalize() as u32;
            let offset = out.len() as u32;
            let fixed = |sig: u32, v: &mut Vec<u8>| {
                v.extend_from_slice(&sig.to_le_bytes());
            };
            fixed(0x0403_4b50, &mut out);
            out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);
            fixed(0x0201_4b50, &mut central);
            central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            central.extend_from_slice(&crc.to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let at = out.len() as u32;
        let n = files.len() as u16;
        out.extend_from_slice(&central);
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }

    #[test]
    fn stored_entries_are_read_and_a_flipped_byte_is_caught() {
        let users = br#"{"k1":{"secretKey":"s-0123456789","status":"enabled"}}"#;
        let z = stored_zip(&[("iam-assets/users.json", users)]);
        let files = super::zip::entries(&z).unwrap();
        assert_eq!(files["iam-assets/users.json"], users.to_vec());
        let mut bad = z.clone();
        let at = bad.windows(4).position(|w| w == b"s-01").unwrap();
        bad[at] ^= 1;
        let e = super::zip::entries(&bad).unwrap_err();
        assert!(e.contains("CRC-32"), "{e}");
        for cut in [0, 10, z.len() / 2, z.len() - 1] {
            assert!(super::zip::entries(&z[..cut]).is_err(), "cut at {cut}");
        }
    }
}
