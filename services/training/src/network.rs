//! What every learner produces: dense layers with ReLU between them and a head. Logistic regression is a
//! network without hidden layers; ridge regression is one with an identity head. Prediction and ONNX
//! export both read this one shape, so they cannot disagree on the arithmetic.

use crate::matrix::DesignView;
use serde::{Deserialize, Serialize};

/// A fully connected layer: `y = x W + b` with `W` row-major `[inputs x outputs]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
    pub weights: Vec<f64>,
    pub bias: Vec<f64>,
}

/// How the last layer's outputs become predictions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Head {
    /// Regression: the single output is the prediction.
    Identity,
    /// Binary classification: one output z, P(class 1) = sigmoid(z).
    Logistic,
    /// Multiclass: one output per class, probabilities = softmax.
    Softmax,
}

/// Hidden layers (each followed by ReLU), an output layer and a head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub hidden: Vec<Dense>,
    pub output: Dense,
    pub head: Head,
}

impl Dense {
    /// `x W + b` for one row into `out` (length `outputs`).
    pub fn forward_row(&self, x: &[f64], out: &mut [f64]) {
        self.forward_row_from(x, &self.weights, out);
    }

    /// `x W + b` for the weight rows `weights` (as many as `x` has values).
    fn forward_row_from(&self, x: &[f64], weights: &[f64], out: &mut [f64]) {
        out.copy_from_slice(&self.bias);
        for (xi, w) in x.iter().zip(weights.chunks_exact(self.outputs)) {
            if *xi != 0.0 {
                for (o, wj) in out.iter_mut().zip(w) {
                    *o += xi * wj;
                }
            }
        }
    }
}

impl Dense {
    /// `x W + b` for row `i` of a design matrix into `out` (length `outputs`): the dense columns, then the
    /// weight row of each one-hot block's level.
    pub fn forward_design_row(&self, x: &DesignView<'_>, i: usize, out: &mut [f64]) {
        let d = x.dense.cols;
        self.forward_row_from(x.dense.row(i), &self.weights[..d * self.outputs], out);
        for j in x.ones(i) {
            for (o, w) in out.iter_mut().zip(&self.weights[j * self.outputs..(j + 1) * self.outputs]) {
                *o += w;
            }
        }
    }
}

impl Network {
    /// Number of prediction columns: 1 for regression, the number of classes otherwise.
    pub fn n_outputs(&self) -> usize {
        match self.head {
            Head::Identity => 1,
            Head::Logistic => 2,
            Head::Softmax => self.output.outputs,
        }
    }

    /// Predictions for each row: the regression value, or one probability per class, row-major.
    pub fn predict(&self, x: DesignView<'_>) -> Vec<f64> {
        let k = self.n_outputs();
        let mut out = vec![0.0; x.rows * k];
        let widest = self.hidden.iter().map(|d| d.outputs).max().unwrap_or(0).max(self.output.outputs);
        let mut a = vec![0.0; widest];
        let mut b = vec![0.0; widest];
        for i in 0..x.rows {
            // The first layer reads the design row; each next one the previous one's ReLU.
            match self.hidden.first() {
                None => self.output.forward_design_row(&x, i, &mut a[..self.output.outputs]),
                Some(first) => {
                    first.forward_design_row(&x, i, &mut b[..first.outputs]);
                    let mut width = first.outputs;
                    for layer in &self.hidden[1..] {
                        for v in &mut b[..width] {
                            *v = v.max(0.0);
                        }
                        layer.forward_row(&b[..width], &mut a[..layer.outputs]);
                        std::mem::swap(&mut a, &mut b);
                        width = layer.outputs;
                    }
                    for v in &mut b[..width] {
                        *v = v.max(0.0);
                    }
                    self.output.forward_row(&b[..width], &mut a[..self.output.outputs]);
                }
            }
            let z = &mut a[..self.output.outputs];
            let row = &mut out[i * k..(i + 1) * k];
            match self.head {
                Head::Identity => row[0] = z[0],
                Head::Logistic => {
                    let p = sigmoid(z[0]);
                    row[0] = 1.0 - p;
                    row[1] = p;
                }
                Head::Softmax => softmax_into(z, row),
            }
        }
        out
    }
}

pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Numerically stable softmax of `z` into `out`.
pub fn softmax_into(z: &[f64], out: &mut [f64]) {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (o, v) in out.iter_mut().zip(z) {
        *o = (v - max).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;

    #[test]
    fn logistic_regression_is_a_network_without_hidden_layers() {
        let net = Network {
            hidden: vec![],
            output: Dense { inputs: 2, outputs: 1, weights: vec![1.0, -1.0], bias: vec![0.5] },
            head: Head::Logistic,
        };
        let x = Matrix::from_vec(2, 2, vec![1.0, 1.0, 0.0, 2.0]);
        let p = net.predict(x.view().into());
        assert!((p[1] - sigmoid(0.5)).abs() < 1e-12);
        assert!((p[0] + p[1] - 1.0).abs() < 1e-12);
        assert!((p[3] - sigmoid(-1.5)).abs() < 1e-12);
    }

    #[test]
    fn hidden_layers_apply_relu() {
        let net = Network {
            hidden: vec![Dense { inputs: 1, outputs: 2, weights: vec![1.0, -1.0], bias: vec![0.0, 0.0] }],
            output: Dense { inputs: 2, outputs: 1, weights: vec![2.0, 3.0], bias: vec![1.0] },
            head: Head::Identity,
        };
        let x = Matrix::from_vec(2, 1, vec![2.0, -1.0]);
        // x=2: hidden [2, 0] -> 1 + 4 = 5; x=-1: hidden [0, 1] -> 1 + 3 = 4.
        assert_eq!(net.predict(x.view().into()), vec![5.0, 4.0]);
    }
}
