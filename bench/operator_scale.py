"""Operator scale run (part of `make bench`): N ModelDeployments created at once on the local cluster's
fake nodes must all become Healthy. Reports the time, the operator's CPU time and peak RSS, reconciles, and
API requests per reconcile (from the API server's own request counter), plus `kubectl apply` to child
Deployment latency and the switch latency of a blue-green update.

  python3 bench/operator_scale.py --operator PATH --kubectl PATH --kubeconfig PATH [--count 500]
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kubectl(args, *cmd, input=None):
    out = subprocess.run([args.kubectl, "--kubeconfig", args.kubeconfig, *cmd], input=input, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"kubectl {' '.join(cmd)}: {out.stderr}")
    return out.stdout


def apiserver_requests(args):
    """Mutating and reading requests the API server has served, by verb (all clients)."""
    text = kubectl(args, "get", "--raw", "/metrics")
    counts = {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            verb = re.search(r'verb="([A-Z]+)"', line).group(1)
            counts[verb] = counts.get(verb, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def proc_stats(pid):
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return hwm / 1024, cpu


def metric(port, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in body.splitlines() if l.startswith(name) and not l.startswith("#"))


class Api:
    """A keep-alive HTTPS client for the API server with the kubeconfig's client certificate, so latency is
    measured without a kubectl process per call."""

    @staticmethod
    def from_kubeconfig(path):
        import base64
        import http.client
        import ssl
        text = open(path).read()

        def field(name):
            m = re.search(rf"{name}: (\S+)", text)
            return m.group(1) if m else None

        tmp = tempfile.mkdtemp(prefix="scale-pki-")
        files = {}
        for key, name in [("certificate-authority-data", "ca.crt"), ("client-certificate-data", "client.crt"), ("client-key-data", "client.key")]:
            files[name] = os.path.join(tmp, name)
            with open(files[name], "wb") as f:
                f.write(base64.b64decode(field(key)))
        ctx = ssl.create_default_context(cafile=files["ca.crt"])
        ctx.load_cert_chain(files["client.crt"], files["client.key"])
        server = field("server").replace("https://", "")
        host, port = server.split(":")
        api = object.__new__(Api)
        api.conn = http.client.HTTPSConnection(host, int(port), context=ctx)
        return api

    def request(self, method, path, body=None):
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None


def mdep(name, uri):
    return (f"apiVersion: mizzen.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {name}}}\n"
            f"spec:\n  model: {{uri: \"{uri}\"}}\n  replicas: 1\n  strategy: {{blueGreen: {{scaleDownDelaySeconds: 0}}}}\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--operator", required=True)
    p.add_argument("--kubectl", required=True)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    ns = f"scale-{int(time.time())}"
    kubectl(args, "apply", "-f", os.path.join(os.path.dirname(__file__), "..", "crds"))
    kubectl(args, "create", "namespace", ns)
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="operator-scale-", suffix=".log", delete=False)
    op = subprocess.Popen([args.operator, "run", "--kubeconfig", args.kubeconfig, "--namespace", ns,
                           "--listen", f"127.0.0.1:{port}", "--log-filter", "warn"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/ready").status == 200:
                    break
            except Exception:
                pass
            if time.time() > deadline:
                sys.exit("the operator did not become ready")
            time.sleep(0.1)

        # Latency from creating a ModelDeployment to its child Deployment existing, one at a time, through the
        # API directly (no kubectl process in the measurement).
        api = Api.from_kubeconfig(args.kubeconfig)
        latencies = []
        for i in range(20):
            obj = {"apiVersion": "mizzen.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": f"probe-{i}"},
                   "spec": {"model": {"uri": "s3://m/a.onnx"}, "replicas": 1, "strategy": {"blueGreen": {"scaleDownDelaySeconds": 0}}}}
            t = time.monotonic()
            status, _ = api.request("POST", f"/apis/mizzen.dev/v1alpha1/namespaces/{ns}/modeldeployments", obj)
            if status != 201:
                sys.exit(f"creating probe-{i}: HTTP {status}")
            while True:
                _, found = api.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments?labelSelector=mizzen.dev/model-deployment%3Dprobe-{i}")
                if found["items"]:
                    break
                time.sleep(0.002)
            latencies.append((time.monotonic() - t) * 1000)
        latencies.sort()

        # A blue-green update: from the new revision Available to the active switch, polled over the API.
        kubectl(args, "-n", ns, "apply", "-f", "-", input=mdep("probe-0", "s3://m/b.onnx"))
        switch, available_at, t0 = None, None, time.monotonic()
        base = f"/apis/mizzen.dev/v1alpha1/namespaces/{ns}/modeldeployments/probe-0"
        while time.monotonic() - t0 < 60 and switch is None:
            _, md = api.request("GET", base)
            st = md.get("status", {})
            rev, active = st.get("previewRevision"), st.get("activeRevision")
            if available_at is None and rev:
                _, d = api.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/probe-0-{rev}")
                if d and d.get("status", {}).get("availableReplicas", 0) >= 1:
                    available_at = time.monotonic()
            if available_at is not None and rev and active == rev:
                switch = (time.monotonic() - available_at) * 1000
            time.sleep(0.002)

        before_requests = apiserver_requests(args)
        before_reconciles = metric(port, "mizzen_operator_reconciles_total")
        _, cpu_before = proc_stats(op.pid)
        docs = "---\n".join(mdep(f"m{i:04d}", f"s3://models/m{i}.onnx") for i in range(args.count))
        t = time.monotonic()
        kubectl(args, "-n", ns, "apply", "-f", "-", input=docs)
        converged = None
        while time.monotonic() - t < 600:
            phases = kubectl(args, "-n", ns, "get", "mdep", "-o", "jsonpath={range .items[*]}{.status.phase} {end}").split()
            if sum(1 for x in phases if x == "Healthy") >= args.count + 10:
                converged = time.monotonic() - t
                break
            time.sleep(0.5)
        rss, cpu = proc_stats(op.pid)
        reconciles = metric(port, "mizzen_operator_reconciles_total") - before_reconciles
        after_requests = apiserver_requests(args)
        # Idle: no writes from anyone over 15 seconds once converged.
        time.sleep(2)
        idle_before = apiserver_requests(args)
        idle_reconciles = metric(port, "mizzen_operator_reconciles_total")
        time.sleep(15)
        idle_after = apiserver_requests(args)
        idle_reconciles = metric(port, "mizzen_operator_reconciles_total") - idle_reconciles
        reconcile_seconds = metric(port, "mizzen_operator_reconcile_duration_seconds_sum")
        reconcile_count = metric(port, "mizzen_operator_reconcile_duration_seconds_count")
        t = time.monotonic()
        kubectl(args, "get", "namespaces", "-o", "name")
        kubectl_ms = (time.monotonic() - t) * 1000
    finally:
        op.terminate()
        op.wait(10)
        kubectl(args, "delete", "namespace", ns, "--wait=false")

    writes = lambda c: sum(v for k, v in c.items() if k in ("POST", "PUT", "PATCH", "DELETE", "APPLY"))
    delta = {k: after_requests.get(k, 0) - before_requests.get(k, 0) for k in after_requests}
    lines = [
        f"# operator scale ({args.count} ModelDeployments, {os.cpu_count()} CPUs)",
        "",
        f"- create to child Deployment: p50 {latencies[len(latencies) // 2]:.0f} ms, max {latencies[-1]:.0f} ms (20 one at a time,"
        f" over the API; a kubectl process alone takes {kubectl_ms:.0f} ms here); one reconcile takes"
        f" {1000 * reconcile_seconds / max(reconcile_count, 1):.1f} ms on average",
        (f"- new revision Available to the active switch: {switch:.0f} ms" if switch and switch >= 1 else
         "- new revision Available to the active switch: within one poll of the API (a few ms)") if switch is not None
        else "- switch: not observed",
        f"- {args.count} ModelDeployments created at once, all Healthy in {converged:.1f} s" if converged else f"- did not converge in 600 s",
        f"- operator: peak RSS {rss:.1f} MiB, CPU {cpu - cpu_before:.1f} s, {reconciles:.0f} reconciles",
        f"- API server requests during convergence (every client, kube-controller-manager and kwok included): {json.dumps({k: int(v) for k, v in delta.items() if v})}",
        f"- idle for 15 s: {idle_reconciles:.0f} operator reconciles; {writes(idle_after) - writes(idle_before):.0f} writes from all clients"
        f" (kwok node heartbeats, the controller manager)",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(open(log.name).read()[-2000:], file=sys.stderr)


if __name__ == "__main__":
    main()
