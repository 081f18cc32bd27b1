//! The export run by ONNX Runtime against `Network::predict`, its signature and metadata, its refusals, and
//! `onnx.checker`.

mod cases;

use super::*;
use crate::network::Dense;
use crate::test_support;
use cases::{Case, NAN, all_cases, binary, categorical_only, mlp, multiclass, regression};
use ort::value::{DynValue, Tensor, ValueType};

enum Labels {
    Int(Vec<i64>),
    Str(Vec<String>),
}

struct Outputs {
    label: Option<Labels>,
    /// `probabilities` or `variable`, row-major.
    values: Vec<f32>,
    values_shape: Vec<i64>,
}

fn run_onnx(case: &Case, bytes: &[u8]) -> Outputs {
    let mut session = test_support::session(bytes);
    let n = case.rows() as i64;
    let mut feeds: Vec<(String, DynValue)> = Vec::new();
    if !case.prep.numeric.is_empty() {
        let data: Vec<f32> = case.numeric.iter().flatten().map(|&v| v as f32).collect();
        let shape = vec![n, case.prep.numeric.len() as i64];
        feeds.push(("input".into(), Tensor::from_array((shape, data)).unwrap().into_dyn()));
    }
    if !case.prep.categorical.is_empty() {
        let data: Vec<String> =
            case.categories.iter().flatten().map(|v| v.unwrap_or_default().to_string()).collect();
        let shape = vec![n, case.prep.categorical.len() as i64];
        let t = Tensor::from_string_array((shape, data.as_slice())).unwrap();
        feeds.push(("categories".into(), t.into_dyn()));
    }
    let outputs = session.run(feeds).expect("ONNX Runtime runs the model");
    let values_name = if case.classes.is_some() { "probabilities" } else { "variable" };
    let (shape, values) = outputs[values_name].try_extract_tensor::<f32>().unwrap();
    let (values_shape, values) = (shape.to_vec(), values.to_vec());
    let label = match &case.classes {
        None => {
            assert!(outputs.get("label").is_none());
            None
        }
        Some(Classes::Int(_)) => {
            let (shape, v) = outputs["label"].try_extract_tensor::<i64>().unwrap();
            assert_eq!(shape.to_vec(), vec![n]);
            Some(Labels::Int(v.to_vec()))
        }
        Some(Classes::Str(_)) => {
            let (shape, v) = outputs["label"].try_extract_strings().unwrap();
            assert_eq!(shape.to_vec(), vec![n]);
            Some(Labels::Str(v))
        }
    };
    Outputs { label, values, values_shape }
}

/// ONNX Runtime's outputs agree with `Network::predict` on `Preprocessing::transform_row`'s rows:
/// values to 1e-5 relative (absolute below 1), labels exactly.
fn check_against_predict(case: &Case) {
    let bytes = case.export();
    let got = run_onnx(case, &bytes);
    let want = case.reference();
    let k = case.net.n_outputs();
    assert_eq!(got.values_shape, vec![case.rows() as i64, k as i64], "{}", case.name);
    for (i, (g, w)) in got.values.iter().zip(&want).enumerate() {
        let g = f64::from(*g);
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{} value {i}: onnx {g}, predict {w}", case.name);
    }
    let Some(classes) = &case.classes else { return };
    for (i, p) in want.chunks_exact(k).enumerate() {
        let best = (0..k).fold(0, |b, j| if p[j] > p[b] { j } else { b });
        match (classes, got.label.as_ref().unwrap()) {
            (Classes::Int(c), Labels::Int(l)) => assert_eq!(l[i], c[best], "{} row {i}", case.name),
            (Classes::Str(c), Labels::Str(l)) => assert_eq!(l[i], c[best], "{} row {i}", case.name),
            _ => panic!("{}: label type differs from the classes'", case.name),
        }
    }
}

#[test]
fn binary_logistic_with_integer_classes_and_missing_values() {
    let case = binary();
    check_against_predict(&case);
    // The rows cover both classes, so the label is not a constant.
    let got = run_onnx(&case, &case.export());
    let Some(Labels::Int(labels)) = got.label else { panic!("int labels") };
    assert!(labels.contains(&3) && labels.contains(&7), "{labels:?}");
}

#[test]
fn multiclass_softmax_with_string_classes_and_unknown_categories() {
    check_against_predict(&multiclass());
}

