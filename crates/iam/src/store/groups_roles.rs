//! Groups and their members; roles, their trust policies and tags.

use super::*;

impl<M: MetaStore> Iam<M> {
    pub async fn create_group(
        &self,
        account: &str,
        name: &str,
        path: Option<&str>,
    ) -> Result<GroupRecord, IamError> {
        check_name("groupName", name, limits::GROUP_NAME_LEN)?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        self.change(|st, b| {
            if st.group(account, name).is_ok() {
                return Err(IamError::EntityAlreadyExists(format!(
                    "Group with name {name} already exists."
                )));
            }
            let g = GroupRecord {
                name: name.to_owned(),
                id: new_id("AGPA", 17),
                path: path.to_owned(),
                created: now(),
                inline: BTreeMap::new(),
                attached: Vec::new(),
            };
            b.put(Table::Iam, entity_key(GROUP, account, name), encode(&g)?);
            Ok(g)
        })
        .await
    }

    pub async fn delete_group(&self, account: &str, name: &str) -> Result<(), IamError> {
        self.change(|st, b| {
            let g = st.group(account, name)?;
            if !st.group_members(account, name).is_empty() {
                return Err(IamError::DeleteConflict(
                    "Cannot delete entity, must remove users from group first.".into(),
                ));
            }
            if !g.inline.is_empty() || !g.attached.is_empty() {
                return Err(IamError::DeleteConflict(
                    "Cannot delete entity, must delete policies first.".into(),
                ));
            }
            b.delete(Table::Iam, entity_key(GROUP, account, name));
            Ok(())
        })
        .await
    }

    pub async fn add_user_to_group(
        &self,
        account: &str,
        group: &str,
        user: &str,
    ) -> Result<(), IamError> {
        self.change(|st, b| {
            let g = st.group(account, group)?;
            let mut u = st.user(account, user)?.clone();
            if u.groups.iter().any(|x| x.eq_ignore_ascii_case(&g.name)) {
                return Ok(());
            }
            if u.groups.len() >= limits::GROUPS_PER_USER {
                return Err(IamError::LimitExceeded(format!(
                    "Cannot exceed quota for GroupsPerUser: {}",
                    limits::GROUPS_PER_USER
                )));
            }
            u.groups.push(g.name.clone());
            b.put(Table::Iam, entity_key(USER, account, user), encode(&u)?);
            Ok(())
        })
        .await
    }

    pub async fn remove_user_from_group(
        &self,
        account: &str,
        group: &str,
        user: &str,
    ) -> Result<(), IamError> {
        self.change(|st, b| {
            st.group(account, group)?;
            let mut u = st.user(account, user)?.clone();
            let before = u.groups.len();
            u.groups.retain(|x| !x.eq_ignore_ascii_case(group));
            if u.groups.len() == before {
                return Err(IamError::NoSuchEntity(format!(
                    "User {user} is not in group {group}."
                )));
            }
            b.put(Table::Iam, entity_key(USER, account, user), encode(&u)?);
            Ok(())
        })
        .await
    }

    pub async fn create_role(
        &self,
        account: &str,
        spec: NewRole<'_>,
    ) -> Result<RoleRecord, IamError> {
        let NewRole {
            name,
            path,
            trust_policy,
            description,
            max_session_secs,
            tags,
        } = spec;
        check_name("roleName", name, limits::ROLE_NAME_LEN)?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        check_tags(&tags)?;
        Policy::parse_limited(trust_policy, PolicyKind::Trust, plimits::TRUST)?;
        let max = max_session_secs.unwrap_or(limits::MIN_SESSION_SECS);
        if !(limits::MIN_SESSION_SECS..=limits::MAX_SESSION_SECS).contains(&max) {
            return Err(IamError::Validation(format!(
                "MaxSessionDuration must be between {} and {} seconds",
                limits::MIN_SESSION_SECS,
                limits::MAX_SESSION_SECS
            )));
        }
        self.change(|st, b| {
            if st.role(account, name).is_ok() {
                return Err(IamError::EntityAlreadyExists(format!(
                    "Role with name {name} already exists."
                )));
            }
            let r = RoleRecord {
                name: name.to_owned(),
                id: new_id("AROA", 17),
                path: path.to_owned(),
                created: now(),
                trust_policy: trust_policy.to_owned(),
                description,
                max_session_secs: max,
                tags,
                inline: BTreeMap::new(),
                attached: Vec::new(),
            };
            b.put(Table::Iam, entity_key(ROLE, account, name), encode(&r)?);
            Ok(r)
        })
        .await
    }

    pub async fn delete_role(&self, account: &str, name: &str) -> Result<(), IamError> {
        self.change(|st, b| {
            let r = st.role(account, name)?;
            if !r.inline.is_empty() || !r.attached.is_empty() {
                return Err(IamError::DeleteConflict(
                    "Cannot delete entity, must detach all policies first.".into(),
                ));
            }
            b.delete(Table::Iam, entity_key(ROLE, account, name));
            Ok(())
        })
        .await
    }

    pub async fn update_trust_policy(
        &self,
        account: &str,
        name: &str,
        doc: &str,
    ) -> Result<(), IamError> {
        Policy::parse_limited(doc, PolicyKind::Trust, plimits::TRUST)?;
        self.change(|st, b| {
            let mut r = st.role(account, name)?.clone();
            r.trust_policy = doc.to_owned();
            b.put(Table::Iam, entity_key(ROLE, account, name), encode(&r)?);
            Ok(())
        })
        .await
    }

    pub async fn tag_role(
        &self,
        account: &str,
        name: &str,
        tags: Vec<Tag>,
    ) -> Result<(), IamError> {
        self.change(|st, b| {
            let mut r = st.role(account, name)?.clone();
            r.tags = merge_tags(&r.tags, tags)?;
            b.put(Table::Iam, entity_key(ROLE, account, name), encode(&r)?);
            Ok(())
        })
        .await
    }

    pub async fn untag_role(
        &self,
        account: &str,
        name: &str,
        keys: &[String],
    ) -> Result<(), IamError> {
        self.change(|st, b| {
            let mut r = st.role(account, name)?.clone();
            r.tags.retain(|t| !keys.contains(&t.key));
            b.put(Table::Iam, entity_key(ROLE, account, name), encode(&r)?);
            Ok(())
        })
        .await
    }
}
