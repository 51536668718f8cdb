//! Inline policies of users, groups and roles; customer managed policies and their
//! attachments.

use super::*;

impl<M: MetaStore> Iam<M> {
    pub async fn put_inline_policy(
        &self,
        account: &str,
        kind: EntityKind,
        entity: &str,
        policy_name: &str,
        doc: &str,
    ) -> Result<(), IamError> {
        check_name("policyName", policy_name, limits::POLICY_NAME_LEN)?;
        Policy::parse(doc, PolicyKind::Identity)?;
        self.change(|st, b| {
            self.edit_inline(st, b, account, kind, entity, |inline| {
                let mut next = inline.clone();
                next.insert(policy_name.to_owned(), doc.to_owned());
                // The quota is on all of an entity's inline policies together.
                let total: usize = next
                    .values()
                    .map(|d| crate::policy::non_whitespace_len(d))
                    .sum();
                if total > kind.inline_limit() {
                    return Err(IamError::LimitExceeded(format!(
                        "Maximum policy size of {} bytes exceeded for {} {entity}",
                        kind.inline_limit(),
                        kind.label()
                    )));
                }
                *inline = next;
                Ok(())
            })
        })
        .await
    }

    pub async fn delete_inline_policy(
        &self,
        account: &str,
        kind: EntityKind,
        entity: &str,
        policy_name: &str,
    ) -> Result<(), IamError> {
        self.change(|st, b| {
            self.edit_inline(st, b, account, kind, entity, |inline| {
                inline.remove(policy_name).map(|_| ()).ok_or_else(|| {
                    IamError::NoSuchEntity(format!(
                        "The {} policy with name {policy_name} cannot be found.",
                        kind.label()
                    ))
                })
            })
        })
        .await
    }

    pub fn inline_policies(
        &self,
        account: &str,
        kind: EntityKind,
        entity: &str,
    ) -> Result<BTreeMap<String, String>, IamError> {
        let st = self.snapshot();
        Ok(match kind {
            EntityKind::User => st.user(account, entity)?.inline.clone(),
            EntityKind::Group => st.group(account, entity)?.inline.clone(),
            EntityKind::Role => st.role(account, entity)?.inline.clone(),
        })
    }

