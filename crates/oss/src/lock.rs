//! Object Lock (WORM): the rules that decide whether a version may be removed or its retention
//! changed. Every path that removes a version's data — DELETE of a version, replacement of a
//! null version, lifecycle expiration — asks [`check_removal`] inside the planning step of the
//! same commit, so a retention change racing with a delete cannot slip between check and act.

use feiyun_blob::BlobStore;
use feiyun_meta::MetaStore;

use crate::records::{
    BucketRecord, DefaultRetention, LockMode, ObjectRecord, Retention, Versioning,
};
use crate::versions::VersionSelector;
use crate::{ObjectService, OssError};

const DAY_MS: i64 = 86_400_000;

/// Refuses to remove a version under legal hold or unexpired retention. GOVERNANCE yields to
/// `bypass` (the caller has checked the permission); COMPLIANCE yields to nobody, root included.
pub(crate) fn check_removal(r: &ObjectRecord, bypass: bool, now_ms: i64) -> Result<(), OssError> {
    if r.legal_hold {
        return Err(OssError::AccessDenied(
            "the object version is under legal hold".into(),
        ));
    }
    if let Some(ret) = r.retention
        && ret.until_ms > now_ms
    {
        match ret.mode {
            LockMode::Compliance => {
                return Err(OssError::AccessDenied(
                    "the object version is locked in COMPLIANCE mode until its retain-until date"
                        .into(),
                ));
            }
            LockMode::Governance if !bypass => {
                return Err(OssError::AccessDenied(
                    "the object version is locked in GOVERNANCE mode; bypass governance retention to remove it"
                        .into(),
                ));
            }
            LockMode::Governance => {}
        }
    }
    Ok(())
}

/// Whether replacing `old` retention by `new` is allowed. Extending is always allowed; in
/// COMPLIANCE mode nothing else is; in GOVERNANCE mode shortening, removing or changing mode
/// needs `bypass`.
pub(crate) fn check_retention_change(
    old: Option<Retention>,
    new: Option<Retention>,
    bypass: bool,
    now_ms: i64,
) -> Result<(), OssError> {
    let Some(old) = old.filter(|o| o.until_ms > now_ms) else {
        return Ok(());
    };
    let extends = new.is_some_and(|n| n.mode == old.mode && n.until_ms >= old.until_ms)
        || new.is_some_and(|n| {
            old.mode == LockMode::Governance
                && n.mode == LockMode::Compliance
                && n.until_ms >= old.until_ms
        });
    if extends {
        return Ok(());
    }
    match old.mode {
        LockMode::Compliance => Err(OssError::AccessDenied(
            "COMPLIANCE mode retention cannot be shortened, removed or weakened".into(),
        )),
        LockMode::Governance if bypass => Ok(()),
        LockMode::Governance => Err(OssError::AccessDenied(
            "shortening GOVERNANCE mode retention requires bypassing governance retention".into(),
        )),
    }
}

/// Lock settings a new version asks for are only valid in a bucket with Object Lock, and a
/// retain-until date must lie in the future.
pub(crate) fn check_new_version(
    bucket: &BucketRecord,
    r: &ObjectRecord,
    now_ms: i64,
) -> Result<(), OssError> {
    if (r.retention.is_some() || r.legal_hold) && !bucket.object_lock {
        return Err(OssError::InvalidRequest(
            "Bucket is missing Object Lock Configuration".into(),
        ));
    }
    if let Some(ret) = r.retention
        && ret.until_ms <= now_ms
    {
        return Err(OssError::InvalidArgument(
            "The retain until date must be in the future!".into(),
        ));
    }
    Ok(())
}

