"""mizzen-registry against a plain disk copy and against the real `mlflow server`, in the same run.

1. Artifact throughput: a 100 MiB file uploaded (PUT, streamed) and downloaded (GET) through the artifact
   proxy of each server, against copying the same file on the same disk (read, write, fsync: what an upload
   must do to be durable). Target for mizzen-registry: at least 70% of the copy's throughput.
2. Metadata reads: p50/p99 of `GET model-versions/get` on loopback with one kept-alive connection (target
   p99 <= 1 ms for mizzen-registry).
3. The MLflow client flow, timed end to end against both servers: a run with params and metrics, a model
   file logged as an artifact, a registered version, an alias moved, the version downloaded through
   `models:/NAME@ALIAS`.

mlflow server runs with a SQLite backend and proxied artifacts (`--serve-artifacts`), one worker, as its
docs show for a single machine. Results: a Markdown table on stdout and in --out.
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from procs import free_port, stop, wait_ready


def start_mizzen(binary, data):
    port = free_port()
    proc = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, "/health")
    return proc, port


def start_mlflow(venv, data):
    port = free_port()
    cmd = [os.path.join(venv, "bin", "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{data}/mlflow.db", "--artifacts-destination", f"{data}/artifacts",
           "--serve-artifacts", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_ready(port, "/health", 300)
    return proc, port


def disk_copy(src, dst):
    start = time.perf_counter()
    with open(src, "rb") as i, open(dst, "wb") as o:
        shutil.copyfileobj(i, o, 1 << 20)
        o.flush()
        os.fsync(o.fileno())
    return time.perf_counter() - start


def put(port, path, src):
    size = os.path.getsize(src)
    start = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300, blocksize=1 << 20)
    with open(src, "rb") as f:
        c.request("PUT", path, body=f, headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
        r = c.getresponse()
        r.read()
    assert r.status == 200, r.status
    return time.perf_counter() - start


def get(port, path, dst):
    start = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300, blocksize=1 << 20)
    c.request("GET", path)
    r = c.getresponse()
    assert r.status == 200, r.status
    with open(dst, "wb") as o:
        while chunk := r.read(1 << 20):
            o.write(chunk)
    return time.perf_counter() - start


def best(f, n=3):
    return min(f() for _ in range(n))


def metadata_latency(port, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        c.request("GET", "/api/2.0/mlflow/model-versions/get?name=bench&version=1")
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99) - 1]


def client_flow(venv, url, model_file, rounds):
    """The MLflow client flow, run in the bench venv's Python: seconds per round."""
    script = r"""
import os, sys, time, tempfile, filecmp
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
import mlflow
url, model, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.environ["MLFLOW_TRACKING_URI"] = url
client = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
exp = client.create_experiment("flow-%d" % time.time_ns())
try:
    client.create_registered_model("flow")
except Exception:
    pass
times = []
for i in range(rounds):
    start = time.perf_counter()
    run = client.create_run(exp)
    client.log_param(run.info.run_id, "l2", "0.1")
    client.log_metric(run.info.run_id, "accuracy", 0.9)
    client.log_artifact(run.info.run_id, model, "model")
    client.set_terminated(run.info.run_id)
    v = client.create_model_version("flow", run.info.artifact_uri + "/model", run.info.run_id)
    client.set_registered_model_alias("flow", "champion", v.version)
    with tempfile.TemporaryDirectory() as d:
        path = mlflow.artifacts.download_artifacts("models:/flow@champion", dst_path=d)
        got = os.path.join(path, os.path.basename(model)) if os.path.isdir(path) else path
        assert filecmp.cmp(got, model, shallow=False)
    times.append(time.perf_counter() - start)
print(sum(times) / len(times))
"""
    out = subprocess.run([os.path.join(venv, "bin", "python"), "-c", script, url, model_file, str(rounds)],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return float(out.stdout.strip().splitlines()[-1])


def seed_version(port, name, artifact):
    """Logs a run with a small model file and registers it as version 1 of `name` (for the metadata reads)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(op, body):
        c.request("POST", f"/api/2.0/mlflow/{op}", body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        text = r.read()
        assert r.status == 200, (op, r.status, text)
        return json.loads(text)

    run = call("runs/create", {"experiment_id": "0", "start_time": int(time.time() * 1000)})["run"]["info"]
    # artifact_uri is mlflow-artifacts:/<experiment>/<run>/artifacts (mlflow may add a host part).
    prefix = run["artifact_uri"].split("mlflow-artifacts:", 1)[1].lstrip("/")
    prefix = prefix.split("/", 1)[1] if prefix.startswith("127.0.0.1") else prefix
    c.request("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{prefix}/model/model.onnx", body=artifact)
    c.getresponse().read()
    call("registered-models/create", {"name": name})
    call("model-versions/create", {"name": name, "source": f"{run['artifact_uri']}/model", "run_id": run["run_id"]})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", required=True, help="the mizzen-registry release binary")
    ap.add_argument("--mlflow-venv", required=True)
    ap.add_argument("--model", required=True, help="an ONNX file for the client flow")
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="registry-bench-", dir=os.environ.get("MIZZEN_CACHE"))
    try:
        big = os.path.join(work, "big.bin")
        with open(big, "wb") as f:
            f.write(os.urandom(args.size_mib << 20))
        mib = args.size_mib
        copy = best(lambda: disk_copy(big, os.path.join(work, "copy.bin")))
        rows = {}
        for name, start in [("mizzen-registry", lambda d: start_mizzen(args.registry, d)),
                            ("mlflow server", lambda d: start_mlflow(args.mlflow_venv, d))]:
            data = os.path.join(work, name.replace(" ", "-"))
            os.makedirs(data)
            proc, port = start(data)
            try:
                path = "/api/2.0/mlflow-artifacts/artifacts/0/bench/artifacts/big.bin"
                up = best(lambda: put(port, path, big))
                down = best(lambda: get(port, path, os.path.join(work, "down.bin")))
                assert filecmp_equal(big, os.path.join(work, "down.bin"))
                seed_version(port, "bench", open(args.model, "rb").read())
                metadata_latency(port, 200)  # warm-up
                p50, p99 = metadata_latency(port, args.reads)
                flow = client_flow(args.mlflow_venv, f"http://127.0.0.1:{port}", args.model, args.rounds)
                rows[name] = (up, down, p50, p99, flow)
            finally:
                stop(proc)
        lines = [
            f"Artifact {mib} MiB; disk copy (read + write + fsync): {mib / copy:.0f} MiB/s. "
            f"Metadata: {args.reads} sequential `model-versions/get` on one connection. "
            f"Client flow: mlflow {mlflow_version(args.mlflow_venv)} client, mean of {args.rounds} rounds.",
            "",
            "| server | upload MiB/s (% of copy) | download MiB/s (% of copy) | metadata p50 / p99 ms | client flow s |",
            "|---|---|---|---|---|",
        ]
        for name, (up, down, p50, p99, flow) in rows.items():
            lines.append(f"| {name} | {mib / up:.0f} ({100 * copy / up:.0f}%) | {mib / down:.0f} ({100 * copy / down:.0f}%) "
                         f"| {p50 * 1e3:.2f} / {p99 * 1e3:.2f} | {flow:.3f} |")
        m, f = rows["mizzen-registry"], rows["mlflow server"]
        lines += ["", f"mlflow server / mizzen-registry: upload time {f[0] / m[0]:.1f}x, download time {f[1] / m[1]:.1f}x, "
                      f"metadata p99 {f[3] / m[3]:.1f}x, client flow {f[4] / m[4]:.1f}x."]
        text = "\n".join(lines) + "\n"
        print(text)
        with open(args.out, "w") as o:
            o.write(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def filecmp_equal(a, b):
    import filecmp
    return filecmp.cmp(a, b, shallow=False)


def mlflow_version(venv):
    out = subprocess.run([os.path.join(venv, "bin", "python"), "-c", "import mlflow; print(mlflow.__version__)"],
                         capture_output=True, text=True)
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
