use super::*;
use feiyun_meta::RedbStore;

const ACCOUNT: &str = "123456789012";
const NOW: i64 = 1_800_000_000;

fn kms(dir: &std::path::Path, master: &str) -> Kms<RedbStore> {
    let meta = std::sync::Arc::new(RedbStore::open(&dir.join("meta.redb")).unwrap());
    Kms::new(meta, MasterKey::from_base64(master).unwrap(), "us-east-1")
}

fn ctx(pairs: &[(&str, &str)]) -> Context {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn encrypt_decrypt_with_context_rotation_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (_, master) = MasterKey::generate().unwrap();
    let k = kms(dir.path(), &master);
    let key = k.create_key(ACCOUNT, "bucket key", NOW).await.unwrap();
    assert_eq!(
        key.arn,
        format!("arn:aws:kms:us-east-1:{ACCOUNT}:key/{}", key.key_id)
    );
    let c = ctx(&[("aws:s3:arn", "arn:aws:s3:::b/k")]);
    let ct = k.encrypt(ACCOUNT, &key.key_id, b"secret", &c).unwrap();
    assert!(!ct.windows(6).any(|w| w == b"secret"));
    let (who, plain) = k.decrypt(ACCOUNT, &ct, &c, None).unwrap();
    assert_eq!(
        (who.key_id.as_str(), plain.as_slice()),
        (key.key_id.as_str(), &b"secret"[..])
    );

    // The context is bound: missing, different or extra pairs all fail.
    for wrong in [
        ctx(&[]),
        ctx(&[("aws:s3:arn", "arn:aws:s3:::b/other")]),
        ctx(&[("aws:s3:arn", "arn:aws:s3:::b/k"), ("x", "y")]),
    ] {
        assert!(matches!(
            k.decrypt(ACCOUNT, &ct, &wrong, None),
            Err(KmsError::InvalidCiphertext)
        ));
    }
    // Every flipped byte and every truncation is detected.
    for i in 0..ct.len() {
        let mut bad = ct.clone();
        bad[i] ^= 0x40;
        assert!(k.decrypt(ACCOUNT, &bad, &c, None).is_err(), "byte {i}");
    }
    assert!(k.decrypt(ACCOUNT, &ct[..ct.len() - 1], &c, None).is_err());

    // Rotation: new material for new ciphertexts, the old version still opens old ones.
    let rotated = k.rotate(ACCOUNT, &key.key_id, NOW + 1).await.unwrap();
    assert_eq!(rotated.current_version, 2);
    let ct2 = k.encrypt(ACCOUNT, &key.key_id, b"newer", &c).unwrap();
    assert_ne!(ct2[20..24], ct[20..24], "the version is in the ciphertext");
    assert_eq!(k.decrypt(ACCOUNT, &ct, &c, None).unwrap().1, b"secret");
    assert_eq!(k.decrypt(ACCOUNT, &ct2, &c, None).unwrap().1, b"newer");

    // Restart with the same master key: everything still opens. With another: nothing does.
    drop(k);
    let k = kms(dir.path(), &master);
    assert_eq!(k.decrypt(ACCOUNT, &ct, &c, None).unwrap().1, b"secret");
    drop(k);
    let (_, other) = MasterKey::generate().unwrap();
    let wrong = kms(dir.path(), &other);
    assert!(matches!(
        wrong.decrypt(ACCOUNT, &ct, &c, None),
        Err(KmsError::Corrupt(_))
    ));
    // The key material never appears unsealed in the database file.
    drop(wrong);
    let db = std::fs::read(dir.path().join("meta.redb")).unwrap();
    assert!(!db.windows(6).any(|w| w == b"secret"));
}

