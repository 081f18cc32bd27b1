//! The contract between the operator and mizzen-train: the run's configuration (handed to every trainer
//! pod as JSON in `MIZZEN_TRAIN_CONFIG`) and the report the trainer leaves as its termination message,
//! which the operator copies into the TrainingJob's status.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Environment variable that carries the [`TrainConfig`] as JSON.
pub const CONFIG_ENV: &str = "MIZZEN_TRAIN_CONFIG";
/// Kubernetes caps a container's termination message at 4096 bytes; reports are cut to fit.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// Everything one trainer pod needs. Hyperparameters are strings by name (`l2`, `maxIterations`,
/// `tolerance`, `hiddenLayers` such as `"64,32"`, `learningRate`, `batchSize`, `patience`, `seed`), so a
/// search's categorical values and numeric draws travel the same way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainConfig {
    pub dataset: DatasetConfig,
    /// `logisticRegression`, `linearRegression` or `mlp`.
    pub algorithm: String,
    /// The base hyperparameters; unset ones take the trainer's defaults.
    #[serde(default)]
    pub hyperparameters: BTreeMap<String, String>,
    /// A search's trials: trial `i` (the pod's `JOB_COMPLETION_INDEX`) overrides the base hyperparameters
    /// with `trials[i]`. Empty for a single run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trials: Vec<BTreeMap<String, String>>,
    /// Fraction of rows held out for scoring.
    pub holdout_fraction: f64,
    /// Seed of the holdout split.
    pub split_seed: u64,
    /// Directory URI the model and its metadata go to; a search's trial `i` writes under `trials/i/`.
    pub output_uri: String,
}

/// The training data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetConfig {
    pub uri: String,
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
            }),
        };
        let msg = ok.to_termination_message();
        assert!(msg.contains(r#""phase":"Succeeded""#), "{msg}");
        assert_eq!(Report::parse(&msg).unwrap(), ok);
    }
}
