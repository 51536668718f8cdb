#!/usr/bin/env bash
# aws iam / aws sts: a user with a key and a policy, a role that demands MFA, a virtual MFA
# device, AssumeRole and GetSessionToken with and without MFA, an expiring session, a
# disabled key, IAM's errors for bad input, and the audit chain of all of it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$(dirname "$0")/lib.sh"
d=$WORK/awscli-iam; mkdir -p "$d"

acct=$(aws sts get-caller-identity --query Account --output text)
aws s3api create-bucket --bucket iam-own >/dev/null
aws s3api create-bucket --bucket iam-other >/dev/null

# A user with a key and a policy that allows one bucket and assuming roles.
aws iam create-user --user-name dev --tags Key=team,Value=data >/dev/null
aws iam create-access-key --user-name dev > "$d/key.json"
dev_key=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["AccessKey"]["AccessKeyId"])' "$d/key.json")
dev_secret=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["AccessKey"]["SecretAccessKey"])' "$d/key.json")
cat > "$d/dev-policy.json" <<JSON
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": "s3:*", "Resource": ["arn:aws:s3:::iam-own", "arn:aws:s3:::iam-own/*"]},
  {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "arn:aws:iam::$acct:role/*"},
  {"Effect": "Allow", "Action": "sts:GetSessionToken", "Resource": "*"}]}
JSON
aws iam put-user-policy --user-name dev --policy-name own-bucket --policy-document "file://$d/dev-policy.json"
[ "$(aws iam list-user-policies --user-name dev --query 'PolicyNames[0]' --output text)" = "own-bucket" ]
[ "$(aws iam get-user --user-name dev --query 'User.Tags[0].Value' --output text)" = "data" ]
as_dev() { AWS_ACCESS_KEY_ID=$dev_key AWS_SECRET_ACCESS_KEY=$dev_secret "$@"; }
[ "$(as_dev aws sts get-caller-identity --query Arn --output text)" = "arn:aws:iam::$acct:user/dev" ]
echo hello > "$d/f"
as_dev aws s3 cp "$d/f" s3://iam-own/f --only-show-errors
as_dev aws s3 cp s3://iam-own/f "$d/g" --only-show-errors; cmp "$d/f" "$d/g"
expect_error AccessDenied as_dev aws s3 cp "$d/f" s3://iam-other/f
expect_error AccessDenied as_dev aws iam list-users

# A role whose trust policy demands MFA, with S3 full access through an AWS managed policy.
cat > "$d/trust.json" <<JSON
{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::$acct:root"},
  "Action": "sts:AssumeRole", "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}]}
JSON
role_arn=$(aws iam create-role --role-name admin --assume-role-policy-document "file://$d/trust.json" --query Role.Arn --output text)
aws iam attach-role-policy --role-name admin --policy-arn arn:aws:iam::aws:policy/AmazonS3FullAccess
[ "$(aws iam list-attached-role-policies --role-name admin --query 'AttachedPolicies[0].PolicyName' --output text)" = "AmazonS3FullAccess" ]
expect_error AccessDenied as_dev aws sts assume-role --role-arn "$role_arn" --role-session-name no-mfa

# A virtual MFA device, enabled with two consecutive codes.
serial=$(aws iam create-virtual-mfa-device --virtual-mfa-device-name dev-phone --outfile "$d/seed.txt" \
  --bootstrap-method Base32StringSeed --query VirtualMFADevice.SerialNumber --output text)
mapfile -t codes < <(python3 "$here/totp.py" "$d/seed.txt" -60 -30)
aws iam enable-mfa-device --user-name dev --serial-number "$serial" \
  --authentication-code1 "${codes[0]}" --authentication-code2 "${codes[1]}"
[ "$(aws iam list-mfa-devices --user-name dev --query 'MFADevices[0].SerialNumber' --output text)" = "$serial" ]
expect_error AccessDenied as_dev aws sts assume-role --role-arn "$role_arn" --role-session-name bad-code \
  --serial-number "$serial" --token-code 000000
code=$(python3 "$here/totp.py" "$d/seed.txt" 0)
as_dev aws sts assume-role --role-arn "$role_arn" --role-session-name with-mfa \
  --serial-number "$serial" --token-code "$code" > "$d/role.json"
# A code works once.
expect_error AccessDenied as_dev aws sts assume-role --role-arn "$role_arn" --role-session-name replay \
  --serial-number "$serial" --token-code "$code"
creds() { python3 -c 'import json,sys;c=json.load(open(sys.argv[1]))["Credentials"];print(c[sys.argv[2]])' "$1" "$2"; }
as_role() {
  AWS_ACCESS_KEY_ID=$(creds "$d/role.json" AccessKeyId) AWS_SECRET_ACCESS_KEY=$(creds "$d/role.json" SecretAccessKey) \
  AWS_SESSION_TOKEN=$(creds "$d/role.json" SessionToken) "$@"
}
[ "$(as_role aws sts get-caller-identity --query Arn --output text)" = "arn:aws:sts::$acct:assumed-role/admin/with-mfa" ]
as_role aws s3 cp "$d/f" s3://iam-other/from-role --only-show-errors
as_role aws s3 cp s3://iam-other/from-role "$d/h" --only-show-errors; cmp "$d/f" "$d/h"
expect_error AccessDenied as_role aws iam list-users
# The session token is part of the credential: without it the key is refused.
expect_error InvalidToken env AWS_ACCESS_KEY_ID="$(creds "$d/role.json" AccessKeyId)" \
  AWS_SECRET_ACCESS_KEY="$(creds "$d/role.json" SecretAccessKey)" aws --endpoint-url "$ENDPOINT" s3 ls

# A session policy narrows the role for one session.
as_dev aws sts assume-role --role-arn "$role_arn" --role-session-name narrow --serial-number "$serial" \
  --token-code "$(python3 "$here/totp.py" "$d/seed.txt" 30)" \
  --policy '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}' > "$d/narrow.json"
as_narrow() {
  AWS_ACCESS_KEY_ID=$(creds "$d/narrow.json" AccessKeyId) AWS_SECRET_ACCESS_KEY=$(creds "$d/narrow.json" SecretAccessKey) \
  AWS_SESSION_TOKEN=$(creds "$d/narrow.json" SessionToken) "$@"
}
as_narrow aws s3 cp s3://iam-other/from-role "$d/i" --only-show-errors; cmp "$d/f" "$d/i"
expect_error AccessDenied as_narrow aws s3 cp "$d/f" s3://iam-other/narrow

# GetSessionToken: the user's own permissions; a session expires. The test server lets
# sessions be as short as a second, which the aws CLI refuses to ask for, so boto3 asks.
python3 - "$ENDPOINT" "$dev_key" "$dev_secret" > "$d/short.json" <<'PY'
import json, sys
import boto3
from botocore.config import Config
sts = boto3.client("sts", endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2],
                   aws_secret_access_key=sys.argv[3], region_name="us-east-1",
                   config=Config(parameter_validation=False))
c = sts.get_session_token(DurationSeconds=8)["Credentials"]
print(json.dumps({"Credentials": {k: str(v) for k, v in c.items()}}))
PY
as_dev aws sts get-session-token --duration-seconds 900 --query Credentials.Expiration --output text >/dev/null
as_short() {
  AWS_ACCESS_KEY_ID=$(creds "$d/short.json" AccessKeyId) AWS_SECRET_ACCESS_KEY=$(creds "$d/short.json" SecretAccessKey) \
  AWS_SESSION_TOKEN=$(creds "$d/short.json" SessionToken) "$@"
}
[ "$(as_short aws sts get-caller-identity --query Arn --output text)" = "arn:aws:iam::$acct:user/dev" ]
as_short aws s3 ls s3://iam-own >/dev/null
sleep 9
expect_error ExpiredToken as_short aws s3 ls s3://iam-own

# A disabled key fails on the very next request; enabling it restores access.
aws iam update-access-key --user-name dev --access-key-id "$dev_key" --status Inactive
expect_error InvalidAccessKeyId as_dev aws s3 ls s3://iam-own
aws iam update-access-key --user-name dev --access-key-id "$dev_key" --status Active
as_dev aws s3 ls s3://iam-own >/dev/null

# Bad input gets IAM's errors and changes nothing.
expect_error MalformedPolicyDocument aws iam put-user-policy --user-name dev --policy-name broken --policy-document '{"Version": "2012-10-17", "Statement": ['
expect_error MalformedPolicyDocument aws iam put-user-policy --user-name dev --policy-name op --policy-document \
  '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"StringMaybe":{"aws:username":"x"}}}]}'
big=$(python3 -c 'import json;print(json.dumps({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/%04d" % i} for i in range(60)]}))')
expect_error LimitExceeded aws iam put-user-policy --user-name dev --policy-name big --policy-document "$big"
expect_error NoSuchEntity aws iam attach-user-policy --user-name dev --policy-arn "arn:aws:iam::$acct:policy/nope"
expect_error MalformedPolicyDocument aws iam create-policy --policy-name bad-arn --policy-document \
  '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"bucket-without-arn"}]}'
expect_error ValidationError aws iam create-user --user-name 'no spaces allowed'
expect_error EntityAlreadyExists aws iam create-user --user-name DEV
expect_error DeleteConflict aws iam delete-user --user-name dev
[ "$(aws iam list-user-policies --user-name dev --query 'length(PolicyNames)')" -eq 1 ]
[ "$(aws iam list-policies --scope Local --query 'length(Policies)')" -eq 0 ]

# The convenience verbs speak the same API.
[ "$(FEIYUN_ENDPOINT=$ENDPOINT "$FEIYUN_BIN" iam whoami --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["Arn"])')" = "arn:aws:iam::$acct:root" ]
FEIYUN_ENDPOINT=$ENDPOINT "$FEIYUN_BIN" iam create-user ops --policy-arn arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess --json > "$d/ops.json"
ops_key=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["AccessKeyId"])' "$d/ops.json")
FEIYUN_ENDPOINT=$ENDPOINT "$FEIYUN_BIN" iam disable-key "$ops_key" >/dev/null
[ "$(aws iam list-access-keys --user-name ops --query 'AccessKeyMetadata[0].Status' --output text)" = "Inactive" ]
FEIYUN_ENDPOINT=$ENDPOINT "$FEIYUN_BIN" iam delete-user ops >/dev/null
expect_error NoSuchEntity aws iam get-user --user-name ops

# Every one of those requests is in the audit chain, which verifies while the server runs.
sleep 0.2
verified=$("$FEIYUN_BIN" audit verify --data-dir "$WORK/data")
[[ $verified == ok:* ]] || fail "audit verify: $verified"
recent=$("$FEIYUN_BIN" audit tail --data-dir "$WORK/data" -n 500)
[[ $recent == *sts:AssumeRole* ]] || fail "no AssumeRole in the audit log"
everything=$("$FEIYUN_BIN" audit tail --data-dir "$WORK/data" -n 100000 --json)
[[ $everything != *"$dev_secret"* ]] || fail "a secret reached the audit log"
echo "aws iam/sts ok"