#[test]
fn regression_identity_outputs_variable() {
    check_against_predict(&regression());
}

#[test]
fn mlp_with_two_hidden_layers() {
    check_against_predict(&mlp());
}

#[test]
fn categorical_only_model_has_no_numeric_input() {
    check_against_predict(&categorical_only());
}

#[test]
fn unknown_and_missing_categories_encode_as_zeros() {
    // With all-zero numeric weights, a row's logits are the bias plus its categories' weights: an
    // unknown or missing value must give exactly the bias.
    let mut case = multiclass();
    let w = &mut case.net.output.weights;
    w[..2 * 3].fill(0.0);
    let bytes = case.export();
    let got = run_onnx(&case, &bytes);
    let mut bias_only = vec![0.0; 3];
    crate::network::softmax_into(&case.net.output.bias, &mut bias_only);
    let mut both_unknown = case;
    both_unknown.numeric = vec![vec![1.0, 2.0], vec![NAN, NAN]];
    both_unknown.categories = vec![vec![Some("purple"), Some("M")], vec![None, None]];
    let got2 = run_onnx(&both_unknown, &bytes);
    for row in got2.values.chunks_exact(3) {
        for (g, w) in row.iter().zip(&bias_only) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{row:?} vs {bias_only:?}");
        }
    }
    // A known level moves the row away from the bias-only probabilities.
    assert!(got.values[..3].iter().zip(&bias_only).any(|(g, w)| (f64::from(*g) - w).abs() > 1e-3));
}

