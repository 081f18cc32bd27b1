"""Makes the models the inference server's tests and benchmarks use, with scikit-learn + skl2onnx and the
onnx helper API, into the directory given as the first argument. Deterministic for a given library version.

  iris_logreg.onnx   LogisticRegression on iris: float_input FP32[-1,4] -> label INT64[-1], probabilities FP32[-1,3]
  iris_zipmap.onnx   the same with skl2onnx's default ZipMap output (a non-tensor output the server must skip)
  mlp.onnx           MLPClassifier (64 -> 128 -> 64 -> 10) on a synthetic set, FP32[-1,64]
  mlp_10mb.onnx      a wider MLPClassifier whose file is about 10 MB, for the start-to-ready measurement
  multi_io.onnx      several inputs and outputs: FP32, FP64, INT64, INT32, UINT8, BOOL, BYTES (string), FP16
  inputs.npz         sample inputs for each model
"""
import os
import warnings
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

OPSET = 17


def save(model, out, name):
    with open(os.path.join(out, name), "wb") as f:
        f.write(model.SerializeToString())


def sklearn_models(out):
    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    clf = LogisticRegression(max_iter=500).fit(X, y)
    types = [("float_input", FloatTensorType([None, 4]))]
    no_zipmap = {id(clf): {"zipmap": False}}
    save(convert_sklearn(clf, initial_types=types, options=no_zipmap, target_opset=OPSET), out, "iris_logreg.onnx")
    save(convert_sklearn(clf, initial_types=types, target_opset=OPSET), out, "iris_zipmap.onnx")

    Xm, ym = make_classification(n_samples=2000, n_features=64, n_informative=32, n_classes=10, random_state=0)
    Xm = Xm.astype(np.float32)
    mlp = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=30, random_state=0).fit(Xm, ym)
    types = [("float_input", FloatTensorType([None, 64]))]
    save(convert_sklearn(mlp, initial_types=types, options={id(mlp): {"zipmap": False}}, target_opset=OPSET), out, "mlp.onnx")

    wide = MLPClassifier(hidden_layer_sizes=(1024, 1024, 1024, 256), max_iter=1, random_state=0).fit(Xm[:200], ym[:200])
    save(convert_sklearn(wide, initial_types=types, options={id(wide): {"zipmap": False}}, target_opset=OPSET), out, "mlp_10mb.onnx")
    return X, Xm


def multi_io(out):
    specs = [
        ("in_f32", TensorProto.FLOAT, ["N", 3]),
        ("in_f64", TensorProto.DOUBLE, ["N", 3]),
        ("in_i64", TensorProto.INT64, ["N", 2]),
        ("in_i32", TensorProto.INT32, ["N", 2]),
        ("in_u8", TensorProto.UINT8, ["N", 2]),
        ("in_bool", TensorProto.BOOL, ["N"]),
        ("in_str", TensorProto.STRING, ["N"]),
        ("in_f16", TensorProto.FLOAT16, ["N", 2]),
    ]
    nodes, ins, outs = [], [], []
    for name, et, shape in specs:
        o = name.replace("in_", "out_")
        nodes.append(helper.make_node("Identity", [name], [o]))
        ins.append(helper.make_tensor_value_info(name, et, shape))
        outs.append(helper.make_tensor_value_info(o, et, shape))
    nodes.append(helper.make_node("Add", ["in_f32", "in_f32"], ["out_f32x2"]))
    outs.append(helper.make_tensor_value_info("out_f32x2", TensorProto.FLOAT, ["N", 3]))
    nodes.append(helper.make_node("Not", ["in_bool"], ["out_not"]))
    outs.append(helper.make_tensor_value_info("out_not", TensorProto.BOOL, ["N"]))
    graph = helper.make_graph(nodes, "multi_io", ins, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model)
    save(model, out, "multi_io.onnx")


def wide_sum(out):
    """A model that does almost nothing to a wide input (a row sum of [N, 1024] floats): moving a large tensor
    in and out of the server is what a run of it costs."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    node = helper.make_node("ReduceSum", ["float_input", "axes"], ["sum"], keepdims=1)
    graph = helper.make_graph(
        [node], "wide_sum", [helper.make_tensor_value_info("float_input", TensorProto.FLOAT, ["N", 1024])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 1])], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model)
    save(model, out, "wide_sum.onnx")


def main():
    warnings.filterwarnings("ignore")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    X, Xm = sklearn_models(out)
    multi_io(out)
    wide_sum(out)
    rng = np.random.default_rng(0)
    np.savez(
        os.path.join(out, "inputs.npz"),
        iris=X[:16],
        mlp=Xm[:64],
        f32=rng.standard_normal((4, 3)).astype(np.float32),
    )


if __name__ == "__main__":
    main()
