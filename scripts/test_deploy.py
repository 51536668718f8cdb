"""The deployment files under deploy/, checked as far as this machine can check them.

No Kubernetes, Docker engine or systemd runs here, so:

* The Helm chart is linted and rendered by the real `helm`, and every refusal it promises
  (no metadata URL, a short cluster secret, a ServiceMonitor without a metrics token) is
  checked. Then the rendered StatefulSet's container is run as Kubernetes would run it, three
  pods on loopback against a throwaway PostgreSQL: its command and arguments verbatim, its
  environment resolved as the kubelet resolves it (downward API fields, Secret keys from the
  rendered Secret, `$(VAR)` references). Only the network identity is mapped: each pod's DNS
  name and `0.0.0.0` become a loopback address of its own, `/data` a directory of its own.
  The three must form a region that passes the chart's readiness probe, reads through one pod
  what another wrote, and serves /metrics only with the token the ServiceMonitor presents.
* The compose file and the systemd unit must start the binary with the chart's command line
  and set the same node settings; the unit passes `systemd-analyze verify`.

Usage: FEIYUN_BIN=target/debug/feiyun python scripts/test_deploy.py
"""

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "feiyun"
BIN = os.environ.get("FEIYUN_BIN") or sys.exit("set FEIYUN_BIN to the feiyun binary")
HELM = os.environ.get("HELM", "helm")
RELEASE, NAMESPACE = "t", "prod"
# What the cluster tests set on every node (crates/feiyun/tests/integration/cluster.rs,
# node_env), beside the root credentials and master key every test region gets.
NODE_SETTINGS = {
    "FEIYUN_META_URL", "FEIYUN_NODE_ID", "FEIYUN_ADVERTISE", "FEIYUN_ZONE",
    "FEIYUN_CLUSTER_SECRET", "FEIYUN_ROOT_ACCESS_KEY", "FEIYUN_ROOT_SECRET_KEY",
    "FEIYUN_MASTER_KEY",
}
SERVER_ARGS = ["server", "--data-dir", "/data", "--listen", "0.0.0.0:9000"]