#[test]
fn signature_and_metadata() {
    let case = multiclass();
    let bytes = case.export();
    let session = test_support::session(&bytes);
    let sig = |outlets: &[ort::value::Outlet]| -> Vec<(String, String, Vec<i64>)> {
        outlets
            .iter()
            .map(|o| match o.dtype() {
                ValueType::Tensor { ty, shape, .. } => (o.name().to_string(), ty.to_string(), shape.to_vec()),
                other => panic!("{other} is not a tensor"),
            })
            .collect()
    };
    let inputs = sig(session.inputs());
    let outputs = sig(session.outputs());
    let names: Vec<&str> = inputs.iter().chain(&outputs).map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["input", "categories", "label", "probabilities"]);
    assert_eq!(inputs[0].2, vec![-1, 2]);
    assert_eq!(inputs[1].2, vec![-1, 2]);
    assert_eq!(outputs[0].2, vec![-1]);
    assert_eq!(outputs[1].2, vec![-1, 3]);
    assert_eq!(inputs[0].1, outputs[1].1, "float input and probabilities");
    assert_eq!(inputs[1].1, outputs[0].1, "string categories and labels");

    let model = proto::ModelProto::decode(bytes.as_slice()).unwrap();
    assert_eq!(model.ir_version(), 8);
    assert_eq!(model.producer_name(), "mizzen-train");
    assert_eq!(model.producer_version(), "0.1.0");
    let opsets: Vec<(&str, i64)> = model.opset_import.iter().map(|o| (o.domain(), o.version())).collect();
    assert_eq!(opsets, [("", 17), ("ai.onnx.ml", 3)]);
    let meta: Vec<(&str, &str)> = model.metadata_props.iter().map(|e| (e.key(), e.value())).collect();
    assert_eq!(
        meta,
        [
            ("mizzen.numeric_features", r#"["length","weight"]"#),
            ("mizzen.categorical_features", r#"["color","size"]"#),
            ("target", "y"),
        ]
    );

    // A regressor without categorical features: one input, one output, no ai.onnx.ml.
    let bytes = regression().export();
    let session = test_support::session(&bytes);
    let names: Vec<(String, Vec<i64>)> =
        sig(session.inputs()).into_iter().chain(sig(session.outputs())).map(|(n, _, s)| (n, s)).collect();
    assert_eq!(names, [("input".to_string(), vec![-1, 4]), ("variable".to_string(), vec![-1, 1])]);
    let model = proto::ModelProto::decode(bytes.as_slice()).unwrap();
    assert_eq!(model.opset_import.len(), 1);
}

#[test]
fn rejects_models_that_do_not_fit() {
    let doc = ModelDoc::default();
    let case = multiclass();
    let ex =
        |prep: &Preprocessing, net: &Network, classes: Option<&Classes>| export(prep, net, classes, &doc);
    let classes = case.classes.as_ref();

    let mut net = case.net.clone();
    net.output = Dense { inputs: 6, outputs: 3, weights: vec![0.0; 18], bias: vec![0.0; 3] };
    assert!(matches!(ex(&case.prep, &net, classes), Err(ExportError::Shape(_))));

    let mut net = case.net.clone();
    net.output.bias.pop();
    assert!(matches!(ex(&case.prep, &net, classes), Err(ExportError::Shape(_))));

    let two = Classes::Int(vec![0, 1]);
    assert!(matches!(ex(&case.prep, &case.net, Some(&two)), Err(ExportError::Classes(_))));
    assert!(matches!(ex(&case.prep, &case.net, None), Err(ExportError::Classes(_))));
    let reg = regression();
    assert!(matches!(ex(&reg.prep, &reg.net, Some(&two)), Err(ExportError::Classes(_))));
    let bin = binary();
    assert!(matches!(ex(&bin.prep, &bin.net, classes), Err(ExportError::Classes(_))));

    let mut net = case.net.clone();
    net.output.weights[4] = f64::NAN;
    assert!(matches!(ex(&case.prep, &net, classes), Err(ExportError::NonFinite(_))));
    let mut net = case.net.clone();
    net.output.bias[0] = 1e300;
    assert!(matches!(ex(&case.prep, &net, classes), Err(ExportError::NonFinite(_))));

    let mut prep = case.prep.clone();
    prep.numeric[0].scale = 0.0;
    assert!(matches!(ex(&prep, &case.net, classes), Err(ExportError::Shape(_))));

    let empty = Preprocessing::default();
    let net = Network {
        hidden: vec![],
        output: Dense { inputs: 0, outputs: 1, weights: vec![], bias: vec![0.0] },
        head: Head::Identity,
    };
    assert!(matches!(ex(&empty, &net, None), Err(ExportError::NoFeatures)));

    let dup = ModelDoc { metadata: vec![(METADATA_NUMERIC.into(), "[]".into())], ..Default::default() };
    assert!(matches!(export(&case.prep, &case.net, classes, &dup), Err(ExportError::DuplicateMetadata(_))));
}

/// The export is byte-stable: the sha256 of each case's model, encoded as onnx's own serializer
/// encodes it. A change here changes every model the trainer writes.
#[test]
fn exported_bytes_are_pinned() {
    use sha2::{Digest, Sha256};
    let got: Vec<(&str, String)> =
        all_cases().iter().map(|c| (c.name, crate::data::hex(&Sha256::digest(c.export())))).collect();
    let pinned = [
        ("binary", "8d6f64d2a49548a098c415afeb2c8daf67ddc5dfd9373046caf2c6ed7e7b2796"),
        ("multiclass", "f08aba7d439fa008f50881ef039c86192d4e259e8717fb6e76dd42880f4566a5"),
        ("regression", "6c6d7e2fdb8375b398ac29e31c8010efcc6fac482ad9bdcdea406be5dae68f0c"),
        ("mlp", "32734aecddbe2c29076a25530b3b3919edf5d0ccee6d6e67563280d17a367271"),
        ("categorical_only", "106b77db6c6295e3de966ad8eb493d7f7608d3c3a15c2209c47a6ea3737abfa1"),
    ];
    assert_eq!(got, pinned.map(|(name, sha)| (name, sha.to_string())));
}

/// The ONNX checker (full check: strict shape inference against the declared outputs) accepts every
/// exported model.
#[test]
fn onnx_checker_accepts_every_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for case in all_cases() {
        let path = dir.path().join(format!("{}.onnx", case.name));
        std::fs::write(&path, case.export()).unwrap();
        paths.push(path);
    }
    let script = "import sys, onnx\n\
                  for p in sys.argv[1:]:\n    \
                      onnx.checker.check_model(onnx.load(p), full_check=True)\n\
                  print('checked', len(sys.argv) - 1)\n";
    let out = std::process::Command::new(test_support::python())
        .arg("-c")
        .arg(script)
        .args(&paths)
        .output()
        .expect("running the venv's python");
    assert!(
        out.status.success(),
        "onnx.checker rejected a model:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("checked {}", paths.len()));
}
