"""mizzen-features against Feast's own feature server (`feast serve`, SQLite online store), same data, same
machine, same load generator (mizzen-bench), in one run.

1. Ingest from Parquet: ROWS rows (ENTITIES entities x their history, 10 float64 features) from one
   Parquet file into the online store: `POST /ingest` for mizzen-features (durable: synced before it
   answers, and kept in the offline log too), `FeatureStore.materialize` for Feast (the file offline store
   into SQLite). Target: at least 100k rows/s.
2. Online lookups through each server's `POST /get-online-features`: 1 entity x 10 features and 100
   entities x 10 features, one connection (latency) and 16 connections (throughput), closed loop. Target
   for the single lookup: p99 at most 1 ms, and at least 10x Feast's throughput.

Runs in the features environment (hack/python-features-requirements.txt: feast and its pandas/pyarrow).
Results: a Markdown table on stdout and in --out.
"""

import argparse
import datetime as dt
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time

from procs import free_port, stop, wait_ready

ENTITIES = 20_000
HISTORY = 10
ROWS = ENTITIES * HISTORY
FEATURES = [f"f{i}" for i in range(10)]


def make_data(work):
    import pandas as pd

    rng = random.Random(7)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    ids = [e for e in range(ENTITIES) for _ in range(HISTORY)]
    rng.shuffle(ids)
    frame = {"customer_id": ids, "ts": [start + dt.timedelta(seconds=rng.randrange(10_000_000)) for _ in ids]}
    for f in FEATURES:
        frame[f] = [rng.random() for _ in ids]
    path = os.path.join(work, "customers.parquet")
    pd.DataFrame(frame).to_parquet(path)
    return path


def feast_repo(work, parquet):
    with open(os.path.join(work, "feature_store.yaml"), "w") as f:
        f.write(f"""project: bench
registry: {work}/registry.db
provider: local
online_store:
  type: sqlite
  path: {work}/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
""")
    with open(os.path.join(work, "repo.py"), "w") as f:
        fields = ", ".join(f'Field(name="{n}", dtype=Float64)' for n in FEATURES)
        f.write(f"""from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64
customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
source = FileSource(name="customers_file", path="{parquet}", timestamp_field="ts")
customers = FeatureView(name="customers", entities=[customer], schema=[{fields}], source=source, online=True)
""")


def feast_materialize(work):
    from feast import FeatureStore

    sys.path.insert(0, work)
    import repo  # noqa: F401 - the definitions, applied below

    store = FeatureStore(repo_path=work)
    store.apply([repo.customer, repo.customers])
    begin = time.perf_counter()
    store.materialize(dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc))
    return time.perf_counter() - begin


def feature_set(parquet):
    return json.dumps({"metadata": {"name": "customers"}, "spec": {
        "entity": {"name": "customer", "joinKey": "customer_id", "type": "int64"},
        "features": [{"name": n, "type": "float64"} for n in FEATURES],
        "sources": [{"name": "file", "uri": f"file://{parquet}", "timestampColumn": "ts"}]}})


def post(port, path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        raise SystemExit(f"POST {path}: {r.status} {data[:300]}")
    return json.loads(data)


def load(loadgen, port, body, concurrency, seconds):
    cmd = [loadgen, "http", "--url", f"http://127.0.0.1:{port}/get-online-features", "--concurrency",
           str(concurrency), "--seconds", str(seconds), "--body", body]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise SystemExit(f"load generator failed: {out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["errors"] > result["requests"] // 100:
        raise SystemExit(f"{result['errors']} errors for {result['requests']} answers")
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--features", required=True, help="the mizzen-features binary")
    p.add_argument("--loadgen", required=True, help="the mizzen-bench binary")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="features-bench-")
    parquet = make_data(work)
    rng = random.Random(3)
    bodies = {}
    for n in (1, 100):
        path = os.path.join(work, f"lookup-{n}.json")
        with open(path, "w") as f:
            json.dump({"features": [f"customers:{x}" for x in FEATURES],
                       "entities": {"customer_id": [rng.randrange(ENTITIES) for _ in range(n)]}}, f)
        bodies[n] = path

    results = {}
    # mizzen-features.
    port = free_port()
    proc = subprocess.Popen([args.features, "--listen", f"127.0.0.1:{port}", "--feature-set", feature_set(parquet),
                             "--data-dir", os.path.join(work, "mizzen")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(port, "/health")
        begin = time.perf_counter()
        post(port, "/ingest", {"source": "file"})
        results["mizzen-features"] = {"ingest_s": time.perf_counter() - begin}
        for n, body in bodies.items():
            for c in (1, 16):
                results["mizzen-features"][(n, c)] = load(args.loadgen, port, body, c, args.seconds)
    finally:
        stop(proc)
    # Feast.
    feast_work = os.path.join(work, "feast")
    os.makedirs(feast_work)
    feast_repo(feast_work, parquet)
    results["feast serve"] = {"ingest_s": feast_materialize(feast_work)}
    port = free_port()
    feast = os.path.join(os.path.dirname(sys.executable), "feast")
    # One worker per CPU and no access log, as Feast's production guide tunes it.
    proc = subprocess.Popen([feast, "-c", feast_work, "serve", "-h", "127.0.0.1", "-p", str(port), "-w", "-1",
                             "--no-access-log"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(port, "/health", 300)
        for n, body in bodies.items():
            for c in (1, 16):
                results["feast serve"][(n, c)] = load(args.loadgen, port, body, c, args.seconds)
    finally:
        stop(proc)

    import feast as feast_module

    lines = [f"Feature store: {ROWS:,} rows ({ENTITIES:,} entities x {HISTORY}, 10 float64 features) from Parquet; "
             f"lookups of 10 features; feast {feast_module.__version__} with its SQLite online store.", "",
             "| server | ingest rows/s | 1 entity p50 / p99 (1 conn) | 1 entity req/s (16 conns) | "
             "100 entities p50 / p99 (1 conn) | 100 entities req/s (16 conns) |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {ROWS / r['ingest_s']:,.0f} | {r[(1, 1)]['p50_us'] / 1000:.3f} / "
                     f"{r[(1, 1)]['p99_us'] / 1000:.3f} ms | {r[(1, 16)]['rps']:,.0f} | "
                     f"{r[(100, 1)]['p50_us'] / 1000:.3f} / {r[(100, 1)]['p99_us'] / 1000:.3f} ms | "
                     f"{r[(100, 16)]['rps']:,.0f} |")
    m, f = results["mizzen-features"], results["feast serve"]
    lines += ["", f"Ratios (mizzen-features / feast serve): ingest {f['ingest_s'] / m['ingest_s']:.1f}x, "
              f"1-entity throughput {m[(1, 16)]['rps'] / f[(1, 16)]['rps']:.1f}x, "
              f"100-entity throughput {m[(100, 16)]['rps'] / f[(100, 16)]['rps']:.1f}x, "
              f"1-entity p99 {f[(1, 1)]['p99_us'] / m[(1, 1)]['p99_us']:.1f}x lower."]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as out:
        out.write(text)


if __name__ == "__main__":
    main()
