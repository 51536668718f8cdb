//! The built-in KMS: customer keys per account with versioned key material sealed by the
//! region [`MasterKey`], aliases, key states (enabled, disabled, pending deletion) and the
//! cryptographic operations S3 encryption and the AWS KMS API need — Encrypt, Decrypt,
//! GenerateDataKey and ReEncrypt with an encryption context. Owns the `kms` table; knows
//! nothing of HTTP or S3.
//!
//! A ciphertext names its key and key version, so Decrypt needs no key id and a rotated key
//! still opens everything sealed under its older versions. Deleting a key after its waiting
//! period removes its material: every ciphertext under it becomes unreadable.

pub mod master;
pub mod site;
pub mod usage;

use std::collections::BTreeMap;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use feiyun_meta::{MetaError, MetaStore, Table, WriteBatch};
use serde::{Deserialize, Serialize};

pub use master::MasterKey;
pub use usage::{KeyUse, KeyUsers};

/// Largest plaintext Encrypt takes (AWS's limit).
pub const MAX_PLAINTEXT: usize = 4096;
/// Largest data key GenerateDataKey makes (AWS's NumberOfBytes limit).
pub const MAX_DATA_KEY: usize = 1024;
/// AWS's bounds on PendingWindowInDays.
pub const DELETION_WINDOW_DAYS: std::ops::RangeInclusive<u32> = 7..=30;
/// Most keys one account may hold (AWS's default quota is 100,000 per region; a region
/// here serves many accounts from one process).
pub const MAX_KEYS_PER_ACCOUNT: usize = 10_000;
/// Most aliases one account may hold.
pub const MAX_ALIASES_PER_ACCOUNT: usize = 10_000;
/// Most keys (all accounts) the region keeps.
pub const MAX_KEYS: usize = 1_000_000;

const CIPHERTEXT_MAGIC: &[u8; 4] = b"FYK1";
const ID_LEN: usize = 16;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = CIPHERTEXT_MAGIC.len() + ID_LEN + 4 + NONCE_LEN;

#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0} is disabled")]
    Disabled(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("the ciphertext is invalid, altered, or its encryption context does not match")]
    InvalidCiphertext,
    #[error("the ciphertext was not encrypted under the key given")]
    IncorrectKey,
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A named quota (keys or aliases per account) would be exceeded.
    #[error("{0}")]
    Limit(String),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("stored KMS data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

impl KeyState {
    /// AWS's spelling in DescribeKey.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Material {
    version: u32,
    created: i64,
    #[serde(with = "serde_bytes")]
    sealed: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    id: String,
    account: String,
    description: String,
    state: KeyState,
    created: i64,
    deletion_date: Option<i64>,
    /// Oldest first; the last is current.
    materials: Vec<Material>,
}

/// What DescribeKey and ListKeys report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetadata {
    pub key_id: String,
    pub arn: String,
    pub account: String,
    pub description: String,
    pub state: KeyState,
    pub created: i64,
    pub deletion_date: Option<i64>,
    pub current_version: u32,
}

/// A data key: the plaintext to use and forget, and the ciphertext to store beside the data.
pub struct DataKey {
    pub key_id: String,
    pub plaintext: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Encryption context: sorted, so its canonical form does not depend on the caller's order.
pub type Context = BTreeMap<String, String>;

pub struct Kms<M> {
    meta: std::sync::Arc<M>,
    master: MasterKey,
    region: String,
    /// Seconds in a day of the deletion waiting period (tests shorten it).
    day_secs: i64,
    /// Unsealed key material by (key id, version): a version's material never changes, and
    /// every use still reads the key's record first, so a disabled or deleted key refuses
    /// before the cache is consulted. Saves a master-key unseal and a key schedule per
    /// object read under SSE-KMS.
    ciphers: std::sync::Mutex<CipherCache>,
    /// Key records by (account, key id) for Encrypt and Decrypt, which every SSE-KMS object
    /// read and write calls. Exact because this `Kms` is the only writer of the `kms` table:
    /// every change drops its entry after committing.
    records: std::sync::Mutex<RecordCache>,
}

type CipherCache = std::collections::HashMap<(String, u32), std::sync::Arc<LessSafeKey>>;
type RecordCache = std::collections::HashMap<(String, String), std::sync::Arc<KeyRecord>>;

/// Most cached key versions (and key records); past it a cache starts over.
const CIPHER_CACHE: usize = 4096;

fn record_key(account: &str, id: &str) -> Vec<u8> {
    format!("k/{account}/{id}").into_bytes()
}

fn alias_key(account: &str, alias: &str) -> Vec<u8> {
    format!("a/{account}/{alias}").into_bytes()
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, KmsError> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).map_err(|e| KmsError::Corrupt(e.to_string()))?;
    Ok(out)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, KmsError> {
    ciborium::from_reader(bytes).map_err(|e| KmsError::Corrupt(e.to_string()))
}

fn random(len: usize) -> Result<Vec<u8>, KmsError> {
    let mut b = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| KmsError::MasterKey("no randomness".into()))?;
    Ok(b)
}

