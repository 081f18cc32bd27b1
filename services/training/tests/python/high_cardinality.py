"""Writes high_cardinality.csv into DIR (argv[1]): 200,000 rows of a binary label that depends on two
numeric features and on a string column of 50,000 levels (a merchant id, each with its own effect, as a
fraud table has), the kind of column a dense one-hot encoding cannot hold (200,000 x 50,000 doubles is
80 GB). scikit-learn fits it with its sparse one-hot encoding.
"""
import os
import sys

import numpy as np

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(11)
n, levels = 200_000, 50_000
effect = rng.normal(size=levels) * 1.5
# Merchants by a Zipf-like popularity: a few with thousands of rows, most with a handful.
weights = 1.0 / np.arange(1, levels + 1) ** 0.6
merchant = rng.choice(levels, size=n, p=weights / weights.sum())
amount = rng.lognormal(size=n)
hour = rng.integers(0, 24, size=n)
score = 0.8 * np.log(amount) - 0.05 * np.abs(hour - 12) + effect[merchant] + rng.logistic(size=n) * 0.5
label = (score > 0.0).astype(int)
with open(os.path.join(out, "high_cardinality.csv"), "w") as f:
    f.write("amount,hour,merchant,fraud\n")
    for a, h, m, y in zip(amount, hour, merchant, label):
        f.write(f"{a:.4f},{h},m{m},{y}\n")
open(os.path.join(out, "done"), "w").close()
