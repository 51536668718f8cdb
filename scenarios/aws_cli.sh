#!/usr/bin/env bash
# aws s3 / aws s3api against feiyun, including a >100 MiB multipart upload.
set -euo pipefail
aws() { command aws --endpoint-url "$ENDPOINT" "$@"; }
d=$WORK/awscli; mkdir -p "$d/up/sub"
aws s3 mb s3://cli-bucket
head -c 110000000 /dev/urandom > "$d/big.bin"
echo "hello feiyun" > "$d/up/a.txt"; echo "nested" > "$d/up/sub/b.txt"
aws s3 cp "$d/big.bin" s3://cli-bucket/big.bin --only-show-errors
aws s3 cp s3://cli-bucket/big.bin "$d/big.back" --only-show-errors
cmp "$d/big.bin" "$d/big.back"
etag=$(aws s3api head-object --bucket cli-bucket --key big.bin --query ETag --output text)
case "$etag" in *-*) ;; *) echo "expected a multipart ETag, got $etag"; exit 1;; esac
aws s3 sync "$d/up" s3://cli-bucket/tree --only-show-errors
n=$(aws s3 ls --recursive s3://cli-bucket/tree | wc -l); [ "$n" -eq 2 ]
listing=$(aws s3 ls s3://cli-bucket/tree/); [[ $listing == *'PRE sub/'* ]]
aws s3api get-object --bucket cli-bucket --key tree/a.txt --range bytes=0-4 "$d/range" >/dev/null
[ "$(cat "$d/range")" = "hello" ]
aws s3api put-object --bucket cli-bucket --key meta.txt --body "$d/up/a.txt" --content-type text/x-feiyun --metadata k=v >/dev/null
[ "$(aws s3api head-object --bucket cli-bucket --key meta.txt --query ContentType --output text)" = "text/x-feiyun" ]
[ "$(aws s3api head-object --bucket cli-bucket --key meta.txt --query Metadata.k --output text)" = "v" ]
aws s3api copy-object --bucket cli-bucket --key copy.txt --copy-source cli-bucket/meta.txt >/dev/null
copied=$(aws s3 cp s3://cli-bucket/copy.txt -); [[ $copied == *'hello feiyun'* ]]
# Paging one key per request must still visit every key exactly once.
all=$(aws s3api list-objects-v2 --bucket cli-bucket --page-size 1 --output json)
[ "$(grep -c '"Key"' <<<"$all")" -eq 5 ]
if aws s3api head-object --bucket cli-bucket --key missing >/dev/null 2>&1; then exit 1; fi
if aws s3 rb s3://cli-bucket 2>/dev/null; then echo "rb of non-empty bucket succeeded"; exit 1; fi
aws s3 rm --recursive s3://cli-bucket --only-show-errors
aws s3 rb s3://cli-bucket
echo "aws cli ok"