#[tokio::test]
async fn states_aliases_and_crypto_shredding() {
    let dir = tempfile::tempdir().unwrap();
    let (_, master) = MasterKey::generate().unwrap();
    let k = kms(dir.path(), &master);
    let a = k.create_key(ACCOUNT, "a", NOW).await.unwrap();
    let b = k.create_key(ACCOUNT, "b", NOW).await.unwrap();
    let none = Context::new();

    k.create_alias(ACCOUNT, "alias/photos", &a.key_id)
        .await
        .unwrap();
    assert!(matches!(
        k.create_alias(ACCOUNT, "alias/photos", &b.key_id).await,
        Err(KmsError::AlreadyExists(_))
    ));
    for bad in ["photos", "alias/", "alias/aws/s3", "alias/with space"] {
        assert!(
            matches!(
                k.create_alias(ACCOUNT, bad, &b.key_id).await,
                Err(KmsError::Validation(_))
            ),
            "{bad}"
        );
    }
    // Every way of naming a key resolves to it.
    for name in [
        a.key_id.clone(),
        a.arn.clone(),
        "alias/photos".to_owned(),
        format!("arn:aws:kms:us-east-1:{ACCOUNT}:alias/photos"),
    ] {
        assert_eq!(
            k.describe(ACCOUNT, &name).unwrap().key_id,
            a.key_id,
            "{name}"
        );
    }
    assert!(matches!(
        k.describe("210987654321", &a.key_id),
        Err(KmsError::NotFound(_))
    ));
    assert!(matches!(
        k.describe(ACCOUNT, "not-a-key"),
        Err(KmsError::NotFound(_))
    ));
    assert_eq!(k.list_keys(ACCOUNT).unwrap().len(), 2);

    let dk = k
        .generate_data_key(ACCOUNT, "alias/photos", 32, &none)
        .unwrap();
    assert_eq!(dk.plaintext.len(), 32);
    assert_eq!(
        k.decrypt(ACCOUNT, &dk.ciphertext, &none, None).unwrap().1,
        dk.plaintext
    );
    assert!(matches!(
        k.decrypt(ACCOUNT, &dk.ciphertext, &none, Some(&b.key_id)),
        Err(KmsError::IncorrectKey)
    ));
    let (to, moved) = k
        .re_encrypt(
            ACCOUNT,
            &dk.ciphertext,
            &none,
            &b.key_id,
            &ctx(&[("k", "v")]),
        )
        .unwrap();
    assert_eq!(to.key_id, b.key_id);
    assert_eq!(
        k.decrypt(ACCOUNT, &moved, &ctx(&[("k", "v")]), None)
            .unwrap()
            .1,
        dk.plaintext
    );
    assert!(k.generate_data_key(ACCOUNT, &a.key_id, 0, &none).is_err());
    assert!(
        k.generate_data_key(ACCOUNT, &a.key_id, 1025, &none)
            .is_err()
    );
    assert!(k.encrypt(ACCOUNT, &a.key_id, &[0; 4097], &none).is_err());

    // Disabled: no use, but back when enabled.
    k.set_enabled(ACCOUNT, &a.key_id, false).await.unwrap();
    assert!(matches!(
        k.decrypt(ACCOUNT, &dk.ciphertext, &none, None),
        Err(KmsError::Disabled(_))
    ));
    assert!(matches!(
        k.encrypt(ACCOUNT, "alias/photos", b"x", &none),
        Err(KmsError::Disabled(_))
    ));
    k.set_enabled(ACCOUNT, &a.key_id, true).await.unwrap();
    assert!(k.decrypt(ACCOUNT, &dk.ciphertext, &none, None).is_ok());

    // Deletion: a waiting period AWS bounds, cancellable (back disabled), then final.
    assert!(matches!(
        k.schedule_deletion(ACCOUNT, &a.key_id, 6, NOW).await,
        Err(KmsError::Validation(_))
    ));
    let pending = k
        .schedule_deletion(ACCOUNT, &a.key_id, 7, NOW)
        .await
        .unwrap();
    assert_eq!(pending.deletion_date, Some(NOW + 7 * 86_400));
    assert!(matches!(
        k.decrypt(ACCOUNT, &dk.ciphertext, &none, None),
        Err(KmsError::InvalidState(_))
    ));
    assert_eq!(
        k.cancel_deletion(ACCOUNT, &a.key_id).await.unwrap().state,
        KeyState::Disabled
    );
    k.set_enabled(ACCOUNT, &a.key_id, true).await.unwrap();
    k.schedule_deletion(ACCOUNT, &a.key_id, 7, NOW)
        .await
        .unwrap();
    assert!(k.purge_due(NOW + 7 * 86_400 - 1).await.unwrap().is_empty());
    assert_eq!(
        k.purge_due(NOW + 7 * 86_400).await.unwrap(),
        vec![a.key_id.clone()]
    );
    assert!(matches!(
        k.decrypt(ACCOUNT, &dk.ciphertext, &none, None),
        Err(KmsError::InvalidCiphertext)
    ));
    assert!(matches!(
        k.describe(ACCOUNT, "alias/photos"),
        Err(KmsError::NotFound(_))
    ));
    // What was re-encrypted under the other key survives.
    assert_eq!(
        k.decrypt(ACCOUNT, &moved, &ctx(&[("k", "v")]), None)
            .unwrap()
            .1,
        dk.plaintext
    );
    k.delete_alias(ACCOUNT, "alias/photos").await.unwrap_err();
}

