"""A real browser uploads with a presigned URL: headless Chromium loads a page from another
origin, which PUTs then GETs an object through CORS. A bucket whose CORS rules do not name the
page's origin must block the same upload (nothing is stored)."""
import http.server
import os
import subprocess
import sys
import threading

import boto3
from botocore.config import Config

endpoint = os.environ["ENDPOINT"]
# SigV4 presigned URLs sign only the host, so the browser may add its own Content-Type.
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  config=Config(signature_version="s3v4"))

PAGE = """<!doctype html><html><body><pre id="out">pending</pre><script>
(async () => {
  const out = document.getElementById("out");
  try {
    const put = await fetch(%(put)r, {method: "PUT", body: "from the browser"});
    if (!put.ok) throw new Error("PUT status " + put.status);
    const etag = put.headers.get("ETag") ? "etag" : "noetag";
    const got = await fetch(%(get)r);
    out.textContent = "RESULT:ok:" + (await got.text()) + ":" + etag;
  } catch (e) {
    out.textContent = "RESULT:blocked:" + e;
  }
})();
</script></body></html>"""

pages = {}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = pages.get(self.path, "not found").encode()
        self.send_response(200 if self.path in pages else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
origin = "http://127.0.0.1:%d" % server.server_address[1]

browser = next(
    (b for b in ("chromium", "chromium-browser", "google-chrome") if subprocess.run(
        ["sh", "-c", "command -v " + b], capture_output=True).returncode == 0),
    None,
)
if browser is None:
    sys.exit("no Chromium found: install Debian's chromium package")


def run_page(bucket):
    key = "upload.txt"
    put = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    get = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    pages["/" + bucket] = PAGE % {"put": put, "get": get}
    dom = subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-dev-shm-usage", "--virtual-time-budget=20000", "--dump-dom",
         origin + "/" + bucket],
        capture_output=True, text=True, timeout=120,
    ).stdout
    start = dom.find("RESULT:")
    return dom[start:dom.find("<", start)] if start >= 0 else "no result in page: " + dom[-500:]


for bucket, origins in (("browser-ok", [origin]), ("browser-no", ["https://other.example"])):
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": origins, "AllowedMethods": ["PUT", "GET"],
        "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 60}]})

result = run_page("browser-ok")
assert result == "RESULT:ok:from the browser:etag", result
stored = s3.get_object(Bucket="browser-ok", Key="upload.txt")["Body"].read()
assert stored == b"from the browser", stored

result = run_page("browser-no")
assert result.startswith("RESULT:blocked"), result
listed = s3.list_objects_v2(Bucket="browser-no").get("KeyCount", 0)
assert listed == 0, "a blocked preflight must store nothing"
server.shutdown()
print("browser cors ok")
