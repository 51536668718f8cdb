"""feiyun migrate live from an S3 implementation we did not write: moto in server mode.

A region bucket is switched to read through a moto bucket with --write-through: boto3 lists
and reads every key through the region while nothing is copied yet (same keys, same bytes,
same metadata), writes and deletes made in the region win and reach moto, the copier drains
the rest, `finish` ends read-through, and with moto stopped every key is still served.
"""
import concurrent.futures
import hashlib
import json
import os
import subprocess
import time

import boto3
from botocore.config import Config

from moto_helper import start_moto

BIN = os.environ["FEIYUN_BIN"]
WORK = os.environ["WORK"]
ENDPOINT = os.environ["ENDPOINT"]


def live(*args, expect_ok=True):
    env = dict(os.environ, FEIYUN_SOURCE_ACCESS_KEY="legacy", FEIYUN_SOURCE_SECRET_KEY="legacy-secret")
    p = subprocess.run(
        [BIN, "migrate", "live", *args, "--endpoint", ENDPOINT],
        env=env, capture_output=True, text=True, timeout=120,
    )
    if expect_ok and p.returncode != 0:
        raise SystemExit(f"migrate live {args} failed: {p.stdout}{p.stderr}")
    if not expect_ok and p.returncode == 0:
        raise SystemExit(f"migrate live {args} should have failed: {p.stdout}")
    return p


def body(i):
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (1 + (i * 131) // 32))[: 1 + i * 131]


moto, moto_url = start_moto(os.path.join(WORK, "moto-live.log"))
try:
    cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2})
    legacy = boto3.client(
        "s3", endpoint_url=moto_url, aws_access_key_id="legacy",
        aws_secret_access_key="legacy-secret", region_name="us-east-1", config=cfg,
    )
    region = boto3.client("s3", endpoint_url=ENDPOINT, config=cfg)

    legacy.create_bucket(Bucket="shop")
    keys = {}
    for i in range(60):
        key = f"orders/2026/{i:03d}.json" if i % 3 else f"images/{i:03d} ü+%.bin"
        keys[key] = body(i)
        legacy.put_object(
            Bucket="shop", Key=key, Body=keys[key],
            ContentType="application/json" if i % 3 else "image/x-test",
            Metadata={"n": str(i)},
        )
    big = os.urandom(6 * 1024 * 1024) + b"tail"
    mp = legacy.create_multipart_upload(Bucket="shop", Key="big.bin")
    parts = []
    for n, chunk in enumerate([big[: 5 * 1024 * 1024], big[5 * 1024 * 1024:]], start=1):
        r = legacy.upload_part(Bucket="shop", Key="big.bin", PartNumber=n, UploadId=mp["UploadId"], Body=chunk)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    legacy.complete_multipart_upload(
        Bucket="shop", Key="big.bin", UploadId=mp["UploadId"], MultipartUpload={"Parts": parts}
    )
    keys["big.bin"] = big

    region.create_bucket(Bucket="shop")
    live("start", "shop", "--from", "s3://shop", "--source-endpoint", moto_url, "--write-through")

    # Listing through the region, in small pages, before anything is copied.
    listed = []
    for page in region.get_paginator("list_objects_v2").paginate(Bucket="shop", PaginationConfig={"PageSize": 7}):
        listed += [o["Key"] for o in page.get("Contents", [])]
    assert listed == sorted(keys), (listed[:5], len(listed))
    top = region.list_objects_v2(Bucket="shop", Delimiter="/")
    assert [p["Prefix"] for p in top.get("CommonPrefixes", [])] == ["images/", "orders/"], top

    # Every key read through the region by eight readers: same bytes, same metadata.
    def read(key):
        r = region.get_object(Bucket="shop", Key=key)
        data = r["Body"].read()
        assert data == keys[key], key
        if key != "big.bin":
            assert r["Metadata"]["n"] == str(int(key.rsplit("/", 1)[1][:3])), (key, r["Metadata"])
        return key

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert len(list(pool.map(read, sorted(keys)))) == len(keys)
    ranged = region.get_object(Bucket="shop", Key="big.bin", Range="bytes=5242870-5242889")["Body"].read()
    assert ranged == big[5242870:5242890]

    # Writes and deletes in the region win, and reach moto.
    region.put_object(Bucket="shop", Key="orders/2026/001.json", Body=b'{"changed": true}')
    region.put_object(Bucket="shop", Key="new.txt", Body=b"born in the region", ContentType="text/plain")
    region.delete_object(Bucket="shop", Key="orders/2026/002.json")
    assert region.get_object(Bucket="shop", Key="orders/2026/001.json")["Body"].read() == b'{"changed": true}'
    try:
        region.head_object(Bucket="shop", Key="orders/2026/002.json")
        raise SystemExit("a key deleted in the region came back")
    except region.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "404", e.response
    deadline = time.time() + 30
    while True:
        try:
            got = legacy.get_object(Bucket="shop", Key="new.txt")["Body"].read()
            changed = legacy.get_object(Bucket="shop", Key="orders/2026/001.json")["Body"].read()
            gone = "orders/2026/002.json" not in [
                o["Key"] for o in legacy.list_objects_v2(Bucket="shop", Prefix="orders/2026/002").get("Contents", [])
            ]
            if got == b"born in the region" and changed == b'{"changed": true}' and gone:
                break
        except legacy.exceptions.NoSuchKey:
            pass
        if time.time() > deadline:
            raise SystemExit("write-through did not reach moto")
        time.sleep(0.3)

    # The copier drains the rest; finish once a pass found everything here.
    deadline = time.time() + 90
    while True:
        st = json.loads(live("status", "shop", "--json").stdout)
        if st["ready_to_finish"]:
            break
        if time.time() > deadline:
            raise SystemExit(f"the copier never completed a clean pass: {st}")
        time.sleep(1)
    live("finish", "shop")
finally:
    moto.kill()
    moto.wait()

# moto is gone: the region serves everything on its own.
keys["orders/2026/001.json"] = b'{"changed": true}'
keys["new.txt"] = b"born in the region"
del keys["orders/2026/002.json"]
listed = []
for page in region.get_paginator("list_objects_v2").paginate(Bucket="shop"):
    listed += [o["Key"] for o in page.get("Contents", [])]
assert listed == sorted(keys), listed
for key, data in keys.items():
    assert region.get_object(Bucket="shop", Key=key)["Body"].read() == data, key
print(f"live migration from moto: {len(keys)} keys served through the cut-over and after it")
