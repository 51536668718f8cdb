//! ListObjects (v1) and ListObjectsV2.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use feiyun_oss::{BlobStore, ListEntry, ListPage, ListParams, MetaStore, ObjectRecord, OssError};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::headers;
use crate::{FeiyunS3, fail};

const MAX_KEYS: i32 = 1000;

pub(crate) fn max_keys(m: Option<i32>) -> Result<usize, OssError> {
    match m {
        None => Ok(MAX_KEYS as usize),
        Some(n) if n < 0 => Err(OssError::InvalidArgument(
            "max-keys must be a non-negative integer".into(),
        )),
        Some(n) => Ok(n.min(MAX_KEYS) as usize),
    }
}

pub(crate) fn url_encoded(e: &Option<EncodingType>) -> Result<bool, OssError> {
    match e.as_ref().map(|e| e.as_str()) {
        None => Ok(false),
        Some("url") => Ok(true),
        Some(other) => Err(OssError::InvalidArgument(format!(
            "Invalid Encoding Method specified in Request: {other}"
        ))),
    }
}

struct Rendered {
    contents: Vec<Object>,
    common_prefixes: Vec<CommonPrefix>,
}

fn render(page: &ListPage<ObjectRecord>, encode: bool, fetch_owner: bool) -> Rendered {
    let enc = |s: &str| {
        if encode {
            headers::url_encode(s)
        } else {
            s.to_owned()
        }
    };
    let mut contents = Vec::new();
    let mut common_prefixes = Vec::new();
    for e in &page.entries {
        match e {
            ListEntry::Object(key, r) => contents.push(Object {
                key: Some(enc(key)),
                size: Some(r.size as i64),
                e_tag: Some(headers::etag(&r.etag)),
                last_modified: Some(headers::timestamp(r.last_modified_ms)),
                storage_class: Some(ObjectStorageClass::from(
                    r.storage_class.clone().unwrap_or_else(|| "STANDARD".into()),
                )),
                checksum_algorithm: r
                    .checksum
                    .as_ref()
                    .map(|c| vec![headers::dto_algorithm(c.algorithm)]),
                checksum_type: headers::checksum_type(r.checksum.as_ref()),
                owner: fetch_owner.then(crate::bucket::owner),
                ..Default::default()
            }),
            ListEntry::CommonPrefix(p) => common_prefixes.push(CommonPrefix {
                prefix: Some(enc(p)),
            }),
        }
    }
    Rendered {
        contents,
        common_prefixes,
    }
}

impl<M: MetaStore, B: BlobStore> FeiyunS3<M, B> {
    pub(crate) async fn op_list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = &req.input;
        let encode = url_encoded(&i.encoding_type).map_err(fail(&req))?;
        let params = ListParams {
            prefix: i.prefix.clone().unwrap_or_default(),
            delimiter: i.delimiter.clone(),
            after: i.marker.clone().filter(|m| !m.is_empty()),
            max_keys: max_keys(i.max_keys).map_err(fail(&req))?,
        };
        let page = self
            .oss
            .list_objects(&i.bucket, params.clone())
            .await
            .map_err(fail(&req))?;
        let r = render(&page, encode, true);
        let enc = |s: String| if encode { headers::url_encode(&s) } else { s };
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket.clone()),
            prefix: Some(enc(params.prefix.clone())),
            marker: Some(enc(i.marker.clone().unwrap_or_default())),
            max_keys: Some(params.max_keys as i32),
            is_truncated: Some(page.is_truncated),
            next_marker: page.next_marker().map(|m| enc(m.to_owned())),
            delimiter: i.delimiter.clone().map(enc),
            encoding_type: i.encoding_type.clone(),
            contents: Some(r.contents),
            common_prefixes: Some(r.common_prefixes),
            ..Default::default()
        }))
    }

    pub(crate) async fn op_list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = &req.input;
        let encode = url_encoded(&i.encoding_type).map_err(fail(&req))?;
        let after = match &i.continuation_token {
            Some(t) => Some(decode_token(t).map_err(fail(&req))?),
            None => i.start_after.clone().filter(|s| !s.is_empty()),
        };
        let params = ListParams {
            prefix: i.prefix.clone().unwrap_or_default(),
            delimiter: i.delimiter.clone(),
            after,
            max_keys: max_keys(i.max_keys).map_err(fail(&req))?,
        };
        let page = self
            .oss
            .list_objects(&i.bucket, params.clone())
            .await
            .map_err(fail(&req))?;
        let r = render(&page, encode, i.fetch_owner == Some(true));
        let enc = |s: String| if encode { headers::url_encode(&s) } else { s };
        let key_count = (r.contents.len() + r.common_prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket.clone()),
            prefix: Some(enc(params.prefix.clone())),
            max_keys: Some(params.max_keys as i32),
            key_count: Some(key_count),
            continuation_token: i.continuation_token.clone(),
            next_continuation_token: page.next_marker().map(|m| B64URL.encode(m.as_bytes())),
            start_after: i.start_after.clone().map(enc),
            is_truncated: Some(page.is_truncated),
            delimiter: i.delimiter.clone().map(enc),
            encoding_type: i.encoding_type.clone(),
            contents: Some(r.contents),
            common_prefixes: Some(r.common_prefixes),
            ..Default::default()
        }))
    }
}

fn decode_token(t: &str) -> Result<String, OssError> {
    let invalid =
        || OssError::InvalidArgument("The continuation token provided is incorrect".into());
    let raw = B64URL.decode(t.trim()).map_err(|_| invalid())?;
    String::from_utf8(raw).map_err(|_| invalid())
}
