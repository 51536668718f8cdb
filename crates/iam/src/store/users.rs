//! Users and their access keys and tags.

use super::*;

impl<M: MetaStore> Iam<M> {
    pub async fn create_user(
        &self,
        account: &str,
        name: &str,
        path: Option<&str>,
        tags: Vec<Tag>,
    ) -> Result<UserRecord, IamError> {
        check_name("userName", name, limits::USER_NAME_LEN)?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        check_tags(&tags)?;
        self.change(|st, b| {
            if st.user(account, name).is_ok() {
                return Err(IamError::EntityAlreadyExists(format!(
                    "User with name {name} already exists."
                )));
            }
            let u = UserRecord {
                name: name.to_owned(),
                id: new_id("AIDA", 17),
                path: path.to_owned(),
                created: now(),
                tags,
                inline: BTreeMap::new(),
                attached: Vec::new(),
                groups: Vec::new(),
            };
            b.put(Table::Iam, entity_key(USER, account, name), encode(&u)?);
            Ok(u)
        })
        .await
    }

    pub async fn delete_user(&self, account: &str, name: &str) -> Result<(), IamError> {
        self.change(|st, b| {
            let u = st.user(account, name)?;
            let conflict = |what: &str| {
                Err(IamError::DeleteConflict(format!(
                    "Cannot delete entity, must {what} first."
                )))
            };
            if st
                .keys
                .values()
                .any(|k| k.account == account && k.user.eq_ignore_ascii_case(name))
            {
                return conflict("delete access keys");
            }
            if !u.inline.is_empty() {
                return conflict("delete policies");
            }
            if !u.attached.is_empty() {
                return conflict("detach all policies");
            }
            if !u.groups.is_empty() {
                return conflict("remove users from group");
            }
            if st.mfa.values().any(|d| {
                d.account == account
                    && d.user
                        .as_deref()
                        .is_some_and(|x| x.eq_ignore_ascii_case(name))
            }) {
                return conflict("delete MFA devices");
            }
            b.delete(Table::Iam, entity_key(USER, account, name));
            Ok(())
        })
        .await
    }

    pub async fn tag_user(
        &self,
        account: &str,
        name: &str,
        tags: Vec<Tag>,
    ) -> Result<(), IamError> {
        self.change(|st, b| {
            let mut u = st.user(account, name)?.clone();
            u.tags = merge_tags(&u.tags, tags)?;
            b.put(Table::Iam, entity_key(USER, account, name), encode(&u)?);
            Ok(())
        })
        .await
    }

    pub async fn untag_user(
        &self,
        account: &str,
        name: &str,
        keys: &[String],
    ) -> Result<(), IamError> {
        self.change(|st, b| {
            let mut u = st.user(account, name)?.clone();
            u.tags.retain(|t| !keys.contains(&t.key));
            b.put(Table::Iam, entity_key(USER, account, name), encode(&u)?);
            Ok(())
        })
        .await
    }

    pub async fn create_access_key(
        &self,
        account: &str,
        user: &str,
    ) -> Result<AccessKeyRecord, IamError> {
        self.change(|st, b| {
            let id = new_id("AKIA", 16);
            self.add_key(st, b, account, user, id, new_secret(), KeyStatus::Active)
        })
        .await
    }

    /// An access key whose id and secret come from elsewhere (a MinIO export, where the
    /// user *is* its access key): clients keep their credentials across a migration. The
    /// id must be free here and not look like one this region issues for sessions; the
    /// secret must be one a signer can hold.
    pub async fn import_access_key(
        &self,
        account: &str,
        user: &str,
        access_key: &str,
        secret: &str,
        status: KeyStatus,
    ) -> Result<AccessKeyRecord, IamError> {
        check_imported_key(access_key, secret)?;
        if access_key == self.root.access_key {
            return Err(IamError::EntityAlreadyExists(format!(
                "The access key {access_key} is taken"
            )));
        }
        self.change(|st, b| {
            if st.keys.contains_key(access_key) {
                return Err(IamError::EntityAlreadyExists(format!(
                    "The access key {access_key} is taken"
                )));
            }
            let (id, secret) = (access_key.to_owned(), secret.to_owned());
            self.add_key(st, b, account, user, id, secret, status)
        })
        .await
    }

