//! The contract between the operator and mizzen-train: the run's configuration (handed to every trainer
//! pod as JSON in `MIZZEN_TRAIN_CONFIG`) and the report the trainer leaves as its termination message,
//! which the operator copies into the TrainingJob's status.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Environment variable that carries the [`TrainConfig`] as JSON.
pub const CONFIG_ENV: &str = "MIZZEN_TRAIN_CONFIG";
/// Kubernetes caps a container's termination message at 4096 bytes; reports are cut to fit.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// The learners mizzen-train runs. The operator and the trainer both name them through this type, so a
/// learner added or renamed on one side is a compile error on the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Algorithm {
    LogisticRegression,
    LinearRegression,
    Mlp,
}

impl Algorithm {
    pub const ALL: [Algorithm; 3] =
        [Algorithm::LogisticRegression, Algorithm::LinearRegression, Algorithm::Mlp];

    /// The name in specs, configs and reports: `logisticRegression`, `linearRegression`, `mlp`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::LogisticRegression => "logisticRegression",
            Algorithm::LinearRegression => "linearRegression",
            Algorithm::Mlp => "mlp",
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Algorithm::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            format!("unknown algorithm {s:?}; expected logisticRegression, linearRegression or mlp")
        })
    }
}

/// What a model predicts, when the configuration says (`spec.task`): otherwise logisticRegression
/// classifies, linearRegression regresses and mlp follows the label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ModelTask {
    Classification,
    Regression,
}

impl ModelTask {
    /// The name in specs, configs and `model.json`: `classification`, `regression`.
    pub fn name(self) -> &'static str {
        match self {
            ModelTask::Classification => "classification",
            ModelTask::Regression => "regression",
        }
    }

    /// The task `algorithm` does when it does only one; `None` for mlp, which does both.
    pub fn of(algorithm: Algorithm) -> Option<ModelTask> {
        match algorithm {
            Algorithm::LogisticRegression => Some(ModelTask::Classification),
            Algorithm::LinearRegression => Some(ModelTask::Regression),
            Algorithm::Mlp => None,
        }
    }
}

impl std::str::FromStr for ModelTask {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [ModelTask::Classification, ModelTask::Regression]
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown task {s:?}; expected classification or regression"))
    }
}

/// The holdout metrics mizzen-train reports, by the names the report and the status use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Metric {
    Accuracy,
    Precision,
    Recall,
    F1,
    LogLoss,
    RocAuc,
    Rmse,
    Mae,
    R2,
}

impl Metric {
    pub const ALL: [Metric; 9] = [
        Metric::Accuracy,
        Metric::Precision,
        Metric::Recall,
        Metric::F1,
        Metric::LogLoss,
        Metric::RocAuc,
        Metric::Rmse,
        Metric::Mae,
        Metric::R2,
    ];

    /// The name in reports, specs and the status: `accuracy`, `logLoss`, `rocAuc`, `r2`, ...
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Precision => "precision",
            Metric::Recall => "recall",
            Metric::F1 => "f1",
            Metric::LogLoss => "logLoss",
            Metric::RocAuc => "rocAuc",
            Metric::Rmse => "rmse",
            Metric::Mae => "mae",
            Metric::R2 => "r2",
        }
    }
}

/// A hyperparameter, by its name on the wire. Both sides name them through this type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Hyperparameter {
    /// L2 penalty: `1/C` of logistic regression, `alpha` of ridge and of the MLP.
    L2,
    /// L-BFGS iterations (logistic regression) or epochs (MLP).
    MaxIterations,
    /// Convergence tolerance.
    Tolerance,
    /// MLP hidden layer widths, such as `"64,32"`.
    HiddenLayers,
    /// MLP: Adam's initial step size.
    LearningRate,
    /// MLP: rows per minibatch.
    BatchSize,
    /// MLP: epochs without improvement before stopping.
    Patience,
    /// Seeds the initial weights, the validation split and the shuffling.
    Seed,
}

