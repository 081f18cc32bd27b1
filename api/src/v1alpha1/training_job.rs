//! TrainingJob: fit a model with mizzen-train as Kubernetes Jobs, search hyperparameters, publish, deploy.

use super::common::{Condition, ContainerSpec, DataFormat, DataUri, OutputUri};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Train a model with the Rust trainer as a Kubernetes Job, optionally searching hyperparameters over
/// parallel pods, publish it to the model registry, and optionally deploy it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "mizzen.dev",
    version = "v1alpha1",
    kind = "TrainingJob",
    namespaced,
    status = "TrainingJobStatus",
    shortname = "tjob",
    category = "mizzen",
    cel,
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase", description = "Pending, Running, Succeeded, Failed or Suspended"),
    printcolumn(name = "Metric", type_ = "string", json_path = ".status.objective.metric", description = "The objective metric"),
    printcolumn(name = "Value", type_ = "number", json_path = ".status.objective.value", description = "The objective metric's value on the holdout set"),
    printcolumn(name = "Model", type_ = "string", json_path = ".status.model.uri", description = "Where the published model is"),
    printcolumn(name = "Trials", type_ = "string", json_path = ".status.trials.summary", priority = 1, description = "Succeeded/failed/total trials"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Succeeded\")].reason", priority = 1, description = "Why the run is where it is: ModelTrained, a failure reason, or what it waits for"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 52")
        .message("metadata.name must be a DNS label of at most 52 characters that starts with a letter: it names the Job and its pods"),
    validation = Rule::new("!has(self.spec.task) || self.spec.algorithm == 'mlp' || (self.spec.task == 'regression') == (self.spec.algorithm == 'linearRegression')")
        .message("task must suit the algorithm: logisticRegression does classification and linearRegression regression; only mlp does either"),
    validation = Rule::new("!has(self.spec.search) || (self.spec.algorithm == 'mlp' && !has(self.spec.task)) || self.spec.search.objective.metric in ((has(self.spec.task) ? self.spec.task == 'regression' : self.spec.algorithm == 'linearRegression') ? ['rmse', 'mae', 'r2'] : ['accuracy', 'precision', 'recall', 'f1', 'logLoss', 'rocAuc'])")
        .message("search.objective.metric must suit the task: rmse, mae or r2 for regression (linearRegression, or mlp with task regression); accuracy, precision, recall, f1, logLoss or rocAuc for classification (logisticRegression, or mlp with task classification); any for mlp without a task, which follows the label"),
    validation = Rule::new("!has(self.spec.deploy) || (self.spec.algorithm == 'mlp' && !has(self.spec.task)) || self.spec.deploy.when.metric in ((has(self.spec.task) ? self.spec.task == 'regression' : self.spec.algorithm == 'linearRegression') ? ['rmse', 'mae', 'r2'] : ['accuracy', 'precision', 'recall', 'f1', 'logLoss', 'rocAuc'])")
        .message("deploy.when.metric must suit the task: rmse, mae or r2 for regression (linearRegression, or mlp with task regression); accuracy, precision, recall, f1, logLoss or rocAuc for classification (logisticRegression, or mlp with task classification); any for mlp without a task, which follows the label"),
    validation = Rule::new("self.spec.dataset == oldSelf.spec.dataset && self.spec.algorithm == oldSelf.spec.algorithm && has(self.spec.task) == has(oldSelf.spec.task) && (!has(self.spec.task) || self.spec.task == oldSelf.spec.task) && self.spec.hyperparameters == oldSelf.spec.hyperparameters && has(self.spec.search) == has(oldSelf.spec.search) && (!has(self.spec.search) || self.spec.search == oldSelf.spec.search) && self.spec.validation == oldSelf.spec.validation && self.spec.output == oldSelf.spec.output && self.spec.trainer == oldSelf.spec.trainer && self.spec.backoffLimit == oldSelf.spec.backoffLimit && has(self.spec.activeDeadlineSeconds) == has(oldSelf.spec.activeDeadlineSeconds) && (!has(self.spec.activeDeadlineSeconds) || self.spec.activeDeadlineSeconds == oldSelf.spec.activeDeadlineSeconds)")
        .message("a TrainingJob's spec cannot change once created, except suspend, deploy and ttlSecondsAfterFinished: create a new TrainingJob to train again"),
    validation = Rule::new("self.spec.algorithm == 'mlp' || (!has(self.spec.hyperparameters.hiddenLayers) && !has(self.spec.hyperparameters.learningRate) && !has(self.spec.hyperparameters.batchSize) && !has(self.spec.hyperparameters.patience) && !has(self.spec.hyperparameters.seed) && (self.spec.algorithm == 'logisticRegression' || (!has(self.spec.hyperparameters.maxIterations) && !has(self.spec.hyperparameters.tolerance))))")
        .message("hyperparameters must apply to the algorithm: logisticRegression takes l2, maxIterations and tolerance; linearRegression takes l2; mlp takes them all (hiddenLayers, learningRate, batchSize, patience and seed apply only to algorithm mlp)"),
    validation = Rule::new("!has(self.spec.search) || self.spec.algorithm == 'mlp' || self.spec.search.parameters.all(p, p.name in (self.spec.algorithm == 'logisticRegression' ? ['l2', 'maxIterations', 'tolerance'] : ['l2']))")
        .message("search.parameters must apply to the algorithm: logisticRegression takes l2, maxIterations and tolerance; linearRegression takes l2; mlp takes them all (hiddenLayers, learningRate, batchSize, patience and seed apply only to algorithm mlp)")
)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobSpec {
    /// The training data: exactly one of `uri` and `featureSet`, the label column and the feature columns.
    pub dataset: DatasetSpec,
    /// What to fit: `logisticRegression` (binary or multinomial classifier), `linearRegression` (ridge
    /// regressor) or `mlp` (multi-layer perceptron: a classifier, or a regressor when the label is a
    /// quantity: numeric with a non-integer value or more than 100 distinct values).
    pub algorithm: Algorithm,
    /// What the model predicts: `classification` or `regression`. Unset: logisticRegression classifies,
    /// linearRegression regresses, and mlp follows the label (a regressor when the label is a quantity:
    /// numeric with a non-integer value or more than 100 distinct values). Set it on an mlp to decide
    /// instead of the label (a regression of integer counts, a classification of many integer codes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// Hyperparameters of the algorithm. Unset ones take the trainer's defaults; a search overrides the
    /// ones it searches.
    #[serde(default)]
    pub hyperparameters: Hyperparameters,
    /// Hyperparameter search: each trial is one index of an Indexed Job, and the best trial's model is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchSpec>,
    /// How the holdout set that scores the model is split off.
    #[serde(default)]
    pub validation: ValidationSpec,
    /// Where the model goes.
    #[serde(default)]
    pub output: OutputSpec,
    /// Deploy the model to a ModelDeployment when a metric passes a threshold, which starts a blue-green rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeploySpec>,
    /// Retries of a failed trainer pod before the run (or trial) is Failed.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub backoff_limit: i32,
    /// Seconds the whole run may take before it is stopped and Failed (reason `DeadlineExceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Seconds after the run finishes before its Job and pods are deleted. The TrainingJob and its status stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Suspend the run: no pods run while true; running pods are stopped.
    #[serde(default)]
    pub suspend: bool,
    /// The trainer's container: image, resources, environment.
    #[serde(default)]
    pub trainer: ContainerSpec,
}

