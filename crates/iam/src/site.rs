//! Site replication of identities: the rows a region's IAM holds (accounts, users, groups,
//! roles, managed policies, access keys, MFA devices — not STS sessions, which live minutes
//! and stay where they were issued) exported with their secrets opened, and imported into
//! another region of the same site, sealed again under that region's master key. A failover
//! region then accepts the same credentials under the same policies.
//!
//! An import mirrors: rows the sender no longer has are deleted, so a revoked key is revoked
//! everywhere. Both regions must share the default account id (`account_id` in the
//! configuration), since every identity and every bucket owner names it.
//!
//! The sender is a peer, not a trusted writer: every row is decoded as the record its kind
//! says, must sit under the key its own fields give it, in an account the push holds, with
//! every policy document parsing — or the whole push is refused and nothing changes.

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
        validate(state)?;
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

/// Checks every row of a push: decodable as its kind, at the key its fields give, in an
/// account of the push, policies that parse.
fn validate(state: &SiteState) -> Result<(), IamError> {
    use crate::model::*;
    use crate::policy::{Policy, PolicyKind};
    let bad = |why: String| IamError::InvalidInput(format!("site push refused: {why}"));
    let mut accounts = std::collections::BTreeSet::new();
    accounts.insert(state.default_account.clone());
    for (k, v) in &state.rows {
        if k.first() == Some(&b'a') {
            let a: AccountRecord = ciborium::from_reader(v.as_slice())
                .map_err(|e| bad(format!("account row: {e}")))?;
            if k.as_slice() != [b"a\0", a.id.as_bytes()].concat().as_slice()
                || a.id.len() != 12
                || !a.id.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad(format!("account row for {:?}", a.id)));
            }
            accounts.insert(a.id);
        }
    }
    let policy = |text: &str, kind: PolicyKind| {
        Policy::parse(text, kind)
            .map(|_| ())
            .map_err(|e| bad(format!("a policy does not parse: {e}")))
    };
    for (k, v) in &state.rows {
        let Some(kind) = kind(k) else {
            return Err(bad("a row of an unknown kind".into()));
        };
        let mut parts = k[2..].splitn(2, |b| *b == 0);
        let account = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let name = parts
            .next()
            .map(|n| String::from_utf8_lossy(n).into_owned());
        let named = |record_name: &str| {
            if Some(record_name.to_lowercase()) != name {
                return Err(bad(format!("a row keyed {name:?} holds {record_name:?}")));
            }
            if !accounts.contains(&account) {
                return Err(bad(format!("a row of unknown account {account:?}")));
            }
            Ok(())
        };
        match kind {
            b'a' => {}
            b'u' => {
                let u: UserRecord = ciborium::from_reader(v.as_slice())
                    .map_err(|e| bad(format!("user row: {e}")))?;
                named(&u.name)?;
                for p in u.inline.values() {
                    policy(p, PolicyKind::Identity)?;
                }
            }
            b'g' => {
                let g: GroupRecord = ciborium::from_reader(v.as_slice())
                    .map_err(|e| bad(format!("group row: {e}")))?;
                named(&g.name)?;
                for p in g.inline.values() {
                    policy(p, PolicyKind::Identity)?;
                }
            }
            b'r' => {
                let r: RoleRecord = ciborium::from_reader(v.as_slice())
                    .map_err(|e| bad(format!("role row: {e}")))?;
                named(&r.name)?;
                policy(&r.trust_policy, PolicyKind::Trust)?;
                for p in r.inline.values() {
                    policy(p, PolicyKind::Identity)?;
                }
            }
            b'p' => {
                let m: ManagedPolicyRecord = ciborium::from_reader(v.as_slice())
                    .map_err(|e| bad(format!("policy row: {e}")))?;
                named(&m.name)?;
                policy(&m.document, PolicyKind::Identity)?;
            }
            b'k' => {
                let a: AccessKeyRecord = ciborium::from_reader(v.as_slice())
                    .map_err(|e| bad(format!("access key row: {e}")))?;
                if k.as_slice() != [b"k\0", a.access_key.as_bytes()].concat().as_slice()
                    || !accounts.contains(&a.account)
                    // Imported keys (a MinIO user's own) may be as short as MinIO allows.
                    || a.secret.len() < 8
                    || a.access_key.starts_with("ASIA")
                {
                    return Err(bad(format!("access key row {:?}", a.access_key)));
                }
            }
            b'm' => {
                let d: MfaDeviceRecord = ciborium::from_reader(v.as_slice())
                    .map_err(|e| bad(format!("MFA device row: {e}")))?;
                named(&d.name)?;
                if d.account != account || d.seed.len() < 10 {
                    return Err(bad(format!("MFA device row {:?}", d.name)));
                }
            }
            _ => return Err(bad("a row of an unknown kind".into())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<T: Serialize>(k: &[u8], v: &T) -> (serde_bytes::ByteBuf, serde_bytes::ByteBuf) {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        (
            serde_bytes::ByteBuf::from(k.to_vec()),
            serde_bytes::ByteBuf::from(out),
        )
    }

    #[test]
    fn a_push_whose_rows_lie_is_refused() {
        use crate::model::*;
        let user = |name: &str, policy: &str| UserRecord {
            name: name.into(),
            id: "AIDA1".into(),
            path: "/".into(),
            created: 0,
            tags: Vec::new(),
            inline: [("p".to_owned(), policy.to_owned())].into(),
            attached: Vec::new(),
            groups: Vec::new(),
        };
        let ok_policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
        let push = |rows| SiteState {
            default_account: "123456789012".into(),
            rows,
        };
        let ok = validate(&push(vec![row(
            b"u\x00123456789012\x00alice",
            &user("Alice", ok_policy),
        )]));
        assert!(ok.is_ok(), "{ok:?}");
        for rows in [
            // A row keyed one name holding another.
            vec![row(b"u\x00123456789012\x00alice", &user("root", ok_policy))],
            // An account the push does not hold.
            vec![row(b"u\0999999999999\0alice", &user("alice", ok_policy))],
            // A policy that does not parse.
            vec![row(
                b"u\x00123456789012\x00alice",
                &user("alice", "{not json"),
            )],
            // A value of the wrong kind.
            vec![row(b"k\0AKIA", &user("alice", ok_policy))],
        ] {
            assert!(validate(&push(rows)).is_err());
        }
    }

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
