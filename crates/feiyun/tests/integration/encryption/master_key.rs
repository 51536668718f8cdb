//! The master key: a missing generated key stops the start; swapped frames and a wrong key are refused.

use super::*;

/// A generated master key lost (a power cut before its directory entry was synced, a
/// careless copy): the next start refuses instead of generating a new key over the data.
#[tokio::test]
async fn a_missing_generated_master_key_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        // No FEIYUN_MASTER_KEY: the region generates master.key beside the data.
        let mut r = Region::start_with(dir.path(), &[("FEIYUN_MASTER_KEY", "")]);
        let c = r.client();
        c.create_bucket().bucket("kept").send().await.unwrap();
        put(&c, "kept", "obj", &secret(100), &Mode::S3).await;
        r.terminate();
    }
    let key = dir.path().join("master.key");
    let text = std::fs::read(&key).expect("a generated master.key");
    std::fs::remove_file(&key).unwrap();
    let said = Region::start_refused(dir.path(), &[("FEIYUN_MASTER_KEY", "")]);
    assert!(said.contains("master.key is missing"), "{said}");
    assert!(!key.exists(), "a new key was generated over the data");
    // With the key back, everything opens again.
    std::fs::write(&key, text).unwrap();
    let r = Region::start_with(dir.path(), &[("FEIYUN_MASTER_KEY", "")]);
    let got = get(&r.client(), "kept", "obj", None, None).await;
    assert_eq!(outcome(got), "ok (100 bytes)");
}

#[tokio::test]
async fn swapped_frames_and_a_wrong_master_key_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = secret(4 * FRAME);
    {
        let mut r = Region::start_in(dir.path());
        let c = r.client();
        c.create_bucket().bucket("tamper").send().await.unwrap();
        put(&c, "tamper", "obj", &data, &Mode::S3).await;
        put(&c, "tamper", "inline", &secret(100), &Mode::S3).await;
        r.terminate();
    }
    // The data directory with another master key (a stolen disk, a mistyped key): the
    // region refuses to start rather than serve errors or seal new data under it.
    {
        let other = B64.encode([9u8; 32]);
        let said = Region::start_refused(dir.path(), &[("FEIYUN_MASTER_KEY", other.as_str())]);
        assert!(said.contains("not the one that sealed"), "{said}");
    }
    // Frames 1 and 2 swapped on disk: the right key, the wrong order — refused.
    let [file] = blob_files(dir.path()).try_into().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let (h, f) = (16, FRAME + 16);
    let (a, b) = bytes[h + f..h + 3 * f].split_at_mut(f);
    a.swap_with_slice(b);
    std::fs::write(&file, &bytes).unwrap();
    let r = Region::start_in(dir.path());
    let c = r.client();
    same(
        get(&c, "tamper", "obj", Some((0, 100)), None).await,
        &data[..=100],
    );
    assert!(
        get(&c, "tamper", "obj", Some((FRAME, FRAME + 10)), None)
            .await
            .is_err()
    );
    assert!(get(&c, "tamper", "obj", None, None).await.is_err());
}