fn default_backoff_limit() -> i32 {
    1
}

/// The learning algorithm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Algorithm {
    /// L2-regularized logistic regression fitted with L-BFGS; binary or multinomial.
    LogisticRegression,
    /// Ridge regression.
    LinearRegression,
    /// Multi-layer perceptron with one or two hidden layers, trained with Adam and early stopping: a
    /// classifier, or a regressor when the label is a quantity (numeric with a non-integer value or more than
    /// 100 distinct values).
    Mlp,
}

/// What a model predicts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Task {
    /// Classes: the `label` and `probabilities` outputs.
    Classification,
    /// A quantity: the `variable` output.
    Regression,
}

/// Where the training data comes from: exactly one of `uri` and `featureSet`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.uri) != has(self.featureSet)").message("set exactly one of dataset.uri and dataset.featureSet"))]
#[x_kube(validation = Rule::new("!has(self.features) || !(self.label in self.features)").message("dataset.label must not also be one of dataset.features"))]
pub struct DatasetSpec {
    /// A CSV or Parquet file with a header, holding the label and the features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<DataUri>,
    /// File format. Default: from the file extension (`.csv`, `.parquet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DataFormat>,
    /// Read features from a FeatureSet, joined point-in-time onto a labels file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_set: Option<FeatureSetSource>,
    /// The column to predict.
    #[schemars(length(min = 1, max = 256))]
    pub label: String,
    /// The feature columns, in the order the model's input takes them. Default: every other column
    /// (except the entity key and timestamp when reading a FeatureSet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The API server refuses a repeated name.
    #[schemars(length(min = 1, max = 4096), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub features: Option<Vec<String>>,
    /// Feature columns to one-hot encode. A column whose values are all words is one-hot encoded
    /// anyway; list a column here when its values look like numbers but are categories (zip codes,
    /// product ids). A column mixing numbers and words is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4096), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub categorical: Vec<String>,
}

