#!/usr/bin/env bash
# rclone copy, sync and check against feiyun.
set -euo pipefail
d=$WORK/rclone; mkdir -p "$d/src/x/y"
conf=$d/rclone.conf
cat > "$conf" <<CONF
[fy]
type = s3
provider = Other
access_key_id = $AWS_ACCESS_KEY_ID
secret_access_key = $AWS_SECRET_ACCESS_KEY
endpoint = $ENDPOINT
region = us-east-1
CONF
# rclone refuses a custom CA bundle from the environment even for plain HTTP.
rc() { env -u AWS_CA_BUNDLE rclone --config "$conf" "$@"; }
for i in 1 2 3 4 5; do head -c $((i * 40000)) /dev/urandom > "$d/src/f$i"; done
head -c 20000000 /dev/urandom > "$d/src/x/y/large"
rc mkdir fy:rclone-bucket
rc copy "$d/src" fy:rclone-bucket/copy
rc check "$d/src" fy:rclone-bucket/copy
rm "$d/src/f1"; echo changed > "$d/src/f2"
rc sync "$d/src" fy:rclone-bucket/copy
rc check "$d/src" fy:rclone-bucket/copy
[ "$(rc lsf fy:rclone-bucket/copy | grep -c '^f')" -eq 4 ]
rc copy fy:rclone-bucket/copy "$d/back"
diff -r "$d/src" "$d/back"
rc purge fy:rclone-bucket
echo "rclone ok"
