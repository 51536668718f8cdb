//! The AWS KMS JSON protocol (`X-Amz-Target: TrentService.ACTION`, JSON 1.1 bodies) over the
//! built-in KMS: each action authorized as `kms:ACTION` on the key's ARN by the caller's
//! policies, answered with AWS's field names and exception types.

use base64::Engine;
use feiyun_kms::{Context, KeyMetadata, Kms, KmsError};
use feiyun_meta::MetaStore;
use http::StatusCode;
use serde_json::{Value, json};

use crate::{ApiError, Ctx};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl From<KmsError> for ApiError {
    fn from(e: KmsError) -> Self {
        let code = match &e {
            KmsError::NotFound(_) => "NotFoundException",
            KmsError::Disabled(_) => "DisabledException",
            KmsError::InvalidState(_) => "KMSInvalidStateException",
            KmsError::InvalidCiphertext => "InvalidCiphertextException",
            KmsError::IncorrectKey => "IncorrectKeyException",
            KmsError::Validation(_) => "ValidationException",
            KmsError::AlreadyExists(_) => "AlreadyExistsException",
            KmsError::Limit(_) => "LimitExceededException",
            KmsError::Meta(feiyun_meta::MetaError::Unavailable(_)) => {
                tracing::warn!(error = %e, "KMS store unavailable");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "KMSInternalException",
                    "The KMS is unavailable. Please try again.",
                );
            }
            KmsError::MasterKey(_) | KmsError::Corrupt(_) | KmsError::Meta(_) => {
                tracing::error!(error = %e, "KMS failure");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "KMSInternalException",
                    "The KMS could not complete the request",
                );
            }
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    }
}

fn validation(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "ValidationException", message)
}

fn string<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(validation(format!("{name} must be a string"))),
    }
}

fn required<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    string(body, name)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| validation(format!("{name} is required")))
}

fn blob(body: &Value, name: &str) -> Result<Vec<u8>, ApiError> {
    B64.decode(required(body, name)?)
        .map_err(|_| validation(format!("{name} is not valid base64")))
}

fn context(body: &Value, name: &str) -> Result<Context, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(Context::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(validation(format!("{name} values must be strings"))),
            })
            .collect(),
        Some(_) => Err(validation(format!("{name} must be a map of strings"))),
    }
}

fn number(body: &Value, name: &str) -> Result<Option<u64>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| validation(format!("{name} must be a positive integer"))),
    }
}