/// Features from a FeatureSet, joined point-in-time onto labelled entity rows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureSetSource {
    /// Name of the FeatureSet, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// A CSV or Parquet file of entity keys, event timestamps and the label. Each row gets the latest feature
    /// values at or before its timestamp (and within the FeatureSet's ttl), so no future data leaks in.
    pub labels_uri: DataUri,
    /// The timestamp column of the labels file.
    #[serde(default = "default_timestamp_column")]
    #[schemars(length(min = 1, max = 256))]
    pub timestamp_column: String,
}

pub(crate) fn default_timestamp_column() -> String {
    "event_timestamp".into()
}

/// Hyperparameters. Each applies to the algorithms named in its description.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hyperparameters {
    /// L2 regularization strength (all algorithms). Default: 1.0 for logisticRegression and
    /// linearRegression, 0.0001 for mlp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub l2: Option<f64>,
    /// Most optimizer iterations (L-BFGS steps, or epochs for mlp). Default: 100 (200 for mlp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_iterations: Option<i32>,
    /// Stop when the loss improves by less than this. Default: 0.0001.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("tolerance must be positive"))]
    pub tolerance: Option<f64>,
    /// Sizes of the hidden layers (mlp only): one or two layers. Default: [100].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(validation = Rule::new("self.all(n, n >= 1 && n <= 4096)").message("each hidden layer has 1 to 4096 units"))]
    pub hidden_layers: Option<Vec<i32>>,
    /// Adam learning rate (mlp only). Default: 0.001.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("learningRate must be in (0, 1]"))]
    pub learning_rate: Option<f64>,
    /// Minibatch size (mlp only). Default: 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub batch_size: Option<i32>,
    /// Epochs without improvement on the internal validation split before stopping (mlp only). Default: 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub patience: Option<i32>,
    /// Seed for weight initialization and shuffling; the same seed gives the same model. Default: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub seed: Option<i64>,
}

/// Hyperparameter search.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.parallelism <= self.maxTrials").message("search.parallelism must not exceed search.maxTrials"))]
#[x_kube(validation = Rule::new("self.algorithm != 'grid' || self.parameters.all(p, has(p.categorical) || has(p.steps))").message("a grid search needs steps on every uniform and logUniform parameter"))]
pub struct SearchSpec {
    /// `grid` tries every combination (in order, up to maxTrials); `random` samples maxTrials points.
    #[serde(default = "default_search_algorithm")]
    pub algorithm: SearchAlgorithm,
    /// The parameters to search.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("search.parameters must not name a parameter twice"))]
    pub parameters: Vec<SearchParameter>,
    /// What the best trial is chosen by.
    pub objective: Objective,
    /// Most trials to run.
    #[serde(default = "default_max_trials")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_trials: i32,
    /// Trials running at once, as pods spread over the cluster.
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 100))]
    pub parallelism: i32,
    /// Seed of the random search.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub seed: i64,
}

fn default_search_algorithm() -> SearchAlgorithm {
    SearchAlgorithm::Random
}
fn default_max_trials() -> i32 {
    10
}
fn default_parallelism() -> i32 {
    2
}

/// Search algorithm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SearchAlgorithm {
    Grid,
    Random,
}

/// One searched hyperparameter: exactly one of `uniform`, `logUniform` and `categorical`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.uniform) ? 1 : 0) + (has(self.logUniform) ? 1 : 0) + (has(self.categorical) ? 1 : 0) == 1").message("a search parameter takes exactly one of uniform, logUniform and categorical"))]
#[x_kube(validation = Rule::new("!has(self.steps) || !has(self.categorical)").message("steps applies to uniform and logUniform parameters only"))]
#[x_kube(validation = Rule::new("!(self.name in ['hiddenLayers']) || has(self.categorical)").message("hiddenLayers is searched with categorical values such as \"64\" or \"64,32\""))]
#[x_kube(validation = Rule::new("!(self.name in ['maxIterations', 'batchSize', 'patience', 'seed']) || !has(self.categorical) || self.categorical.all(v, v.matches('^[0-9]+$'))").message("integer parameters take integer categorical values"))]
pub struct SearchParameter {
    /// The hyperparameter: one of l2, maxIterations, tolerance, hiddenLayers, learningRate, batchSize,
    /// patience and seed.
    #[x_kube(validation = Rule::new("self in ['l2', 'maxIterations', 'tolerance', 'hiddenLayers', 'learningRate', 'batchSize', 'patience', 'seed']").message("search parameter name must be one of l2, maxIterations, tolerance, hiddenLayers, learningRate, batchSize, patience, seed"))]
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// Values drawn evenly between min and max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uniform: Option<Range>,
    /// Values drawn evenly between log(min) and log(max); min must be positive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.min > 0.0").message("logUniform.min must be positive"))]
    pub log_uniform: Option<Range>,
    /// A list of values, written as strings (`"0.1"`, `"64,32"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 64)))]
    pub categorical: Option<Vec<String>>,
    /// Number of evenly spaced points a grid search takes from a uniform or logUniform range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 100))]
    pub steps: Option<i32>,
}

