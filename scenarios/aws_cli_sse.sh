#!/usr/bin/env bash
# Encryption at rest through the aws CLI, over HTTPS (SSE-C needs it): the SSE-S3 default,
# SSE-KMS under a customer key and SSE-C, each with a multipart upload and Range GETs at frame
# boundaries; copies between modes; bucket default encryption; a wrong or missing SSE-C key;
# a disabled KMS key; SSE-C refused on the plain-HTTP region; no plaintext on disk.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
start_tls_region "$dir"
s3() { command aws --endpoint-url "$endpoint" --ca-bundle "$ca" "$@"; }
head_field() { s3 s3api head-object --bucket sse --key "$1" "${@:3}" --query "$2" --output text; }

# 20 MB of a known text (multipart at the CLI's 8 MB threshold) and its key for SSE-C.
python3 -c 'import sys;open(sys.argv[1],"wb").write(b"SCENARIO-PLAINTEXT-" * 1100000)' "$dir/big"
head -c 32 /dev/urandom >"$dir/key"
head -c 32 /dev/urandom >"$dir/other-key"
s3 s3 mb s3://sse >/dev/null
[ "$(s3 s3api get-bucket-encryption --bucket sse --query 'ServerSideEncryptionConfiguration.Rules[0].ApplyServerSideEncryptionByDefault.SSEAlgorithm' --output text)" = AES256 ] \
  || fail "a new bucket does not report SSE-S3"

