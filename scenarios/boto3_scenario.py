"""boto3 against feiyun: objects, multipart, listing, errors."""
import hashlib
import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["ENDPOINT"],
    config=Config(s3={"addressing_style": "path"}),
)


def code(fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"]
    return "OK"


s3.create_bucket(Bucket="boto-bucket")
assert code(s3.create_bucket, Bucket="boto-bucket") == "BucketAlreadyOwnedByYou"
body = os.urandom(123457)
put = s3.put_object(Bucket="boto-bucket", Key="a/b.bin", Body=body, Metadata={"x": "y"})
assert put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest(), put
got = s3.get_object(Bucket="boto-bucket", Key="a/b.bin")
assert got["Body"].read() == body
assert got["Metadata"] == {"x": "y"}
part = s3.get_object(Bucket="boto-bucket", Key="a/b.bin", Range="bytes=10-19")
assert part["Body"].read() == body[10:20]
assert code(s3.get_object, Bucket="boto-bucket", Key="a/b.bin", Range="bytes=999999-") == "InvalidRange"

mpu = s3.create_multipart_upload(Bucket="boto-bucket", Key="mp.bin")
p1, p2 = os.urandom(5 * 1024 * 1024), os.urandom(777)
parts = []
for n, data in ((1, p1), (2, p2)):
    r = s3.upload_part(Bucket="boto-bucket", Key="mp.bin", UploadId=mpu["UploadId"], PartNumber=n, Body=data)
    parts.append({"PartNumber": n, "ETag": r["ETag"]})
done = s3.complete_multipart_upload(
    Bucket="boto-bucket", Key="mp.bin", UploadId=mpu["UploadId"], MultipartUpload={"Parts": parts}
)
assert done["ETag"].endswith('-2"'), done
assert s3.get_object(Bucket="boto-bucket", Key="mp.bin")["Body"].read() == p1 + p2

for i in range(7):
    s3.put_object(Bucket="boto-bucket", Key=f"list/{i:02d}", Body=b"x")
keys = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="boto-bucket", Prefix="list/", PaginationConfig={"PageSize": 3}):
    keys += [o["Key"] for o in page.get("Contents", [])]
assert keys == [f"list/{i:02d}" for i in range(7)], keys
v1 = s3.list_objects(Bucket="boto-bucket", Delimiter="/")
assert [p["Prefix"] for p in v1["CommonPrefixes"]] == ["a/", "list/"], v1
enc = s3.list_objects_v2(Bucket="boto-bucket", Prefix="a/", EncodingType="url")
assert enc["Contents"][0]["Key"] == "a/b.bin"

res = s3.delete_objects(Bucket="boto-bucket", Delete={"Objects": [{"Key": f"list/{i:02d}"} for i in range(7)], "Quiet": True})
assert not res.get("Errors"), res
assert code(s3.head_object, Bucket="boto-bucket", Key="list/00") == "404"
assert code(s3.delete_bucket, Bucket="boto-bucket") == "BucketNotEmpty"
print("boto3 ok")