/// The key version a ciphertext was sealed under, if it is one of ours.
pub fn ciphertext_version(ciphertext: &[u8]) -> Option<u32> {
    let v = ciphertext.get(4 + ID_LEN..8 + ID_LEN)?;
    ciphertext
        .starts_with(CIPHERTEXT_MAGIC)
        .then(|| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

/// Length-prefixed pairs, so `{"a":"bc"}` and `{"ab":"c"}` differ.
pub fn canonical_context(ctx: &Context) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in ctx {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn material_purpose(id: &str, version: u32) -> Vec<u8> {
    format!("kms-key/{id}/{version}").into_bytes()
}

impl<M: MetaStore> Kms<M> {
    pub fn new(meta: std::sync::Arc<M>, master: MasterKey, region: &str) -> Self {
        Self {
            meta,
            master,
            region: region.to_owned(),
            day_secs: 86_400,
            ciphers: Default::default(),
            records: Default::default(),
        }
    }

    /// Shortens (or lengthens) the day the deletion waiting period counts in; for tests.
    #[must_use]
    pub fn with_day_secs(mut self, secs: i64) -> Self {
        self.day_secs = secs.max(1);
        self
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The region master key, for secrets that belong to no customer key (SSE-S3 data keys,
    /// SSE-C key checks).
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The account's AWS managed key for a service (`alias/aws/s3`), created on first use,
    /// as AWS does when SSE-KMS names no key.
    pub async fn managed_key(
        &self,
        account: &str,
        service: &str,
        now: i64,
    ) -> Result<KeyMetadata, KmsError> {
        let alias = format!("aws/{service}");
        for _ in 0..3 {
            match self.describe(account, &format!("alias/{alias}")) {
                Err(KmsError::NotFound(_)) => {}
                found => return found,
            }
            let key = self
                .create_key(
                    account,
                    &format!(
                        "Default key that protects my {service} data when no other key is defined"
                    ),
                    now,
                )
                .await?;
            let mut b = WriteBatch::new();
            b.check_absent(Table::Kms, alias_key(account, &alias));
            b.put(
                Table::Kms,
                alias_key(account, &alias),
                key.key_id.clone().into_bytes(),
            );
            match self.meta.commit(b).await {
                Ok(()) => return Ok(key),
                // Another request made it first: use theirs (ours stays, unused).
                Err(MetaError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.describe(account, &format!("alias/{alias}"))
    }

    /// The key id a ciphertext names, if it is one of ours (nothing is checked yet).
    pub fn key_of(&self, ciphertext: &[u8]) -> Option<String> {
        if ciphertext.len() < HEADER_LEN + TAG_LEN || &ciphertext[..4] != CIPHERTEXT_MAGIC {
            return None;
        }
        let id: [u8; ID_LEN] = ciphertext[4..4 + ID_LEN].try_into().ok()?;
        Some(uuid::Uuid::from_bytes(id).to_string())
    }

    fn arn(&self, account: &str, id: &str) -> String {
        format!("arn:aws:kms:{}:{account}:key/{id}", self.region)
    }

    fn metadata(&self, r: &KeyRecord) -> KeyMetadata {
        KeyMetadata {
            key_id: r.id.clone(),
            arn: self.arn(&r.account, &r.id),
            account: r.account.clone(),
            description: r.description.clone(),
            state: r.state,
            created: r.created,
            deletion_date: r.deletion_date,
            current_version: r.materials.last().map_or(0, |m| m.version),
        }
    }

    pub async fn create_key(
        &self,
        account: &str,
        description: &str,
        now: i64,
    ) -> Result<KeyMetadata, KmsError> {
        if description.len() > 8192 {
            return Err(KmsError::Validation(
                "Description is longer than 8192 characters".into(),
            ));
        }
        if self.list_keys(account)?.len() >= MAX_KEYS_PER_ACCOUNT {
            return Err(KmsError::Limit(format!(
                "an account holds at most {MAX_KEYS_PER_ACCOUNT} keys"
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let material = random(32)?;
        let record = KeyRecord {
            id: id.clone(),
            account: account.to_owned(),
            description: description.to_owned(),
            state: KeyState::Enabled,
            created: now,
            deletion_date: None,
            materials: vec![Material {
                version: 1,
                created: now,
                sealed: self.master.seal(&material_purpose(&id, 1), &material)?,
            }],
        };
        let mut b = WriteBatch::new();
        b.check_absent(Table::Kms, record_key(account, &id));
        b.put(Table::Kms, record_key(account, &id), encode(&record)?);
        self.meta.commit(b).await?;
        Ok(self.metadata(&record))
    }

    /// Resolves a key id, key ARN, `alias/NAME` or alias ARN within `account`.
    fn resolve(&self, account: &str, key_ref: &str) -> Result<(KeyRecord, Vec<u8>), KmsError> {
        let not_found = || KmsError::NotFound(format!("Key '{key_ref}' does not exist"));
        let tail = key_ref.rsplit_once(':').map_or(key_ref, |(_, t)| t);
        let id = if let Some(name) = tail.strip_prefix("alias/") {
            let target = self
                .meta
                .get(Table::Kms, &alias_key(account, name))?
                .ok_or_else(|| {
                    KmsError::NotFound(format!("Alias 'alias/{name}' does not exist"))
                })?;
            String::from_utf8(target).map_err(|_| KmsError::Corrupt("alias target".into()))?
        } else if let Some(id) = tail.strip_prefix("key/") {
            id.to_owned()
        } else if key_ref.contains(':') {
            return Err(not_found());
        } else {
            tail.to_owned()
        };
        if uuid::Uuid::parse_str(&id).is_err() {
            return Err(not_found());
        }
        let raw = self
            .meta
            .get(Table::Kms, &record_key(account, &id))?
            .ok_or_else(not_found)?;
        Ok((decode(&raw)?, raw))
    }

    /// A key's record through the cache when `key_ref` names the key itself (id or ARN);
    /// aliases go to the store, since they can be repointed.
    fn record(&self, account: &str, key_ref: &str) -> Result<std::sync::Arc<KeyRecord>, KmsError> {
        let tail = key_ref.rsplit_once(':').map_or(key_ref, |(_, t)| t);
        let id = tail.strip_prefix("key/").unwrap_or(tail);
        let slot = (account.to_owned(), id.to_owned());
        if let Some(r) = self.records_do(|m| m.get(&slot).cloned()) {
            return Ok(r);
        }
        let r = std::sync::Arc::new(self.resolve(account, key_ref)?.0);
        if !tail.starts_with("alias/") {
            self.records_do(|m| {
                if m.len() >= CIPHER_CACHE {
                    m.clear();
                }
                m.insert(slot, r.clone());
            });
        }
        Ok(r)
    }

    fn records_do<T>(&self, f: impl FnOnce(&mut RecordCache) -> T) -> T {
        match self.records.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    fn forget(&self, account: &str, id: &str) {
        self.records_do(|m| m.remove(&(account.to_owned(), id.to_owned())));
    }

    pub fn describe(&self, account: &str, key_ref: &str) -> Result<KeyMetadata, KmsError> {
        Ok(self.metadata(&self.resolve(account, key_ref)?.0))
    }

    pub fn list_keys(&self, account: &str) -> Result<Vec<KeyMetadata>, KmsError> {
        let prefix = format!("k/{account}/").into_bytes();
        let end = feiyun_meta::prefix_end(&prefix);
        let mut out = Vec::new();
        let rows = feiyun_meta::scan_bounded(
            &*self.meta,
            Table::Kms,
            &prefix,
            end.as_deref(),
            MAX_KEYS_PER_ACCOUNT,
        )?;
        for (_, v) in rows {
            out.push(self.metadata(&decode::<KeyRecord>(&v)?));
        }
        Ok(out)
    }

    /// Read, change, and write back only if nobody changed the record meanwhile.
    async fn update(
        &self,
        account: &str,
        key_ref: &str,
        change: impl Fn(&mut KeyRecord) -> Result<(), KmsError>,
    ) -> Result<KeyMetadata, KmsError> {
        let mut attempts = 0;
        loop {
            let (mut record, raw) = self.resolve(account, key_ref)?;
            change(&mut record)?;
            let key = record_key(account, &record.id);
            let mut b = WriteBatch::new();
            b.check_value(Table::Kms, key.clone(), Some(raw));
            b.put(Table::Kms, key, encode(&record)?);
            match self.meta.commit(b).await {
                Ok(()) => {
                    self.forget(account, &record.id);
                    return Ok(self.metadata(&record));
                }
                Err(MetaError::Conflict(_)) if attempts < 5 => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub async fn set_enabled(
        &self,
        account: &str,
        key_ref: &str,
        enabled: bool,
    ) -> Result<KeyMetadata, KmsError> {
        self.update(account, key_ref, |r| {
            if r.state == KeyState::PendingDeletion {
                return Err(KmsError::InvalidState(format!(
                    "{} is pending deletion",
                    r.id
                )));
            }
            r.state = if enabled {
                KeyState::Enabled
            } else {
                KeyState::Disabled
            };
            Ok(())
        })
        .await
    }

    /// Schedules deletion `days` (7–30) from `now`; the key is unusable from now on.
    pub async fn schedule_deletion(
        &self,
        account: &str,
        key_ref: &str,
        days: u32,
        now: i64,
    ) -> Result<KeyMetadata, KmsError> {
        if !DELETION_WINDOW_DAYS.contains(&days) {
            return Err(KmsError::Validation(format!(
                "PendingWindowInDays must be between 7 and 30, not {days}"
            )));
        }
        self.update(account, key_ref, |r| {
            if r.state == KeyState::PendingDeletion {
                return Err(KmsError::InvalidState(format!(
                    "{} is already pending deletion",
                    r.id
                )));
            }
            r.state = KeyState::PendingDeletion;
            r.deletion_date = Some(now + i64::from(days) * self.day_secs);
            Ok(())
        })
        .await
    }

    /// Cancels a scheduled deletion; the key comes back disabled, as in AWS.
    pub async fn cancel_deletion(
        &self,
        account: &str,
        key_ref: &str,
    ) -> Result<KeyMetadata, KmsError> {
        self.update(account, key_ref, |r| {
            if r.state != KeyState::PendingDeletion {
                return Err(KmsError::InvalidState(format!(
                    "{} is not pending deletion",
                    r.id
                )));
            }
            r.state = KeyState::Disabled;
            r.deletion_date = None;
            Ok(())
        })
        .await
    }

    /// New key material becomes current; older versions stay to decrypt what they sealed.
    pub async fn rotate(
        &self,
        account: &str,
        key_ref: &str,
        now: i64,
    ) -> Result<KeyMetadata, KmsError> {
        let material = random(32)?;
        self.update(account, key_ref, |r| {
            if r.state != KeyState::Enabled {
                return Err(KmsError::Disabled(r.id.clone()));
            }
            let version = r.materials.last().map_or(1, |m| m.version + 1);
            r.materials.push(Material {
                version,
                created: now,
                sealed: self
                    .master
                    .seal(&material_purpose(&r.id, version), &material)?,
            });
            Ok(())
        })
        .await
    }

    /// Deletes every key whose waiting period ended by `now`, with its material and aliases;
    /// returns their ids. Ciphertexts under them can never be decrypted again.
    pub async fn purge_due(&self, now: i64) -> Result<Vec<String>, KmsError> {
        let mut purged = Vec::new();
        let rows =
            feiyun_meta::scan_bounded(&*self.meta, Table::Kms, b"k/", Some(b"k0"), MAX_KEYS)?;
        for (k, v) in rows {
            let r: KeyRecord = decode(&v)?;
            if r.state != KeyState::PendingDeletion || r.deletion_date.is_none_or(|d| d > now) {
                continue;
            }
            let mut b = WriteBatch::new();
            b.check_value(Table::Kms, k.clone(), Some(v));
            b.delete(Table::Kms, k);
            for (alias, _) in self
                .aliases(&r.account)?
                .into_iter()
                .filter(|(_, id)| *id == r.id)
            {
                b.delete(Table::Kms, alias_key(&r.account, &alias));
            }
            self.meta.commit(b).await?;
            self.cached(|m| m.retain(|(id, _), _| *id != r.id));
            self.forget(&r.account, &r.id);
            purged.push(r.id);
        }
        Ok(purged)
    }

    /// `(alias name without "alias/", key id)` pairs of an account.
    pub fn aliases(&self, account: &str) -> Result<Vec<(String, String)>, KmsError> {
        let prefix = format!("a/{account}/").into_bytes();
        let end = feiyun_meta::prefix_end(&prefix);
        let mut out = Vec::new();
        let rows = feiyun_meta::scan_bounded(
            &*self.meta,
            Table::Kms,
            &prefix,
            end.as_deref(),
            MAX_ALIASES_PER_ACCOUNT,
        )?;
        for (k, v) in rows {
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((name, String::from_utf8_lossy(&v).into_owned()));
        }
        Ok(out)
    }

    pub async fn create_alias(
        &self,
        account: &str,
        alias: &str,
        key_ref: &str,
    ) -> Result<(), KmsError> {
        let name = validate_alias(alias)?;
        let (record, _) = self.resolve(account, key_ref)?;
        if self.aliases(account)?.len() >= MAX_ALIASES_PER_ACCOUNT {
            return Err(KmsError::Limit(format!(
                "an account holds at most {MAX_ALIASES_PER_ACCOUNT} aliases"
            )));
        }
        let mut b = WriteBatch::new();
        b.check_absent(Table::Kms, alias_key(account, name));
        b.check_present(Table::Kms, record_key(account, &record.id));
        b.put(
            Table::Kms,
            alias_key(account, name),
            record.id.clone().into_bytes(),
        );
        match self.meta.commit(b).await {
            Err(MetaError::Conflict(_)) => Err(KmsError::AlreadyExists(format!(
                "An alias with the name {alias} already exists"
            ))),
            r => Ok(r?),
        }
    }

    pub async fn delete_alias(&self, account: &str, alias: &str) -> Result<(), KmsError> {
        let name = validate_alias(alias)?;
        let mut b = WriteBatch::new();
        b.check_present(Table::Kms, alias_key(account, name));
        b.delete(Table::Kms, alias_key(account, name));
        match self.meta.commit(b).await {
            Err(MetaError::Conflict(_)) => {
                Err(KmsError::NotFound(format!("Alias {alias} does not exist")))
            }
            r => Ok(r?),
        }
    }

    fn usable(&self, record: &KeyRecord) -> Result<(), KmsError> {
        match record.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::Disabled(self.arn(&record.account, &record.id))),
            KeyState::PendingDeletion => Err(KmsError::InvalidState(format!(
                "{} is pending deletion",
                self.arn(&record.account, &record.id)
            ))),
        }
    }

    fn cipher(
        &self,
        record: &KeyRecord,
        version: u32,
    ) -> Result<std::sync::Arc<LessSafeKey>, KmsError> {
        let slot = (record.id.clone(), version);
        if let Some(c) = self.cached(|m| m.get(&slot).cloned()) {
            return Ok(c);
        }
        let m = record
            .materials
            .iter()
            .find(|m| m.version == version)
            .ok_or(KmsError::InvalidCiphertext)?;
        let material = self
            .master
            .unseal(&material_purpose(&record.id, version), &m.sealed)?;
        let key = UnboundKey::new(&AES_256_GCM, &material)
            .map_err(|_| KmsError::Corrupt(format!("key material of {}", record.id)))?;
        let c = std::sync::Arc::new(LessSafeKey::new(key));
        self.cached(|m| {
            if m.len() >= CIPHER_CACHE {
                m.clear();
            }
            m.insert(slot, c.clone());
        });
        Ok(c)
    }

    /// Forgets every cached key record and cipher: another node of the region changed a
    /// key (disabled, rotated, scheduled for deletion).
    pub fn forget_cached(&self) {
        self.cached(|m| m.clear());
        self.records_do(|m| m.clear());
    }

    fn cached<T>(&self, f: impl FnOnce(&mut CipherCache) -> T) -> T {
        match self.ciphers.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    fn seal_with(
        &self,
        record: &KeyRecord,
        plaintext: &[u8],
        ctx: &Context,
    ) -> Result<Vec<u8>, KmsError> {
        self.usable(record)?;
        let version = record
            .materials
            .last()
            .map(|m| m.version)
            .ok_or_else(|| KmsError::Corrupt(format!("{} has no material", record.id)))?;
        let id =
            uuid::Uuid::parse_str(&record.id).map_err(|_| KmsError::Corrupt("key id".into()))?;
        let nonce = random(NONCE_LEN)?;
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(CIPHERTEXT_MAGIC);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut aad = out[..CIPHERTEXT_MAGIC.len() + ID_LEN + 4].to_vec();
        aad.extend_from_slice(&canonical_context(ctx));
        let mut body = plaintext.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(&nonce)
            .map_err(|_| KmsError::Corrupt("nonce".into()))?;
        self.cipher(record, version)?
            .seal_in_place_append_tag(nonce, Aad::from(&aad[..]), &mut body)
            .map_err(|_| KmsError::Corrupt("sealing failed".into()))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn encrypt(
        &self,
        account: &str,
        key_ref: &str,
        plaintext: &[u8],
        ctx: &Context,
    ) -> Result<Vec<u8>, KmsError> {
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(KmsError::Validation(format!(
                "Plaintext must be 1 to {MAX_PLAINTEXT} bytes"
            )));
        }
        let record = self.record(account, key_ref)?;
        self.seal_with(&record, plaintext, ctx)
    }

    /// Returns the key id and the plaintext. With `expected`, the ciphertext must be under
    /// that key (IncorrectKeyException otherwise).
    pub fn decrypt(
        &self,
        account: &str,
        ciphertext: &[u8],
        ctx: &Context,
        expected: Option<&str>,
    ) -> Result<(KeyMetadata, Vec<u8>), KmsError> {
        let id = self.key_of(ciphertext).ok_or(KmsError::InvalidCiphertext)?;
        let mut v = [0u8; 4];
        v.copy_from_slice(&ciphertext[4 + ID_LEN..8 + ID_LEN]);
        let version = u32::from_be_bytes(v);
        let record = match self.record(account, &id) {
            Ok(r) => r,
            // A deleted key's ciphertexts are as unreadable as garbage.
            Err(KmsError::NotFound(_)) => return Err(KmsError::InvalidCiphertext),
            Err(e) => return Err(e),
        };
        if let Some(want) = expected {
            let (w, _) = self.resolve(account, want)?;
            if w.id != record.id {
                return Err(KmsError::IncorrectKey);
            }
        }
        self.usable(&record)?;
        let mut aad = ciphertext[..8 + ID_LEN].to_vec();
        aad.extend_from_slice(&canonical_context(ctx));
        let nonce = Nonce::try_assume_unique_for_key(&ciphertext[8 + ID_LEN..HEADER_LEN])
            .map_err(|_| KmsError::InvalidCiphertext)?;
        let mut body = ciphertext[HEADER_LEN..].to_vec();
        let plain = self
            .cipher(&record, version)?
            .open_in_place(nonce, Aad::from(&aad[..]), &mut body)
            .map_err(|_| KmsError::InvalidCiphertext)?;
        Ok((self.metadata(&record), plain.to_vec()))
    }

    pub fn generate_data_key(
        &self,
        account: &str,
        key_ref: &str,
        bytes: usize,
        ctx: &Context,
    ) -> Result<DataKey, KmsError> {
        if bytes == 0 || bytes > MAX_DATA_KEY {
            return Err(KmsError::Validation(format!(
                "NumberOfBytes must be 1 to {MAX_DATA_KEY}"
            )));
        }
        let (record, _) = self.resolve(account, key_ref)?;
        let plaintext = random(bytes)?;
        let ciphertext = self.seal_with(&record, &plaintext, ctx)?;
        Ok(DataKey {
            key_id: self.arn(account, &record.id),
            plaintext,
            ciphertext,
        })
    }

    /// Decrypts under the source context and encrypts under `dest_key` and its context,
    /// without the plaintext leaving the KMS.
    pub fn re_encrypt(
        &self,
        account: &str,
        ciphertext: &[u8],
        source_ctx: &Context,
        dest_key: &str,
        dest_ctx: &Context,
    ) -> Result<(KeyMetadata, Vec<u8>), KmsError> {
        let (_, plain) = self.decrypt(account, ciphertext, source_ctx, None)?;
        let (dest, _) = self.resolve(account, dest_key)?;
        let out = self.seal_with(&dest, &plain, dest_ctx)?;
        Ok((self.metadata(&dest), out))
    }
}

/// `alias/NAME` with AWS's rules; returns NAME. `alias/aws/` is reserved for AWS managed keys.
fn validate_alias(alias: &str) -> Result<&str, KmsError> {
    let name = alias
        .strip_prefix("alias/")
        .ok_or_else(|| KmsError::Validation("Alias names must begin with 'alias/'".into()))?;
    if name.is_empty()
        || alias.len() > 256
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
    {
        return Err(KmsError::Validation(format!(
            "Alias {alias} must be 1 to 250 letters, digits, '/', '_' or '-' after 'alias/'"
        )));
    }
    if name.starts_with("aws/") {
        return Err(KmsError::Validation(
            "Aliases that begin with 'alias/aws/' are reserved".into(),
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests;
