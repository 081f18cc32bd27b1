"""scikit-learn's side of examples/fit_speed.rs: reads the data that example wrote and times
LogisticRegression (lbfgs, C=1, tol=1e-4, max_iter=100) on the same rows."""
import sys
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.metrics import accuracy_score, log_loss

d = sys.argv[1]
n, n_test, f = map(int, open(f"{d}/shape.txt").read().split())
x = np.fromfile(f"{d}/x.f64", dtype="<f8").reshape(n + n_test, f)
for name, file in [("binary", "y_bin.u32"), ("multinomial", "y_multi.u32")]:
    y = np.fromfile(f"{d}/{file}", dtype="<u4").astype(np.int64)
    model = LogisticRegression()
    start = time.perf_counter()
    model.fit(x[:n], y[:n])
    seconds = time.perf_counter() - start
    proba = model.predict_proba(x[n:])
    print(
        f"{name:12} fit {seconds:.3f}s  iterations {int(model.n_iter_[0])}  "
        f"test accuracy {accuracy_score(y[n:], proba.argmax(1)):.4f}  logLoss {log_loss(y[n:], proba):.4f}"
    )

if "mlp" in sys.argv[2:]:
    m = min(n, 100_000)
    for name, file in [("binary", "y_bin.u32"), ("multinomial", "y_multi.u32")]:
        y = np.fromfile(f"{d}/{file}", dtype="<u4").astype(np.int64)
        model = MLPClassifier(early_stopping=True, random_state=0)
        start = time.perf_counter()
        model.fit(x[:m], y[:m])
        seconds = time.perf_counter() - start
        acc = accuracy_score(y[n:], model.predict(x[n:]))
        print(f"mlp {name:12} {m} rows fit {seconds:.3f}s  epochs {model.n_iter_}  test accuracy {acc:.4f}")
