//! The region's master key and backup key: where they come from, and the check that the
//! master key opening a data directory is the one that sealed it.
//!
//! Everything sealed under the master key (SSE-S3 data keys, KMS key material, access-key
//! secrets) is unreadable under any other. A start that silently used a different key —
//! `master.key` lost to a power cut before its directory was synced, a mistyped
//! `FEIYUN_MASTER_KEY` — would serve errors for every object and, worse, seal new data
//! under the wrong key. So the first start stores a check value sealed by the key in the
//! metadata store (`system/master-key-check`), and every later start must open it.

use feiyun_common::Config;
use feiyun_meta::{MetaStore, Table, WriteBatch};

use crate::ServerError;

/// Where the embedded default keeps a generated master key, under the data directory.
const MASTER_KEY_FILE: &str = "master.key";
/// The metadata row holding the check value.
const CHECK_ROW: &[u8] = b"master-key-check";
/// What the check value seals (and its purpose, binding it to this use).
const CHECK_PURPOSE: &[u8] = b"feiyun master key check v1";

/// The master key from `FEIYUN_MASTER_KEY`, from `master_key_file`, or — so that one command
/// starts a region — generated once into the data directory, with a warning: whoever holds
/// that directory then holds the key too. Refuses a key that did not seal the data here, and
/// refuses to generate a new key over data sealed by a missing one.
pub(crate) async fn master_key<M: MetaStore>(
    config: &Config,
    meta: &M,
) -> Result<feiyun_kms::MasterKey, ServerError> {
    let bad = |e: feiyun_kms::KmsError| ServerError::MasterKey(e.to_string());
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map_err(|e| ServerError::MasterKey(format!("{}: {e}", path.display())))
    };
    let check = meta.get(Table::System, CHECK_ROW)?;
    let path = config.data_dir.join(MASTER_KEY_FILE);
    let (key, source) = if let Some(text) = &config.master_key {
        let key = feiyun_kms::MasterKey::from_base64(text.expose()).map_err(bad)?;
        (key, "FEIYUN_MASTER_KEY".to_owned())
    } else if let Some(file) = &config.master_key_file {
        let key = feiyun_kms::MasterKey::from_base64(&read(file)?).map_err(bad)?;
        (key, file.display().to_string())
    } else if path.exists() {
        tracing::warn!(path = %path.display(), "the master key is stored beside the data; set FEIYUN_MASTER_KEY or master_key_file to keep it elsewhere");
        let key = feiyun_kms::MasterKey::from_base64(&read(&path)?).map_err(bad)?;
        (key, path.display().to_string())
    } else {
        if check.is_some() || holds_sealed_data(meta)? {
            return Err(ServerError::MasterKey(format!(
                "{} is missing, but this data directory holds data sealed by a master key; \
                 restore that file or set FEIYUN_MASTER_KEY / master_key_file to the key \
                 (a new key would make every object and credential unreadable)",
                path.display()
            )));
        }
        let (key, text) = feiyun_kms::MasterKey::generate().map_err(bad)?;
        feiyun_common::durable::write_file(&path, format!("{text}\n").as_bytes(), true)
            .map_err(|e| ServerError::MasterKey(format!("{}: {e}", path.display())))?;
        tracing::warn!(path = %path.display(), "generated a master key beside the data; move it elsewhere and set master_key_file (or FEIYUN_MASTER_KEY) for production");
        (key, path.display().to_string())
    };
    match check {
        Some(sealed) => {
            let opened = key.unseal(CHECK_PURPOSE, &sealed).ok();
            if opened.as_deref() != Some(CHECK_PURPOSE) {
                return Err(ServerError::MasterKey(format!(
                    "the master key from {source} is not the one that sealed this data \
                     directory; set the original key"
                )));
            }
        }
        None => {
            let sealed = key.seal(CHECK_PURPOSE, CHECK_PURPOSE).map_err(bad)?;
            let mut batch = WriteBatch::new();
            batch.check_absent(Table::System, CHECK_ROW.to_vec()).put(
                Table::System,
                CHECK_ROW.to_vec(),
                sealed,
            );
            match meta.commit(batch).await {
                Ok(_) => {}
                // Another node of the region, starting at the same moment, stored its check
                // first: this key must open that one.
                Err(feiyun_meta::MetaError::Conflict(_)) => {
                    let theirs = meta.get(Table::System, CHECK_ROW)?.unwrap_or_default();
                    if key.unseal(CHECK_PURPOSE, &theirs).ok().as_deref() != Some(CHECK_PURPOSE) {
                        return Err(ServerError::MasterKey(format!(
                            "the master key from {source} is not the one another node of \
                             this region sealed its data with; set the same key on every node"
                        )));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(key)
}

/// Whether a data directory written before the check value existed holds anything a master
/// key sealed: buckets (objects are encrypted by default), identities, KMS keys or peers.
fn holds_sealed_data<M: MetaStore>(meta: &M) -> Result<bool, ServerError> {
    for table in [Table::Buckets, Table::Kms, Table::Replication] {
        if !meta.scan(table, b"", None, 1)?.is_empty() {
            return Ok(true);
        }
    }
    // Access keys (`k 0x00 …`) and MFA devices (`m 0x00 …`) are sealed; the default
    // account's row alone is not.
    for prefix in [&b"k\x00"[..], b"m\x00", b"s\x00"] {
        let end = feiyun_meta::prefix_end(prefix);
        if !meta.scan(Table::Iam, prefix, end.as_deref(), 1)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What the audit chain's MAC key is derived for.
const AUDIT_PURPOSE: &str = "audit chain";

/// The audit log's key, derived from the master key.
pub(crate) fn audit_key(master: &feiyun_kms::MasterKey) -> feiyun_audit::AuditKey {
    feiyun_audit::AuditKey::new(master.derive(AUDIT_PURPOSE))
}

/// The audit key for offline tools (`feiyun audit verify`): the master key found by the same
/// rules as the server's (`FEIYUN_MASTER_KEY`, `master_key_file`, the data directory), with
/// no metadata store open.
pub fn offline_audit_key(config: &Config) -> Result<feiyun_audit::AuditKey, ServerError> {
    let bad = |e: feiyun_kms::KmsError| ServerError::MasterKey(e.to_string());
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map_err(|e| ServerError::MasterKey(format!("{}: {e}", path.display())))
    };
    let master = if let Some(text) = &config.master_key {
        feiyun_kms::MasterKey::from_base64(text.expose()).map_err(bad)?
    } else if let Some(file) = &config.master_key_file {
        feiyun_kms::MasterKey::from_base64(&read(file)?).map_err(bad)?
    } else {
        let path = config.data_dir.join(MASTER_KEY_FILE);
        feiyun_kms::MasterKey::from_base64(&read(&path)?).map_err(bad)?
    };
    Ok(audit_key(&master))
}

/// The backup key from `FEIYUN_BACKUP_KEY` or `backup_key_file`, if either is set.
pub(crate) fn backup_key(
    config: &Config,
) -> Result<Option<feiyun_replication::backup::BackupKey>, ServerError> {
    let text = match (&config.backup_key, &config.backup_key_file) {
        (Some(t), _) => t.expose().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| ServerError::MasterKey(format!("backup key {}: {e}", path.display())))?,
        (None, None) => return Ok(None),
    };
    feiyun_replication::backup::BackupKey::from_base64(&text)
        .map(Some)
        .map_err(|e| ServerError::MasterKey(e.to_string()))
}