def fail(msg):
    print(f"FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def helm(*args, ok=True):
    p = subprocess.run([HELM, *args], capture_output=True, text=True)
    if ok and p.returncode != 0:
        fail(f"helm {' '.join(args)}: {p.stderr.strip()}")
    return p


def render(*sets, values=CHART / "ci" / "test-values.yaml"):
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values:
        args += ["-f", str(values)]
    for s in sets:
        args += ["--set", s]
    docs = [d for d in yaml.safe_load_all(helm(*args).stdout) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def refused(expect, *sets, values=CHART / "ci" / "test-values.yaml"):
    args = ["template", RELEASE, str(CHART)]
    if values:
        args += ["-f", str(values)]
    for s in sets:
        args += ["--set", s]
    p = helm(*args, ok=False)
    check(p.returncode != 0, f"chart rendered with {sets}: expected a refusal")
    check(expect in p.stderr, f"refusal for {sets} does not say {expect!r}: {p.stderr}")


def chart_static():
    helm("lint", str(CHART), "-f", str(CHART / "ci" / "test-values.yaml"), "--strict")
    objs = render()
    kinds = sorted(k for k, _ in objs)
    check(kinds == ["PodDisruptionBudget", "Secret", "Service", "Service", "ServiceMonitor",
                    "StatefulSet"], f"objects: {kinds}")
    sts = objs[("StatefulSet", "t-feiyun")]
    spec = sts["spec"]
    check(spec["serviceName"] == "t-feiyun-peers", "StatefulSet's service is the headless one")
    check(spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data", "one claim per pod")
    peers = objs[("Service", "t-feiyun-peers")]["spec"]
    check(peers["clusterIP"] == "None" and peers["publishNotReadyAddresses"] is True,
          f"headless peers service: {peers}")
    check(objs[("Service", "t-feiyun")]["spec"]["ports"][0]["port"] == 9000, "S3 service port")
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    check(c["command"] == ["feiyun"] and c["args"] == SERVER_ARGS, f"command {c['command']} {c['args']}")
    check(c["readinessProbe"]["httpGet"]["path"] == "/health/ready", "readiness probe")
    check(c["livenessProbe"]["httpGet"]["path"] == "/health/live", "liveness probe")
    check({m["mountPath"] for m in c["volumeMounts"]} == {"/data", "/tmp"}, "mounts")
    anti = pod["affinity"]["podAntiAffinity"]
    check(anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"]
          == "kubernetes.io/hostname", "hosts: required anti-affinity")
    check(anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
          ["topologyKey"] == "topology.kubernetes.io/zone", "zones: preferred anti-affinity")
    pdb = objs[("PodDisruptionBudget", "t-feiyun")]["spec"]
    check(pdb["maxUnavailable"] == 1, f"pdb {pdb}")
    sm = objs[("ServiceMonitor", "t-feiyun")]["spec"]["endpoints"][0]
    check(sm["path"] == "/metrics" and sm["authorization"]["credentials"]["key"] == "metrics-token",
          f"service monitor {sm}")
    names = {e["name"] for e in c["env"]}
    missing = NODE_SETTINGS - names
    check(not missing, f"the chart does not set {missing}")
    secret = objs[("Secret", "t-feiyun")]["stringData"]
    for e in c["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            check(ref["key"] in secret, f"{e['name']} names a key the Secret lacks: {ref}")

    # What it refuses, each with the value to fix.
    refused("metaUrl is required", "metaUrl=")
    refused("clusterSecret must be at least 16", "secrets.clusterSecret=short")
    refused("masterKey is required", "secrets.masterKey=")
    refused("needs secrets.metricsToken", "secrets.metricsToken=")
    # Defaults plus the required values: no ServiceMonitor, no zone, and a Secret the user
    # manages is used instead of one the chart writes.
    base = [f"metaUrl=postgres://x@db/f", "secrets.rootAccessKey=a", "secrets.rootSecretKey=b",
            "secrets.masterKey=c", "secrets.clusterSecret=0123456789abcdef"]
    objs = render(*base, values=None)
    check(("ServiceMonitor", "t-feiyun") not in objs, "ServiceMonitor is off by default")
    env = objs[("StatefulSet", "t-feiyun")]["spec"]["template"]["spec"]["containers"][0]["env"]
    check("FEIYUN_ZONE" not in {e["name"] for e in env}, "no zone by default")
    objs = render("existingSecret=mine", values=None)
    check(("Secret", "t-feiyun") not in objs, "existingSecret: the chart writes no Secret")
    env = objs[("StatefulSet", "t-feiyun")]["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in env
            if "secretKeyRef" in e.get("valueFrom", {})}
    check(refs == {"mine"}, f"existingSecret refs: {refs}")
    objs = render("antiAffinity.host=none", "antiAffinity.zone=none", "podDisruptionBudget.enabled=false")
    check("affinity" not in objs[("StatefulSet", "t-feiyun")]["spec"]["template"]["spec"],
          "anti-affinity off")
    check(("PodDisruptionBudget", "t-feiyun") not in objs, "budget off")
    print("chart: lint, objects and refusals ok")


class Postgres:
    """A throwaway PostgreSQL server in its own directory, as the cargo tests start one."""

    def __init__(self):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name))
        check(bins, "PostgreSQL's initdb is missing (apt-get install postgresql)")
        self.bin = bins[-1].parent
        self.dir = Path(tempfile.mkdtemp(prefix="feiyun-deploy-pg-", dir="/var/tmp"))
        self.user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.user:
            shutil.chown(self.dir, "postgres")
        data = self.dir / "data"
        subprocess.run([*self.user, str(self.bin / "initdb"), "-A", "trust", "-U", "feiyun",
                        "--no-sync", "-D", str(data)], check=True, capture_output=True)
        self.port = free_port("127.0.0.1")
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                f"-c unix_socket_directories='{self.dir}'")
        subprocess.run([*self.user, str(self.bin / "pg_ctl"), "-w", "-D", str(data), "-l",
                        str(self.dir / "log"), "-o", opts, "start"], check=True,
                       capture_output=True)
        subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                        "feiyun", "-d", "postgres", "-c", "CREATE DATABASE feiyun"],
                       check=True, capture_output=True)
        self.url = f"postgres://feiyun@127.0.0.1:{self.port}/feiyun"

    def stop(self):
        subprocess.run([*self.user, str(self.bin / "pg_ctl"), "-w", "-m", "immediate", "-D",
                        str(self.dir / "data"), "stop"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def free_port(ip):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def pod_env(container, secret, pod, labels):
    """The environment the kubelet gives `container` in pod `pod`."""
    fields = {"metadata.name": pod, "metadata.namespace": NAMESPACE}
    fields.update({f"metadata.labels['{k}']": v for k, v in labels.items()})
    env = {}
    for e in container["env"]:
        src = e.get("valueFrom")
        if src is None:
            # $(VAR) expands to an earlier variable of the same container.
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                           lambda m: env.get(m.group(1), m.group(0)), e["value"])
        elif "fieldRef" in src:
            value = fields.get(src["fieldRef"]["fieldPath"], "")
        elif "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            if ref["key"] not in secret:
                check(ref.get("optional"), f"Secret lacks {ref['key']}")
                continue
            value = secret[ref["key"]]
        else:
            fail(f"unhandled env source {src}")
        env[e["name"]] = value
    return env


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def chart_live():
    pg = Postgres()
    procs = []
    work = Path(tempfile.mkdtemp(prefix="feiyun-deploy-"))
    try:
        objs = render(f"metaUrl={pg.url}", "region.nodeDownSecs=3")
        sts = objs[("StatefulSet", "t-feiyun")]
        secret = objs[("Secret", "t-feiyun")]["stringData"]
        c = sts["spec"]["template"]["spec"]["containers"][0]
        endpoints = []
        for i in range(sts["spec"]["replicas"]):
            pod = f"t-feiyun-{i}"
            ip = f"127.0.0.{11 + i}"
            env = pod_env(c, secret, pod, {"topology.kubernetes.io/zone": "zone-a"})
            dns = f"{pod}.t-feiyun-peers.{NAMESPACE}.svc.cluster.local:"
            check(env["FEIYUN_ADVERTISE"].startswith(dns), f"advertise {env['FEIYUN_ADVERTISE']}")
            check(env["FEIYUN_NODE_ID"] == pod, f"node id {env['FEIYUN_NODE_ID']}")
            # The network identity: the pod's DNS name and its wildcard binds, to its own IP.
            env = {k: v.replace(dns, f"{ip}:").replace("0.0.0.0:", f"{ip}:") for k, v in env.items()}
            data = work / pod
            args = [a.replace("0.0.0.0:", f"{ip}:") for a in c["args"]]
            args[args.index("/data")] = str(data)
            log = open(work / f"{pod}.log", "w")
            procs.append(subprocess.Popen([BIN, *args], env={"PATH": os.environ["PATH"], **env},
                                          stdout=log, stderr=subprocess.STDOUT))
            port = next(p["containerPort"] for p in c["ports"] if p["name"] == "s3")
            endpoints.append(f"http://{ip}:{port}")
        probe = c["readinessProbe"]["httpGet"]["path"]
        deadline = time.time() + 60
        for i, ep in enumerate(endpoints):
            while get(ep + probe)[0] != 200:
                if procs[i].poll() is not None or time.time() > deadline:
                    fail(f"pod {i} never ready: {(work / f't-feiyun-{i}.log').read_text()[-2000:]}")
                time.sleep(0.2)
        keys = (secret["root-access-key"], secret["root-secret-key"])
        region = next(e["value"] for e in c["env"] if e["name"] == "FEIYUN_REGION")
        status = subprocess.run(
            [BIN, "cluster", "status", "--json"], capture_output=True, text=True,
            env={**os.environ, "FEIYUN_ENDPOINT": endpoints[1], "AWS_ACCESS_KEY_ID": keys[0],
                 "AWS_SECRET_ACCESS_KEY": keys[1]})
        check(status.returncode == 0, f"cluster status: {status.stderr}")
        nodes = {n["id"]: n for n in json.loads(status.stdout)["nodes"]}
        check(sorted(nodes) == ["t-feiyun-0", "t-feiyun-1", "t-feiyun-2"], f"nodes {nodes}")
        for n in nodes.values():
            check(n["state"] == "up" and n["zone"] == "zone-a", f"node {n}")
        import boto3
        from botocore.config import Config

        def s3(ep):
            return boto3.client("s3", endpoint_url=ep, region_name=region,
                                aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
                                config=Config(s3={"addressing_style": "path"}))
        body = os.urandom(3 << 20)
        s3(endpoints[0]).create_bucket(Bucket="deploy")
        s3(endpoints[0]).put_object(Bucket="deploy", Key="blob", Body=body)
        got = s3(endpoints[2]).get_object(Bucket="deploy", Key="blob")["Body"].read()
        check(hashlib.sha256(got).digest() == hashlib.sha256(body).digest(),
              "object written through pod 0 reads back through pod 2")
        # /metrics as the ServiceMonitor scrapes it: with the Secret's token, and not without.
        check(get(endpoints[0] + "/metrics")[0] == 401, "metrics without the token")
        code, text = get(endpoints[0] + "/metrics",
                         {"Authorization": f"Bearer {secret['metrics-token']}"})
        check(code == 200 and b"feiyun_cluster" in text, f"metrics with the token: {code}")
        print("chart: three pods from the rendered StatefulSet form a region")
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def compose_and_systemd():
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "compose.yaml").read_text())
    nodes = {k: v for k, v in compose["services"].items() if k.startswith("node-")}
    check(len(nodes) == 3, f"compose nodes {sorted(nodes)}")
    for name, svc in nodes.items():
        check(svc["command"] == ["feiyun", *SERVER_ARGS], f"{name} command {svc['command']}")
        env = svc["environment"]
        missing = (NODE_SETTINGS - {"FEIYUN_ZONE"}) - set(env)
        check(not missing, f"compose {name} lacks {missing}")
        check(env["FEIYUN_NODE_ID"] == name and env["FEIYUN_ADVERTISE"] == f"{name}:9100",
              f"compose {name} identity")
        check(svc["volumes"] == [f"{name}:/data"], f"compose {name} has its own volume")
    unit = (ROOT / "deploy" / "systemd" / "feiyun.service").read_text()
    start = next(l for l in unit.splitlines() if l.startswith("ExecStart="))
    argv = shlex.split(start.removeprefix("ExecStart="))
    check(argv[0] == "/usr/local/bin/feiyun", f"unit binary {argv[0]}")
    check(argv[1:] == [a.replace("/data", "/var/lib/feiyun") for a in SERVER_ARGS],
          f"unit command line {argv}")
    env = set()
    for f in ("node.env.example", "secrets.env.example"):
        for line in (ROOT / "deploy" / "systemd" / f).read_text().splitlines():
            if line and not line.startswith("#"):
                env.add(line.split("=", 1)[0])
    check(not NODE_SETTINGS - env, f"systemd env files lack {NODE_SETTINGS - env}")
    analyze = shutil.which("systemd-analyze")
    check(analyze, "systemd-analyze is missing (apt-get install systemd)")
    with tempfile.TemporaryDirectory() as d:
        copy = Path(d) / "feiyun.service"
        # verify checks that the binary exists; point it at the one under test.
        copy.write_text(unit.replace("/usr/local/bin/feiyun", str(Path(BIN).resolve())))
        p = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
        check(p.returncode == 0 and not p.stderr.strip(), f"systemd-analyze: {p.stderr}")
    print("compose and systemd: the chart's command line and settings")


if __name__ == "__main__":
    chart_static()
    compose_and_systemd()
    chart_live()
    print("deploy: ok")
