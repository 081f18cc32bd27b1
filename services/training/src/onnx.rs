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
//! standardized (`Sub` mean, `Div` scale); each categorical column is one-hot encoded over its levels
//! (`ai.onnx.ml.OneHotEncoder`, `zeros=1`: an unknown or missing value gives all zeros); `Concat(axis=1)`
//! of the numeric block and then each categorical block is the design matrix. Each hidden layer is
//! `Gemm(x, W[in, out], b)` then `Relu`; the output layer is a `Gemm`.
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

use crate::network::{Dense, Head, Network};
use crate::prep::{Classes, Preprocessing};
use prost::Message;
use proto::attribute_proto::AttributeType;
use proto::tensor_proto::DataType;
use proto::tensor_shape_proto::{Dimension, dimension};

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
    let mut blocks = Vec::new();

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
        blocks.push(g.node("Div", &[&centered, &scale], vec![]));
    }

    let uses_ml = prep.categorical.iter().any(|c| !c.levels.is_empty());
    if !prep.categorical.is_empty() {
        let names: Vec<&str> = prep.categorical.iter().map(|c| c.name.as_str()).collect();
        graph_inputs.push(value_info(
            "categories",
            DataType::String,
            &[dim_n(), dim(prep.categorical.len())],
            format!("categorical features (empty: missing): {}", names.join(", ")),
        ));
        for (j, c) in prep.categorical.iter().enumerate() {
            if c.levels.is_empty() {
                continue;
            }
            let name = g.fresh("column");
            let index = g.init(proto::TensorProto {
                name: Some(name),
                dims: vec![],
                data_type: Some(DataType::Int64 as i32),
                int64_data: vec![j as i64],
                ..Default::default()
            });
            let column = g.node("Gather", &["categories", &index], vec![attr_int("axis", 1)]);
            let levels = c.levels.iter().map(|l| l.as_bytes().to_vec()).collect();
            let onehot = g.node_in(
                "ai.onnx.ml",
                "OneHotEncoder",
                &[&column],
                vec![attr_strings("cats_strings", levels), attr_int("zeros", 1)],
            );
            blocks.push(onehot);
        }
    }

    let mut x = if blocks.len() == 1 {
        blocks.pop().expect("one block")
    } else {
        let refs: Vec<&str> = blocks.iter().map(String::as_str).collect();
        g.node("Concat", &refs, vec![attr_int("axis", 1)])
    };

    for (l, layer) in net.hidden.iter().enumerate() {
        let z = g.gemm(&x, layer, &format!("hidden layer {l}"), None)?;
        x = g.node("Relu", &[&z], vec![]);
    }
    let regression = net.head == Head::Identity;
    let z = g.gemm(&x, &net.output, "output layer", regression.then_some("variable"))?;

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

/// A proto2 string field that is left out when empty, as a reader takes an absent string to be empty.
fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn dim(n: usize) -> Dimension {
    Dimension { value: Some(dimension::Value::DimValue(n as i64)), ..Default::default() }
}

fn dim_n() -> Dimension {
    Dimension { value: Some(dimension::Value::DimParam("N".into())), ..Default::default() }
}

fn value_info(name: &str, ty: DataType, dims: &[Dimension], doc: String) -> proto::ValueInfoProto {
    proto::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(proto::type_proto::Tensor {
                elem_type: Some(ty as i32),
                shape: Some(proto::TensorShapeProto { dim: dims.to_vec() }),
            })),
            ..Default::default()
        }),
        doc_string: non_empty(doc),
        ..Default::default()
    }
}

fn attr_int(name: &str, i: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    }
}

fn attr_strings(name: &str, strings: Vec<Vec<u8>>) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Strings as i32),
        strings,
        ..Default::default()
    }
}

/// Nodes and initializers with unique generated names.
#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<proto::NodeProto>,
    initializers: Vec<proto::TensorProto>,
    counter: usize,
}