fn require_lock(bucket: &BucketRecord) -> Result<(), OssError> {
    if bucket.object_lock {
        Ok(())
    } else {
        Err(OssError::InvalidRequest(
            "Bucket is missing Object Lock Configuration".into(),
        ))
    }
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// PutObjectLockConfiguration: enables Object Lock (only on a versioning-enabled bucket;
    /// never disabled again) and sets or clears the default retention.
    pub async fn put_object_lock_config(
        &self,
        bucket: &str,
        default: Option<DefaultRetention>,
    ) -> Result<(), OssError> {
        if let Some(d) = default {
            let days = d.days.unwrap_or(0);
            let years = d.years.unwrap_or(0);
            if (days == 0) == (years == 0) {
                return Err(OssError::MalformedXml(
                    "DefaultRetention needs exactly one of Days or Years, greater than zero".into(),
                ));
            }
            if days > 36_500 || years > 100 {
                return Err(OssError::InvalidArgument(
                    "Default retention period is too large".into(),
                ));
            }
        }
        self.update_bucket(bucket, move |r| {
            if !r.object_lock && r.versioning != Versioning::Enabled {
                return Err(OssError::InvalidBucketState(
                    "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration".into(),
                ));
            }
            r.object_lock = true;
            r.default_retention = default;
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// GetObjectLockConfiguration: the default retention, if any.
    pub async fn object_lock_config(
        &self,
        bucket: &str,
    ) -> Result<Option<DefaultRetention>, OssError> {
        let r = self.bucket(bucket).await?;
        if !r.object_lock {
            return Err(OssError::ObjectLockConfigurationNotFound);
        }
        Ok(r.default_retention)
    }

    /// PutObjectRetention; `None` removes retention (GOVERNANCE with bypass only).
    pub async fn put_object_retention(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionSelector>,
        retention: Option<Retention>,
        bypass_governance: bool,
    ) -> Result<String, OssError> {
        let rec = self
            .update_version(bucket, key, version, move |b, r, now| {
                require_lock(b)?;
                if let Some(new) = retention
                    && new.until_ms <= now
                {
                    return Err(OssError::InvalidArgument(
                        "The retain until date must be in the future!".into(),
                    ));
                }
                check_retention_change(r.retention, retention, bypass_governance, now)?;
                r.retention = retention;
                Ok(())
            })
            .await?;
        Ok(rec.version_label())
    }

    pub async fn object_retention(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionSelector>,
    ) -> Result<Retention, OssError> {
        let b = self.bucket(bucket).await?;
        require_lock(&b)?;
        let (rec, _) = self.load_version(bucket, key, version).await?;
        rec.retention.ok_or(OssError::NoSuchObjectLockConfiguration)
    }

    pub async fn put_legal_hold(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionSelector>,
        on: bool,
    ) -> Result<String, OssError> {
        let rec = self
            .update_version(bucket, key, version, move |b, r, _| {
                require_lock(b)?;
                r.legal_hold = on;
                Ok(())
            })
            .await?;
        Ok(rec.version_label())
    }

    pub async fn legal_hold(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionSelector>,
    ) -> Result<bool, OssError> {
        let b = self.bucket(bucket).await?;
        require_lock(&b)?;
        let (rec, _) = self.load_version(bucket, key, version).await?;
        Ok(rec.legal_hold)
    }
}

/// The retention a bucket default gives a version written at `written_ms`.
pub(crate) fn default_until(d: DefaultRetention, written_ms: i64) -> Retention {
    let days = i64::from(d.days.unwrap_or(0)) + 365 * i64::from(d.years.unwrap_or(0));
    Retention {
        mode: d.mode,
        until_ms: written_ms.saturating_add(days.saturating_mul(DAY_MS)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ret(mode: LockMode, until_ms: i64) -> Option<Retention> {
        Some(Retention { mode, until_ms })
    }

    #[test]
    fn retention_changes() {
        use LockMode::*;
        let now = 1_000;
        // (old, new, bypass, allowed)
        let rows = [
            (ret(Compliance, 5_000), ret(Compliance, 6_000), false, true),
            (ret(Compliance, 5_000), ret(Compliance, 4_000), true, false),
            (ret(Compliance, 5_000), None, true, false),
            (ret(Compliance, 5_000), ret(Governance, 9_000), true, false),
            (ret(Governance, 5_000), ret(Governance, 4_000), false, false),
            (ret(Governance, 5_000), ret(Governance, 4_000), true, true),
            (ret(Governance, 5_000), None, true, true),
            (ret(Governance, 5_000), ret(Compliance, 5_000), false, true),
            (ret(Compliance, 500), None, false, true), // expired
            (None, ret(Compliance, 5_000), false, true),
        ];
        for (i, (old, new, bypass, ok)) in rows.into_iter().enumerate() {
            assert_eq!(
                check_retention_change(old, new, bypass, now).is_ok(),
                ok,
                "row {i}"
            );
        }
    }

    #[test]
    fn removal() {
        let mut r = crate::records::tests::sample();
        let now = 1_000;
        assert!(check_removal(&r, false, now).is_ok());
        r.retention = ret(LockMode::Governance, 2_000);
        assert!(check_removal(&r, false, now).is_err());
        assert!(check_removal(&r, true, now).is_ok());
        assert!(check_removal(&r, false, 2_001).is_ok());
        r.retention = ret(LockMode::Compliance, 2_000);
        assert!(check_removal(&r, true, now).is_err());
        r.retention = None;
        r.legal_hold = true;
        assert!(check_removal(&r, true, now).is_err());
    }

    #[test]
    fn default_retention_days_and_years() {
        let d = DefaultRetention {
            mode: LockMode::Governance,
            days: Some(2),
            years: None,
        };
        assert_eq!(default_until(d, 0).until_ms, 2 * DAY_MS);
        let y = DefaultRetention {
            mode: LockMode::Compliance,
            days: None,
            years: Some(1),
        };
        assert_eq!(default_until(y, 10).until_ms, 10 + 365 * DAY_MS);
    }
}
