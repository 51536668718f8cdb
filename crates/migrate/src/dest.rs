//! Writes into the region: single PUTs with `Content-MD5` and a full-object CRC64NVME, so the
//! region itself refuses bytes that differ from what was read, and multipart uploads whose
//! parts carry both and whose completion combines the CRCs into the object's.

use bytes::Bytes;
use http::Method;

use crate::client::{ClientError, S3Client, header, retry};
use crate::{Error, xml};

#[derive(Clone)]
pub struct Dest {
    pub client: S3Client,
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
}

/// An object at the destination, as a listing shows it.
#[derive(Debug, Clone)]
pub struct DestEntry {
    /// Relative to the destination prefix.
    pub key: String,
    pub size: u64,
    pub etag: String,
}

/// What a HEAD of a destination object says.
#[derive(Debug, Clone, Default)]
pub struct DestHead {
    pub size: u64,
    pub etag: String,
    pub crc64: Option<String>,
    /// Lowercase names: system headers and `x-amz-meta-*`.
    pub headers: Vec<(String, String)>,
    /// `x-amz-object-lock-*`: retention and legal hold.
    pub lock: Vec<(String, String)>,
}

/// What a write answered.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub etag: String,
    /// The version it made, in a versioned bucket.
    pub version_id: Option<String>,
}

fn quoted(s: &str) -> String {
    s.trim_matches('"').to_owned()
}

impl Dest {
    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// Creates the bucket unless it exists (and is ours).
    pub async fn ensure_bucket(&self) -> Result<(), Error> {
        match self
            .client
            .call(
                Method::HEAD,
                Some(&self.bucket),
                None,
                &[],
                Vec::new(),
                Bytes::new(),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(Error::Dest(format!("s3://{}: {e}", self.bucket))),
        }
        match self
            .client
            .call(
                Method::PUT,
                Some(&self.bucket),
                None,
                &[],
                Vec::new(),
                Bytes::new(),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => Err(Error::Dest(format!("creating s3://{}: {e}", self.bucket))),
        }
    }

    pub async fn head(&self, rel: &str) -> Result<Option<DestHead>, Error> {
        self.head_version(rel, None).await
    }

