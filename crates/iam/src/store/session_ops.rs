//! STS sessions as the store issues them: the durable row, the per-principal and region-wide
//! quotas, and the caller a live session row stands for.

use super::*;

impl<M: MetaStore> Iam<M> {
    /// Stores new temporary credentials for `subject`, asked for by `issued_by` (the
    /// principal counted against the per-principal quota).
    #[allow(clippy::too_many_arguments)]
    pub async fn issue_session(
        &self,
        account: &str,
        subject: SessionSubject,
        duration_secs: i64,
        session_policy: Option<String>,
        mfa_at: Option<i64>,
        source_identity: Option<String>,
        issued_by: &str,
    ) -> Result<SessionRecord, IamError> {
        if let Some(p) = &session_policy {
            Policy::parse_limited(p, PolicyKind::Identity, plimits::SESSION).map_err(
                |e| match e {
                    crate::PolicyError::TooLarge { .. } => IamError::PackedPolicyTooLarge(
                        "Packed size of the session policy exceeds the limit.".into(),
                    ),
                    other => other.into(),
                },
            )?;
        }
        // No snapshot rebuild and no writer lock: room is reserved against the quotas, the
        // row commits (grouped with other sessions' by the engine), and the session enters
        // its own map, its caller compiled under the same lock a rebuild swaps the
        // snapshot under, so it never misses a change of its role.
        let t = now();
        let expired = {
            let mut s = self.sessions_write();
            s.reserve(issued_by, t).map_err(IamError::LimitExceeded)?;
            s.expired(t, 16)
        };
        let r = SessionRecord {
            access_key: new_id("ASIA", 16),
            secret: new_secret(),
            token: new_session_token(),
            account: account.to_owned(),
            subject,
            issued: t,
            expires: t + duration_secs,
            session_policy,
            mfa_at,
            source_identity,
            issued_by: Some(issued_by.to_owned()),
        };
        let row = key(&[SESSION, &r.access_key]);
        let mut b = WriteBatch::new();
        for k in &expired {
            b.delete(Table::Iam, key(&[SESSION, k]));
        }
        b.check_absent(Table::Iam, row.clone());
        let sealed = match self.sealed(&row, &r) {
            Ok(v) => v,
            Err(e) => {
                self.sessions_write().unreserve(issued_by);
                return Err(e);
            }
        };
        b.put(Table::Iam, row, sealed);
        if let Err(e) = self.meta.commit(b).await {
            self.sessions_write().unreserve(issued_by);
            return Err(e.into());
        }
        let mut s = self.sessions_write();
        for k in &expired {
            s.remove(k);
        }
        let caller = session_caller(&self.snapshot(), &r);
        s.insert_reserved(r.clone(), caller);
        Ok(r)
    }

    /// Whether `access_key` names a session that has expired (for the `ExpiredToken` error).
    pub fn session_expired(&self, access_key: &str) -> bool {
        self.sessions_read()
            .get(access_key)
            .is_some_and(|s| s.expires <= now())
    }

    /// Live STS sessions (for metrics and benchmarks).
    pub fn session_count(&self) -> usize {
        self.sessions_read().len()
    }
}

/// The caller a live session speaks as, or `None` when its subject is gone.
pub(super) fn session_caller(st: &IamState, sr: &SessionRecord) -> Option<Caller> {
    let policy = match &sr.session_policy {
        Some(text) => Some(Arc::new(Policy::parse(text, PolicyKind::Identity).ok()?)),
        None => None,
    };
    let session = SessionInfo {
        token: sr.token.clone(),
        policy,
        mfa_at: sr.mfa_at,
        issued: sr.issued,
        expires: sr.expires,
        source_identity: sr.source_identity.clone(),
    };
    match &sr.subject {
        SessionSubject::Role {
            role,
            session_name,
            federated,
        } => {
            let r = st.role(&sr.account, role).ok()?;
            Some(Caller {
                access_key: sr.access_key.clone(),
                secret: sr.secret.clone(),
                principal: Principal {
                    account: sr.account.clone(),
                    arn: format!(
                        "arn:aws:sts::{}:assumed-role/{}/{session_name}",
                        sr.account, r.name
                    ),
                    role_arn: Some(role_arn(&sr.account, &r.path, &r.name)),
                    is_root: false,
                    federated: federated.clone(),
                },
                policies: st.role_policies(r),
                username: None,
                userid: format!("{}:{session_name}", r.id),
                tags: r.tags.clone(),
                session: Some(session),
            })
        }
        SessionSubject::User { user } => {
            let u = st.user(&sr.account, user).ok()?;
            Some(Caller {
                access_key: sr.access_key.clone(),
                secret: sr.secret.clone(),
                principal: Principal {
                    account: sr.account.clone(),
                    arn: user_arn(&sr.account, &u.path, &u.name),
                    role_arn: None,
                    is_root: false,
                    federated: None,
                },
                policies: st.compile_user(&sr.account, u),
                username: Some(u.name.clone()),
                userid: u.id.clone(),
                tags: u.tags.clone(),
                session: Some(session),
            })
        }
    }
}
