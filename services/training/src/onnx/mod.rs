//! Writes a trained [`Network`] and its [`Preprocessing`] as one ONNX model, so a server needs nothing
//! but ONNX Runtime to go from raw feature values to predictions.
//!
//! # Graph contract
//!
//! Inputs (the first dimension is the symbolic batch size `N`):
//! - `input`: float32 `[N, numeric.len()]`, the numeric features in `Preprocessing::numeric` order; NaN
//!   means missing. Absent when there are no numeric features.
//! - `categories`: string `[N, categorical.len()]`, the categorical features in
//!   `Preprocessing::categorical` order. Absent when there are no categorical features. A missing value is
//!   the empty string (any value not among the feature's levels encodes the same way).
//!
//! Inside the graph, all in float32: each numeric column is imputed (`IsNaN`/`IsInf` + `Where` with `fill`) and
//! standardized (`Sub` mean, `Div` scale), and the first layer is `Gemm` of that block with its weight
//! rows; each categorical column is mapped to its level's index (`ai.onnx.ml.LabelEncoder`, `-1` for an
//! unknown or missing value) and the first layer adds the weight row of that level (`Gather` from the
//! block's weight rows with a zero row last, which `-1` picks: an unknown or missing value contributes
//! nothing, as an all-zero one-hot block would). That is the product of the one-hot design matrix with
//! the first layer's weights, without the one-hot matrix: a column of many levels costs a lookup. Then
//! `Relu`, each further hidden layer is `Gemm(x, W[in, out], b)` then `Relu`, and the output layer is a
//! `Gemm`.
//!
//! Outputs, named and shaped as skl2onnx names them (`zipmap: False`):
//! - classifiers: `label`, int64 `[N]` (integer classes) or string `[N]` (string classes), the class of
//!   the highest probability (the first on a tie); and `probabilities`, float32 `[N, C]` in class order
//!   (binary: `[1 - p, p]` with `p = Sigmoid(z)`; multiclass: `Softmax(axis=1)`).
//! - regressors: `variable`, float32 `[N, 1]`.
//!
//! Model: IR version 8, opsets `""` 17 and (only when there are categorical features) `ai.onnx.ml` 3,
//! producer `mizzen-train`. `metadata_props` holds `mizzen.numeric_features` and
//! `mizzen.categorical_features` (JSON arrays of the column names, in input order) followed by the
//! caller's [`ModelDoc::metadata`].

mod graph;
pub mod proto;
#[cfg(test)]
mod tests;

use crate::network::{Head, Network};
use crate::prep::{Classes, Preprocessing};
use graph::{GraphBuilder, LevelBlock, attr_int, attr_ints, attr_strings, dim, dim_n, non_empty, value_info};
use prost::Message;
use proto::tensor_proto::DataType;

pub const IR_VERSION: i64 = 8;
pub const OPSET: i64 = 17;
pub const ML_OPSET: i64 = 3;
pub const PRODUCER_NAME: &str = "mizzen-train";
pub const METADATA_NUMERIC: &str = "mizzen.numeric_features";
pub const METADATA_CATEGORICAL: &str = "mizzen.categorical_features";

/// What the model says about itself besides the graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelDoc {
    /// `producer_version`, typically the trainer's version.
    pub producer_version: String,
    /// The model's `doc_string`.
    pub doc_string: String,
    /// Extra `metadata_props`, in order; keys must be unique and must not be the `mizzen.*` keys the
    /// export writes itself.
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the model has no input features")]
    NoFeatures,
    #[error("the network does not fit its preprocessing: {0}")]
    Shape(String),
    #[error("the classes do not fit the network's head: {0}")]
    Classes(String),
    #[error("{0} is not finite in float32")]
    NonFinite(String),
    #[error("duplicate metadata key {0:?}")]
    DuplicateMetadata(String),
}

