//! The ONNX signature the registry records on a version, read by its own protobuf walk, against what the
//! `onnx` Python package reads from the same files: every model the inference tests use (skl2onnx and
//! torch-style exports, with and without initializers listed as inputs, dynamic and fixed dimensions).

use mizzen_common::testing::{generated, python};
use std::process::Command;

const READ_WITH_ONNX: &str = r#"
import json, sys, onnx
from onnx import TensorProto
m = onnx.load(sys.argv[1], load_external_data=False)
inits = {i.name for i in m.graph.initializer}
names = {TensorProto.FLOAT: "FP32", TensorProto.DOUBLE: "FP64", TensorProto.FLOAT16: "FP16",
         TensorProto.BFLOAT16: "BF16", TensorProto.INT64: "INT64", TensorProto.INT32: "INT32",
         TensorProto.INT16: "INT16", TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8",
         TensorProto.UINT16: "UINT16", TensorProto.UINT32: "UINT32", TensorProto.UINT64: "UINT64",
         TensorProto.BOOL: "BOOL", TensorProto.STRING: "BYTES"}
def one(v):
    t = v.type
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.tensor_type.shape.dim]
        return {"name": v.name, "datatype": names.get(t.tensor_type.elem_type, "UNKNOWN"), "shape": shape}
    other = {"sequence_type": "SEQUENCE", "map_type": "MAP", "optional_type": "OPTIONAL"}
    return {"name": v.name, "datatype": other.get(kind, "UNKNOWN"), "shape": []}
print(json.dumps({"inputs": [one(v) for v in m.graph.input if v.name not in inits],
                  "outputs": [one(v) for v in m.graph.output]}))
"#;

#[test]
fn signatures_match_what_the_onnx_package_reads() {
    let dir = generated("services/inference/models/make_models.py", "models", "inputs.npz");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("onnx") {
            continue;
        }
        let ours = serde_json::to_value(mizzen_registry::onnx::signature(&path).unwrap()).unwrap();
        let out = Command::new(python()).args(["-c", READ_WITH_ONNX]).arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(ours, theirs, "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} models in {}", dir.display());
}
