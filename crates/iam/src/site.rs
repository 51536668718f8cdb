//! Site replication of identities: the rows a region's IAM holds (accounts, users, groups,
//! roles, managed policies, access keys, MFA devices — not STS sessions, which live minutes
//! and stay where they were issued) exported with their secrets opened, and imported into
//! another region of the same site, sealed again under that region's master key. A failover
//! region then accepts the same credentials under the same policies.
//!
//! An import mirrors: rows the sender no longer has are deleted, so a revoked key is revoked
//! everywhere. Both regions must share the default account id (`account_id` in the
//! configuration), since every identity and every bucket owner names it.

use feiyun_meta::{MetaStore, Table};
use serde::{Deserialize, Serialize};

use crate::IamError;
use crate::store::Iam;

/// Row kinds that travel: accounts, users, groups, roles, policies, keys, MFA devices.
const KINDS: &[u8] = b"augrpkm";
/// Row kinds whose values are sealed at rest.
const SEALED: &[u8] = b"km";

/// Every replicated identity row of a region, values in plaintext.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteState {
    pub default_account: String,
    /// `(row key, value)`, ordered by row key.
    pub rows: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
}

fn kind(row: &[u8]) -> Option<u8> {
    let k = *row.first()?;
    (row.get(1) == Some(&0) && KINDS.contains(&k)).then_some(k)
}

impl<M: MetaStore> Iam<M> {
    /// The identities to replicate, secrets opened.
    pub fn export_site(&self) -> Result<SiteState, IamError> {
        let mut rows = Vec::new();
        for (k, v) in self.raw_rows()? {
            let Some(kind) = kind(&k) else { continue };
            let value = if SEALED.contains(&kind) {
                self.open_row(&k, &v)?
            } else {
                v
            };
            rows.push((
                serde_bytes::ByteBuf::from(k),
                serde_bytes::ByteBuf::from(value),
            ));
        }
        Ok(SiteState {
            default_account: self.default_account(),
            rows,
        })
    }

    /// Makes this region's identities those of `state`; the number of rows written or
    /// deleted. Refused when the default accounts differ.
    pub async fn import_site(&self, state: &SiteState) -> Result<usize, IamError> {
        if state.default_account != self.default_account() {
            return Err(IamError::SiteMismatch(format!(
                "the sending region's default account is {}, this region's is {}: regions of \
                 one site must be started with the same account_id (FEIYUN_ACCOUNT_ID)",
                state.default_account,
                self.default_account()
            )));
        }
        for (k, _) in &state.rows {
            if kind(k).is_none() {
                return Err(IamError::InvalidInput(
                    "a site row of an unknown kind".into(),
                ));
            }
        }
        let wanted: std::collections::BTreeMap<&[u8], &[u8]> = state
            .rows
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        let changed = self
            .change_raw(|current, batch| {
                let mut n = 0;
                let mut have = std::collections::BTreeMap::new();
                for (k, v) in current {
                    let Some(kind) = kind(&k) else { continue };
                    let plain = if SEALED.contains(&kind) {
                        self.open_row(&k, &v)?
                    } else {
                        v.clone()
                    };
                    if !wanted.contains_key(k.as_slice()) {
                        batch.delete(Table::Iam, k.clone());
                        n += 1;
                    }
                    have.insert(k, plain);
                }
                for (k, v) in &wanted {
                    if have.get(*k).map(Vec::as_slice) == Some(*v) {
                        continue;
                    }
                    let kind = kind(k).unwrap_or(b'u');
                    let stored = if SEALED.contains(&kind) {
                        self.seal_row(k, v)?
                    } else {
                        v.to_vec()
                    };
                    batch.put(Table::Iam, k.to_vec(), stored);
                    n += 1;
                }
                Ok(n)
            })
            .await?;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_identity_rows_travel() {
        assert_eq!(kind(b"u\0acct\0alice"), Some(b'u'));
        assert_eq!(kind(b"k\0AKIA"), Some(b'k'));
        // Sessions, the default-account pointer and anything unknown stay.
        assert_eq!(kind(b"s\0ASIA"), None);
        assert_eq!(kind(b"default-account"), None);
        assert_eq!(kind(b"x\0y"), None);
        assert_eq!(kind(b""), None);
    }
}