    pub(super) fn edit_inline(
        &self,
        st: &IamState,
        b: &mut WriteBatch,
        account: &str,
        kind: EntityKind,
        entity: &str,
        edit: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), IamError>,
    ) -> Result<(), IamError> {
        let k = entity_key(kind.prefix(), account, entity);
        match kind {
            EntityKind::User => {
                let mut u = st.user(account, entity)?.clone();
                edit(&mut u.inline)?;
                b.put(Table::Iam, k, encode(&u)?);
            }
            EntityKind::Group => {
                let mut g = st.group(account, entity)?.clone();
                edit(&mut g.inline)?;
                b.put(Table::Iam, k, encode(&g)?);
            }
            EntityKind::Role => {
                let mut r = st.role(account, entity)?.clone();
                edit(&mut r.inline)?;
                b.put(Table::Iam, k, encode(&r)?);
            }
        }
        Ok(())
    }

    pub async fn create_policy(
        &self,
        account: &str,
        name: &str,
        path: Option<&str>,
        doc: &str,
        description: Option<String>,
    ) -> Result<ManagedPolicyView, IamError> {
        check_name("policyName", name, limits::POLICY_NAME_LEN)?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        Policy::parse_limited(doc, PolicyKind::Identity, plimits::MANAGED)?;
        self.change(|st, b| {
            if st
                .policies
                .contains_key(&(account.to_owned(), name.to_lowercase()))
            {
                return Err(IamError::EntityAlreadyExists(format!(
                    "A policy called {name} already exists. Duplicate names are not allowed."
                )));
            }
            let t = now();
            let r = ManagedPolicyRecord {
                name: name.to_owned(),
                id: new_id("ANPA", 17),
                path: path.to_owned(),
                created: t,
                updated: t,
                description: description.clone(),
                document: doc.to_owned(),
            };
            b.put(Table::Iam, entity_key(POLICY, account, name), encode(&r)?);
            Ok(ManagedPolicyView {
                arn: policy_arn(account, path, name),
                name: r.name,
                id: r.id,
                path: r.path,
                document: r.document,
                created: t,
                updated: t,
                description,
                aws_managed: false,
            })
        })
        .await
    }

    pub async fn delete_policy(&self, account: &str, arn: &str) -> Result<(), IamError> {
        self.change(|st, b| {
            let p = st
                .managed_policy(arn)
                .filter(|p| !p.aws_managed && arn.contains(&format!("::{account}:")))
                .ok_or_else(|| {
                    IamError::NoSuchEntity(format!(
                        "Policy {arn} does not exist or is not attachable."
                    ))
                })?;
            if st.attachment_count(arn) > 0 {
                return Err(IamError::DeleteConflict(
                    "Cannot delete a policy attached to entities.".into(),
                ));
            }
            b.delete(Table::Iam, entity_key(POLICY, account, &p.name));
            Ok(())
        })
        .await
    }

    pub async fn attach_policy(
        &self,
        account: &str,
        kind: EntityKind,
        entity: &str,
        arn: &str,
    ) -> Result<(), IamError> {
        self.change(|st, b| {
            if st.managed_policy(arn).is_none() {
                return Err(IamError::NoSuchEntity(format!(
                    "Policy {arn} does not exist or is not attachable."
                )));
            }
            self.edit_attached(st, b, account, kind, entity, |list| {
                if list.iter().any(|a| a == arn) {
                    return Ok(());
                }
                if list.len() >= limits::MANAGED_POLICIES_PER_ENTITY {
                    return Err(IamError::LimitExceeded(format!(
                        "Cannot exceed quota for PoliciesPer{}: {}",
                        match kind {
                            EntityKind::User => "User",
                            EntityKind::Group => "Group",
                            EntityKind::Role => "Role",
                        },
                        limits::MANAGED_POLICIES_PER_ENTITY
                    )));
                }
                list.push(arn.to_owned());
                Ok(())
            })
        })
        .await
    }

    pub async fn detach_policy(
        &self,
        account: &str,
        kind: EntityKind,
        entity: &str,
        arn: &str,
    ) -> Result<(), IamError> {
        self.change(|st, b| {
            self.edit_attached(st, b, account, kind, entity, |list| {
                let before = list.len();
                list.retain(|a| a != arn);
                if list.len() == before {
                    return Err(IamError::NoSuchEntity(format!(
                        "Policy {arn} was not found."
                    )));
                }
                Ok(())
            })
        })
        .await
    }

    pub fn attached_policies(
        &self,
        account: &str,
        kind: EntityKind,
        entity: &str,
    ) -> Result<Vec<String>, IamError> {
        let st = self.snapshot();
        Ok(match kind {
            EntityKind::User => st.user(account, entity)?.attached.clone(),
            EntityKind::Group => st.group(account, entity)?.attached.clone(),
            EntityKind::Role => st.role(account, entity)?.attached.clone(),
        })
    }

    pub(super) fn edit_attached(
        &self,
        st: &IamState,
        b: &mut WriteBatch,
        account: &str,
        kind: EntityKind,
        entity: &str,
        edit: impl FnOnce(&mut Vec<String>) -> Result<(), IamError>,
    ) -> Result<(), IamError> {
        let k = entity_key(kind.prefix(), account, entity);
        match kind {
            EntityKind::User => {
                let mut u = st.user(account, entity)?.clone();
                edit(&mut u.attached)?;
                b.put(Table::Iam, k, encode(&u)?);
            }
            EntityKind::Group => {
                let mut g = st.group(account, entity)?.clone();
                edit(&mut g.attached)?;
                b.put(Table::Iam, k, encode(&g)?);
            }
            EntityKind::Role => {
                let mut r = st.role(account, entity)?.clone();
                edit(&mut r.attached)?;
                b.put(Table::Iam, k, encode(&r)?);
            }
        }
        Ok(())
    }
}
