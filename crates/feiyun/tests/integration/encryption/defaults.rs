//! Bucket default encryption, and a region configured for plaintext that encrypts only on request.

use super::*;

#[tokio::test]
async fn bucket_default_encryption() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("dflt").send().await.unwrap();
    let rule_of = |out: aws_sdk_s3::operation::get_bucket_encryption::GetBucketEncryptionOutput| {
        let d = out.server_side_encryption_configuration().unwrap().rules()[0]
            .apply_server_side_encryption_by_default()
            .unwrap()
            .clone();
        (
            d.sse_algorithm().clone(),
            d.kms_master_key_id().map(str::to_owned),
        )
    };
    // New buckets encrypt with SSE-S3, and say so.
    let out = c
        .get_bucket_encryption()
        .bucket("dflt")
        .send()
        .await
        .unwrap();
    assert_eq!(rule_of(out), (ServerSideEncryption::Aes256, None));

    let arn = create_key(&r);
    let (s, _) = kms(
        &r,
        "CreateAlias",
        serde_json::json!({"AliasName": "alias/bucket-key", "TargetKeyId": arn}),
    );
    assert_eq!(s, 200);
    let config = |alg: ServerSideEncryption, key: Option<&str>| {
        ServerSideEncryptionConfiguration::builder()
            .rules(
                ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(
                        ServerSideEncryptionByDefault::builder()
                            .sse_algorithm(alg)
                            .set_kms_master_key_id(key.map(str::to_owned))
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .build()
            .unwrap()
    };
    c.put_bucket_encryption()
        .bucket("dflt")
        .server_side_encryption_configuration(config(
            ServerSideEncryption::AwsKms,
            Some("alias/bucket-key"),
        ))
        .send()
        .await
        .unwrap();
    let out = c
        .get_bucket_encryption()
        .bucket("dflt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        rule_of(out),
        (ServerSideEncryption::AwsKms, Some(arn.clone()))
    );
    // A PUT without headers now lands under the bucket's key.
    let data = secret(100_000);
    put(&c, "dflt", "k", &data, &Mode::Kms(arn.clone())).await;
    let out = c
        .put_object()
        .bucket("dflt")
        .key("no-headers")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.ssekms_key_id(), Some(arn.as_str()));
    same(get(&c, "dflt", "no-headers", None, None).await, &data);
    // aws:kms without a key id uses the account's aws/s3 key, made on first use.
    c.put_bucket_encryption()
        .bucket("dflt")
        .server_side_encryption_configuration(config(ServerSideEncryption::AwsKms, None))
        .send()
        .await
        .unwrap();
    let out = c
        .put_object()
        .bucket("dflt")
        .key("managed")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let managed = out.ssekms_key_id().unwrap().to_owned();
    assert_ne!(managed, arn);
    let (s, aliases) = kms(&r, "ListAliases", serde_json::json!({}));
    assert_eq!(s, 200);
    assert!(aliases.to_string().contains("alias/aws/s3"), "{aliases}");
    same(get(&c, "dflt", "managed", None, None).await, &data);

    // Unknown keys and unsupported algorithms are refused, and nothing changes.
    let e = c
        .put_bucket_encryption()
        .bucket("dflt")
        .server_side_encryption_configuration(config(
            ServerSideEncryption::AwsKms,
            Some("alias/missing"),
        ))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("KMS.NotFoundException"));
    let e = c
        .put_bucket_encryption()
        .bucket("dflt")
        .server_side_encryption_configuration(config(ServerSideEncryption::AwsKmsDsse, None))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidArgument"));
    let out = c
        .get_bucket_encryption()
        .bucket("dflt")
        .send()
        .await
        .unwrap();
    assert_eq!(rule_of(out).0, ServerSideEncryption::AwsKms);

    // Delete returns the bucket to SSE-S3.
    c.delete_bucket_encryption()
        .bucket("dflt")
        .send()
        .await
        .unwrap();
    let out = c
        .get_bucket_encryption()
        .bucket("dflt")
        .send()
        .await
        .unwrap();
    assert_eq!(rule_of(out), (ServerSideEncryption::Aes256, None));
    put(&c, "dflt", "back", &data, &Mode::Default).await;
    let e = c
        .get_bucket_encryption()
        .bucket("missing")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("NoSuchBucket"));
}

/// A region told to store plaintext (disks that encrypt already) writes plaintext, says
/// its buckets have no default, and still encrypts what a request or bucket asks for.
#[tokio::test]
async fn a_plaintext_region_encrypts_only_on_request() {
    let mut r = Region::start_env(&[("FEIYUN_ENCRYPT_AT_REST", "false")]);
    let c = r.client();
    c.create_bucket()
        .bucket("plain-region")
        .send()
        .await
        .unwrap();
    let e = c
        .get_bucket_encryption()
        .bucket("plain-region")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some("ServerSideEncryptionConfigurationNotFoundError")
    );
    let data = secret(100_000);
    let out = c
        .put_object()
        .bucket("plain-region")
        .key("plain")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.server_side_encryption(), None);
    put(&c, "plain-region", "asked", &secret(100_000), &Mode::S3).await;
    same(get(&c, "plain-region", "plain", None, None).await, &data);
    r.terminate();
    // Exactly one blob holds readable bytes: the one nobody asked to encrypt.
    let hits = files_with_marker(&r.data_dir);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].starts_with(r.data_dir.join("blobs")));
}