impl Hyperparameter {
    pub const ALL: [Hyperparameter; 8] = [
        Hyperparameter::L2,
        Hyperparameter::MaxIterations,
        Hyperparameter::Tolerance,
        Hyperparameter::HiddenLayers,
        Hyperparameter::LearningRate,
        Hyperparameter::BatchSize,
        Hyperparameter::Patience,
        Hyperparameter::Seed,
    ];

    /// The name in specs and configs: `l2`, `maxIterations`, ...
    pub fn name(self) -> &'static str {
        match self {
            Hyperparameter::L2 => "l2",
            Hyperparameter::MaxIterations => "maxIterations",
            Hyperparameter::Tolerance => "tolerance",
            Hyperparameter::HiddenLayers => "hiddenLayers",
            Hyperparameter::LearningRate => "learningRate",
            Hyperparameter::BatchSize => "batchSize",
            Hyperparameter::Patience => "patience",
            Hyperparameter::Seed => "seed",
        }
    }
}

impl std::str::FromStr for Hyperparameter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Hyperparameter::ALL.into_iter().find(|h| h.name() == s).ok_or_else(|| {
            let known: Vec<&str> = Hyperparameter::ALL.iter().map(|h| h.name()).collect();
            format!("unknown hyperparameter {s:?}; known: {}", known.join(", "))
        })
    }
}

/// Hyperparameter values by name, as strings, so a search's categorical values and numeric draws travel the
/// same way.
pub type Hyperparameters = BTreeMap<Hyperparameter, String>;

/// Everything one trainer pod needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainConfig {
    pub dataset: DatasetConfig,
    pub algorithm: Algorithm,
    /// What the model predicts; unset: what the algorithm does (mlp: as the label says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<ModelTask>,
    /// The base hyperparameters; unset ones take the trainer's defaults.
    #[serde(default)]
    pub hyperparameters: Hyperparameters,
    /// A search's trials: trial `i` (the pod's `JOB_COMPLETION_INDEX`) overrides the base hyperparameters
    /// with `trials[i]`. Empty for a single run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trials: Vec<Hyperparameters>,
    /// Fraction of rows held out for scoring.
    pub holdout_fraction: f64,
    /// Seed of the holdout split.
    pub split_seed: u64,
    /// Where the model and its metadata go: a directory URI (a search's trial `i` writes under
    /// `trials/i/`), or `registry://NAME[@ALIAS]`: a run in the registry (each trial its own), its artifacts,
    /// and for a single run a registered version of NAME (and ALIAS moved to it).
    pub output_uri: String,
    /// The registry experiment the runs are logged under (registry outputs). Default: the model's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// Who asked for the run (`NAMESPACE/TRAININGJOB`), recorded on the registry's runs and versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// The training data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetConfig {
    /// The table; with `feature_set`, the labels file the FeatureSet's features are joined onto.
    pub uri: String,
    /// Join the FeatureSet's features point-in-time onto the rows of `uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_set: Option<FeatureSetJoin>,
    /// `csv` or `parquet`; default from the file extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    pub label: String,
    /// Feature columns in model-input order; default every other column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// Feature columns to one-hot encode even when their values look numeric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categorical: Vec<String>,
}

/// Where a training set's features come from: a FeatureSet's store, asked for each labelled row's feature
/// values as of its time (`POST /get-historical-features`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureSetJoin {
    /// `NAMESPACE/NAME`, recorded with the model.
    pub name: String,
    /// The store's base URL.
    pub url: String,
    /// The FeatureSet's name as the store serves it (`NAME:feature`).
    pub view: String,
    /// The features asked for.
    pub features: Vec<String>,
    /// The labels file's column of event times.
    pub timestamp_column: String,
}