impl GraphBuilder {
    fn fresh(&mut self, stem: &str) -> String {
        self.counter += 1;
        format!("{stem}_{}", self.counter)
    }

    fn init(&mut self, t: proto::TensorProto) -> String {
        let name = t.name().to_string();
        self.initializers.push(t);
        name
    }

    /// A float32 initializer; every value must be finite in float32.
    fn floats(
        &mut self,
        stem: &str,
        dims: &[usize],
        values: impl IntoIterator<Item = f64>,
        what: &str,
    ) -> Result<String, ExportError> {
        let float_data: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
        if !float_data.iter().all(|v| v.is_finite()) {
            return Err(ExportError::NonFinite(what.into()));
        }
        let name = self.fresh(stem);
        Ok(self.init(proto::TensorProto {
            name: Some(name),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Float as i32),
            float_data,
            ..Default::default()
        }))
    }

    fn node_full(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        output: String,
        attribute: Vec<proto::AttributeProto>,
    ) -> String {
        let name = self.fresh(op);
        self.nodes.push(proto::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: Some(name),
            op_type: Some(op.into()),
            domain: non_empty(domain.into()),
            attribute,
            ..Default::default()
        });
        output
    }

    /// A default-domain node with one output of a generated name, which it returns.
    fn node(&mut self, op: &str, inputs: &[&str], attribute: Vec<proto::AttributeProto>) -> String {
        let output = self.fresh(&op.to_lowercase());
        self.node_full("", op, inputs, output, attribute)
    }

    fn node_in(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        attribute: Vec<proto::AttributeProto>,
    ) -> String {
        let output = self.fresh(&op.to_lowercase());
        self.node_full(domain, op, inputs, output, attribute)
    }

    fn node_named(&mut self, op: &str, inputs: &[&str], output: &str, attribute: Vec<proto::AttributeProto>) {
        self.node_full("", op, inputs, output.into(), attribute);
    }

    /// `Gemm(x, W, b)`, into `output` when given (a graph output), else a generated name.
    fn gemm(&mut self, x: &str, d: &Dense, what: &str, output: Option<&str>) -> Result<String, ExportError> {
        let w = self.floats("weights", &[d.inputs, d.outputs], d.weights.iter().copied(), what)?;
        let b = self.floats("bias", &[d.outputs], d.bias.iter().copied(), what)?;
        let output = output.map_or_else(|| self.fresh("gemm"), str::to_string);
        Ok(self.node_full("", "Gemm", &[x, &w, &b], output, vec![]))
    }
}

