//! Site replication of KMS key metadata: the keys of a region (id, account, description,
//! state, creation and deletion dates) and its aliases, so that a failover region knows the
//! same key ids and aliases and SSE-KMS requests naming them work there.
//!
//! Key material never travels: a key new to the receiver gets fresh material of its own
//! (replicated objects are re-encrypted by the destination anyway). Keys are never deleted by
//! an import — losing a key loses every object under it — only their state follows (disabled,
//! pending deletion with its date; each region's own purge acts on the date). Aliases mirror.

use feiyun_meta::{MetaStore, Table, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::{
    KeyRecord, KeyState, Kms, KmsError, Material, decode, encode, material_purpose, random,
};

/// One key as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteKey {
    pub id: String,
    pub account: String,
    pub description: String,
    pub state: KeyState,
    pub created: i64,
    pub deletion_date: Option<i64>,
}

/// Every key and alias of a region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsSite {
    pub keys: Vec<SiteKey>,
    /// `(account, alias name, key id)`.
    pub aliases: Vec<(String, String, String)>,
}

impl<M: MetaStore> Kms<M> {
    pub fn export_site(&self) -> Result<KmsSite, KmsError> {
        let mut out = KmsSite::default();
        for (_, v) in
            feiyun_meta::scan_bounded(&*self.meta, Table::Kms, b"k/", Some(b"k0"), crate::MAX_KEYS)?
        {
            let r: KeyRecord = decode(&v)?;
            out.keys.push(SiteKey {
                id: r.id,
                account: r.account,
                description: r.description,
                state: r.state,
                created: r.created,
                deletion_date: r.deletion_date,
            });
        }
        for (k, v) in
            feiyun_meta::scan_bounded(&*self.meta, Table::Kms, b"a/", Some(b"a0"), crate::MAX_KEYS)?
        {
            let row = String::from_utf8_lossy(&k[2..]).into_owned();
            let Some((account, name)) = row.split_once('/') else {
                continue;
            };
            out.aliases.push((
                account.to_owned(),
                name.to_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
        Ok(out)
    }

    /// Makes this region's key metadata and aliases those of `site`; rows changed. Every
    /// field is checked first; an invalid key or alias refuses the whole import.
    pub async fn import_site(&self, site: &KmsSite, now: i64) -> Result<usize, KmsError> {
        let mut b = WriteBatch::new();
        let mut n = 0;
        let mut touched = Vec::new();
        for k in &site.keys {
            validate_key(k)?;
            // A deletion never comes sooner than this region's own minimum waiting period
            // allows, whatever the sender says: a key arriving "pending deletion, due
            // yesterday" would otherwise be purged with everything under it at once.
            let mut k = k.clone();
            if k.state == KeyState::PendingDeletion {
                let earliest =
                    now + i64::from(*crate::DELETION_WINDOW_DAYS.start()) * self.day_secs;
                k.deletion_date = Some(k.deletion_date.unwrap_or(earliest).max(earliest));
            } else {
                k.deletion_date = None;
            }
            let k = &k;
            let row = crate::record_key(&k.account, &k.id);
            let stored = self.meta.get(Table::Kms, &row)?;
            let record = match &stored {
                Some(v) => {
                    let mut r: KeyRecord = decode(v)?;
                    if (r.description.as_str(), r.state, r.deletion_date)
                        == (k.description.as_str(), k.state, k.deletion_date)
                    {
                        continue;
                    }
                    r.description = k.description.clone();
                    r.state = k.state;
                    r.deletion_date = k.deletion_date;
                    r
                }
                None => KeyRecord {
                    id: k.id.clone(),
                    account: k.account.clone(),
                    description: k.description.clone(),
                    state: k.state,
                    created: k.created,
                    deletion_date: k.deletion_date,
                    materials: vec![Material {
                        version: 1,
                        created: now,
                        sealed: self
                            .master
                            .seal(&material_purpose(&k.id, 1), &random(32)?)?,
                    }],
                },
            };
            b.check_value(Table::Kms, row.clone(), stored);
            b.put(Table::Kms, row, encode(&record)?);
            touched.push((k.account.clone(), k.id.clone()));
            n += 1;
        }
        for alias in &site.aliases {
            validate_alias(alias)?;
        }
        let wanted: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = site
            .aliases
            .iter()
            .map(|(account, name, id)| (crate::alias_key(account, name), id.clone().into_bytes()))
            .collect();
        for (k, v) in
            feiyun_meta::scan_bounded(&*self.meta, Table::Kms, b"a/", Some(b"a0"), crate::MAX_KEYS)?
        {
            match wanted.get(&k) {
                Some(id) if *id == v => {}
                Some(_) => {}
                None => {
                    b.check_value(Table::Kms, k.clone(), Some(v));
                    b.delete(Table::Kms, k);
                    n += 1;
                }
            }
        }
        for (k, id) in wanted {
            if self.meta.get(Table::Kms, &k)?.as_deref() != Some(id.as_slice()) {
                b.put(Table::Kms, k, id);
                n += 1;
            }
        }
        if n > 0 {
            self.meta.commit(b).await?;
        }
        for (account, id) in touched {
            self.forget(&account, &id);
        }
        Ok(n)
    }
}

/// A pushed key's fields are the shapes this region writes itself.
fn validate_key(k: &SiteKey) -> Result<(), KmsError> {
    let bad = |why: &str| Err(KmsError::Validation(format!("site import refused: {why}")));
    if uuid::Uuid::parse_str(&k.id).is_err() {
        return bad("a key id is not a key id");
    }
    if k.account.len() != 12 || !k.account.bytes().all(|b| b.is_ascii_digit()) {
        return bad("a key's account is not a 12-digit id");
    }
    if k.description.len() > 8192 {
        return bad("a key's description is longer than 8192 characters");
    }
    Ok(())
}

/// A pushed alias names a key id of an account, under a name this region could have made
/// (`aws/…` included: the managed keys' aliases travel too).
fn validate_alias((account, name, id): &(String, String, String)) -> Result<(), KmsError> {
    let bad = |why: &str| Err(KmsError::Validation(format!("site import refused: {why}")));
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return bad("an alias's account is not a 12-digit id");
    }
    if name.is_empty()
        || name.len() > 250
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
    {
        return bad("an alias name is not one KMS accepts");
    }
    if uuid::Uuid::parse_str(id).is_err() {
        return bad("an alias does not name a key id");
    }
    Ok(())
}