/// Encodes the model (preprocessing, network and head) as ONNX bytes; see the module documentation for
/// the graph's inputs and outputs. `classes` is required for the Logistic (2 classes) and Softmax heads,
/// and must be `None` for the Identity head.
pub fn export(
    prep: &Preprocessing,
    net: &Network,
    classes: Option<&Classes>,
    doc: &ModelDoc,
) -> Result<Vec<u8>, ExportError> {
    validate(prep, net, classes)?;
    let mut g = GraphBuilder::default();
    let mut graph_inputs = Vec::new();
    let mut numeric = None;

    if !prep.numeric.is_empty() {
        let k = prep.numeric.len();
        let names: Vec<&str> = prep.numeric.iter().map(|f| f.name.as_str()).collect();
        graph_inputs.push(value_info(
            "input",
            DataType::Float,
            &[dim_n(), dim(k)],
            format!("numeric features (NaN: missing): {}", names.join(", ")),
        ));
        let fill = g.floats("fill", &[k], prep.numeric.iter().map(|f| f.fill), "numeric fill")?;
        let mean = g.floats("mean", &[k], prep.numeric.iter().map(|f| f.mean), "numeric mean")?;
        let scale = g.floats("scale", &[k], prep.numeric.iter().map(|f| f.scale), "numeric scale")?;
        // Missing is NaN or an infinity, as when training (which reads both as missing).
        let nan = g.node("IsNaN", &["input"], vec![]);
        let inf = g.node("IsInf", &["input"], vec![]);
        let missing = g.node("Or", &[&nan, &inf], vec![]);
        let filled = g.node("Where", &[&missing, &fill, "input"], vec![]);
        let centered = g.node("Sub", &[&filled, &mean], vec![]);
        numeric = Some((g.node("Div", &[&centered, &scale], vec![]), k));
    }

    let uses_ml = prep.categorical.iter().any(|c| !c.levels.is_empty());
    let mut levels = Vec::new();
    if !prep.categorical.is_empty() {
        let names: Vec<&str> = prep.categorical.iter().map(|c| c.name.as_str()).collect();
        graph_inputs.push(value_info(
            "categories",
            DataType::String,
            &[dim_n(), dim(prep.categorical.len())],
            format!("categorical features (empty: missing): {}", names.join(", ")),
        ));
        let mut start = prep.numeric.len();
        for (j, c) in prep.categorical.iter().enumerate() {
            if c.levels.is_empty() {
                continue;
            }
            let name = g.fresh("column");
            let column_index = g.init(proto::TensorProto {
                name: Some(name),
                dims: vec![],
                data_type: Some(DataType::Int64 as i32),
                int64_data: vec![j as i64],
                ..Default::default()
            });
            let column = g.node("Gather", &["categories", &column_index], vec![attr_int("axis", 1)]);
            let keys = c.levels.iter().map(|l| l.as_bytes().to_vec()).collect();
            let index = g.node_in(
                "ai.onnx.ml",
                "LabelEncoder",
                &[&column],
                vec![
                    attr_strings("keys_strings", keys),
                    attr_ints("values_int64s", (0..c.levels.len() as i64).collect()),
                    attr_int("default_int64", -1),
                ],
            );
            levels.push(LevelBlock { index, start, levels: c.levels.len() });
            start += c.levels.len();
        }
    }

    let regression = net.head == Head::Identity;
    let numeric = numeric.as_ref().map(|(x, k)| (x.as_str(), *k));
    let z = match net.hidden.split_first() {
        None => {
            g.first_layer(numeric, &levels, &net.output, "output layer", regression.then_some("variable"))?
        }
        Some((first, rest)) => {
            let z = g.first_layer(numeric, &levels, first, "hidden layer 0", None)?;
            let mut x = g.node("Relu", &[&z], vec![]);
            for (l, layer) in rest.iter().enumerate() {
                let z = g.layer(&x, layer, &format!("hidden layer {}", l + 1), None)?;
                x = g.node("Relu", &[&z], vec![]);
            }
            g.layer(&x, &net.output, "output layer", regression.then_some("variable"))?
        }
    };
    let mut outputs = Vec::new();
    match (net.head, classes) {
        (Head::Identity, _) => {
            outputs.push(value_info("variable", DataType::Float, &[dim_n(), dim(1)], String::new()));
        }
        (head, Some(classes)) => {
            let probabilities = "probabilities";
            if head == Head::Logistic {
                let p = g.node("Sigmoid", &[&z], vec![]);
                let one = g.floats("one", &[1], [1.0], "one")?;
                let q = g.node("Sub", &[&one, &p], vec![]);
                g.node_named("Concat", &[&q, &p], probabilities, vec![attr_int("axis", 1)]);
            } else {
                g.node_named("Softmax", &[&z], probabilities, vec![attr_int("axis", 1)]);
            }
            let index =
                g.node("ArgMax", &[probabilities], vec![attr_int("axis", 1), attr_int("keepdims", 0)]);
            let c = classes.len();
            let name = g.fresh("classes");
            let (table, label_type) = match classes {
                Classes::Int(v) => (
                    proto::TensorProto {
                        name: Some(name),
                        dims: vec![c as i64],
                        data_type: Some(DataType::Int64 as i32),
                        int64_data: v.clone(),
                        ..Default::default()
                    },
                    DataType::Int64,
                ),
                Classes::Str(v) => (
                    proto::TensorProto {
                        name: Some(name),
                        dims: vec![c as i64],
                        data_type: Some(DataType::String as i32),
                        string_data: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
                        ..Default::default()
                    },
                    DataType::String,
                ),
            };
            let table = g.init(table);
            g.node_named("Gather", &[&table, &index], "label", vec![attr_int("axis", 0)]);
            outputs.push(value_info("label", label_type, &[dim_n()], String::new()));
            outputs.push(value_info(probabilities, DataType::Float, &[dim_n(), dim(c)], String::new()));
        }
        (_, None) => unreachable!("validated: classifiers have classes"),
    }

    let mut metadata = vec![
        (METADATA_NUMERIC.to_string(), json_names(prep.numeric.iter().map(|f| f.name.as_str()))),
        (METADATA_CATEGORICAL.to_string(), json_names(prep.categorical.iter().map(|c| c.name.as_str()))),
    ];
    metadata.extend(doc.metadata.iter().cloned());
    for (i, (key, _)) in metadata.iter().enumerate() {
        if metadata[..i].iter().any(|(k, _)| k == key) {
            return Err(ExportError::DuplicateMetadata(key.clone()));
        }
    }

    let opset = |domain: &str, version| proto::OperatorSetIdProto {
        domain: non_empty(domain.into()),
        version: Some(version),
    };
    let mut opset_import = vec![opset("", OPSET)];
    if uses_ml {
        opset_import.push(opset("ai.onnx.ml", ML_OPSET));
    }
    let model = proto::ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import,
        producer_name: Some(PRODUCER_NAME.into()),
        producer_version: non_empty(doc.producer_version.clone()),
        doc_string: non_empty(doc.doc_string.clone()),
        graph: Some(proto::GraphProto {
            node: g.nodes,
            name: Some("mizzen".into()),
            initializer: g.initializers,
            input: graph_inputs,
            output: outputs,
            ..Default::default()
        }),
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| proto::StringStringEntryProto {
                key: non_empty(key),
                value: non_empty(value),
            })
            .collect(),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

