#!/usr/bin/env bash
# aws kms against the built-in KMS: keys, aliases, encrypt/decrypt with an encryption context,
# data keys, re-encryption, rotation, disable/enable, scheduled deletion, IAM policies on
# kms:* actions, and KMS's own errors for bad input.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
d=$WORK/awscli-kms; mkdir -p "$d"
b64d() { base64 -d; }

acct=$(aws sts get-caller-identity --query Account --output text)
key=$(aws kms create-key --description "photos key" --query KeyMetadata.KeyId --output text)
[ "$(aws kms describe-key --key-id "$key" --query KeyMetadata.KeyState --output text)" = Enabled ] || fail "new key not Enabled"
aws kms list-keys --query 'Keys[].KeyId' --output text | grep -q "$key" || fail "list-keys misses the key"
aws kms create-alias --alias-name alias/photos --target-key-id "$key"
[ "$(aws kms describe-key --key-id alias/photos --query KeyMetadata.KeyId --output text)" = "$key" ] || fail "alias does not resolve"
[ "$(aws kms describe-key --key-id "arn:aws:kms:us-east-1:$acct:alias/photos" --query KeyMetadata.KeyId --output text)" = "$key" ] || fail "alias ARN does not resolve"
expect_error AlreadyExistsException aws kms create-alias --alias-name alias/photos --target-key-id "$key"
expect_error ValidationException aws kms create-alias --alias-name alias/aws/s3 --target-key-id "$key"
expect_error NotFoundException aws kms describe-key --key-id 11111111-2222-3333-4444-555555555555
expect_error NotFoundException aws kms describe-key --key-id alias/nothing

# Encrypt and decrypt, bound to an encryption context.
printf 'patient record 42' > "$d/plain"
aws kms encrypt --key-id alias/photos --plaintext "fileb://$d/plain" \
  --encryption-context dept=radiology --query CiphertextBlob --output text | b64d > "$d/ct"
grep -q 'patient record' "$d/ct" && fail "ciphertext holds the plaintext"
aws kms decrypt --ciphertext-blob "fileb://$d/ct" --encryption-context dept=radiology \
  --query Plaintext --output text | b64d > "$d/back"
cmp "$d/plain" "$d/back"
expect_error InvalidCiphertextException aws kms decrypt --ciphertext-blob "fileb://$d/ct"
expect_error InvalidCiphertextException aws kms decrypt --ciphertext-blob "fileb://$d/ct" --encryption-context dept=oncology
python3 -c 'import sys;b=bytearray(open(sys.argv[1],"rb").read());b[-1]^=1;open(sys.argv[2],"wb").write(b)' "$d/ct" "$d/ct-bad"
expect_error InvalidCiphertextException aws kms decrypt --ciphertext-blob "fileb://$d/ct-bad" --encryption-context dept=radiology

# Data keys and re-encryption to a second key.
aws kms generate-data-key --key-id "$key" --key-spec AES_256 > "$d/dk.json"
python3 - "$d/dk.json" "$d" <<'PY'
import base64, json, sys
dk = json.load(open(sys.argv[1]))
plain = base64.b64decode(dk["Plaintext"])
assert len(plain) == 32, len(plain)
open(sys.argv[2] + "/dk-plain", "wb").write(plain)
open(sys.argv[2] + "/dk-ct", "wb").write(base64.b64decode(dk["CiphertextBlob"]))
PY
aws kms decrypt --ciphertext-blob "fileb://$d/dk-ct" --query Plaintext --output text | b64d > "$d/dk-back"
cmp "$d/dk-plain" "$d/dk-back"
[ "$(aws kms generate-data-key-without-plaintext --key-id "$key" --number-of-bytes 64 --query 'length(Plaintext || `x`)' --output text)" = 1 ] || fail "a data key without plaintext returned one"
expect_error ValidationException aws kms generate-data-key --key-id "$key" --number-of-bytes 2000
other=$(aws kms create-key --query KeyMetadata.KeyId --output text)
aws kms re-encrypt --ciphertext-blob "fileb://$d/dk-ct" --destination-key-id "$other" \
  --query CiphertextBlob --output text | b64d > "$d/dk-ct2"
aws kms decrypt --ciphertext-blob "fileb://$d/dk-ct2" --query Plaintext --output text | b64d > "$d/dk-back2"
cmp "$d/dk-plain" "$d/dk-back2"
expect_error IncorrectKeyException aws kms decrypt --ciphertext-blob "fileb://$d/dk-ct2" --key-id "$key"

# Rotation keeps old ciphertexts readable.
aws kms rotate-key-on-demand --key-id "$key" >/dev/null
aws kms decrypt --ciphertext-blob "fileb://$d/ct" --encryption-context dept=radiology \
  --query Plaintext --output text | b64d | cmp - "$d/plain"

# Disabled keys refuse use; scheduled deletion refuses use and can be cancelled.
aws kms disable-key --key-id "$key"
expect_error DisabledException aws kms encrypt --key-id "$key" --plaintext "fileb://$d/plain"
aws kms enable-key --key-id "$key"
expect_error ValidationException aws kms schedule-key-deletion --key-id "$other" --pending-window-in-days 6
[ "$(aws kms schedule-key-deletion --key-id "$other" --pending-window-in-days 7 --query KeyState --output text)" = PendingDeletion ] || fail "not pending deletion"
expect_error KMSInvalidStateException aws kms decrypt --ciphertext-blob "fileb://$d/dk-ct2"
aws kms cancel-key-deletion --key-id "$other" >/dev/null
[ "$(aws kms describe-key --key-id "$other" --query KeyMetadata.KeyState --output text)" = Disabled ] || fail "cancelled deletion should leave the key Disabled"

# IAM decides: a user may encrypt under one key and nothing else.
aws iam create-user --user-name kms-app >/dev/null
aws iam create-access-key --user-name kms-app > "$d/key.json"
ak=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["AccessKey"]["AccessKeyId"])' "$d/key.json")
sk=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["AccessKey"]["SecretAccessKey"])' "$d/key.json")
aws iam put-user-policy --user-name kms-app --policy-name enc --policy-document \
  "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"kms:Encrypt\",\"Resource\":\"arn:aws:kms:us-east-1:$acct:key/$key\"}]}"
sleep 0.2
app() { AWS_ACCESS_KEY_ID=$ak AWS_SECRET_ACCESS_KEY=$sk aws "$@"; }
app kms encrypt --key-id "$key" --plaintext "fileb://$d/plain" --query KeyId --output text | grep -q "$key"
expect_error AccessDeniedException app kms decrypt --ciphertext-blob "fileb://$d/ct" --encryption-context dept=radiology
expect_error AccessDeniedException app kms create-key
expect_error AccessDeniedException app kms encrypt --key-id "$other" --plaintext "fileb://$d/plain"
echo "aws kms ok"
