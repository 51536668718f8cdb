//! Moving one version to a peer: a single PUT with its metadata and tags, or a multipart
//! upload part by part for a large one, each bounded by a timeout proportional to its size.

use super::*;

pub(super) fn content_md5(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

pub(super) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(super) fn tagging_xml(tags: &[(String, String)]) -> String {
    let mut x = String::from("<Tagging><TagSet>");
    for (k, v) in tags {
        x.push_str(&format!(
            "<Tag><Key>{}</Key><Value>{}</Value></Tag>",
            xml_escape(k),
            xml_escape(v)
        ));
    }
    x.push_str("</TagSet></Tagging>");
    x
}

/// RFC 3339 (ISO 8601) for a lock date header.
pub(super) fn iso8601(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

pub(super) async fn put_version<M: MetaStore, B: BlobStore>(
    r: &Replication<M, B>,
    peer: &Peer,
    t: &Task,
) -> Result<u64, Failure> {
    let dest = &t.rule.destination;
    let label = dest.label();
    let req = GetRequest {
        version: Some(VersionSelector::Id(t.version)),
        ..Default::default()
    };
    let read = r
        .oss
        .get_object(&t.bucket, &t.key, &req)
        .await
        .map_err(oss_failure)?;
    let rec = read.record;
    match &rec.replication {
        _ if t.resync => {}
        Some(s) if s.target(&label) == Some(TargetStatus::Completed) => return Err(Failure::Skip),
        Some(ReplicationState::Replica) => return Err(Failure::Skip),
        _ => {}
    }
    if matches!(rec.sse(), Some(feiyun_oss::SseMode::Customer { .. })) {
        return Err(Failure::Never(
            "an SSE-C object cannot be replicated: the region does not keep the customer's key"
                .into(),
        ));
    }
    let size = rec.size;
    let mut h: Vec<(String, String)> = vec![
        (REPLICA_VERSION_HEADER.into(), t.version.render()),
        (
            REPLICA_MTIME_HEADER.into(),
            rec.last_modified_ms.to_string(),
        ),
    ];
    let mut opt = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            h.push((k.to_owned(), v.clone()));
        }
    };
    opt("content-type", &rec.content_type);
    opt("content-encoding", &rec.content_encoding);
    opt("content-disposition", &rec.content_disposition);
    opt("content-language", &rec.content_language);
    opt("cache-control", &rec.cache_control);
    opt("expires", &rec.expires);
    opt(
        "x-amz-storage-class",
        &dest.storage_class.clone().or(rec.storage_class.clone()),
    );
    for (k, v) in &rec.user_metadata {
        h.push((format!("x-amz-meta-{k}"), v.clone()));
    }
    if !rec.tags.is_empty() {
        h.push(("x-amz-tagging".into(), encode_tags(&rec.tags)));
    }
    // Retention that has run out no longer protects anything, and a PUT may not set it.
    if let Some(ret) = rec
        .retention
        .filter(|x| x.until_ms > feiyun_oss::now_millis())
    {
        h.push(("x-amz-object-lock-mode".into(), ret.mode.as_str().into()));
        h.push((
            "x-amz-object-lock-retain-until-date".into(),
            iso8601(ret.until_ms),
        ));
    }
    if rec.legal_hold {
        h.push(("x-amz-object-lock-legal-hold".into(), "ON".into()));
    }
    if let Some(k) = &dest.replica_kms_key {
        h.push(("x-amz-server-side-encryption".into(), "aws:kms".into()));
        h.push((
            "x-amz-server-side-encryption-aws-kms-key-id".into(),
            k.clone(),
        ));
    }
    // The ETag of a plaintext or SSE-S3 object is the MD5 of its bytes (of its parts' MD5s
    // when uploaded in parts): the peer's must come out the same.
    let md5_etag = !matches!(
        rec.sse(),
        Some(feiyun_oss::SseMode::Kms { .. } | feiyun_oss::SseMode::Customer { .. })
    );
    if !rec.parts.is_empty() {
        // Uploaded in parts: replicated in the same parts, which keeps its ETag and lets it
        // pass 5 GiB.
        drop(read.body);
        return put_parts(r, peer, t, &rec, h, md5_etag).await;
    }
    let Some(body) = read.body else {
        return Err(Failure::Retry("the source read has no body".into()));
    };
    h.push(("content-length".into(), size.to_string()));
    let plain_md5 =
        md5_etag && rec.etag.len() == 32 && rec.etag.bytes().all(|b| b.is_ascii_hexdigit());
    if plain_md5 && let Ok(raw) = hex::decode(&rec.etag) {
        h.push((
            "content-md5".into(),
            base64::engine::general_purpose::STANDARD.encode(raw),
        ));
    }
    let body = stream_body(body);
    let timeout = transfer_timeout(size);
    peer.client
        .send(
            Method::PUT,
            Some(&dest.bucket),
            Some(&t.key),
            &[],
            h,
            body,
            UNSIGNED_PAYLOAD,
            timeout,
        )
        .await
        .map_err(classify)?;
    Ok(size)
}

