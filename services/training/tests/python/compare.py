"""Compares a mizzen-train run with scikit-learn on the same split, and its ONNX model with the trainer.

  compare.py --data CSV --label COL --algorithm A --holdout-rows FILE --predictions FILE --model ONNX
             [--set NAME=VALUE ...]

Fits scikit-learn's equivalent (mean imputation + StandardScaler + one-hot for string columns, then
LogisticRegression(lbfgs) / Ridge / MLPClassifier(adam, early stopping)) on the rows the trainer trained on,
scores the holdout rows, runs the exported model with onnxruntime on the holdout rows' raw values, and
prints JSON: the scikit-learn metric, the ONNX model's agreement with the trainer's own predictions.
"""
import argparse
import csv
import json
import time

import numpy as np
import onnxruntime as ort
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

MISSING = {"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"}

p = argparse.ArgumentParser()
for flag in ["--data", "--label", "--algorithm", "--holdout-rows", "--predictions", "--model"]:
    p.add_argument(flag, required=True)
p.add_argument("--set", action="append", default=[])
args = p.parse_args()
hyper = dict(kv.split("=", 1) for kv in args.set)

with open(args.data) as f:
    header = next(csv.reader(f))
features = [h for h in header if h != args.label]
try:  # all numeric: fast path
    table = np.loadtxt(args.data, delimiter=",", skiprows=1, dtype=np.float64)
    X = np.delete(table, header.index(args.label), axis=1)
    y = table[:, header.index(args.label)]
    numeric, strings = features, []
    Xs = None
except ValueError:
    with open(args.data) as f:
        rows = list(csv.reader(f))[1:]
    cols = {h: [r[i] for r in rows] for i, h in enumerate(header)}

    def is_number(v):
        try:
            float(v)
            return True
        except ValueError:
            return False

    numeric = [h for h in features if all(v in MISSING or is_number(v) for v in cols[h])]
    strings = [h for h in features if h not in numeric]
    X = np.array([[float(v) if v not in MISSING else np.nan for v in cols[h]] for h in numeric]).T
    Xs = np.array([[v if v not in MISSING else "" for v in cols[h]] for h in strings], dtype=object).T
    y = np.array(cols[args.label])
    if args.algorithm == "linearRegression":
        y = y.astype(float)

# The trainer's rule: linearRegression regresses; mlp regresses a numeric label with a non-integer value.
regression = args.algorithm == "linearRegression" or (
    args.algorithm == "mlp" and y.dtype.kind == "f" and bool(np.any(y != np.round(y))))

holdout = np.loadtxt(args.holdout_rows, dtype=np.int64, ndmin=1)
mask = np.ones(len(y), dtype=bool)
mask[holdout] = False
train = np.flatnonzero(mask)
if not regression and y.dtype.kind == "f":
    y = y.astype(np.int64)  # integer classes, as the trainer reads them

frame = np.concatenate([X.astype(object), Xs], axis=1) if strings else X
num_idx = list(range(len(numeric)))
str_idx = list(range(len(numeric), len(numeric) + len(strings)))
steps = [("num", make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()), num_idx)]
if strings:
    steps.append(("str", OneHotEncoder(handle_unknown="ignore"), str_idx))
prep = ColumnTransformer(steps)

l2 = float(hyper.get("l2", "1" if args.algorithm != "mlp" else "0.0001"))
if args.algorithm == "logisticRegression":
    est = LogisticRegression(C=1.0 / l2, max_iter=int(hyper.get("maxIterations", 100)),
                             tol=float(hyper.get("tolerance", 1e-4)))
elif args.algorithm == "linearRegression":
    est = Ridge(alpha=l2)
else:
    hidden = tuple(int(h) for h in hyper.get("hiddenLayers", "100").split(","))
    est = (MLPRegressor if regression else MLPClassifier)(hidden_layer_sizes=hidden, alpha=l2, early_stopping=True,
                        learning_rate_init=float(hyper.get("learningRate", 1e-3)),
                        max_iter=int(hyper.get("maxIterations", 200)),
                        n_iter_no_change=int(hyper.get("patience", 10)), random_state=int(hyper.get("seed", 0)))
model = Pipeline([("prep", prep), ("est", est)])
start = time.perf_counter()
if strings:
    model.fit(frame[train], y[train])
else:
    model.fit(X[train], y[train])
fit_seconds = time.perf_counter() - start
test_frame = frame[holdout] if strings else X[holdout]
pred = model.predict(test_frame)
result = {"fitSeconds": fit_seconds, "holdoutRows": int(len(holdout))}
if regression:
    result["sklearn"] = {"r2": float(r2_score(y[holdout], pred))}
else:
    result["sklearn"] = {"accuracy": float(accuracy_score(y[holdout], pred))}

# The exported model on the holdout rows' raw values, against the trainer's own predictions.
sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
feeds = {}
names = [i.name for i in sess.get_inputs()]
if "input" in names:
    feeds["input"] = X[holdout].astype(np.float32)
if "categories" in names:
    feeds["categories"] = Xs[holdout].astype(str)
outputs = sess.run(None, feeds)
trainer = np.loadtxt(args.predictions, delimiter=",", ndmin=2)
if regression:
    onnx_values = outputs[0].reshape(-1)
    result["onnx"] = {"maxAbsDiff": float(np.max(np.abs(onnx_values - trainer[:, 0]))),
                      "r2": float(r2_score(y[holdout], onnx_values))}
else:
    labels, proba = outputs
    classes = model.classes_
    trainer_labels = classes[np.argmax(trainer, axis=1)]
    result["onnx"] = {
        "maxAbsDiff": float(np.max(np.abs(proba - trainer))),
        "labelAgreement": float(np.mean(labels.astype(str) == trainer_labels.astype(str))),
        "accuracy": float(np.mean(labels.astype(str) == y[holdout].astype(str))),
    }
print(json.dumps(result))
