//! The learners: logistic regression (L-BFGS), ridge regression (a direct solve) and a multilayer
//! perceptron (Adam with early stopping), each with scikit-learn's objective and defaults so that a
//! hyperparameter means the same thing here as there:
//!
//! - `logisticRegression` = `LogisticRegression(C=1/l2, solver="lbfgs", max_iter, tol)`;
//! - `linearRegression` = `Ridge(alpha=l2)`;
//! - `mlp` = `MLPClassifier` (or `MLPRegressor` for a numeric target) with `activation="relu"`,
//!   `solver="adam"`, `alpha=l2`, `early_stopping=True`, `validation_fraction=0.1`.
//!
//! Every learner returns a [`Network`]; the design matrix is used as given (already preprocessed).

mod gemm;
pub mod lbfgs;
mod linear;
mod mlp;
mod par;

use crate::matrix::{DesignView, NO_LEVEL};
use crate::network::Network;
use mizzen_common::training::{Hyperparameter, Hyperparameters};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;
use thiserror::Error;

/// Hyperparameters; `None` takes the algorithm's default (see [`resolved`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Params {
    /// L2 penalty: `1/C` of logistic regression, `alpha` of ridge and of the MLP.
    pub l2: Option<f64>,
    /// L-BFGS iterations (logistic regression) or epochs (MLP).
    pub max_iterations: Option<u32>,
    /// Logistic regression: the largest gradient component at convergence. MLP: the validation
    /// accuracy (R² for a numeric target) gain that counts as an improvement.
    pub tolerance: Option<f64>,
    /// MLP hidden layer widths.
    pub hidden_layers: Option<Vec<usize>>,
    /// MLP: Adam's initial step size.
    pub learning_rate: Option<f64>,
    /// MLP: rows per minibatch (at most the training rows).
    pub batch_size: Option<usize>,
    /// MLP: epochs without improvement before stopping (scikit-learn's `n_iter_no_change`).
    pub patience: Option<u32>,
    /// MLP: seeds the initial weights, the validation split and the shuffling.
    pub seed: u64,
}

impl Params {
    /// Reads hyperparameters given as strings (`hiddenLayers` as `"64,32"`, an empty string for none). An
    /// unparsable value is an error naming it.
    pub fn from_hyperparameters(values: &Hyperparameters) -> Result<Self, FitError> {
        fn parse<T: FromStr>(name: &'static str, value: &str) -> Result<T, FitError> {
            value.trim().parse().map_err(|_| FitError::InvalidHyperparameter {
                name,
                message: format!("cannot parse {value:?}"),
            })
        }
        let mut p = Params::default();
        for (&name, value) in values {
            let n = name.name();
            match name {
                Hyperparameter::L2 => p.l2 = Some(parse(n, value)?),
                Hyperparameter::MaxIterations => p.max_iterations = Some(parse(n, value)?),
                Hyperparameter::Tolerance => p.tolerance = Some(parse(n, value)?),
                Hyperparameter::HiddenLayers => {
                    let layers = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| parse(n, s))
                        .collect::<Result<Vec<usize>, _>>()?;
                    // As the TrainingJob's schema allows: one or two layers of 1 to 4096 units.
                    if layers.is_empty()
                        || layers.len() > 2
                        || layers.iter().any(|&w| !(1..=4096).contains(&w))
                    {
                        return Err(invalid_param(
                            "hiddenLayers",
                            format!(
                                "{value:?}: one or two layer widths of 1 to 4096 units, such as 64 or 64,32"
                            ),
                        ));
                    }
                    p.hidden_layers = Some(layers);
                }
                Hyperparameter::LearningRate => {
                    let rate: f64 = parse(n, value)?;
                    if !(rate > 0.0 && rate <= 1.0) {
                        return Err(invalid_param("learningRate", format!("must be in (0, 1], got {value}")));
                    }
                    p.learning_rate = Some(rate);
                }
                Hyperparameter::BatchSize => p.batch_size = Some(parse(n, value)?),
                Hyperparameter::Patience => p.patience = Some(parse(n, value)?),
                Hyperparameter::Seed => p.seed = parse(n, value)?,
            }
        }
        Ok(p)
    }
}

