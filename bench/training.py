"""Training benchmarks: mizzen-train against scikit-learn on the same data and the same holdout split, in
the same run. For each case: fit time (ours: split, preprocessing and fit; scikit-learn: the equivalent
Pipeline's fit), holdout accuracy (or R^2), and our whole run's wall time and peak RSS against the raw data
size (rows x columns x 8 bytes).

  training.py --train target/release/mizzen-train --data DIR --out FILE
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
COMPARE = os.path.join(HERE, "..", "services", "training", "tests", "python", "compare.py")

CASES = [
    # name, file, label, algorithm, hyperparameters
    ("logistic regression, iris", "iris.csv", "species", "logisticRegression", []),
    ("logistic regression, breast cancer", "breast_cancer.csv", "diagnosis", "logisticRegression", []),
    ("logistic regression, 1M x 20", "synthetic_1m.csv", "y", "logisticRegression", []),
    ("ridge, 1M x 20", "synthetic_1m.csv", "y", "linearRegression", []),
    ("ridge, diabetes", "diabetes.csv", "progression", "linearRegression", []),
    ("mlp, breast cancer", "breast_cancer.csv", "diagnosis", "mlp", []),
    ("mlp, 100k x 20", "synthetic_100k.csv", "y", "mlp", []),
    # A string column of 45,540 levels on 200k rows (high_cardinality.py): 73 GB as a dense one-hot matrix.
    ("logistic regression, 200k x 45k levels", "high_cardinality.csv", "fraud", "logisticRegression", []),
    ("ridge, 200k x 45k levels", "high_cardinality.csv", "fraud", "linearRegression", []),
]


def run_measured(cmd):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{' '.join(cmd)} failed with status {status}")
    return out.decode(), wall, usage.ru_maxrss / 1024.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--train", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rows = []
    for name, file, label, algorithm, hyper in CASES:
        data = os.path.join(args.data, file)
        with tempfile.TemporaryDirectory() as d:
            cmd = [args.train, "--data", data, "--label", label, "--algorithm", algorithm,
                   "--output", os.path.join(d, "model"), "--holdout-rows", os.path.join(d, "holdout.txt"),
                   "--holdout-predictions", os.path.join(d, "pred.txt"), "--log-filter", "error"]
            for kv in hyper:
                cmd += ["--set", kv]
            out, wall, rss = run_measured(cmd)
            report = json.loads(out.strip().splitlines()[-1])
            meta = json.load(open(os.path.join(d, "model", "model.json")))
            cmp = [sys.executable, COMPARE, "--data", data, "--label", label, "--algorithm", algorithm,
                   "--holdout-rows", os.path.join(d, "holdout.txt"), "--predictions", os.path.join(d, "pred.txt"),
                   "--model", os.path.join(d, "model", "model.onnx")]
            for kv in hyper:
                cmp += ["--set", kv]
            theirs = json.loads(subprocess.run(cmp, check=True, capture_output=True).stdout)
        metric = "r2" if algorithm == "linearRegression" else "accuracy"
        prep = meta["preprocessing"]
        n, width = meta["dataset"]["rows"], len(prep["numeric"]) + len(prep["categorical"]) + 1
        raw_mib = n * width * 8 / 2**20
        ours_fit, their_fit = meta["training"]["fitSeconds"], theirs["fitSeconds"]
        rows.append({
            "case": name, "metric": metric,
            "ours": report["metrics"][metric], "sklearn": theirs["sklearn"][metric],
            "oursFit": ours_fit, "sklearnFit": their_fit, "speedup": their_fit / ours_fit,
            "wall": wall, "rss": rss, "raw": raw_mib, "rssRatio": rss / raw_mib,
        })
        r = rows[-1]
        print(f"{name}: {metric} {r['ours']:.4f} vs {r['sklearn']:.4f}; fit {ours_fit:.3f}s vs {their_fit:.3f}s "
              f"({r['speedup']:.1f}x); whole run {wall:.2f}s, peak RSS {rss:.0f} MiB for {raw_mib:.0f} MiB of data",
              flush=True)
    lines = [
        "| case | metric | mizzen-train | scikit-learn | fit (ours) | fit (scikit-learn) | speed-up | whole run | peak RSS | raw data | RSS / raw |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {r['metric']} | {r['ours']:.4f} | {r['sklearn']:.4f} | {r['oursFit']:.3f} s | "
                     f"{r['sklearnFit']:.3f} s | {r['speedup']:.1f}x | {r['wall']:.2f} s | {r['rss']:.0f} MiB | "
                     f"{r['raw']:.1f} MiB | {r['rssRatio']:.2f} |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
