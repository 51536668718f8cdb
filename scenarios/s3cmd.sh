#!/usr/bin/env bash
# s3cmd against feiyun (path-style, plain HTTP).
set -euo pipefail
d=$WORK/s3cmd; mkdir -p "$d"
host=${ENDPOINT#http://}
cat > "$d/s3cfg" <<CFG
[default]
access_key = $AWS_ACCESS_KEY_ID
secret_key = $AWS_SECRET_ACCESS_KEY
host_base = $host
host_bucket = $host
use_https = False
signature_v2 = False
bucket_location = us-east-1
CFG
s3() { s3cmd -c "$d/s3cfg" "$@"; }
head -c 300000 /dev/urandom > "$d/file"
s3 mb s3://s3cmd-bucket
s3 put "$d/file" s3://s3cmd-bucket/dir/file
listing=$(s3 ls s3://s3cmd-bucket/dir/); [[ $listing == *dir/file* ]]
s3 get s3://s3cmd-bucket/dir/file "$d/back" --force
cmp "$d/file" "$d/back"
s3 del s3://s3cmd-bucket/dir/file
s3 rb s3://s3cmd-bucket
echo "s3cmd ok"