fn validate(prep: &Preprocessing, net: &Network, classes: Option<&Classes>) -> Result<(), ExportError> {
    let width = prep.width();
    if width == 0 {
        return Err(ExportError::NoFeatures);
    }
    let mut inputs = width;
    let layers = net.hidden.iter().map(|d| (d, "hidden layer")).chain([(&net.output, "output layer")]);
    for (i, (d, what)) in layers.enumerate() {
        if d.inputs != inputs {
            return Err(ExportError::Shape(format!(
                "{what} {i} takes {} inputs, {inputs} come in (design width {width})",
                d.inputs
            )));
        }
        if d.outputs == 0 || d.weights.len() != d.inputs * d.outputs || d.bias.len() != d.outputs {
            return Err(ExportError::Shape(format!(
                "{what} {i}: {} weights and {} biases for {} x {}",
                d.weights.len(),
                d.bias.len(),
                d.inputs,
                d.outputs
            )));
        }
        inputs = d.outputs;
    }
    for f in &prep.numeric {
        if f.scale == 0.0 {
            return Err(ExportError::Shape(format!("numeric feature {:?} has scale 0", f.name)));
        }
    }
    let out = net.output.outputs;
    match (net.head, classes) {
        (Head::Identity, None) if out == 1 => Ok(()),
        (Head::Identity, None) => Err(ExportError::Shape(format!("a regressor has 1 output, not {out}"))),
        (Head::Identity, Some(_)) => Err(ExportError::Classes("a regressor has no classes".into())),
        (_, None) => Err(ExportError::Classes("a classifier needs its classes".into())),
        (Head::Logistic, Some(c)) if out == 1 && c.len() == 2 => Ok(()),
        (Head::Logistic, Some(c)) => Err(ExportError::Classes(format!(
            "a logistic head has 1 output and 2 classes, not {out} and {}",
            c.len()
        ))),
        (Head::Softmax, Some(c)) if out == c.len() && out >= 2 => Ok(()),
        (Head::Softmax, Some(c)) => Err(ExportError::Classes(format!(
            "a softmax head with {out} outputs needs as many classes (at least 2), not {}",
            c.len()
        ))),
    }
}

fn json_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    serde_json::to_string(&names.collect::<Vec<_>>()).expect("strings serialize")
}
