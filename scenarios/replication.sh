#!/usr/bin/env bash
# Cross-region replication driven by the aws CLI and checked with rclone: a second region
# registered with `feiyun region add`, PutBucketReplication from a JSON file (and the ways
# it is refused), files written with `aws s3 cp` (one large enough for the CLI's multipart)
# replicate with their version ids, `feiyun replication status` settles at zero pending,
# rclone finds the same bytes in the second region, and `feiyun replication resync` fills a
# new destination bucket once.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=${FEIYUN_BIN:?}
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
FEIYUN_LOG="warn,s3s=off" "$bin" server --data-dir "$dir/data" --listen 127.0.0.1:0 --region eu-west \
  >"$dir/stdout" 2>"$dir/stderr" &
pid=$!
for _ in $(seq 1 100); do grep -q '^S3 endpoint: ' "$dir/stdout" 2>/dev/null && break; sleep 0.1; done
dr=$(sed -n 's/^S3 endpoint: //p' "$dir/stdout" | head -n1)
[ -n "$dr" ] || { cat "$dir/stderr"; exit 1; }
dr_aws() { command aws --endpoint-url "$dr" --region eu-west "$@"; }

aws s3api create-bucket --bucket repl-src >/dev/null
dr_aws s3api create-bucket --bucket repl-dst --create-bucket-configuration LocationConstraint=eu-west >/dev/null 2>&1 \
  || dr_aws s3api create-bucket --bucket repl-dst >/dev/null
dr_aws s3api put-bucket-versioning --bucket repl-dst --versioning-configuration Status=Enabled
cat >"$dir/rules.json" <<JSON
{"Role": "arn:aws:iam::000000000000:role/replication",
 "Rules": [{"ID": "docs", "Priority": 1, "Status": "Enabled", "Filter": {"Prefix": "docs/"},
            "DeleteMarkerReplication": {"Status": "Enabled"},
            "Destination": {"Bucket": "arn:aws:s3:dr::repl-dst"}}]}
JSON
# Refused: unversioned source, unknown region, a malformed document.
expect_error InvalidRequest aws s3api put-bucket-replication --bucket repl-src --replication-configuration "file://$dir/rules.json"
aws s3api put-bucket-versioning --bucket repl-src --versioning-configuration Status=Enabled
expect_error InvalidRequest aws s3api put-bucket-replication --bucket repl-src --replication-configuration "file://$dir/rules.json"
"$bin" region add dr --url "$dr" --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" \
  --endpoint "$ENDPOINT" | grep -q "region dr"
"$bin" region list --endpoint "$ENDPOINT" | grep -q "^dr"$'\t'"$dr"
if "$bin" region add BAD --url "$dr" --access-key a --secret-key b --endpoint "$ENDPOINT" 2>"$dir/err"; then
  fail "a bad region name was accepted"
fi
[ "$(wc -l <"$dir/err")" -eq 1 ] || fail "more than one error line: $(cat "$dir/err")"
sed 's/"Prefix": "docs\/"/"Prefix": 7/' "$dir/rules.json" >"$dir/bad.json"
if aws s3api put-bucket-replication --bucket repl-src --replication-configuration "file://$dir/bad.json" 2>/dev/null; then
  fail "a malformed configuration was accepted"
fi
aws s3api put-bucket-replication --bucket repl-src --replication-configuration "file://$dir/rules.json"
aws s3api get-bucket-replication --bucket repl-src --query 'ReplicationConfiguration.Rules[0].Destination.Bucket' \
  --output text | grep -qx "arn:aws:s3:dr::repl-dst"

head -c 9000000 /dev/urandom >"$dir/large"
echo "small" >"$dir/small"
aws s3 cp "$dir/large" s3://repl-src/docs/large >/dev/null
aws s3 cp "$dir/small" s3://repl-src/docs/small >/dev/null
aws s3 cp "$dir/small" s3://repl-src/other/stays >/dev/null
v=$(aws s3api head-object --bucket repl-src --key docs/large --query VersionId --output text)
for _ in $(seq 1 150); do
  s=$(aws s3api head-object --bucket repl-src --key docs/large --query ReplicationStatus --output text)
  [ "$s" = COMPLETED ] && break
  sleep 0.2
