"""feiyun migrate from an S3 implementation we did not write: moto in server mode.

A versioned bucket on moto with system headers, user metadata, tags, a multipart object,
overwritten versions and delete markers, and bucket settings; `feiyun migrate --all-versions
--bucket-config` moves it into the region, `migrate verify` finds nothing, and boto3 compares
both ends field by field. Then an incremental run, and an unreachable source (moto takes
any credentials; wrong ones are tried against a region in the cargo tests).
"""
import hashlib
import json
import os
import subprocess
import time

import boto3
from botocore.config import Config

from moto_helper import free_port, start_moto

BIN = os.environ["FEIYUN_BIN"]
WORK = os.environ["WORK"]
ENDPOINT = os.environ["ENDPOINT"]

moto, moto_url = start_moto(os.path.join(WORK, "moto.log"))
try:
    cfg = Config(s3={"addressing_style": "path"})
    legacy = boto3.client(
        "s3",
        endpoint_url=moto_url,
        aws_access_key_id="legacy",
        aws_secret_access_key="legacy-secret",
        region_name="us-east-1",
        config=cfg,
    )
    region = boto3.client("s3", endpoint_url=ENDPOINT, config=cfg)

    legacy.create_bucket(Bucket="legacy")
    legacy.put_bucket_versioning(Bucket="legacy", VersioningConfiguration={"Status": "Enabled"})
    legacy.put_bucket_tagging(Bucket="legacy", Tagging={"TagSet": [{"Key": "team", "Value": "ops"}]})
    legacy.put_bucket_cors(
        Bucket="legacy",
        CORSConfiguration={
            "CORSRules": [{"AllowedMethods": ["GET"], "AllowedOrigins": ["https://a.example"], "MaxAgeSeconds": 60}]
        },
    )
    legacy.put_bucket_lifecycle_configuration(
        Bucket="legacy",
        LifecycleConfiguration={
            "Rules": [{"ID": "logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 7}}]
        },
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "keep-the-bucket",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:DeleteBucket",
                "Resource": "arn:aws:s3:::legacy",
            }
        ],
    }
    legacy.put_bucket_policy(Bucket="legacy", Policy=json.dumps(policy))

    def wait():
        # Distinct Last-Modified times: moto lists whole seconds, and its delete markers
        # after its versions, so only the times order a key's history.
        time.sleep(1.1)

    bodies = {}
    legacy.put_object(
        Bucket="legacy", Key="docs/report one.txt", Body=b"first draft", ContentType="text/plain",
        Metadata={"author": "ana"}, Tagging="stage=draft", ServerSideEncryption="AES256",
    )
    wait()
    legacy.put_object(
        Bucket="legacy", Key="docs/report one.txt", Body=b"final text", ContentType="text/plain",
        CacheControl="no-cache", Metadata={"author": "ana", "rev": "2"}, Tagging="stage=final",
        ServerSideEncryption="AES256",
    )
    wait()
    legacy.put_object(Bucket="legacy", Key="gone/tmp.bin", Body=b"x" * 100, ServerSideEncryption="AES256")
    wait()
    legacy.delete_object(Bucket="legacy", Key="gone/tmp.bin")
    wait()
    big = os.urandom(6 * 1024 * 1024 + 17)
    up = legacy.create_multipart_upload(
        Bucket="legacy", Key="media/ü+%.bin", ContentType="application/octet-stream",
        Metadata={"src": "camera"}, ServerSideEncryption="AES256",
    )
    parts = []
    for n, chunk in enumerate((big[: 5 * 1024 * 1024], big[5 * 1024 * 1024 :]), start=1):
        r = legacy.upload_part(Bucket="legacy", Key="media/ü+%.bin", UploadId=up["UploadId"], PartNumber=n, Body=chunk)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    legacy.complete_multipart_upload(
        Bucket="legacy", Key="media/ü+%.bin", UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )
    wait()

    def migrate(*extra, expect_ok=True):
        env = dict(os.environ, FEIYUN_SOURCE_ACCESS_KEY="legacy", FEIYUN_SOURCE_SECRET_KEY="legacy-secret")
        p = subprocess.run(
            [BIN, "migrate", *extra, "--endpoint", ENDPOINT, "--source-endpoint", moto_url],
            env=env, capture_output=True, text=True, timeout=300,
        )
        if expect_ok and p.returncode != 0:
            raise SystemExit(f"migrate {extra} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    state = os.path.join(WORK, "moto.journal")
    ends = ["s3://legacy", "s3://moved", "--all-versions", "--bucket-config"]
    out = migrate(*ends, "--state", state, "--part-size", "5M", "--json")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["copied"] == 5, summary
    assert summary["failed"] == 0, summary
    migrate("verify", *ends)

    def history(client, bucket):
        v = client.list_object_versions(Bucket=bucket)
        out = {}
        for ver in v.get("Versions", []):
            o = client.get_object(Bucket=bucket, Key=ver["Key"], VersionId=ver["VersionId"])
            tags = client.get_object_tagging(Bucket=bucket, Key=ver["Key"], VersionId=ver["VersionId"])["TagSet"]
            out.setdefault(ver["Key"], []).append(
                (
                    "v",
                    hashlib.sha256(o["Body"].read()).hexdigest(),
                    o["ContentType"],
                    o.get("CacheControl"),
                    o["Metadata"],
                    sorted((t["Key"], t["Value"]) for t in tags),
                    ver["LastModified"],
                )
            )
        for m in v.get("DeleteMarkers", []):
            out.setdefault(m["Key"], []).append(("d", m["IsLatest"], m["LastModified"]))
        # Oldest first, by time; the copies were written later, so compare the order and
        # the content, not the times themselves.
        return {k: [e[:-1] for e in sorted(h, key=lambda e: e[-1])] for k, h in out.items()}

    a, b = history(legacy, "legacy"), history(region, "moved")
    assert a == b, f"histories differ:\n{a}\n{b}"
    assert len(b["docs/report one.txt"]) == 2 and b["gone/tmp.bin"][-1] == ("d", True), b

    assert region.get_bucket_versioning(Bucket="moved")["Status"] == "Enabled"
    assert region.get_bucket_tagging(Bucket="moved")["TagSet"] == [{"Key": "team", "Value": "ops"}]
    cors = region.get_bucket_cors(Bucket="moved")["CORSRules"][0]
    assert cors["AllowedOrigins"] == ["https://a.example"] and cors["MaxAgeSeconds"] == 60, cors
    rule = region.get_bucket_lifecycle_configuration(Bucket="moved")["Rules"][0]
    assert rule["ID"] == "logs" and rule["Expiration"]["Days"] == 7, rule
    moved_policy = json.loads(region.get_bucket_policy(Bucket="moved")["Policy"])
    assert moved_policy["Statement"][0]["Resource"] == "arn:aws:s3:::moved", moved_policy

    # Incremental: a new version and a new key arrive; nothing else is sent again.
    legacy.put_object(Bucket="legacy", Key="docs/report one.txt", Body=b"errata", ServerSideEncryption="AES256")
    wait()
    legacy.put_object(Bucket="legacy", Key="new.txt", Body=b"new", ServerSideEncryption="AES256")
    out = migrate(*ends, "--state", state, "--part-size", "5M", "--json")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["copied"] == 2, summary
    assert summary["skipped"] == 5, summary
    migrate("verify", *ends)
    assert history(legacy, "legacy") == history(region, "moved")

    # An unreachable source: a non-zero exit and a clear line, and nothing created at the
    # destination.
    env = dict(os.environ, FEIYUN_SOURCE_ACCESS_KEY="legacy", FEIYUN_SOURCE_SECRET_KEY="legacy-secret")
    dead = f"http://127.0.0.1:{free_port()}"
    p = subprocess.run(
        [BIN, "migrate", "s3://legacy", "s3://never", "--endpoint", ENDPOINT, "--source-endpoint", dead],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert p.returncode != 0 and "unreachable" in p.stderr, (p.returncode, p.stderr)
    names = [x["Name"] for x in region.list_buckets()["Buckets"]]
    assert "never" not in names, names
finally:
    moto.terminate()
    moto.wait()
print("migrate from moto: ok")
