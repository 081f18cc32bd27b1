"""Shared by the client tests: the servers under test, reference answers from onnxruntime in Python, and
comparisons. Set by services/inference/tests/clients.rs, which starts the servers:
  MIZZEN_MODELS   directory with the test models
  MIZZEN_SERVERS  JSON: {"iris": {"http": "127.0.0.1:P", "grpc": "127.0.0.1:Q"}, "mlp": ..., "multi": ...}
"""
import json
import os

import numpy as np
import onnxruntime as ort

MODELS = os.environ["MIZZEN_MODELS"]
SERVERS = json.loads(os.environ["MIZZEN_SERVERS"])
INPUTS = np.load(os.path.join(MODELS, "inputs.npz"))
FILES = {"iris": "iris_logreg.onnx", "mlp": "mlp.onnx", "multi": "multi_io.onnx"}


def reference(model, feeds):
    session = ort.InferenceSession(os.path.join(MODELS, FILES[model]), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def multi_feeds(n=3):
    rng = np.random.default_rng(1)
    return {
        "in_f32": rng.standard_normal((n, 3)).astype(np.float32),
        "in_f64": rng.standard_normal((n, 3)),
        "in_i64": rng.integers(-(2**62), 2**62, (n, 2), dtype=np.int64),
        "in_i32": rng.integers(-(2**31), 2**31 - 1, (n, 2), dtype=np.int32),
        "in_u8": rng.integers(0, 255, (n, 2), dtype=np.uint8),
        "in_bool": rng.integers(0, 2, (n,)).astype(bool),
        "in_str": np.array([f"s{i}-ünï" for i in range(n)], dtype=object),
        "in_f16": rng.standard_normal((n, 2)).astype(np.float16),
    }


DTYPES = {np.float32: "FP32", np.float64: "FP64", np.int64: "INT64", np.int32: "INT32", np.uint8: "UINT8",
          np.bool_: "BOOL", np.object_: "BYTES", np.float16: "FP16"}


def datatype(array):
    return DTYPES[array.dtype.type]


def assert_same(got, want, name):
    if want.dtype == object:
        got = np.array([g.decode() if isinstance(g, bytes) else g for g in got.reshape(-1)], dtype=object).reshape(want.shape)
        assert (got == want).all(), name
    else:
        assert got.shape == want.shape, (name, got.shape, want.shape)
        assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=name)


