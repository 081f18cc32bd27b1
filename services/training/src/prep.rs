//! Preprocessing learned on the training rows: mean imputation and standardization of numeric features,
//! one-hot encoding of string features. The same description is applied in Rust (training, scoring) and
//! written into the ONNX graph (serving).

use serde::{Deserialize, Serialize};

/// A numeric input column: `x -> ((x is NaN ? fill : x) - mean) / scale`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NumericFeature {
    pub name: String,
    /// Replaces a missing value (the training mean).
    pub fill: f64,
    pub mean: f64,
    /// The standard deviation (1 when it is 0, so a constant column maps to 0).
    pub scale: f64,
}

/// A string input column, one-hot encoded over `levels` (in this order); a value not among them, or a
/// missing one, encodes as all zeros.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoricalFeature {
    pub name: String,
    pub levels: Vec<String>,
}

/// The model's inputs and how they become the design matrix: the standardized numeric features in
/// order, then each categorical feature's one-hot block in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// The columns of the ONNX input `input` (float[N, numeric.len()]), in order.
    pub numeric: Vec<NumericFeature>,
    /// The columns of the ONNX input `categories` (string[N, categorical.len()]), in order; absent when empty.
    pub categorical: Vec<CategoricalFeature>,
}

impl Preprocessing {
    /// Width of the design matrix.
    pub fn width(&self) -> usize {
        self.numeric.len() + self.categorical.iter().map(|c| c.levels.len()).sum::<usize>()
    }

    /// One design-matrix row into `out` (length [`width`](Self::width)): each numeric value (NaN:
    /// missing) imputed and standardized, then each categorical value one-hot encoded over its levels
    /// (`None`, or a value not among the levels: all zeros). The arithmetic the ONNX graph repeats.
    pub fn transform_row(&self, numeric: &[f64], categories: &[Option<&str>], out: &mut [f64]) {
        assert_eq!(numeric.len(), self.numeric.len(), "numeric values");
        assert_eq!(categories.len(), self.categorical.len(), "categorical values");
        assert_eq!(out.len(), self.width(), "design row width");
        let (head, mut rest) = out.split_at_mut(self.numeric.len());
        for ((o, &x), f) in head.iter_mut().zip(numeric).zip(&self.numeric) {
            let x = if x.is_finite() { x } else { f.fill };
            *o = (x - f.mean) / f.scale;
        }
        for (value, c) in categories.iter().zip(&self.categorical) {
            let (block, tail) = rest.split_at_mut(c.levels.len());
            block.fill(0.0);
            if let Some(i) = value.and_then(|v| c.levels.iter().position(|l| l == v)) {
                block[i] = 1.0;
            }
            rest = tail;
        }
    }
}

/// Class labels of a classifier, in the order of its probability columns: integers when every label
/// in the data is an integer (the ONNX `label` output is int64), strings otherwise (string output).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Classes {
    Int(Vec<i64>),
    Str(Vec<String>),
}

impl Classes {
    pub fn len(&self) -> usize {
        match self {
            Classes::Int(v) => v.len(),
            Classes::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transform_row_imputes_standardizes_and_one_hot_encodes() {
        let prep = Preprocessing {
            numeric: vec![
                NumericFeature { name: "a".into(), fill: 2.0, mean: 1.0, scale: 2.0 },
                NumericFeature { name: "b".into(), fill: 0.0, mean: 0.0, scale: 1.0 },
            ],
            categorical: vec![
                CategoricalFeature { name: "c".into(), levels: vec!["x".into(), "y".into()] },
                CategoricalFeature { name: "d".into(), levels: vec!["p".into(), "q".into(), "r".into()] },
            ],
        };
        let mut out = vec![9.0; prep.width()];
        prep.transform_row(&[f64::NAN, 3.0], &[Some("y"), Some("zz")], &mut out);
        assert_eq!(out, vec![0.5, 3.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
        prep.transform_row(&[5.0, -1.0], &[None, Some("r")], &mut out);
        assert_eq!(out, vec![2.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    }
}