fn metadata(m: &KeyMetadata) -> Value {
    let mut v = json!({
        "AWSAccountId": m.account,
        "KeyId": m.key_id,
        "Arn": m.arn,
        "CreationDate": m.created,
        "Enabled": m.state == feiyun_kms::KeyState::Enabled,
        "Description": m.description,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": m.state.as_str(),
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "MultiRegion": false,
    });
    if let Some(d) = m.deletion_date {
        v["DeletionDate"] = json!(d);
    }
    v
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The key's ARN for authorization; a key that does not exist is NotFound before any
/// policy is asked, as in AWS.
fn key_arn<M: MetaStore>(kms: &Kms<M>, cx: &Ctx<'_>, key_ref: &str) -> Result<String, ApiError> {
    Ok(kms.describe(&cx.account, key_ref)?.arn)
}

/// The ARN of the key a ciphertext names, to authorize against before decrypting. A blob
/// that names no key of this account is an invalid ciphertext, as a deleted key's are.
fn ciphertext_key_arn<M: MetaStore>(
    kms: &Kms<M>,
    account: &str,
    ciphertext: &[u8],
) -> Result<String, ApiError> {
    let id = kms.key_of(ciphertext).ok_or(KmsError::InvalidCiphertext)?;
    match kms.describe(account, &id) {
        Ok(m) => Ok(m.arn),
        Err(KmsError::NotFound(_)) => Err(KmsError::InvalidCiphertext.into()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn run<M: MetaStore>(
    kms: &Kms<M>,
    users: Option<&dyn feiyun_kms::KeyUsers>,
    action: &str,
    cx: &Ctx<'_>,
    body: &Value,
) -> Result<Value, ApiError> {
    let account = cx.account.as_str();
    match action {
        "CreateKey" => {
            cx.authorize("kms:CreateKey", "*")?;
            for (field, allowed) in [
                ("KeyUsage", "ENCRYPT_DECRYPT"),
                ("KeySpec", "SYMMETRIC_DEFAULT"),
                ("CustomerMasterKeySpec", "SYMMETRIC_DEFAULT"),
                ("Origin", "AWS_KMS"),
            ] {
                if let Some(v) = string(body, field)?
                    && v != allowed
                {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "UnsupportedOperationException",
                        format!("{field} {v} is not supported; only {allowed}"),
                    ));
                }
            }
            let m = kms
                .create_key(account, string(body, "Description")?.unwrap_or(""), now())
                .await?;
            Ok(json!({ "KeyMetadata": metadata(&m) }))
        }
        "DescribeKey" => {
            let key = required(body, "KeyId")?;
            cx.authorize("kms:DescribeKey", &key_arn(kms, cx, key)?)?;
            Ok(json!({ "KeyMetadata": metadata(&kms.describe(account, key)?) }))
        }
        // Ours, not AWS's: what deleting the key would make unreadable. Asked as DescribeKey.
        "FeiyunListKeyDependents" => {
            let key = required(body, "KeyId")?;
            let arn = key_arn(kms, cx, key)?;
            cx.authorize("kms:DescribeKey", &arn)?;
            let users = users.ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "UnsupportedOperationException",
                    "no service reports key usage on this region",
                )
            })?;
            let found = users.key_users(arn.clone()).await.map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "KMSInternalException", e)
            })?;
            Ok(json!({
                "KeyArn": arn,
                "Buckets": found.iter().map(|u| json!({
                    "Bucket": u.bucket,
                    "BucketDefault": u.bucket_default,
                    "Versions": u.versions,
                    "Bytes": u.bytes,
                    "StaleVersions": u.stale,
                })).collect::<Vec<_>>(),
            }))
        }
        "ListKeys" => {
            cx.authorize("kms:ListKeys", "*")?;
            let keys: Vec<Value> = kms
                .list_keys(account)?
                .iter()
                .map(|m| json!({ "KeyId": m.key_id, "KeyArn": m.arn }))
                .collect();
            Ok(json!({ "Keys": keys, "Truncated": false }))
        }
        "EnableKey" | "DisableKey" => {
            let key = required(body, "KeyId")?;
            cx.authorize(&format!("kms:{action}"), &key_arn(kms, cx, key)?)?;
            kms.set_enabled(account, key, action == "EnableKey").await?;
            Ok(json!({}))
        }
        "ScheduleKeyDeletion" => {
            let key = required(body, "KeyId")?;
            cx.authorize("kms:ScheduleKeyDeletion", &key_arn(kms, cx, key)?)?;
            let days = number(body, "PendingWindowInDays")?.unwrap_or(30);
            let days = u32::try_from(days).map_err(|_| validation("PendingWindowInDays"))?;
            let m = kms.schedule_deletion(account, key, days, now()).await?;
            Ok(json!({
                "KeyId": m.arn,
                "DeletionDate": m.deletion_date,
                "KeyState": m.state.as_str(),
                "PendingWindowInDays": days,
            }))
        }
        "CancelKeyDeletion" => {
            let key = required(body, "KeyId")?;
            cx.authorize("kms:CancelKeyDeletion", &key_arn(kms, cx, key)?)?;
            let m = kms.cancel_deletion(account, key).await?;
            Ok(json!({ "KeyId": m.arn }))
        }
        "RotateKeyOnDemand" => {
            let key = required(body, "KeyId")?;
            cx.authorize("kms:RotateKeyOnDemand", &key_arn(kms, cx, key)?)?;
            let m = kms.rotate(account, key, now()).await?;
            Ok(json!({ "KeyId": m.key_id }))
        }
        "CreateAlias" | "DeleteAlias" => {
            let alias = required(body, "AliasName")?;
            let alias_arn = format!("arn:aws:kms:{}:{account}:{alias}", kms.region());
            cx.authorize(&format!("kms:{action}"), &alias_arn)?;
            if action == "CreateAlias" {
                let target = required(body, "TargetKeyId")?;
                cx.authorize("kms:CreateAlias", &key_arn(kms, cx, target)?)?;
                kms.create_alias(account, alias, target).await?;
            } else {
                kms.delete_alias(account, alias).await?;
            }
            Ok(json!({}))
        }
        "ListAliases" => {
            cx.authorize("kms:ListAliases", "*")?;
            let filter = string(body, "KeyId")?
                .map(|k| kms.describe(account, k))
                .transpose()?
                .map(|m| m.key_id);
            let aliases: Vec<Value> = kms
                .aliases(account)?
                .into_iter()
                .filter(|(_, id)| filter.as_ref().is_none_or(|f| f == id))
                .map(|(name, id)| {
                    json!({
                        "AliasName": format!("alias/{name}"),
                        "AliasArn": format!("arn:aws:kms:{}:{account}:alias/{name}", kms.region()),
                        "TargetKeyId": id,
                    })
                })
                .collect();
            Ok(json!({ "Aliases": aliases, "Truncated": false }))
        }
        "Encrypt" => {
            let key = required(body, "KeyId")?;
            let arn = key_arn(kms, cx, key)?;
            cx.authorize("kms:Encrypt", &arn)?;
            let ct = kms.encrypt(
                account,
                key,
                &blob(body, "Plaintext")?,
                &context(body, "EncryptionContext")?,
            )?;
            Ok(json!({
                "CiphertextBlob": B64.encode(ct),
                "KeyId": arn,
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }))
        }
        "Decrypt" => {
            let ct = blob(body, "CiphertextBlob")?;
            // Authorized on the key the ciphertext names; decrypting checks it is usable.
            let expected = string(body, "KeyId")?;
            let arn = ciphertext_key_arn(kms, account, &ct)?;
            cx.authorize("kms:Decrypt", &arn)?;
            let (m, plain) =
                kms.decrypt(account, &ct, &context(body, "EncryptionContext")?, expected)?;
            Ok(json!({
                "KeyId": m.arn,
                "Plaintext": B64.encode(plain),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }))
        }
        "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
            let key = required(body, "KeyId")?;
            let arn = key_arn(kms, cx, key)?;
            cx.authorize(&format!("kms:{action}"), &arn)?;
            let bytes = match (string(body, "KeySpec")?, number(body, "NumberOfBytes")?) {
                (Some(_), Some(_)) => {
                    return Err(validation("give KeySpec or NumberOfBytes, not both"));
                }
                (Some("AES_256"), None) => 32,
                (Some("AES_128"), None) => 16,
                (Some(other), None) => {
                    return Err(validation(format!(
                        "KeySpec {other} is not AES_256 or AES_128"
                    )));
                }
                (None, Some(n)) => usize::try_from(n).map_err(|_| validation("NumberOfBytes"))?,
                (None, None) => {
                    return Err(validation("KeySpec or NumberOfBytes is required"));
                }
            };
            let dk =
                kms.generate_data_key(account, key, bytes, &context(body, "EncryptionContext")?)?;
            let mut out = json!({
                "CiphertextBlob": B64.encode(&dk.ciphertext),
                "KeyId": dk.key_id,
            });
            if action == "GenerateDataKey" {
                out["Plaintext"] = json!(B64.encode(&dk.plaintext));
            }
            Ok(out)
        }
        "ReEncrypt" => {
            let ct = blob(body, "CiphertextBlob")?;
            let dest = required(body, "DestinationKeyId")?;
            let source_arn = ciphertext_key_arn(kms, account, &ct)?;
            cx.authorize("kms:ReEncryptFrom", &source_arn)?;
            cx.authorize("kms:ReEncryptTo", &key_arn(kms, cx, dest)?)?;
            let (m, out) = kms.re_encrypt(
                account,
                &ct,
                &context(body, "SourceEncryptionContext")?,
                dest,
                &context(body, "DestinationEncryptionContext")?,
            )?;
            Ok(json!({
                "CiphertextBlob": B64.encode(out),
                "SourceKeyId": source_arn,
                "KeyId": m.arn,
                "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }))
        }
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("{action} is not a KMS operation this region supports"),
        )),
    }
}