kms_key=$(s3 kms create-key --description sse-scenario --query KeyMetadata.Arn --output text)
s3 s3 cp "$dir/big" s3://sse/default >/dev/null
s3 s3 cp "$dir/big" s3://sse/kms --sse aws:kms --sse-kms-key-id "$kms_key" >/dev/null
s3 s3 cp "$dir/big" s3://sse/c --sse-c AES256 --sse-c-key "fileb://$dir/key" >/dev/null
[ "$(head_field default ServerSideEncryption)" = AES256 ] || fail "default object not AES256"
[ "$(head_field kms ServerSideEncryption)" = aws:kms ] || fail "kms object not aws:kms"
[ "$(head_field kms SSEKMSKeyId)" = "$kms_key" ] || fail "kms object names another key"
[ "$(head_field c SSECustomerAlgorithm --sse-customer-algorithm AES256 --sse-customer-key "fileb://$dir/key")" = AES256 ] \
  || fail "SSE-C object does not say so"

ssec=(--sse-customer-algorithm AES256 --sse-customer-key "fileb://$dir/key")
for k in default kms c; do
  extra=(); [ "$k" = c ] && extra=("${ssec[@]}")
  s3 s3api get-object --bucket sse --key "$k" "${extra[@]}" "$dir/$k.back" >/dev/null
  cmp "$dir/big" "$dir/$k.back" || fail "$k: whole object differs"
  # Across the first frame boundary, and across the first part boundary (8 MiB).
  for r in 65530-65545 8388600-8388620; do
    s3 s3api get-object --bucket sse --key "$k" --range "bytes=$r" "${extra[@]}" "$dir/$k.range" >/dev/null
    python3 - "$dir/big" "$dir/$k.range" "$r" <<'PY' || fail "$k: range $r differs"
import sys
a, b = map(int, sys.argv[3].split("-"))
want = open(sys.argv[1], "rb").read()[a:b + 1]
sys.exit(0 if open(sys.argv[2], "rb").read() == want else 1)
PY
  done
done

# SSE-C: missing key 400, wrong key 403 (HEAD has no body, so the CLI shows the status).
expect_error "400" s3 s3api head-object --bucket sse --key c
expect_error "403" s3 s3api head-object --bucket sse --key c --sse-customer-algorithm AES256 --sse-customer-key "fileb://$dir/other-key"
expect_error AccessDenied s3 s3api get-object --bucket sse --key c --sse-customer-algorithm AES256 --sse-customer-key "fileb://$dir/other-key" "$dir/x"

# Copies between modes: SSE-C → SSE-KMS, SSE-KMS → SSE-C under another key, SSE-S3 → SSE-C.
s3 s3 cp s3://sse/c s3://sse/c-to-kms --sse-c-copy-source AES256 --sse-c-copy-source-key "fileb://$dir/key" \
  --sse aws:kms --sse-kms-key-id "$kms_key" >/dev/null
[ "$(head_field c-to-kms ServerSideEncryption)" = aws:kms ] || fail "copy did not re-encrypt under KMS"
s3 s3 cp s3://sse/kms s3://sse/kms-to-c --sse-c AES256 --sse-c-key "fileb://$dir/other-key" >/dev/null
s3 s3 cp s3://sse/default s3://sse/s3-to-c --sse-c AES256 --sse-c-key "fileb://$dir/key" >/dev/null
s3 s3 cp s3://sse/c-to-kms "$dir/1" >/dev/null
s3 s3 cp s3://sse/kms-to-c "$dir/2" --sse-c AES256 --sse-c-key "fileb://$dir/other-key" >/dev/null
s3 s3 cp s3://sse/s3-to-c "$dir/3" --sse-c AES256 --sse-c-key "fileb://$dir/key" >/dev/null
for f in 1 2 3; do cmp "$dir/big" "$dir/$f" || fail "copy $f differs"; done

# Bucket default: SSE-KMS under an alias; objects without flags follow it; delete → SSE-S3.
s3 kms create-alias --alias-name alias/sse-scenario --target-key-id "$kms_key"
s3 s3api put-bucket-encryption --bucket sse --server-side-encryption-configuration \
  '{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"aws:kms","KMSMasterKeyID":"alias/sse-scenario"}}]}'
printf 'small object' >"$dir/small"
s3 s3 cp "$dir/small" s3://sse/by-default >/dev/null
[ "$(head_field by-default SSEKMSKeyId)" = "$kms_key" ] || fail "bucket default key not applied"
expect_error KMS.NotFoundException s3 s3api put-bucket-encryption --bucket sse --server-side-encryption-configuration \
  '{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"aws:kms","KMSMasterKeyID":"alias/missing"}}]}'
s3 s3api delete-bucket-encryption --bucket sse
s3 s3 cp "$dir/small" s3://sse/after-delete >/dev/null
[ "$(head_field after-delete ServerSideEncryption)" = AES256 ] || fail "delete-bucket-encryption did not restore SSE-S3"

# A disabled key stops its objects; enabling it restores them.
s3 kms disable-key --key-id "$kms_key"
expect_error KMS.DisabledException s3 s3api get-object --bucket sse --key kms "$dir/x"
s3 kms enable-key --key-id "$kms_key"
s3 s3 cp s3://sse/by-default "$dir/small.back" >/dev/null
cmp "$dir/small" "$dir/small.back"

# feiyun kms: the key with its alias, the buckets depending on it, and deletion refused while
# anything does (nothing changes).
fk() { "$FEIYUN_BIN" kms --endpoint "$endpoint" --ca-bundle "$ca" "$@"; }
fk list-keys | grep "${kms_key##*/}" | grep -q "alias/sse-scenario" || fail "feiyun kms list-keys misses the key or its alias"
fk dependents "$kms_key" | grep -q "^sse	no	" || fail "feiyun kms dependents does not name the bucket: $(fk dependents "$kms_key")"
expect_error "depend on this key" fk schedule-deletion "$kms_key" --days 7
[ "$(s3 kms describe-key --key-id "$kms_key" --query KeyMetadata.KeyState --output text)" = Enabled ] || fail "a refused deletion changed the key"
spare=$(s3 kms create-key --query KeyMetadata.KeyId --output text)
fk schedule-deletion "$spare" --days 7 | grep -q "pending deletion" || fail "an unused key was not scheduled"

# Bad SSE input: an unknown key id, an unsupported algorithm.
expect_error KMS.NotFoundException s3 s3 cp "$dir/small" s3://sse/bad --sse aws:kms --sse-kms-key-id alias/nope
expect_error InvalidArgument s3 s3api put-object --bucket sse --key bad --body "$dir/small" --server-side-encryption aws:kms:dsse

# Nothing readable on disk: the data directory holds no fragment of the plaintext.
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
if grep -rl "SCENARIO-PLAINTEXT" "$dir/data" >/dev/null; then fail "plaintext found on disk"; fi

# The plain-HTTP region refuses SSE-C keys, as S3 does.
expect_error InvalidRequest aws s3api put-object --bucket sse-plain-http --key k --body "$dir/small" \
  --sse-customer-algorithm AES256 --sse-customer-key "fileb://$dir/key"
echo "aws cli SSE: ok"
