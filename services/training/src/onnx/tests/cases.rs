//! The test models: a preprocessing, a network with deterministic weights, and rows to feed them.

use crate::matrix::Matrix;
use crate::network::{Dense, Head, Network};
use crate::onnx::{ModelDoc, export};
use crate::prep::{CategoricalFeature, Classes, NumericFeature, Preprocessing};

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

pub(super) const NAN: f64 = f64::NAN;

/// A model and rows to feed it: numeric values (NaN: missing), categorical values (None: missing).
pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) prep: Preprocessing,
    pub(super) net: Network,
    pub(super) classes: Option<Classes>,
    pub(super) numeric: Vec<Vec<f64>>,
    pub(super) categories: Vec<Vec<Option<&'static str>>>,
}

impl Case {
    pub(super) fn rows(&self) -> usize {
        self.numeric.len().max(self.categories.len())
    }

    fn numeric_row(&self, i: usize) -> &[f64] {
        self.numeric.get(i).map_or(&[], Vec::as_slice)
    }

    fn category_row(&self, i: usize) -> &[Option<&'static str>] {
        self.categories.get(i).map_or(&[], Vec::as_slice)
    }

    pub(super) fn export(&self) -> Vec<u8> {
        let doc = ModelDoc {
            producer_version: "0.1.0".into(),
            doc_string: format!("test model {}", self.name),
            metadata: vec![("target".into(), "y".into())],
        };
        export(&self.prep, &self.net, self.classes.as_ref(), &doc).expect("export")
    }

    /// `Network::predict` on the design matrix `Preprocessing::transform_row` makes.
    pub(super) fn reference(&self) -> Vec<f64> {
        let width = self.prep.width();
        let mut x = Matrix::zeros(self.rows(), width);
        for i in 0..self.rows() {
            self.prep.transform_row(self.numeric_row(i), self.category_row(i), x.row_mut(i));
        }
        self.net.predict(x.view().into())
    }
}

pub(super) fn binary() -> Case {
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

pub(super) fn multiclass() -> Case {
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

pub(super) fn regression() -> Case {
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

pub(super) fn mlp() -> Case {
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
pub(super) fn categorical_only() -> Case {
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

pub(super) fn all_cases() -> Vec<Case> {
    vec![binary(), multiclass(), regression(), mlp(), categorical_only()]
}
