"""`make bench`: mizzen-serve against a FastAPI + onnxruntime server and Seldon's MLServer, same machine, same
models, same load generator (mizzen-bench), side by side in one run. Writes results.md and results.json
into the directory given with --out, and prints the table.

Run by the Makefile, which builds the release binaries and passes their paths.
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


def tree_rss_mib(pid):
    """Resident memory of a process and its descendants (uvicorn and MLServer use worker processes)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return total / 1024


class Server:
    def __init__(self, name, cmd, env, ready_url, http, grpc=None, model="m"):
        self.name, self.http, self.grpc, self.model = name, http, grpc, model
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = t0 + 120
        while not ready(ready_url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = open(self.log.name).read()[-3000:]
                self.stop()
                sys.exit(f"{name} did not become ready; log: {log}")
            time.sleep(0.01)
        self.ready_seconds = time.monotonic() - t0

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        os.unlink(self.log.name)


def mizzen(args, model_file, name, extra=()):
    http, grpc = free_port(), free_port()
    cmd = [args.serve, "--model-uri", f"file://{model_file}", "--model-name", name,
           "--http-addr", f"127.0.0.1:{http}", "--grpc-addr", f"127.0.0.1:{grpc}",
           "--ort-dylib-path", args.ort_dylib, *extra]
    return Server("mizzen", cmd, {"RUST_LOG": "warn"}, f"http://127.0.0.1:{http}/v2/health/ready",
                  f"http://127.0.0.1:{http}/v2/models/{name}/infer", f"127.0.0.1:{grpc}", name)


def fastapi(args, model_file, name):
    http = free_port()
    cmd = [os.path.join(args.bench_venv, "bin/python"), "-m", "uvicorn", "fastapi_server:app", "--host", "127.0.0.1",
           "--port", str(http), "--workers", str(os.cpu_count()), "--loop", "uvloop", "--http", "httptools",
           "--log-level", "warning", "--app-dir", HERE]
    return Server("fastapi", cmd, {"MODEL": model_file, "MODEL_NAME": name}, f"http://127.0.0.1:{http}/v2/health/ready",
                  f"http://127.0.0.1:{http}/v2/models/{name}/infer", None, name)


def mlserver(args, model_file, name):
    http, grpc, metrics = free_port(), free_port(), free_port()
    root = tempfile.mkdtemp(prefix="bench-mlserver-")
    with open(os.path.join(root, "settings.json"), "w") as f:
        json.dump({"http_port": http, "grpc_port": grpc, "metrics_port": metrics, "debug": False}, f)
    os.makedirs(os.path.join(root, name))
    with open(os.path.join(root, name, "model-settings.json"), "w") as f:
        json.dump({"name": name, "implementation": "runtime.OnnxRuntime", "parameters": {"uri": model_file}}, f)
    cmd = [os.path.join(args.bench_venv, "bin/mlserver"), "start", root]
    env = {"PYTHONPATH": os.path.join(HERE, "mlserver"), "MLSERVER_LOGGING_LEVEL": "WARNING"}
    return Server("mlserver", cmd, env, f"http://127.0.0.1:{http}/v2/models/{name}/ready",
                  f"http://127.0.0.1:{http}/v2/models/{name}/infer", f"127.0.0.1:{grpc}", name)


def load(args, kind, server, body, concurrency, seconds, extra=(), url=None):
    cmd = [args.loadgen, kind, "--concurrency", str(concurrency), "--seconds", str(seconds), "--body", body, *extra]
    cmd += ["--url", url or server.http] if kind == "http" else ["--addr", server.grpc, "--model", server.model]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        sys.exit(f"load generator failed: {out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["errors"] > result["requests"] // 100:
        sys.exit(f"{server.name} {kind}: {result['errors']} errors for {result['requests']} answers")
    return result


def body_file(tmp, name, rows, features):
    data = [[round(((i * features + j) % 97) / 97.0 - 0.5, 4) for j in range(features)] for i in range(rows)]
    path = os.path.join(tmp, f"{name}-{rows}.json")
    with open(path, "w") as f:
        json.dump({"inputs": [{"name": "float_input", "shape": [rows, features], "datatype": "FP32", "data": data}]}, f)
    return path


def main():
    p = argparse.ArgumentParser()
    for a in ["serve", "loadgen", "models", "ort-dylib", "bench-venv", "out"]:
        p.add_argument(f"--{a}", required=True)
    p.add_argument("--seconds", type=float, default=4.0)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="bench-bodies-")
    models = {"iris": ("iris_logreg.onnx", 4), "mlp": ("mlp.onnx", 64)}
    rows, results = [], {"throughput": [], "overhead": {}, "batching": {}, "memory": {}, "startup": {}}

    for model, (file, features) in models.items():
        path = os.path.join(args.models, file)
        body = body_file(tmp, model, 1, features)
        inproc = subprocess.run([args.loadgen, "inproc", "--model", path, "--ort-dylib-path", args.ort_dylib, "--body", body],
                                capture_output=True, text=True, check=True)
        inproc = json.loads(inproc.stdout.strip().splitlines()[-1])
        results["overhead"][model] = {"inproc_p50_us": inproc["p50_us"]}
        for make in (mizzen, fastapi, mlserver):
            server = make(args, path, model)
            try:
                if server.name == "mizzen":
                    # The bare round trip of this server and load generator: an empty GET, same run.
                    live = server.http.rsplit("/v2/", 1)[0] + "/v2/health/live"
                    floor = load(args, "http", server, body, 1, args.seconds, ["--get"], live)
                    results["overhead"][model]["get_p50_us"] = floor["p50_us"]
                kinds = ["http", "grpc"] if server.name == "mizzen" else ["http"]
                for kind in kinds:
                    for conc in (1, 32):
                        r = load(args, kind, server, body, conc, args.seconds)
                        r.update(server=server.name, model=model)
                        results["throughput"].append(r)
                        label = f"{server.name} {'REST' if kind == 'http' else 'gRPC'}"
                        rows.append((model, label, conc, r["rps"], r["p50_us"], r["p99_us"], r["errors"]))
                        if server.name == "mizzen" and conc == 1:
                            results["overhead"][model][f"{kind}_p50_us"] = r["p50_us"]
                            results["overhead"][model][f"{kind}_p99_us"] = r["p99_us"]
            finally:
                server.stop()

    # Batching at concurrency 64, on and off: the small MLP (HTTP-bound) and the wide one (compute-bound).
    body = body_file(tmp, "mlp", 1, 64)
    for file in ("mlp.onnx", "mlp_10mb.onnx"):
        for label, extra in (("on", ()), ("off", ("--batching", "false"))):
            server = mizzen(args, os.path.join(args.models, file), "mlp", extra)
            try:
                results["batching"][f"{file} {label}"] = load(args, "http", server, body, 64, args.seconds)
                if file == "mlp.onnx" and label == "on":
                    results["memory"] = {"mlp_rss_mib_after_load": round(tree_rss_mib(server.proc.pid), 1)}
            finally:
                server.stop()
    path = os.path.join(args.models, "mlp.onnx")

    # Large tensors: 4 MiB of FP32 (1,024 rows of 1,024) into a model that only sums each row, so moving the
    # tensor is the cost; against this machine's memcpy bandwidth on buffers out of the caches.
    memcpy = subprocess.run([args.loadgen, "memcpy", "--bytes", str(4 << 20)], capture_output=True, text=True, check=True)
    results["large"] = {"memcpy_gb_per_s": round(json.loads(memcpy.stdout.strip().splitlines()[-1])["gb_per_s"], 2)}
    big = body_file(tmp, "wide", 1024, 1024)
    server = mizzen(args, os.path.join(args.models, "wide_sum.onnx"), "wide")
    try:
        for label, kind, extra in (("REST binary", "http", ["--binary"]), ("gRPC raw", "grpc", []), ("REST JSON", "http", [])):
            r = load(args, kind, server, big, 1, args.seconds, extra)
            results["large"][label] = {"p50_us": r["p50_us"], "p99_us": r["p99_us"],
                                       "gb_per_s": round((4 << 20) / max(r["p50_us"], 1) / 1e3, 3)}
    finally:
        server.stop()

    # Start to ready with a 10 MB model, and peers' memory with the MLP loaded.
    big = os.path.join(args.models, "mlp_10mb.onnx")
    times = []
    for _ in range(3):
        server = mizzen(args, big, "big")
        times.append(server.ready_seconds)
        server.stop()
    results["startup"] = {"model_mib": round(os.path.getsize(big) / 2**20, 1), "ready_seconds_median": round(statistics.median(times), 3)}
    for make in (fastapi, mlserver):
        server = make(args, path, "mlp")
        try:
            load(args, "http", server, body, 32, 2)
            results["memory"][f"{server.name}_mlp_rss_mib"] = round(tree_rss_mib(server.proc.pid), 1)
        finally:
            server.stop()

    def get(model, server, kind, conc):
        label = f"{server} {kind}"
        return next(r for r in rows if r[0] == model and r[1] == label and r[2] == conc)

    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    lines = ["| model | server | concurrency | req/s | p50 µs | p99 µs | errors |", "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {m} | {s} | {c} | {rps:,.0f} | {p50:,} | {p99:,} | {e} |" for m, s, c, rps, p50, p99, e in rows]
    ratios = []
    for model in models:
        m32, f32, s32 = get(model, "mizzen", "REST", 32), get(model, "fastapi", "REST", 32), get(model, "mlserver", "REST", 32)
        g32 = get(model, "mizzen", "gRPC", 32)
        ratios.append(f"- {model}, concurrency 32: mizzen REST {m32[3] / f32[3]:.1f}x FastAPI and {m32[3] / s32[3]:.1f}x MLServer "
                      f"throughput (gRPC {g32[3] / f32[3]:.1f}x and {g32[3] / s32[3]:.1f}x); p99 {m32[5] / max(f32[5], 1):.2f} of FastAPI's")
        o = results["overhead"][model]
        ratios.append(f"- {model}, concurrency 1: in-process ONNX Runtime p50 {o['inproc_p50_us']} µs; the same server's empty GET "
                      f"p50 {o['get_p50_us']} µs; REST infer p50 {o['http_p50_us']} µs (GET +{o['http_p50_us'] - o['get_p50_us']} µs, "
                      f"p99 {o['http_p99_us'] / max(o['http_p50_us'], 1):.1f}x p50), gRPC p50 {o['grpc_p50_us']} µs "
                      f"(GET +{o['grpc_p50_us'] - o['get_p50_us']} µs, p99 {o['grpc_p99_us'] / max(o['grpc_p50_us'], 1):.1f}x p50)")
        ratios.append(f"- {model}, concurrency 32: gRPC {g32[3] / m32[3]:.2f}x REST's throughput")
    b = results["batching"]
    for file in ("mlp.onnx", "mlp_10mb.onnx"):
        on, off = b[f"{file} on"]["rps"], b[f"{file} off"]["rps"]
        ratios.append(f"- {file}, concurrency 64: batching on {on:,.0f} req/s vs off {off:,.0f} req/s: {on / off:.2f}x")
    large = results["large"]
    moved = ", ".join(f"{k} {v['gb_per_s']} GB/s (p50 {v['p50_us']:,} µs, {v['gb_per_s'] / large['memcpy_gb_per_s']:.0%} of memcpy)"
                      for k, v in large.items() if k != "memcpy_gb_per_s")
    ratios.append(f"- a 4 MiB FP32 input, concurrency 1: {moved}; memcpy {large['memcpy_gb_per_s']} GB/s")
    mem = results["memory"]
    ratios.append(f"- RSS with the MLP loaded, after load: mizzen {mem['mlp_rss_mib_after_load']} MiB, FastAPI (all workers) "
                  f"{mem['fastapi_mlp_rss_mib']} MiB, MLServer (all processes) {mem['mlserver_mlp_rss_mib']} MiB")
    st = results["startup"]
    ratios.append(f"- start to ready with a {st['model_mib']} MiB model: {st['ready_seconds_median']} s (median of 3)")
    cpus = os.cpu_count()
    text = "\n".join([f"# make bench ({cpus} CPUs, {time.strftime('%Y-%m-%d %H:%M')})", "", *lines, "", *ratios, ""])
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