/// What a trainer pod reports when it ends: its termination message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The trial index of a search; absent for a single run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<u32>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase")]
pub enum Outcome {
    /// A model was trained, scored on the holdout set and written.
    Succeeded(Trained),
    /// Nothing was written; `reason` is a CamelCase word, `message` says what to fix.
    Failed { reason: String, message: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trained {
    /// Holdout metrics by name (`accuracy`, `f1`, `rmse`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// The effective hyperparameters, defaults included.
    pub hyperparameters: BTreeMap<String, String>,
    /// URI of the ONNX file.
    pub model_uri: String,
    pub model_sha256: String,
    pub dataset_sha256: String,
    /// The registry run that logged it (registry outputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The registry version it became (a single run to a registry output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Report {
    /// The report as JSON of at most [`TERMINATION_MESSAGE_LIMIT`] bytes: a long failure message is cut
    /// (on a character boundary) so the JSON stays whole.
    pub fn to_termination_message(&self) -> String {
        let full = serde_json::to_string(self).expect("a report serializes");
        if full.len() <= TERMINATION_MESSAGE_LIMIT {
            return full;
        }
        let mut short = self.clone();
        match &mut short.outcome {
            Outcome::Failed { message, .. } => {
                let over = full.len() - TERMINATION_MESSAGE_LIMIT + 32;
                let mut keep = message.len().saturating_sub(over);
                while !message.is_char_boundary(keep) {
                    keep -= 1;
                }
                message.truncate(keep);
                message.push_str(" [cut]");
            }
            Outcome::Succeeded(t) => {
                // Hyperparameters and metrics are short; a huge one means something odd: keep the essentials.
                t.hyperparameters.retain(|_, v| v.len() < 64);
            }
        }
        serde_json::to_string(&short).expect("a report serializes")
    }

    /// Parses a termination message.
    pub fn parse(message: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(message.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_travel_as_the_specs_spell_them() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>().unwrap(), a);
            assert_eq!(serde_json::to_value(a).unwrap(), a.name());
        }
        for m in Metric::ALL {
            assert_eq!(serde_json::to_value(m).unwrap(), m.name());
        }
        for h in Hyperparameter::ALL {
            assert_eq!(h.name().parse::<Hyperparameter>().unwrap(), h);
            assert_eq!(serde_json::to_value(h).unwrap(), h.name());
        }
        assert!("svm".parse::<Algorithm>().unwrap_err().contains("svm"));
        assert!("momentum".parse::<Hyperparameter>().unwrap_err().contains("known: l2"));
        let map: Hyperparameters = [(Hyperparameter::HiddenLayers, "64,32".to_string())].into();
        assert_eq!(serde_json::to_string(&map).unwrap(), r#"{"hiddenLayers":"64,32"}"#);
    }

    #[test]
    fn reports_round_trip_and_fit_the_termination_message() {
        let failed = Report {
            trial: Some(3),
            outcome: Outcome::Failed { reason: "InvalidData".into(), message: "é".repeat(5000) },
        };
        let msg = failed.to_termination_message();
        assert!(msg.len() <= TERMINATION_MESSAGE_LIMIT, "{}", msg.len());
        let back = Report::parse(&msg).unwrap();
        assert_eq!(back.trial, Some(3));
        assert!(matches!(back.outcome, Outcome::Failed { ref reason, .. } if reason == "InvalidData"));

        let ok = Report {
            trial: None,
            outcome: Outcome::Succeeded(Trained {
                metrics: [("accuracy".to_string(), 0.97)].into(),
                hyperparameters: [("l2".to_string(), "1".to_string())].into(),
                model_uri: "file:///m/model.onnx".into(),
                model_sha256: "ab".into(),
                dataset_sha256: "cd".into(),
                run_id: None,
                version: None,
            }),
        };
        let msg = ok.to_termination_message();
        assert!(msg.contains(r#""phase":"Succeeded""#), "{msg}");
        assert_eq!(Report::parse(&msg).unwrap(), ok);
    }
}
