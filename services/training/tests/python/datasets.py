"""Writes the datasets the trainer's tests and benchmarks use into DIR (argv[1]), as CSV:
iris (string classes), breast_cancer (binary, integer classes), diabetes (regression), friedman1
(5,000 x 10, a nonlinear regression), mixed (numeric,
string and missing values) and synthetic_1m (1,000,000 x 20, binary, scikit-learn's make_classification);
and as Parquet written by pyarrow, the same values: iris.parquet (snappy) and mixed.parquet (zstd, nulls,
a dictionary-encoded and a large-string column).
"""
import os
import sys

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, make_classification, make_friedman1

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def write(name, header, columns, fmt):
    with open(os.path.join(out, name), "w") as f:
        f.write(",".join(header) + "\n")
        for row in zip(*columns):
            f.write(",".join(fmt(v) for v in row) + "\n")


iris = load_iris()
species = [iris.target_names[t] for t in iris.target]
write("iris.csv", ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"],
      [*iris.data.T, species], str)

bc = load_breast_cancer()
names = [n.replace(" ", "_") for n in bc.feature_names]
write("breast_cancer.csv", names + ["diagnosis"], [*bc.data.T, bc.target], lambda v: repr(float(v)) if isinstance(v, float) else str(v))

db = load_diabetes()
write("diabetes.csv", list(db.feature_names) + ["progression"], [*db.data.T, db.target], lambda v: repr(float(v)))

# Friedman #1: a continuous target (regression), ten features of which five matter, nonlinearly.
fX, fy = make_friedman1(n_samples=5000, n_features=10, noise=1.0, random_state=0)
write("friedman1.csv", [f"x{i}" for i in range(10)] + ["y"], [*fX.T, fy], lambda v: repr(float(v)))

# Mixed types: two numeric columns with missing values, a colour, a size code, a string label.
rng = np.random.default_rng(7)
n = 3000
a = rng.normal(size=n)
b = rng.normal(size=n) * 3 + 1
colour = rng.choice(["red", "green", "blue"], size=n)
size = rng.choice(["S", "M", "L", "XL"], size=n)
score = a + 0.3 * b + np.where(colour == "red", 1.0, 0.0) - np.where(size == "S", 0.8, 0.0) + rng.normal(size=n) * 0.7
label = np.where(score > 0.5, "yes", "no")
a_text = [("" if rng.random() < 0.05 else f"{v:.5f}") for v in a]
b_text = [("NA" if rng.random() < 0.05 else f"{v:.5f}") for v in b]
write("mixed.csv", ["a", "b", "colour", "size", "buy"], [a_text, b_text, colour, size, label], str)

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

pq.write_table(pa.table({
    "sepal_length": iris.data[:, 0], "sepal_width": iris.data[:, 1], "petal_length": iris.data[:, 2],
    "petal_width": iris.data[:, 3], "species": pa.array(species, pa.string()),
}), os.path.join(out, "iris.parquet"), compression="snappy", row_group_size=64)
number = lambda t: None if t in ("", "NA") else float(t)  # noqa: E731
pq.write_table(pa.table({
    "a": pa.array([number(t) for t in a_text], pa.float64()),
    "b": pa.array([number(t) for t in b_text], pa.float64()),
    "colour": pa.array(list(colour)).dictionary_encode(),
    "size": pa.array(list(size), pa.large_string()),
    "buy": pa.array(list(label)),
}), os.path.join(out, "mixed.parquet"), compression="zstd", row_group_size=1000)

X, y = make_classification(n_samples=1_000_000, n_features=20, n_informative=10, n_redundant=5,
                           class_sep=0.8, random_state=0)
data = np.column_stack([X, y])
header = ",".join([f"f{i}" for i in range(20)] + ["y"])
np.savetxt(os.path.join(out, "synthetic_1m.csv"), data, delimiter=",", header=header, comments="",
           fmt=["%.6g"] * 20 + ["%d"])
np.savetxt(os.path.join(out, "synthetic_100k.csv"), data[:100_000], delimiter=",", header=header, comments="",
           fmt=["%.6g"] * 20 + ["%d"])

open(os.path.join(out, "done"), "w").close()
