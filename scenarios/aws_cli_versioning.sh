#!/usr/bin/env bash
# aws s3api: versioning history, Object Lock (root cannot break COMPLIANCE), tags.
set -euo pipefail
aws() { command aws --endpoint-url "$ENDPOINT" "$@"; }
d=$WORK/awscli-v; mkdir -p "$d"
b=cli-versions
aws s3api create-bucket --bucket $b >/dev/null
aws s3api put-bucket-versioning --bucket $b --versioning-configuration Status=Enabled
[ "$(aws s3api get-bucket-versioning --bucket $b --query Status --output text)" = "Enabled" ]
echo one > "$d/one"; echo two > "$d/two"
v1=$(aws s3api put-object --bucket $b --key doc --body "$d/one" --query VersionId --output text)
v2=$(aws s3api put-object --bucket $b --key doc --body "$d/two" --query VersionId --output text)
[ "$v1" != "$v2" ]
aws s3api get-object --bucket $b --key doc --version-id "$v1" "$d/got" >/dev/null
cmp "$d/one" "$d/got"
marker=$(aws s3api delete-object --bucket $b --key doc --query VersionId --output text)
if aws s3api head-object --bucket $b --key doc >/dev/null 2>&1; then echo "deleted key still visible"; exit 1; fi
[ "$(aws s3api list-object-versions --bucket $b --query 'length(Versions)')" -eq 2 ]
[ "$(aws s3api list-object-versions --bucket $b --query 'DeleteMarkers[0].IsLatest')" = "true" ]
# Undelete: remove the marker, v2 is back.
aws s3api delete-object --bucket $b --key doc --version-id "$marker" >/dev/null
aws s3 cp "s3://$b/doc" "$d/cur" --only-show-errors
cmp "$d/two" "$d/cur"
# Tags on a specific version.
aws s3api put-object-tagging --bucket $b --key doc --version-id "$v1" --tagging 'TagSet=[{Key=stage,Value=draft}]' >/dev/null
[ "$(aws s3api get-object-tagging --bucket $b --key doc --version-id "$v1" --query 'TagSet[0].Value' --output text)" = "draft" ]
[ "$(aws s3api get-object-tagging --bucket $b --key doc --query 'length(TagSet)')" -eq 0 ]
# Malformed input is refused with S3's errors.
out=$(aws s3api put-bucket-versioning --bucket $b --versioning-configuration Status=Sometimes 2>&1 || true)
[[ $out == *MalformedXML* ]] || { echo "bad versioning status: $out"; exit 1; }
out=$(aws s3api get-object --bucket $b --key doc --version-id nope "$d/x" 2>&1 || true)
[[ $out == *InvalidArgument* ]] || { echo "bad version id: $out"; exit 1; }

# Object Lock: COMPLIANCE holds against root, with or without bypass.
l=cli-locked
aws s3api create-bucket --bucket $l --object-lock-enabled-for-bucket >/dev/null
until=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
vl=$(aws s3api put-object --bucket $l --key rec --body "$d/one" --object-lock-mode COMPLIANCE \
  --object-lock-retain-until-date "$until" --query VersionId --output text)
out=$(aws s3api delete-object --bucket $l --key rec --version-id "$vl" --bypass-governance-retention 2>&1 || true)
[[ $out == *AccessDenied* ]] || { echo "COMPLIANCE delete was not denied: $out"; exit 1; }
earlier=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
out=$(aws s3api put-object-retention --bucket $l --key rec --version-id "$vl" --bypass-governance-retention \
  --retention "Mode=COMPLIANCE,RetainUntilDate=$earlier" 2>&1 || true)
[[ $out == *AccessDenied* ]] || { echo "COMPLIANCE shortening was not denied: $out"; exit 1; }
[ "$(aws s3api get-object-retention --bucket $l --key rec --query Retention.Mode --output text)" = "COMPLIANCE" ]
aws s3api get-object --bucket $l --key rec --version-id "$vl" "$d/rec" >/dev/null
cmp "$d/one" "$d/rec"

# Bucket subresources round-trip through the CLI's JSON.
aws s3api put-bucket-tagging --bucket $b --tagging 'TagSet=[{Key=team,Value=storage}]'
[ "$(aws s3api get-bucket-tagging --bucket $b --query 'TagSet[0].Value' --output text)" = "storage" ]
cat > "$d/lc.json" <<'JSON'
{"Rules": [{"ID": "old-versions", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 30, "NewerNoncurrentVersions": 2},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}]}
JSON
aws s3api put-bucket-lifecycle-configuration --bucket $b --lifecycle-configuration "file://$d/lc.json"
[ "$(aws s3api get-bucket-lifecycle-configuration --bucket $b --query 'Rules[0].NoncurrentVersionExpiration.NewerNoncurrentVersions')" -eq 2 ]
cat > "$d/cors.json" <<'JSON'
{"CORSRules": [{"AllowedOrigins": ["https://app.example.com"], "AllowedMethods": ["GET", "PUT"],
                "AllowedHeaders": ["*"], "MaxAgeSeconds": 300}]}
JSON
aws s3api put-bucket-cors --bucket $b --cors-configuration "file://$d/cors.json"
[ "$(aws s3api get-bucket-cors --bucket $b --query 'CORSRules[0].MaxAgeSeconds')" -eq 300 ]
out=$(aws s3api put-bucket-lifecycle-configuration --bucket $b --lifecycle-configuration \
  '{"Rules":[{"ID":"x","Status":"Enabled","Filter":{"Prefix":""},"Expiration":{"Days":0}}]}' 2>&1 || true)
[[ $out == *InvalidArgument* ]] || { echo "zero-day expiration accepted: $out"; exit 1; }

# The local cold class: uploads name it, lifecycle rules transition to it.
head -c 400000 /dev/urandom | base64 > "$d/cold"
aws s3 cp "$d/cold" "s3://$b/cold/one" --storage-class STANDARD_IA >/dev/null
[ "$(aws s3api head-object --bucket $b --key cold/one --query StorageClass --output text)" = "STANDARD_IA" ]
aws s3 cp "s3://$b/cold/one" "$d/cold.back" >/dev/null
cmp "$d/cold" "$d/cold.back"
[ "$(aws s3api list-objects-v2 --bucket $b --prefix cold/ --query 'Contents[0].StorageClass' --output text)" = "STANDARD_IA" ]
cat > "$d/tier.json" <<'JSON'
{"Rules": [{"ID": "tier", "Status": "Enabled", "Filter": {"Prefix": "archive/"},
            "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}, {"Days": 90, "StorageClass": "GLACIER_IR"}],
            "NoncurrentVersionTransitions": [{"NoncurrentDays": 30, "StorageClass": "GLACIER_IR"}],
            "Expiration": {"Days": 365}}]}
JSON
aws s3api put-bucket-lifecycle-configuration --bucket $b --lifecycle-configuration "file://$d/tier.json"
[ "$(aws s3api get-bucket-lifecycle-configuration --bucket $b --query 'Rules[0].Transitions[1].StorageClass' --output text)" = "GLACIER_IR" ]
out=$(aws s3 cp "$d/one" "s3://$b/deep" --storage-class DEEP_ARCHIVE 2>&1 || true)
[[ $out == *InvalidStorageClass* ]] || { echo "DEEP_ARCHIVE accepted: $out"; exit 1; }
echo "aws cli versioning ok"