/// Issue 19, item 21: a site peer's push is input, not truth. A key arriving "pending
/// deletion, due yesterday" is not purged before this region's own minimum window, and a
/// push with one malformed field changes nothing at all.
#[tokio::test]
async fn a_site_push_cannot_bring_a_deletion_forward_or_smuggle_rows() {
    use crate::site::{KmsSite, SiteKey};
    let dir = tempfile::tempdir().unwrap();
    let (_, master) = MasterKey::generate().unwrap();
    let k = kms(dir.path(), &master);
    let local = k.create_key(ACCOUNT, "local", NOW).await.unwrap();
    let pushed = SiteKey {
        id: local.key_id.clone(),
        account: ACCOUNT.into(),
        description: "local".into(),
        state: KeyState::PendingDeletion,
        created: NOW,
        deletion_date: Some(NOW - 86_400),
    };
    let site = KmsSite {
        keys: vec![pushed.clone()],
        aliases: vec![(ACCOUNT.into(), "photos".into(), local.key_id.clone())],
    };
    assert_eq!(k.import_site(&site, NOW).await.unwrap(), 2);
    let earliest = NOW + 7 * 86_400;
    let d = k.describe(ACCOUNT, &local.key_id).unwrap();
    assert_eq!(
        (d.state, d.deletion_date),
        (KeyState::PendingDeletion, Some(earliest))
    );
    assert!(k.purge_due(NOW).await.unwrap().is_empty());
    assert!(k.purge_due(earliest - 1).await.unwrap().is_empty());

    // A later date than the minimum is kept as sent.
    let later = SiteKey {
        deletion_date: Some(earliest + 3 * 86_400),
        ..pushed.clone()
    };
    let site = KmsSite {
        keys: vec![later],
        ..site
    };
    k.import_site(&site, NOW).await.unwrap();
    assert_eq!(
        k.describe(ACCOUNT, &local.key_id).unwrap().deletion_date,
        Some(earliest + 3 * 86_400)
    );

    let before = k.export_site().unwrap();
    let good_alias = (
        ACCOUNT.to_owned(),
        "photos".to_owned(),
        local.key_id.clone(),
    );
    let lies: Vec<KmsSite> = vec![
        KmsSite {
            keys: vec![SiteKey {
                id: "../../k".into(),
                ..pushed.clone()
            }],
            aliases: vec![good_alias.clone()],
        },
        KmsSite {
            keys: vec![SiteKey {
                account: "12345678901/x".into(),
                ..pushed.clone()
            }],
            aliases: vec![good_alias.clone()],
        },
        KmsSite {
            keys: vec![pushed.clone()],
            aliases: vec![(ACCOUNT.into(), "photos/../x y".into(), local.key_id.clone())],
        },
        KmsSite {
            keys: vec![pushed.clone()],
            aliases: vec![("999/x".into(), "photos".into(), local.key_id.clone())],
        },
        KmsSite {
            keys: vec![pushed.clone()],
            aliases: vec![(ACCOUNT.into(), "photos".into(), "not-a-key".into())],
        },
    ];
    for lie in lies {
        assert!(
            matches!(k.import_site(&lie, NOW).await, Err(KmsError::Validation(_))),
            "{lie:?}"
        );
        assert_eq!(k.export_site().unwrap(), before, "{lie:?}");
    }
}