done
[ "$s" = COMPLETED ] || fail "docs/large is $s, not COMPLETED"
[ "$(aws s3api head-object --bucket repl-src --key other/stays --query ReplicationStatus --output text)" = None ] \
  || fail "a key outside the rule's prefix got a replication status"
[ "$(dr_aws s3api head-object --bucket repl-dst --key docs/large --version-id "$v" --query ReplicationStatus --output text)" = REPLICA ]
expect_error 404 dr_aws s3api head-object --bucket repl-dst --key other/stays
for _ in $(seq 1 50); do
  "$bin" replication status --endpoint "$ENDPOINT" | grep -q "^pending: 0 changes" && break
  sleep 0.2
done
"$bin" replication status --endpoint "$ENDPOINT" | grep -q "^pending: 0 changes" || fail "replication did not settle"
"$bin" replication status --endpoint "$ENDPOINT" | grep -q "^dr/repl-dst"$'\t'"completed 2"

cat >"$dir/rclone.conf" <<CONF
[dr]
type = s3
provider = Other
access_key_id = $AWS_ACCESS_KEY_ID
secret_access_key = $AWS_SECRET_ACCESS_KEY
endpoint = $dr
region = eu-west
CONF
env -u AWS_CA_BUNDLE rclone --config "$dir/rclone.conf" copy dr:repl-dst/docs "$dir/back"
cmp "$dir/large" "$dir/back/large"
cmp "$dir/small" "$dir/back/small"

# A delete marker replicates; the bucket's rules must go before the region can.
aws s3 rm s3://repl-src/docs/small >/dev/null
for _ in $(seq 1 50); do
  dr_aws s3api head-object --bucket repl-dst --key docs/small >/dev/null 2>&1 || break
  sleep 0.2
done
expect_error 404 dr_aws s3api head-object --bucket repl-dst --key docs/small
expect_error RegionInUse "$bin" region remove dr --endpoint "$ENDPOINT"

# A new destination bucket gets what the source already holds through a resync: both
# versions and the delete marker, then nothing the second time.
dr_aws s3api create-bucket --bucket repl-new >/dev/null
dr_aws s3api put-bucket-versioning --bucket repl-new --versioning-configuration Status=Enabled
sed 's/repl-dst/repl-new/' "$dir/rules.json" >"$dir/new.json"
aws s3api put-bucket-replication --bucket repl-src --replication-configuration "file://$dir/new.json"
"$bin" replication resync repl-src --to dr --wait --endpoint "$ENDPOINT" >"$dir/resync"
grep -q "^resync repl-src -> dr/repl-new"$'\t'"finished"$'\t'"sent 3 " "$dir/resync" || fail "resync: $(cat "$dir/resync")"
"$bin" replication resync repl-src --to dr --wait --endpoint "$ENDPOINT" | grep -q "sent 0 (0 bytes)"$'\t'"already there 3" \
  || fail "a second resync sent something again"
[ "$(dr_aws s3api list-object-versions --bucket repl-new --query 'length(Versions)' --output text)" = 2 ]
[ "$(dr_aws s3api list-object-versions --bucket repl-new --query 'DeleteMarkers[0].Key' --output text)" = docs/small ]
env -u AWS_CA_BUNDLE rclone --config "$dir/rclone.conf" copy dr:repl-new/docs "$dir/again"
cmp "$dir/large" "$dir/again/large"
[ ! -e "$dir/again/small" ] || fail "a deleted key came back through the resync"
expect_error "older-than" "$bin" replication resync repl-src --to dr --older-than 3weeks --endpoint "$ENDPOINT"
aws s3api delete-bucket-replication --bucket repl-src
"$bin" region remove dr --endpoint "$ENDPOINT" | grep -q "removed region dr"
echo "replication ok"