    /// A HEAD of one version (`None`: the current one).
    pub async fn head_version(
        &self,
        rel: &str,
        version: Option<&str>,
    ) -> Result<Option<DestHead>, Error> {
        let key = self.key(rel);
        let q: Vec<(&str, &str)> = version.map(|v| ("versionId", v)).into_iter().collect();
        let r = retry(|| {
            self.client.call(
                Method::HEAD,
                Some(&self.bucket),
                Some(&key),
                &q,
                vec![("x-amz-checksum-mode".into(), "ENABLED".into())],
                Bytes::new(),
            )
        })
        .await;
        let h = match r {
            Ok((h, _)) => h,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(Error::Dest(format!("HEAD {key}: {e}"))),
        };
        let mut headers = Vec::new();
        let mut lock = Vec::new();
        for (name, v) in &h {
            let n = name.as_str();
            if n.starts_with("x-amz-object-lock-")
                && let Ok(v) = v.to_str()
            {
                lock.push((n.to_owned(), v.to_owned()));
            }
            if (n.starts_with("x-amz-meta-")
                || matches!(
                    n,
                    "content-type"
                        | "cache-control"
                        | "content-disposition"
                        | "content-encoding"
                        | "content-language"
                        | "expires"
                        | "x-amz-website-redirect-location"
                ))
                && let Ok(v) = v.to_str()
            {
                headers.push((n.to_owned(), v.to_owned()));
            }
        }
        Ok(Some(DestHead {
            size: header(&h, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            etag: header(&h, "etag").map(quoted).unwrap_or_default(),
            crc64: header(&h, "x-amz-checksum-crc64nvme").map(str::to_owned),
            headers,
            lock,
        }))
    }

    pub async fn tagging(&self, rel: &str, version: Option<&str>) -> Result<String, Error> {
        let key = self.key(rel);
        let mut q: Vec<(&str, &str)> = version.map(|v| ("versionId", v)).into_iter().collect();
        q.push(("tagging", ""));
        let (_, body) = retry(|| {
            self.client.call(
                Method::GET,
                Some(&self.bucket),
                Some(&key),
                &q,
                Vec::new(),
                Bytes::new(),
            )
        })
        .await
        .map_err(|e| Error::Dest(format!("GET {key}?tagging: {e}")))?;
        Ok(crate::source::tags_to_header(&String::from_utf8_lossy(
            &body,
        )))
    }

    /// One PUT of a whole object.
    pub async fn put(
        &self,
        rel: &str,
        body: Bytes,
        headers: Vec<(String, String)>,
    ) -> Result<Written, Error> {
        let key = self.key(rel);
        let (h, _) = retry(|| {
            self.client.call(
                Method::PUT,
                Some(&self.bucket),
                Some(&key),
                &[],
                headers.clone(),
                body.clone(),
            )
        })
        .await
        .map_err(|e| write_error(&key, e))?;
        Ok(Written {
            etag: header(&h, "etag").map(quoted).unwrap_or_default(),
            version_id: header(&h, "x-amz-version-id").map(str::to_owned),
        })
    }

    pub async fn create_upload(
        &self,
        rel: &str,
        mut headers: Vec<(String, String)>,
    ) -> Result<String, Error> {
        let key = self.key(rel);
        headers.push(("x-amz-checksum-algorithm".into(), "CRC64NVME".into()));
        headers.push(("x-amz-checksum-type".into(), "FULL_OBJECT".into()));
        let (_, body) = retry(|| {
            self.client.call(
                Method::POST,
                Some(&self.bucket),
                Some(&key),
                &[("uploads", "")],
                headers.clone(),
                Bytes::new(),
            )
        })
        .await
        .map_err(|e| write_error(&key, e))?;
        xml::field(&String::from_utf8_lossy(&body), "UploadId")
            .ok_or_else(|| Error::Dest(format!("{key}: CreateMultipartUpload named no upload")))
    }

    /// The parts the region holds for an upload: (number, ETag); `None` if the upload is gone.
    pub async fn list_parts(
        &self,
        rel: &str,
        upload_id: &str,
    ) -> Result<Option<Vec<(u32, String)>>, Error> {
        let key = self.key(rel);
        let mut parts = Vec::new();
        let mut marker = String::from("0");
        loop {
            let q = [
                ("uploadId", upload_id),
                ("part-number-marker", marker.as_str()),
            ];
            let r = retry(|| {
                self.client.call(
                    Method::GET,
                    Some(&self.bucket),
                    Some(&key),
                    &q,
                    Vec::new(),
                    Bytes::new(),
                )
            })
            .await;
            let body = match r {
                Ok((_, b)) => b,
                Err(e) if e.code() == Some("NoSuchUpload") => return Ok(None),
                Err(e) => return Err(Error::Dest(format!("ListParts {key}: {e}"))),
            };
            let text = String::from_utf8_lossy(&body);
            for p in xml::blocks(&text, "Part") {
                if let (Some(n), Some(e)) = (
                    xml::field(p, "PartNumber").and_then(|n| n.parse().ok()),
                    xml::field(p, "ETag"),
                ) {
                    parts.push((n, quoted(&e)));
                }
            }
            match xml::field(&text, "NextPartNumberMarker") {
                Some(m) if xml::field(&text, "IsTruncated").as_deref() == Some("true") => {
                    marker = m
                }
                _ => return Ok(Some(parts)),
            }
        }
    }

    pub async fn upload_part(
        &self,
        rel: &str,
        upload_id: &str,
        n: u32,
        body: Bytes,
        md5_b64: &str,
        crc64_b64: &str,
    ) -> Result<String, Error> {
        let key = self.key(rel);
        let num = n.to_string();
        let headers = vec![
            ("content-md5".to_owned(), md5_b64.to_owned()),
            ("x-amz-checksum-crc64nvme".to_owned(), crc64_b64.to_owned()),
        ];
        let q = [("partNumber", num.as_str()), ("uploadId", upload_id)];
        let (h, _) = retry(|| {
            self.client.call(
                Method::PUT,
                Some(&self.bucket),
                Some(&key),
                &q,
                headers.clone(),
                body.clone(),
            )
        })
        .await
        .map_err(|e| write_error(&key, e))?;
        Ok(header(&h, "etag").map(quoted).unwrap_or_default())
    }

    /// Completes an upload with the parts' ETags and CRCs and the whole object's CRC; answers
    /// the object's ETag.
    pub async fn complete(
        &self,
        rel: &str,
        upload_id: &str,
        parts: &[(u32, String, String)],
        crc64_b64: &str,
    ) -> Result<Written, Error> {
        let key = self.key(rel);
        let mut doc = String::from("<CompleteMultipartUpload>");
        for (n, etag, crc) in parts {
            doc.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>\"{}\"</ETag><ChecksumCRC64NVME>{crc}</ChecksumCRC64NVME></Part>",
                xml::escape(etag)
            ));
        }
        doc.push_str("</CompleteMultipartUpload>");
        let body = Bytes::from(doc);
        let headers = vec![
            ("x-amz-checksum-crc64nvme".to_owned(), crc64_b64.to_owned()),
            ("x-amz-checksum-type".to_owned(), "FULL_OBJECT".to_owned()),
        ];
        let q = [("uploadId", upload_id)];
        let (h, answer) = retry(|| {
            self.client.call(
                Method::POST,
                Some(&self.bucket),
                Some(&key),
                &q,
                headers.clone(),
                body.clone(),
            )
        })
        .await
        .map_err(|e| write_error(&key, e))?;
        let text = String::from_utf8_lossy(&answer);
        // S3 may answer 200 with an error document once the completion has started.
        if let Some(code) = xml::field(&text, "Code") {
            return Err(Error::Dest(format!(
                "completing {key}: {code}: {}",
                xml::field(&text, "Message").unwrap_or_default()
            )));
        }
        Ok(Written {
            etag: xml::field(&text, "ETag")
                .map(|e| quoted(&e))
                .unwrap_or_default(),
            version_id: header(&h, "x-amz-version-id").map(str::to_owned),
        })
    }

    pub async fn abort(&self, rel: &str, upload_id: &str) {
        let key = self.key(rel);
        let _ = self
            .client
            .call(
                Method::DELETE,
                Some(&self.bucket),
                Some(&key),
                &[("uploadId", upload_id)],
                Vec::new(),
                Bytes::new(),
            )
            .await;
    }

    pub async fn delete(&self, rel: &str) -> Result<(), Error> {
        let key = self.key(rel);
        retry(|| {
            self.client.call(
                Method::DELETE,
                Some(&self.bucket),
                Some(&key),
                &[],
                Vec::new(),
                Bytes::new(),
            )
        })
        .await
        .map(|_| ())
        .map_err(|e| write_error(&key, e))
    }
}

