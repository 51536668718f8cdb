//! The identity service against a real metadata store: limits an attacker meets (MFA code
//! guessing, session quotas) and that sessions never rebuild the snapshot.

use std::sync::Arc;

use feiyun_meta::RedbStore;

use crate::model::SessionSubject;
use crate::store::{Iam, RootKey};
use crate::{IamError, totp};

async fn iam(dir: &std::path::Path) -> Arc<Iam<RedbStore>> {
    let meta = Arc::new(RedbStore::open(&dir.join("meta.redb")).unwrap());
    let master = feiyun_kms::MasterKey::from_bytes(&[5; 32]).unwrap();
    let kms = Arc::new(feiyun_kms::Kms::new(meta.clone(), master, "test"));
    Iam::open(
        meta,
        RootKey {
            access_key: "ROOTKEY".into(),
            secret_key: "rootsecret".into(),
        },
        kms,
        Some("123456789012".into()),
    )
    .await
    .unwrap()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A wrong code did not count: a million guesses got through (review item 11). After five
/// wrong codes a device refuses even the right one for a while.
#[tokio::test]
async fn wrong_mfa_codes_lock_the_device_for_a_while() {
    let tmp = tempfile::tempdir().unwrap();
    let iam = iam(tmp.path()).await;
    let acct = "123456789012";
    iam.create_user(acct, "dev", None, Vec::new())
        .await
        .unwrap();
    let d = iam.create_virtual_mfa(acct, "phone", None).await.unwrap();
    let serial = d.serial();
    let c = totp::counter_at(now());
    let code = |n: u64| format!("{:06}", totp::code_at(&d.seed, n));
    iam.enable_mfa(acct, "dev", &serial, &code(c - 2), &code(c - 1))
        .await
        .unwrap();
    for _ in 0..crate::store::MAX_MFA_FAILURES {
        let wrong = format!("{:06}", (totp::code_at(&d.seed, c) + 1) % 1_000_000);
        assert!(iam.prove_mfa(acct, "dev", &serial, &wrong).await.is_err());
    }
    match iam.prove_mfa(acct, "dev", &serial, &code(c)).await {
        Err(IamError::AccessDenied(m)) => assert!(m.contains("too many"), "{m}"),
        other => panic!("the right code passed a locked device: {other:?}"),
    }
}

/// One principal may hold only so many live sessions, so a loop on GetSessionToken cannot
/// fill the region's quota and block every role session.
#[tokio::test]
async fn sessions_are_counted_per_principal_and_never_rebuild_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let iam = iam(tmp.path()).await;
    let acct = "123456789012";
    iam.create_user(acct, "dev", None, Vec::new())
        .await
        .unwrap();
    let before = Arc::as_ptr(&iam.snapshot());
    let issue = |by: &'static str| {
        let iam = iam.clone();
        async move {
            iam.issue_session(
                acct,
                SessionSubject::User { user: "dev".into() },
                900,
                None,
                None,
                None,
                by,
            )
            .await
        }
    };
    let s = issue("arn:aws:iam::123456789012:user/dev").await.unwrap();
    assert!(iam.caller(&s.access_key).is_some());
    // The snapshot was not rebuilt for it.
    assert_eq!(Arc::as_ptr(&iam.snapshot()), before);
    for _ in 1..crate::store::MAX_SESSIONS_PER_ISSUER {
        issue("arn:aws:iam::123456789012:user/dev").await.unwrap();
    }
    match issue("arn:aws:iam::123456789012:user/dev").await {
        Err(IamError::LimitExceeded(m)) => assert!(m.contains("one principal"), "{m}"),
        other => panic!("past the per-principal quota: {other:?}"),
    }
    // Others are unaffected.
    issue("arn:aws:iam::123456789012:user/other").await.unwrap();
    assert_eq!(
        iam.session_count(),
        crate::store::MAX_SESSIONS_PER_ISSUER + 1
    );
    // Sessions survive a reopen, and an IAM change recompiles their callers.
    drop(iam);
    let iam = self::iam(tmp.path()).await;
    assert!(iam.caller(&s.access_key).is_some());
    iam.create_user(acct, "later", None, Vec::new())
        .await
        .unwrap();
    assert!(iam.caller(&s.access_key).is_some());
}