/// A closed numeric range.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.min < self.max").message("min must be less than max"))]
pub struct Range {
    /// Lower bound.
    pub min: f64,
    /// Upper bound.
    pub max: f64,
}

/// A metric and whether higher or lower is better.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Objective {
    /// The metric, measured on the holdout set.
    pub metric: Metric,
    /// `maximize` or `minimize`. Default: what suits the metric (minimize for logLoss, rmse and mae).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
}

/// A model-quality metric on the holdout set.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Metric {
    Accuracy,
    /// Macro-averaged precision.
    Precision,
    /// Macro-averaged recall.
    Recall,
    /// Macro-averaged F1.
    F1,
    LogLoss,
    /// ROC AUC (binary classification only).
    RocAuc,
    Rmse,
    Mae,
    R2,
}

impl Metric {
    /// Whether a lower value is better.
    pub fn lower_is_better(self) -> bool {
        matches!(self, Metric::LogLoss | Metric::Rmse | Metric::Mae)
    }
}

/// Optimization direction.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Goal {
    Maximize,
    Minimize,
}

/// The holdout split.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValidationSpec {
    /// Fraction of rows held out to score the model, in (0, 0.9].
    #[serde(default = "default_holdout")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 0.9").message("validation.holdoutFraction must be in (0, 0.9]"))]
    pub holdout_fraction: f64,
    /// Seed of the split; the same seed gives the same split.
    #[serde(default = "default_seed")]
    #[schemars(range(min = 0))]
    pub seed: i64,
}

impl Default for ValidationSpec {
    fn default() -> Self {
        Self { holdout_fraction: default_holdout(), seed: default_seed() }
    }
}

fn default_holdout() -> f64 {
    0.2
}
fn default_seed() -> i64 {
    42
}

/// Where the trained model goes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// Where the ONNX file and its metadata go: `registry://NAME` or `registry://NAME@ALIAS` (the
    /// in-cluster registry), or a directory URI such as `s3://BUCKET/PREFIX/`. Default:
    /// `registry://TRAININGJOB-NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<OutputUri>,
}

/// Deploy the trained model when it is good enough.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploySpec {
    /// Name of the ModelDeployment, in the same namespace, whose `spec.model.uri` is set to the new model.
    #[schemars(length(min = 1, max = 52))]
    pub model_deployment: String,
    /// The gate: deploy only if this metric passes the threshold.
    pub when: DeployGate,
}

/// A metric threshold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployGate {
    /// The metric, measured on the holdout set.
    pub metric: Metric,
    /// Deploy when the metric is at least this (or at most this, for logLoss, rmse and mae).
    pub threshold: f64,
}

/// Derived summary of a TrainingJob; conditions are the API.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TrainingJobPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Suspended,
}

/// Observed state of a TrainingJob, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Derived summary: Pending, Running, Succeeded, Failed or Suspended.
    #[serde(default)]
    pub phase: TrainingJobPhase,
    /// `Created`, `Running`, `Succeeded`, `Failed`, `Suspended` and `Deployed`, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The Job that runs the trainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// When the first trainer pod started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When the run finished, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The objective metric and its value for the published model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<ObjectiveValue>,
    /// Every holdout metric of the published model.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// The hyperparameters of the published model, as strings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub best_hyperparameters: BTreeMap<String, String>,
    /// Trial counts of a search (or of the single run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trials: Option<TrialCounts>,
    /// The published model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PublishedModel>,
}

/// A metric's name and value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectiveValue {
    /// Metric name.
    pub metric: Metric,
    /// Its value on the holdout set.
    pub value: f64,
}

/// Trial counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrialCounts {
    /// Trials planned.
    pub total: i32,
    /// Trials that finished and reported metrics.
    pub succeeded: i32,
    /// Trials that failed.
    pub failed: i32,
    /// Trials running now.
    pub running: i32,
    /// `succeeded/failed/total`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// A published model.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedModel {
    /// URI a ModelDeployment can serve it from, for example `registry://iris/3`.
    pub uri: String,
    /// Registry version, when published to the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// sha256 of the ONNX file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// sha256 of the training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_sha256: Option<String>,
    /// The registry run that logged it (registry outputs): `runs:/RUN_ID/model` in MLflow's terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}