/// A source read as a request body; nothing polls the stream after its end.
pub(super) fn stream_body(body: feiyun_oss::ObjectBody) -> client::ReqBody {
    let frames = body.fuse().map(|c| {
        c.map(http_body::Frame::data)
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    http_body_util::StreamBody::new(frames).boxed_unsync()
}

/// Generous for a slow link: a minute plus a second per MiB.
pub(super) fn transfer_timeout(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / (1024 * 1024))
}

/// Replicates a version uploaded in parts as a multipart upload of the same parts: create
/// (with every header of the version), one UploadPart per source part streamed from the
/// source, complete. Any failure aborts the peer's upload.
pub(super) async fn put_parts<M: MetaStore, B: BlobStore>(
    r: &Replication<M, B>,
    peer: &Peer,
    t: &Task,
    rec: &feiyun_oss::ObjectRecord,
    headers: Vec<(String, String)>,
    md5_etag: bool,
) -> Result<u64, Failure> {
    let dest = &t.rule.destination;
    let replica = (REPLICA_VERSION_HEADER.to_owned(), t.version.render());
    let (_, created) = peer
        .client
        .bodiless(
            Method::POST,
            Some(&dest.bucket),
            Some(&t.key),
            &[("uploads", "")],
            headers,
            SMALL_TIMEOUT,
        )
        .await
        .map_err(classify)?;
    let Some(upload_id) = client::xml_field(&String::from_utf8_lossy(&created), "UploadId") else {
        return Err(Failure::Retry(
            "CreateMultipartUpload answered no UploadId".into(),
        ));
    };
    let sent = async {
        let mut etags = Vec::with_capacity(rec.parts.len());
        for (i, part) in rec.parts.iter().enumerate() {
            let n = (i + 1) as u32;
            let req = GetRequest {
                version: Some(VersionSelector::Id(t.version)),
                part_number: Some(n),
                ..Default::default()
            };
            let read = r
                .oss
                .get_object(&t.bucket, &t.key, &req)
                .await
                .map_err(oss_failure)?;
            let Some(body) = read.body else {
                return Err(Failure::Retry("the source read has no body".into()));
            };
            let number = n.to_string();
            let (answer, _) = peer
                .client
                .send(
                    Method::PUT,
                    Some(&dest.bucket),
                    Some(&t.key),
                    &[("partNumber", &number), ("uploadId", &upload_id)],
                    vec![
                        ("content-length".into(), part.size.to_string()),
                        replica.clone(),
                    ],
                    stream_body(body),
                    UNSIGNED_PAYLOAD,
                    transfer_timeout(part.size),
                )
                .await
                .map_err(classify)?;
            let etag = answer
                .get(http::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            etags.push(etag);
        }
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (i, e) in etags.iter().enumerate() {
            xml.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                xml_escape(e)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let xml = Bytes::from(xml);
        let sha = hex::encode(sha2::Sha256::digest(&xml));
        let (_, done) = peer
            .client
            .send(
                Method::POST,
                Some(&dest.bucket),
                Some(&t.key),
                &[("uploadId", &upload_id)],
                vec![
                    ("content-length".into(), xml.len().to_string()),
                    replica.clone(),
                ],
                http_body_util::Full::new(xml)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
                &sha,
                transfer_timeout(rec.size),
            )
            .await
            .map_err(classify)?;
        // Same parts, same bytes: the same ETag, unless the peer encrypts under KMS (whose
        // ETags are not MD5s), so a difference is only worth a note.
        let text = String::from_utf8_lossy(&done);
        let got = client::xml_field(&text, "ETag").unwrap_or_default();
        let got = got.replace("&quot;", "").replace('"', "");
        if md5_etag && got != rec.etag {
            tracing::debug!(key = %t.key, source = %rec.etag, replica = %got,
                "replica ETag differs (the destination encrypts?)");
        }
        Ok(rec.size)
    }
    .await;
    if sent.is_err() {
        let _ = peer
            .client
            .bodiless(
                Method::DELETE,
                Some(&dest.bucket),
                Some(&t.key),
                &[("uploadId", &upload_id)],
                Vec::new(),
                SMALL_TIMEOUT,
            )
            .await;
    }
    sent
}

/// `x-amz-tagging`: a URL-encoded query string.
pub(super) fn encode_tags(tags: &[(String, String)]) -> String {
    fn enc(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
    tags.iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}