    /// Adds a key to `user` in `b`, within the per-user quota; the id must be free when
    /// the batch commits.
    #[allow(clippy::too_many_arguments)]
    fn add_key(
        &self,
        st: &IamState,
        b: &mut WriteBatch,
        account: &str,
        user: &str,
        access_key: String,
        secret: String,
        status: KeyStatus,
    ) -> Result<AccessKeyRecord, IamError> {
        let u = st.user(account, user)?;
        let n = st
            .keys
            .values()
            .filter(|k| k.account == account && k.user == u.name)
            .count();
        if n >= limits::ACCESS_KEYS_PER_USER {
            return Err(IamError::LimitExceeded(format!(
                "Cannot exceed quota for AccessKeysPerUser: {}",
                limits::ACCESS_KEYS_PER_USER
            )));
        }
        let k = AccessKeyRecord {
            access_key,
            secret,
            account: account.to_owned(),
            user: u.name.clone(),
            status,
            created: now(),
        };
        let row = key(&[KEY, &k.access_key]);
        b.check_absent(Table::Iam, row.clone());
        b.put(Table::Iam, row.clone(), self.sealed(&row, &k)?);
        Ok(k)
    }

    pub fn list_access_keys(
        &self,
        account: &str,
        user: &str,
    ) -> Result<Vec<AccessKeyRecord>, IamError> {
        let st = self.snapshot();
        let u = st.user(account, user)?;
        Ok(st
            .keys
            .values()
            .filter(|k| k.account == account && k.user == u.name)
            .cloned()
            .collect())
    }

    pub(super) fn owned_key<'a>(
        st: &'a IamState,
        account: &str,
        user: Option<&str>,
        access_key: &str,
    ) -> Result<&'a AccessKeyRecord, IamError> {
        let k = st
            .keys
            .get(access_key)
            .filter(|k| k.account == account && user.is_none_or(|u| k.user.eq_ignore_ascii_case(u)))
            .ok_or_else(|| {
                IamError::NoSuchEntity(format!(
                    "The Access Key with id {access_key} cannot be found."
                ))
            })?;
        Ok(k)
    }

    pub async fn update_access_key(
        &self,
        account: &str,
        user: Option<&str>,
        access_key: &str,
        status: KeyStatus,
    ) -> Result<(), IamError> {
        self.change(|st, b| {
            let mut k = Self::owned_key(st, account, user, access_key)?.clone();
            k.status = status;
            let row = key(&[KEY, access_key]);
            b.put(Table::Iam, row.clone(), self.sealed(&row, &k)?);
            Ok(())
        })
        .await
    }

    pub async fn delete_access_key(
        &self,
        account: &str,
        user: Option<&str>,
        access_key: &str,
    ) -> Result<(), IamError> {
        self.change(|st, b| {
            Self::owned_key(st, account, user, access_key)?;
            b.delete(Table::Iam, key(&[KEY, access_key]));
            Ok(())
        })
        .await
    }
}

/// What an imported key must be: an id the signature parsers read as one token (no `,`,
/// `=` or `/`, which separate a credential's fields) and not a session's (`ASIA…`), and a
/// secret of 8 to 128 printable characters (MinIO's shortest is 8).
pub fn check_imported_key(access_key: &str, secret: &str) -> Result<(), IamError> {
    let id_ok = (3..=128).contains(&access_key.len())
        && access_key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+.@_-".contains(&b))
        && !access_key.starts_with("ASIA");
    if !id_ok {
        return Err(IamError::Validation(
            "AccessKeyId must be 3 to 128 of A-Z, a-z, 0-9 and +.@_- and not start with ASIA"
                .into(),
        ));
    }
    let secret_ok =
        (8..=128).contains(&secret.len()) && secret.bytes().all(|b| b.is_ascii_graphic());
    if !secret_ok {
        return Err(IamError::Validation(
            "SecretAccessKey must be 8 to 128 printable characters".into(),
        ));
    }
    Ok(())
}
