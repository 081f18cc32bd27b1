"""Writes iris as Parquet with each compression pyarrow offers besides snappy and zstd (gzip, brotli, lz4)
into DIR (argv[1]): iris-gzip.parquet, iris-brotli.parquet, iris-lz4.parquet; then DIR/done."""
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_iris

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
iris = load_iris()
table = pa.table({
    "sepal_length": iris.data[:, 0], "sepal_width": iris.data[:, 1], "petal_length": iris.data[:, 2],
    "petal_width": iris.data[:, 3], "species": pa.array([iris.target_names[t] for t in iris.target]),
})
for codec in ["gzip", "brotli", "lz4"]:
    pq.write_table(table, os.path.join(out, f"iris-{codec}.parquet"), compression=codec, row_group_size=64)
open(os.path.join(out, "done"), "w").close()