/// The learners, named as the operator names them.
pub use mizzen_common::training::Algorithm;

/// What the model predicts.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// Class indices `0..n_classes` (the label encoding), one per row.
    Classes { y: &'a [u32], n_classes: usize },
    /// A numeric value per row.
    Values(&'a [f64]),
}

/// A fitted model and how the fit went.
#[derive(Clone, Debug, PartialEq)]
pub struct Fit {
    pub network: Network,
    /// L-BFGS iterations, MLP epochs, 1 for the direct ridge solve.
    pub iterations: u32,
    /// Whether a convergence test (logistic regression) or early stopping (MLP) ended the fit rather than
    /// the iteration limit.
    pub converged: bool,
    /// The training objective at the end: mean loss plus penalty (logistic regression, ridge) or the
    /// last epoch's mean minibatch loss (MLP, scikit-learn's `loss_`).
    pub final_loss: f64,
}

#[derive(Clone, Debug, PartialEq, Error)]
pub enum FitError {
    /// The rows or targets cannot be fitted (shape, values, classes).
    #[error("{0}")]
    InvalidData(String),
    #[error("hyperparameter {name}: {message}")]
    InvalidHyperparameter { name: &'static str, message: String },
    /// The optimization produced non-finite values.
    #[error("{0}")]
    Diverged(String),
}

impl FitError {
    /// A CamelCase word for reports: `InvalidData`, `InvalidHyperparameter`, `Diverged`.
    pub fn reason(&self) -> &'static str {
        match self {
            FitError::InvalidData(_) => "InvalidData",
            FitError::InvalidHyperparameter { .. } => "InvalidHyperparameter",
            FitError::Diverged(_) => "Diverged",
        }
    }
}

/// Defaults (scikit-learn's).
pub mod defaults {
    pub const LOGISTIC_L2: f64 = 1.0;
    pub const LOGISTIC_MAX_ITERATIONS: u32 = 100;
    pub const LOGISTIC_TOLERANCE: f64 = 1e-4;
    pub const RIDGE_L2: f64 = 1.0;
    pub const MLP_HIDDEN_LAYERS: [usize; 1] = [100];
    pub const MLP_L2: f64 = 1e-4;
    pub const MLP_LEARNING_RATE: f64 = 1e-3;
    pub const MLP_BATCH_SIZE: usize = 200;
    pub const MLP_MAX_ITERATIONS: u32 = 200;
    pub const MLP_PATIENCE: u32 = 10;
    pub const MLP_TOLERANCE: f64 = 1e-4;
}

/// Refuses a hyperparameter `algorithm` does not read (as the TrainingJob's schema does), naming the ones
/// it reads.
pub fn check_applies(algorithm: Algorithm, values: &Hyperparameters) -> Result<(), FitError> {
    let takes = resolved(algorithm, &Params::default());
    match values.keys().find(|h| !takes.contains_key(h.name())) {
        None => Ok(()),
        Some(h) => Err(invalid_param(
            h.name(),
            format!(
                "does not apply to {} (it takes {})",
                algorithm.name(),
                takes.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// The effective hyperparameters of `algorithm` (defaults filled in), by name, as strings: the ones the
/// algorithm reads and no others.
pub fn resolved(algorithm: Algorithm, params: &Params) -> BTreeMap<String, String> {
    use Hyperparameter::*;
    use defaults::*;
    let mut out = BTreeMap::new();
    let mut put = |k: Hyperparameter, v: String| {
        out.insert(k.name().to_string(), v);
    };
    match algorithm {
        Algorithm::LogisticRegression => {
            put(L2, params.l2.unwrap_or(LOGISTIC_L2).to_string());
            put(MaxIterations, params.max_iterations.unwrap_or(LOGISTIC_MAX_ITERATIONS).to_string());
            put(Tolerance, params.tolerance.unwrap_or(LOGISTIC_TOLERANCE).to_string());
        }
        Algorithm::LinearRegression => {
            put(L2, params.l2.unwrap_or(RIDGE_L2).to_string());
        }
        Algorithm::Mlp => {
            let hidden = params.hidden_layers.clone().unwrap_or_else(|| MLP_HIDDEN_LAYERS.to_vec());
            put(HiddenLayers, hidden.iter().map(usize::to_string).collect::<Vec<_>>().join(","));
            put(L2, params.l2.unwrap_or(MLP_L2).to_string());
            put(LearningRate, params.learning_rate.unwrap_or(MLP_LEARNING_RATE).to_string());
            put(BatchSize, params.batch_size.unwrap_or(MLP_BATCH_SIZE).to_string());
            put(MaxIterations, params.max_iterations.unwrap_or(MLP_MAX_ITERATIONS).to_string());
            put(Patience, params.patience.unwrap_or(MLP_PATIENCE).to_string());
            put(Tolerance, params.tolerance.unwrap_or(MLP_TOLERANCE).to_string());
            put(Seed, params.seed.to_string());
        }
    }
    out
}

/// Fits `algorithm` to the rows of `x` (already preprocessed) and `target`.
pub fn fit(
    algorithm: Algorithm,
    x: DesignView<'_>,
    target: Target<'_>,
    params: &Params,
) -> Result<Fit, FitError> {
    check_rows(x, target)?;
    match (algorithm, target) {
        (Algorithm::LogisticRegression, Target::Classes { y, n_classes }) => {
            let l2 = non_negative("l2", params.l2.unwrap_or(defaults::LOGISTIC_L2))?;
            let max_iterations = at_least_one(
                "maxIterations",
                params.max_iterations.unwrap_or(defaults::LOGISTIC_MAX_ITERATIONS),
            )?;
            let tolerance =
                non_negative("tolerance", params.tolerance.unwrap_or(defaults::LOGISTIC_TOLERANCE))?;
            linear::logistic(x, y, n_classes, l2, max_iterations, tolerance)
        }
        (Algorithm::LinearRegression, Target::Values(y)) => {
            let l2 = non_negative("l2", params.l2.unwrap_or(defaults::RIDGE_L2))?;
            linear::ridge(x, y, l2)
        }
        (Algorithm::Mlp, target) => {
            let settings = mlp::Settings {
                hidden: params.hidden_layers.clone().unwrap_or_else(|| defaults::MLP_HIDDEN_LAYERS.to_vec()),
                alpha: non_negative("l2", params.l2.unwrap_or(defaults::MLP_L2))?,
                learning_rate: positive(
                    "learningRate",
                    params.learning_rate.unwrap_or(defaults::MLP_LEARNING_RATE),
                )?,
                batch_size: params.batch_size.unwrap_or(defaults::MLP_BATCH_SIZE),
                max_epochs: at_least_one(
                    "maxIterations",
                    params.max_iterations.unwrap_or(defaults::MLP_MAX_ITERATIONS),
                )?,
                patience: at_least_one("patience", params.patience.unwrap_or(defaults::MLP_PATIENCE))?,
                tolerance: non_negative("tolerance", params.tolerance.unwrap_or(defaults::MLP_TOLERANCE))?,
                seed: params.seed,
            };
            if settings.batch_size == 0 {
                return Err(invalid_param("batchSize", "must be at least 1"));
            }
            if let Some(i) = settings.hidden.iter().position(|&h| h == 0) {
                return Err(invalid_param("hiddenLayers", format!("layer {} has size 0", i + 1)));
            }
            mlp::fit(x, target, &settings)
        }
        (Algorithm::LogisticRegression, Target::Values(_)) => Err(FitError::InvalidData(
            "logisticRegression needs class labels, got a numeric target; use linearRegression or mlp".into(),
        )),
        (Algorithm::LinearRegression, Target::Classes { .. }) => Err(FitError::InvalidData(
            "linearRegression needs a numeric target, got class labels; use logisticRegression or mlp".into(),
        )),
    }
}

/// Shapes and values every learner needs: a consistent matrix with rows, finite features, one finite
/// target per row, class labels in range with at least two classes present.
fn check_rows(x: DesignView<'_>, target: Target<'_>) -> Result<(), FitError> {
    let bad = |m: String| Err(FitError::InvalidData(m));
    let dense = x.dense;
    if x.rows != dense.rows || dense.rows.checked_mul(dense.cols) != Some(dense.data.len()) {
        return bad(format!(
            "the design matrix's dense columns hold {} values, not {} x {}",
            dense.data.len(),
            x.rows,
            dense.cols
        ));
    }
    if x.rows.checked_mul(x.blocks()) != Some(x.codes.len()) {
        return bad(format!(
            "the design matrix holds {} levels, not {} x {}",
            x.codes.len(),
            x.rows,
            x.blocks()
        ));
    }
    if x.rows == 0 {
        return bad("no training rows".into());
    }
    if x.cols == 0 {
        return bad("the design matrix has no feature columns".into());
    }
    if let Some(i) = dense.data.iter().position(|v| !v.is_finite()) {
        return bad(format!("feature {} of training row {} is not finite", i % dense.cols, i / dense.cols));
    }
    let ends = x.starts.iter().skip(1).copied().chain([x.cols]);
    for (b, (start, end)) in x.starts.iter().zip(ends).enumerate() {
        if *start < dense.cols || end < *start {
            return bad(format!("one-hot block {b} spans columns {start}..{end}"));
        }
        let levels = end - start;
        let codes = x.codes.iter().skip(b).step_by(x.blocks());
        if let Some((i, c)) = codes.enumerate().find(|(_, c)| **c != NO_LEVEL && **c as usize >= levels) {
            return bad(format!("training row {i} has level {c} in one-hot block {b} of {levels} levels"));
        }
    }
    match target {
        Target::Classes { y, n_classes } => {
            if y.len() != x.rows {
                return bad(format!("{} labels for {} rows", y.len(), x.rows));
            }
            if n_classes < 2 {
                return bad(format!("classification needs at least 2 classes, got {n_classes}"));
            }
            if n_classes > u32::MAX as usize {
                return bad(format!("too many classes ({n_classes})"));
            }
            if let Some(i) = y.iter().position(|&c| c as usize >= n_classes) {
                return bad(format!(
                    "label {} of row {i} is not below the number of classes {n_classes}",
                    y[i]
                ));
            }
            let first = y[0];
            if y.iter().all(|&c| c == first) {
                return bad(format!(
                    "the training rows hold only one class (class index {first}); need at least 2"
                ));
            }
        }
        Target::Values(y) => {
            if y.len() != x.rows {
                return bad(format!("{} target values for {} rows", y.len(), x.rows));
            }
            if let Some(i) = y.iter().position(|v| !v.is_finite()) {
                return bad(format!("the target of row {i} is not finite"));
            }
        }
    }
    Ok(())
}

fn invalid_param(name: &'static str, message: impl Into<String>) -> FitError {
    FitError::InvalidHyperparameter { name, message: message.into() }
}

fn non_negative(name: &'static str, v: f64) -> Result<f64, FitError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(invalid_param(name, format!("must be finite and >= 0, got {v}")))
    }
}

fn positive(name: &'static str, v: f64) -> Result<f64, FitError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(invalid_param(name, format!("must be finite and > 0, got {v}")))
    }
}

fn at_least_one(name: &'static str, v: u32) -> Result<u32, FitError> {
    if v >= 1 { Ok(v) } else { Err(invalid_param(name, "must be at least 1")) }
}

#[cfg(test)]
mod tests;