impl Dest {
    /// A DELETE without a version: in a versioned bucket, a new delete marker, whose
    /// version id it answers.
    pub async fn delete_marker(&self, rel: &str) -> Result<Option<String>, Error> {
        let key = self.key(rel);
        let (h, _) = retry(|| {
            self.client.call(
                Method::DELETE,
                Some(&self.bucket),
                Some(&key),
                &[],
                Vec::new(),
                Bytes::new(),
            )
        })
        .await
        .map_err(|e| write_error(&key, e))?;
        if header(&h, "x-amz-delete-marker") != Some("true") {
            return Err(Error::Dest(format!(
                "deleting {key} made no delete marker: is s3://{} versioned?",
                self.bucket
            )));
        }
        Ok(header(&h, "x-amz-version-id").map(str::to_owned))
    }

    /// CopyObject from another bucket of the same region: the bytes never leave it. The
    /// copy is of the listed version only (`If-Match` on its ETag), and the region is asked
    /// for the copy's CRC64NVME. Answers what was written and that checksum.
    pub async fn copy_from(
        &self,
        rel: &str,
        src_bucket: &str,
        src_key: &str,
        src_version: Option<&str>,
        src_etag: Option<&str>,
        mut headers: Vec<(String, String)>,
    ) -> Result<(Written, Option<String>), Error> {
        let key = self.key(rel);
        let encoded: Vec<String> = src_key
            .split('/')
            .map(feiyun_iam::sigv4::uri_encode)
            .collect();
        let mut source = format!("/{src_bucket}/{}", encoded.join("/"));
        if let Some(v) = src_version {
            source.push_str(&format!("?versionId={}", feiyun_iam::sigv4::uri_encode(v)));
        }
        headers.push(("x-amz-copy-source".into(), source));
        headers.push(("x-amz-checksum-algorithm".into(), "CRC64NVME".into()));
        if let Some(e) = src_etag {
            headers.push(("x-amz-copy-source-if-match".into(), format!("\"{e}\"")));
        }
        let (h, body) = retry(|| {
            self.client.call(
                Method::PUT,
                Some(&self.bucket),
                Some(&key),
                &[],
                headers.clone(),
                Bytes::new(),
            )
        })
        .await
        .map_err(|e| match (e.status(), e.code()) {
            (Some(412), _) => Error::Changed(src_key.to_owned()),
            (Some(404), _) => Error::Vanished(src_key.to_owned()),
            (_, Some("AccessDenied")) => Error::Denied(format!("copying into {key}: {e}")),
            _ => write_error(&key, e),
        })?;
        let text = String::from_utf8_lossy(&body);
        // A copy may answer 200 and then an error document.
        if let Some(code) = xml::field(&text, "Code") {
            return Err(Error::Dest(format!(
                "copying into {key}: {code}: {}",
                xml::field(&text, "Message").unwrap_or_default()
            )));
        }
        Ok((
            Written {
                etag: xml::field(&text, "ETag")
                    .map(|e| quoted(&xml::unescape(&e)))
                    .unwrap_or_default(),
                version_id: header(&h, "x-amz-version-id").map(str::to_owned),
            },
            xml::field(&text, "ChecksumCRC64NVME"),
        ))
    }

    /// Turns versioning on (`--all-versions` replays histories into a versioned bucket).
    pub async fn enable_versioning(&self) -> Result<(), Error> {
        let body = Bytes::from_static(
            b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
        );
        retry(|| {
            self.client.call(
                Method::PUT,
                Some(&self.bucket),
                None,
                &[("versioning", "")],
                Vec::new(),
                body.clone(),
            )
        })
        .await
        .map(|_| ())
        .map_err(|e| Error::Dest(format!("enabling versioning on s3://{}: {e}", self.bucket)))
    }
}

fn write_error(key: &str, e: ClientError) -> Error {
    Error::Dest(format!("writing {key}: {e}"))
}
