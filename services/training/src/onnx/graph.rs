//! The pieces the export assembles a graph from: a builder that names nodes and initializers uniquely, and
//! the value infos, dimensions and attributes of the ONNX messages.

use super::{ExportError, proto};
use crate::network::Dense;
use proto::attribute_proto::AttributeType;
use proto::tensor_proto::DataType;
use proto::tensor_shape_proto::{Dimension, dimension};

/// A proto2 string field that is left out when empty, as a reader takes an absent string to be empty.
pub(super) fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

pub(super) fn dim(n: usize) -> Dimension {
    Dimension { value: Some(dimension::Value::DimValue(n as i64)), ..Default::default() }
}

pub(super) fn dim_n() -> Dimension {
    Dimension { value: Some(dimension::Value::DimParam("N".into())), ..Default::default() }
}

pub(super) fn value_info(name: &str, ty: DataType, dims: &[Dimension], doc: String) -> proto::ValueInfoProto {
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

pub(super) fn attr_int(name: &str, i: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    }
}

pub(super) fn attr_strings(name: &str, strings: Vec<Vec<u8>>) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Strings as i32),
        strings,
        ..Default::default()
    }
}

pub(super) fn attr_ints(name: &str, ints: Vec<i64>) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints,
        ..Default::default()
    }
}

/// Nodes and initializers with unique generated names.
#[derive(Default)]
pub(super) struct GraphBuilder {
    pub(super) nodes: Vec<proto::NodeProto>,
    pub(super) initializers: Vec<proto::TensorProto>,
    counter: usize,
}

impl GraphBuilder {
    pub(super) fn fresh(&mut self, stem: &str) -> String {
        self.counter += 1;
        format!("{stem}_{}", self.counter)
    }

    pub(super) fn init(&mut self, t: proto::TensorProto) -> String {
        let name = t.name().to_string();
        self.initializers.push(t);
        name
    }

    /// A float32 initializer; every value must be finite in float32.
    pub(super) fn floats(
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

    pub(super) fn node_full(
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
    pub(super) fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attribute: Vec<proto::AttributeProto>,
    ) -> String {
        let output = self.fresh(&op.to_lowercase());
        self.node_full("", op, inputs, output, attribute)
    }

    pub(super) fn node_in(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        attribute: Vec<proto::AttributeProto>,
    ) -> String {
        let output = self.fresh(&op.to_lowercase());
        self.node_full(domain, op, inputs, output, attribute)
    }

    pub(super) fn node_named(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<proto::AttributeProto>,
    ) {
        self.node_full("", op, inputs, output.into(), attribute);
    }

    /// The first layer `d` on the design matrix: `Gemm` of the standardized numeric block `numeric` (the
    /// first weight rows), plus, for each one-hot block, the weight row of its level `Gather`ed by the
    /// level index (`-1`, an unknown or missing value, gathers the zero row appended to the block). The
    /// result goes into `output` when given (a graph output), else a generated name.
    pub(super) fn first_layer(
        &mut self,
        numeric: Option<(&str, usize)>,
        levels: &[LevelBlock],
        d: &Dense,
        what: &str,
        output: Option<&str>,
    ) -> Result<String, ExportError> {
        let n = d.outputs;
        let mut sum = match numeric {
            Some((x, k)) if levels.is_empty() => {
                return self.gemm(x, &d.weights[..k * n], k, d, what, output);
            }
            Some((x, k)) => self.gemm(x, &d.weights[..k * n], k, d, what, None)?,
            None => self.floats("bias", &[n], d.bias.iter().copied(), what)?,
        };
        for (b, block) in levels.iter().enumerate() {
            let rows = &d.weights[block.start * n..(block.start + block.levels) * n];
            let zeros = std::iter::repeat_n(0.0, n);
            let w = self.floats("levels", &[block.levels + 1, n], rows.iter().copied().chain(zeros), what)?;
            let gathered = self.node("Gather", &[&w, &block.index], vec![attr_int("axis", 0)]);
            let out = match output {
                Some(o) if b + 1 == levels.len() => o.to_string(),
                _ => self.fresh("add"),
            };
            sum = self.node_full("", "Add", &[&sum, &gathered], out, vec![]);
        }
        Ok(sum)
    }

    /// `Gemm(x, W, b)` of layer `d`, into `output` when given (a graph output), else a generated name.
    pub(super) fn layer(
        &mut self,
        x: &str,
        d: &Dense,
        what: &str,
        output: Option<&str>,
    ) -> Result<String, ExportError> {
        self.gemm(x, &d.weights, d.inputs, d, what, output)
    }

    /// `Gemm(x, W, b)` with the `inputs` weight rows `weights` and the bias of `d`.
    fn gemm(
        &mut self,
        x: &str,
        weights: &[f64],
        inputs: usize,
        d: &Dense,
        what: &str,
        output: Option<&str>,
    ) -> Result<String, ExportError> {
        let w = self.floats("weights", &[inputs, d.outputs], weights.iter().copied(), what)?;
        let b = self.floats("bias", &[d.outputs], d.bias.iter().copied(), what)?;
        let output = output.map_or_else(|| self.fresh("gemm"), str::to_string);
        Ok(self.node_full("", "Gemm", &[x, &w, &b], output, vec![]))
    }
}

/// A one-hot block of the design matrix as the graph sees it: the tensor of each row's level index
/// (`-1` for none), the block's first design column, and its number of levels.
pub(super) struct LevelBlock {
    pub(super) index: String,
    pub(super) start: usize,
    pub(super) levels: usize,
}