/// The ONNX message types, generated by `build.rs` from `proto/onnx-ml.proto` (proto2: a scalar field is
/// an `Option`, written when `Some`, and an enum field an `i32`). Their doc comments are the proto's, as
/// ONNX wrote them.
#[allow(clippy::doc_overindented_list_items)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;
    use crate::prep::{CategoricalFeature, NumericFeature};
    use crate::test_support;
    use ort::value::{DynValue, Tensor, ValueType};

    /// A small deterministic generator (xorshift64*) for weights.
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
            bits as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        }
    }

    fn dense(rng: &mut Rng, inputs: usize, outputs: usize) -> Dense {
        Dense {
            inputs,
            outputs,
            weights: (0..inputs * outputs).map(|_| rng.uniform() * 1.5).collect(),
            bias: (0..outputs).map(|_| rng.uniform() * 0.5).collect(),
        }
    }

    fn numeric(name: &str, fill: f64, mean: f64, scale: f64) -> NumericFeature {
        NumericFeature { name: name.into(), fill, mean, scale }
    }

    fn categorical(name: &str, levels: &[&str]) -> CategoricalFeature {
        CategoricalFeature { name: name.into(), levels: levels.iter().map(|s| s.to_string()).collect() }
    }

    const NAN: f64 = f64::NAN;

    /// A model and rows to feed it: numeric values (NaN: missing), categorical values (None: missing).
    struct Case {
        name: &'static str,
        prep: Preprocessing,
        net: Network,
        classes: Option<Classes>,
        numeric: Vec<Vec<f64>>,
        categories: Vec<Vec<Option<&'static str>>>,
    }

    impl Case {
        fn rows(&self) -> usize {
            self.numeric.len().max(self.categories.len())
        }

        fn numeric_row(&self, i: usize) -> &[f64] {
            self.numeric.get(i).map_or(&[], Vec::as_slice)
        }

        fn category_row(&self, i: usize) -> &[Option<&'static str>] {
            self.categories.get(i).map_or(&[], Vec::as_slice)
        }

        fn export(&self) -> Vec<u8> {
            let doc = ModelDoc {
                producer_version: "0.1.0".into(),
                doc_string: format!("test model {}", self.name),
                metadata: vec![("target".into(), "y".into())],
            };
            export(&self.prep, &self.net, self.classes.as_ref(), &doc).expect("export")
        }

        /// `Network::predict` on the design matrix `Preprocessing::transform_row` makes.
        fn reference(&self) -> Vec<f64> {
            let width = self.prep.width();
            let mut x = Matrix::zeros(self.rows(), width);
            for i in 0..self.rows() {
                self.prep.transform_row(self.numeric_row(i), self.category_row(i), x.row_mut(i));
            }
            self.net.predict(x.view())
        }
    }

    fn binary() -> Case {
        let mut rng = Rng(1);
        Case {
            name: "binary",
            prep: Preprocessing {
                numeric: vec![
                    numeric("age", 40.0, 41.5, 12.0),
                    numeric("income", 5e4, 5.2e4, 2e4),
                    numeric("score", 0.0, 0.1, 0.5),
                ],
                categorical: vec![],
            },
            net: Network { hidden: vec![], output: dense(&mut rng, 3, 1), head: Head::Logistic },
            classes: Some(Classes::Int(vec![3, 7])),
            numeric: vec![
                vec![30.0, 4e4, 0.2],
                vec![NAN, 7e4, -0.9],
                vec![65.0, NAN, NAN],
                vec![NAN, NAN, NAN],
                vec![f64::INFINITY, f64::NEG_INFINITY, 0.3],
                vec![18.0, 1.5e5, 2.5],
                vec![41.5, 5.2e4, 0.1],
            ],
            categories: vec![],
        }
    }

    fn multiclass() -> Case {
        let mut rng = Rng(2);
        Case {
            name: "multiclass",
            prep: Preprocessing {
                numeric: vec![numeric("length", 1.0, 1.2, 0.3), numeric("weight", 2.0, 2.5, 1.5)],
                categorical: vec![
                    categorical("color", &["red", "green", "blue"]),
                    categorical("size", &["S", "L"]),
                ],
            },
            net: Network { hidden: vec![], output: dense(&mut rng, 7, 3), head: Head::Softmax },
            classes: Some(Classes::Str(vec!["cat".into(), "dog".into(), "eel".into()])),
            numeric: vec![
                vec![1.0, 2.0],
                vec![NAN, 4.0],
                vec![2.0, NAN],
                vec![0.5, 1.0],
                vec![1.5, 3.0],
                vec![1.1, 0.2],
            ],
            categories: vec![
                vec![Some("red"), Some("S")],
                vec![Some("blue"), Some("L")],
                vec![Some("zebra"), Some("S")],
                vec![None, None],
                vec![Some("green"), Some("XL")],
                vec![Some("Red"), Some("L")],
            ],
        }
    }

    fn regression() -> Case {
        let mut rng = Rng(3);
        Case {
            name: "regression",
            prep: Preprocessing {
                numeric: vec![
                    numeric("a", 0.0, 0.5, 2.0),
                    numeric("b", -1.0, -1.0, 1.0),
                    numeric("c", 10.0, 9.0, 4.0),
                    numeric("d", 0.0, 0.0, 1.0),
                ],
                categorical: vec![],
            },
            net: Network { hidden: vec![], output: dense(&mut rng, 4, 1), head: Head::Identity },
            classes: None,
            numeric: vec![
                vec![1.0, 2.0, 3.0, 4.0],
                vec![NAN, 0.0, 12.0, -3.0],
                vec![-2.0, NAN, NAN, 0.5],
                vec![100.0, -50.0, 7.0, NAN],
            ],
            categories: vec![],
        }
    }

    fn mlp() -> Case {
        let mut rng = Rng(4);
        let prep = Preprocessing {
            numeric: vec![
                numeric("x1", 0.0, 0.2, 1.1),
                numeric("x2", 1.0, 0.8, 0.7),
                numeric("x3", 5.0, 5.0, 3.0),
            ],
            categorical: vec![categorical("region", &["north", "south", "east", "west"])],
        };
        let width = prep.width();
        Case {
            name: "mlp",
            prep,
            net: Network {
                hidden: vec![dense(&mut rng, width, 8), dense(&mut rng, 8, 5)],
                output: dense(&mut rng, 5, 4),
                head: Head::Softmax,
            },
            classes: Some(Classes::Int(vec![10, 20, 30, -40])),
            numeric: vec![
                vec![0.0, 1.0, 2.0],
                vec![1.5, NAN, 8.0],
                vec![-1.0, -0.5, NAN],
                vec![2.0, 2.0, 2.0],
                vec![NAN, NAN, NAN],
                vec![-3.0, 0.1, 10.0],
                vec![0.7, 1.9, 4.0],
            ],
            categories: vec![
                vec![Some("north")],
                vec![Some("south")],
                vec![Some("east")],
                vec![Some("west")],
                vec![None],
                vec![Some("nowhere")],
                vec![Some("south")],
            ],
        }
    }

    /// Only categorical inputs (no `input`), one of them without levels, a binary MLP with string classes.
    fn categorical_only() -> Case {
        let mut rng = Rng(5);
        Case {
            name: "categorical_only",
            prep: Preprocessing {
                numeric: vec![],
                categorical: vec![
                    categorical("plan", &["free", "pro"]),
                    categorical("constant", &[]),
                    categorical("os", &["linux", "mac", "windows"]),
                ],
            },
            net: Network {
                hidden: vec![dense(&mut rng, 5, 3)],
                output: dense(&mut rng, 3, 1),
                head: Head::Logistic,
            },
            classes: Some(Classes::Str(vec!["no".into(), "yes".into()])),
            numeric: vec![],
            categories: vec![
                vec![Some("free"), None, Some("linux")],
                vec![Some("pro"), Some("x"), Some("mac")],
                vec![Some("pro"), None, Some("windows")],
                vec![None, None, None],
                vec![Some("enterprise"), None, Some("bsd")],
            ],
        }
    }

    fn all_cases() -> Vec<Case> {
        vec![binary(), multiclass(), regression(), mlp(), categorical_only()]
    }

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
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{} value {i}: onnx {g}, predict {w}",
                case.name
            );
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
                    ValueType::Tensor { ty, shape, .. } => {
                        (o.name().to_string(), ty.to_string(), shape.to_vec())
                    }
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
        assert!(matches!(
            export(&case.prep, &case.net, classes, &dup),
            Err(ExportError::DuplicateMetadata(_))
        ));
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
            ("multiclass", "a35289374e97b6e7898b1f94f9894a56b9c89106310f2fb38af142078b505fdf"),
            ("regression", "6c6d7e2fdb8375b398ac29e31c8010efcc6fac482ad9bdcdea406be5dae68f0c"),
            ("mlp", "02f045bfb9da6dce2c593a18116b6ff6f3c401bf899369ae299d951190f87ff6"),
            ("categorical_only", "aff3e6ece5740c1d1443a0ae8031ba1820e3a859994bf3f83ea53edea6ce1bd0"),
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
}
