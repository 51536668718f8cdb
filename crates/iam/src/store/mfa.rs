//! Virtual MFA devices: creating, enabling, deactivating and deleting them, and proving a
//! code, with a bounded number of wrong codes per device and window.

use super::*;

impl<M: MetaStore> Iam<M> {
    /// CreateVirtualMFADevice: a new device with a random 20-byte seed (returned once).
    pub async fn create_virtual_mfa(
        &self,
        account: &str,
        name: &str,
        path: Option<&str>,
    ) -> Result<MfaDeviceRecord, IamError> {
        check_name("virtualMFADeviceName", name, limits::USER_NAME_LEN)?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        self.change(|st, b| {
            if st
                .mfa
                .contains_key(&(account.to_owned(), name.to_lowercase()))
            {
                return Err(IamError::EntityAlreadyExists(format!(
                    "MFADevice entity at the same path and name already exists: {name}"
                )));
            }
            let mut seed = vec![0u8; 20];
            rand::Rng::fill(&mut rand::rng(), &mut seed[..]);
            let d = MfaDeviceRecord {
                name: name.to_owned(),
                path: path.to_owned(),
                account: account.to_owned(),
                seed,
                created: now(),
                user: None,
                enabled: None,
                last_step: None,
            };
            let row = entity_key(MFA, account, name);
            b.put(Table::Iam, row.clone(), self.sealed(&row, &d)?);
            Ok(d)
        })
        .await
    }

    /// EnableMFADevice: two consecutive codes prove the user holds the seed.
    pub async fn enable_mfa(
        &self,
        account: &str,
        user: &str,
        serial: &str,
        code1: &str,
        code2: &str,
    ) -> Result<(), IamError> {
        self.change(|st, b| {
            let u = st.user(account, user)?;
            let mut d = st.mfa_device(account, serial)?.clone();
            if d.user.is_some() {
                return Err(IamError::EntityAlreadyExists(
                    "MFA device is already in use.".into(),
                ));
            }
            let t = now();
            self.mfa_attempt_allowed(account, serial, t)?;
            let Some(step) = crate::totp::consecutive(&d.seed, code1, code2, t) else {
                self.mfa_failed(account, serial, t);
                return Err(IamError::InvalidAuthenticationCode(
                    "Authentication code for the MFA device is not valid.".into(),
                ));
            };
            d.user = Some(u.name.clone());
            d.enabled = Some(t);
            d.last_step = Some(step);
            let row = entity_key(MFA, account, &d.name);
            b.put(Table::Iam, row.clone(), self.sealed(&row, &d)?);
            Ok(())
        })
        .await
    }

    pub async fn deactivate_mfa(
        &self,
        account: &str,
        user: &str,
        serial: &str,
    ) -> Result<(), IamError> {
        self.change(|st, b| {
            let mut d = st.mfa_device(account, serial)?.clone();
            if !d
                .user
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(user))
            {
                return Err(IamError::NoSuchEntity(format!(
                    "MFA device {serial} is not enabled for user {user}."
                )));
            }
            d.user = None;
            d.enabled = None;
            let row = entity_key(MFA, account, &d.name);
            b.put(Table::Iam, row.clone(), self.sealed(&row, &d)?);
            Ok(())
        })
        .await
    }

    pub async fn delete_virtual_mfa(&self, account: &str, serial: &str) -> Result<(), IamError> {
        self.change(|st, b| {
            let d = st.mfa_device(account, serial)?;
            if d.user.is_some() {
                return Err(IamError::DeleteConflict(
                    "MFA device is still in use; deactivate it first.".into(),
                ));
            }
            b.delete(Table::Iam, entity_key(MFA, account, &d.name));
            Ok(())
        })
        .await
    }

    /// Checks a code from `user`'s enabled device and consumes it; returns when it was proved.
    pub async fn prove_mfa(
        &self,
        account: &str,
        user: &str,
        serial: &str,
        code: &str,
    ) -> Result<i64, IamError> {
        self.change(|st, b| {
            let mut d = st.mfa_device(account, serial)?.clone();
            if !d
                .user
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(user))
            {
                return Err(IamError::AccessDenied(format!(
                    "MFA device {serial} does not belong to {user}."
                )));
            }
            let t = now();
            self.mfa_attempt_allowed(account, serial, t)?;
            let Some(step) = crate::totp::verify(&d.seed, code, t, d.last_step) else {
                self.mfa_failed(account, serial, t);
                return Err(IamError::AccessDenied(
                    "MultiFactorAuthentication failed with invalid MFA one time pass code.".into(),
                ));
            };
            d.last_step = Some(step);
            let row = entity_key(MFA, account, &d.name);
            b.put(Table::Iam, row.clone(), self.sealed(&row, &d)?);
            Ok(t)
        })
        .await
    }

    /// Refuses codes for a device that saw [`MAX_MFA_FAILURES`] wrong ones recently.
    pub(super) fn mfa_attempt_allowed(
        &self,
        account: &str,
        serial: &str,
        t: i64,
    ) -> Result<(), IamError> {
        let m = self.mfa_failures.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(&(account.to_owned(), serial.to_owned())) {
            Some((n, since)) if *n >= MAX_MFA_FAILURES && t - since < MFA_WINDOW_SECS => {
                Err(IamError::AccessDenied(format!(
                    "MultiFactorAuthentication failed: too many invalid codes for {serial}; try again in {} s",
                    MFA_WINDOW_SECS - (t - since)
                )))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn mfa_failed(&self, account: &str, serial: &str, t: i64) {
        let mut m = self.mfa_failures.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 100_000 {
            m.retain(|_, (_, since)| t - *since < MFA_WINDOW_SECS);
        }
        let e = m
            .entry((account.to_owned(), serial.to_owned()))
            .or_insert((0, t));
        if t - e.1 >= MFA_WINDOW_SECS {
            *e = (0, t);
        }
        e.0 += 1;
    }
}
