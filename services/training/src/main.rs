//! mizzen-train: trains one model (or one trial of a search) and reports the result as JSON on stdout and
//! in the container's termination message, which the operator copies into the TrainingJob's status.
//!
//! In a pod the operator passes the configuration in `MIZZEN_TRAIN_CONFIG` and the trial index in
//! `JOB_COMPLETION_INDEX`. Locally, pass `--config FILE` or the flags:
//!
//! ```text
//! mizzen-train --data iris.csv --label species --algorithm logisticRegression --output ./model/
//! ```
//!
//! Exit codes: 0 trained; 2 bad data or configuration (retrying cannot help); 1 anything else.

use bytes::Bytes;
use clap::Parser;
use mizzen_common::registry::Client;
use mizzen_common::telemetry::{self, LogFormat};
use mizzen_common::training::{CONFIG_ENV, DatasetConfig, Outcome, Report, TrainConfig};
use mizzen_train::train::{self, TrainError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "mizzen-train",
    version,
    about = "Train a model on a CSV or Parquet table and export it to ONNX"
)]
struct Args {
    /// The run's configuration as a JSON file (what the operator passes in MIZZEN_TRAIN_CONFIG).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["data", "label", "algorithm", "output", "experiment"])]
    config: Option<PathBuf>,
    /// Which trial of a search to run (in a Job: the completion index).
    #[arg(long, env = "JOB_COMPLETION_INDEX", value_name = "N")]
    trial: Option<u32>,
    /// Training data: a CSV or Parquet file (path or file://, s3://, gs://, az://, http(s):// URI).
    #[arg(long, value_name = "URI")]
    data: Option<String>,
    /// `csv` or `parquet` (default: from the extension).
    #[arg(long)]
    format: Option<String>,
    /// The label column.
    #[arg(long)]
    label: Option<String>,
    /// Feature columns in model-input order, comma-separated (default: every other column).
    #[arg(long, value_delimiter = ',')]
    features: Option<Vec<String>>,
    /// Columns to one-hot encode even when they look numeric, comma-separated.
    #[arg(long, value_delimiter = ',')]
    categorical: Vec<String>,
    /// logisticRegression, linearRegression or mlp.
    #[arg(long)]
    algorithm: Option<String>,
    /// classification or regression (mlp only; default: as the label says).
    #[arg(long)]
    task: Option<String>,
    /// A hyperparameter, NAME=VALUE (repeatable): l2, maxIterations, tolerance, hiddenLayers (64,32),
    /// learningRate, batchSize, patience, seed.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Fraction of rows held out for scoring.
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// Seed of the holdout split.
    #[arg(long, default_value_t = 42)]
    split_seed: u64,
    /// Where the model and its metadata go: a directory (path or URI), or registry://NAME[@ALIAS] (a run
    /// in the registry, and a new version of NAME with ALIAS moved to it).
    #[arg(long, value_name = "DIR")]
    output: Option<String>,
    /// The registry experiment runs are logged under (registry outputs; default: the model's name).
    #[arg(long)]
    experiment: Option<String>,
    /// The model registry (mizzen-registry or an MLflow tracking server, http://HOST:PORT).
    #[arg(long, env = "MIZZEN_REGISTRY_URL", value_name = "URL")]
    registry_url: Option<String>,
    /// The registry's bearer token for writes, when it asks for one.
    #[arg(long, env = "MIZZEN_REGISTRY_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    registry_token: Option<String>,
    /// Also write the holdout rows' 0-based file row numbers here, one per line (to compare with other tools
    /// on the same split).
    #[arg(long, value_name = "FILE")]
    holdout_rows: Option<PathBuf>,
    /// Also write the model's predictions on the holdout rows here, one row per line in the order of
    /// --holdout-rows: the class probabilities (comma-separated) or the predicted value.
    #[arg(long, value_name = "FILE")]
    holdout_predictions: Option<PathBuf>,
    /// Where the report goes as the container's termination message. Default: /dev/termination-log when
    /// it exists (in a Kubernetes container).
    #[arg(long, env = "MIZZEN_TERMINATION_LOG", value_name = "FILE")]
    termination_log: Option<PathBuf>,
    #[arg(long, env = "MIZZEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_filter: String,
}

fn config_of(args: &Args) -> Result<TrainConfig, TrainError> {
    let bad = |message: String| TrainError { reason: "InvalidConfig", message, permanent: true };
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        return serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", path.display())));
    }
    if args.data.is_none()
        && let Ok(text) = std::env::var(CONFIG_ENV)
    {
        return serde_json::from_str(&text).map_err(|e| bad(format!("{CONFIG_ENV}: {e}")));
    }
    let need = |v: &Option<String>, flag: &str| {
        v.clone().ok_or_else(|| bad(format!("--{flag} is required (or pass --config, or set {CONFIG_ENV})")))
    };
    let mut hyperparameters = BTreeMap::new();
    for kv in &args.set {
        let (k, v) = kv.split_once('=').ok_or_else(|| bad(format!("--set {kv}: expected NAME=VALUE")))?;
        let name = k.trim().parse().map_err(|message| TrainError {
            reason: "InvalidHyperparameter",
            message: format!("invalid hyperparameter: {message}"),
            permanent: true,
        })?;
        hyperparameters.insert(name, v.trim().to_string());
    }
    Ok(TrainConfig {
        dataset: DatasetConfig {
            uri: need(&args.data, "data")?,
            format: args.format.clone(),
            label: need(&args.label, "label")?,
            features: args.features.clone(),
            categorical: args.categorical.clone(),
            feature_set: None,
        },
        algorithm: need(&args.algorithm, "algorithm")?.parse().map_err(bad)?,
        task: args.task.as_deref().map(str::parse).transpose().map_err(bad)?,
        hyperparameters,
        trials: Vec::new(),
        holdout_fraction: args.holdout,
        split_seed: args.split_seed,
        output_uri: need(&args.output, "output")?,
        experiment: args.experiment.clone(),
        requested_by: None,
    })
}

/// The trial index counts only for a search (a single run is index 0 of a one-index Job).
fn effective_trial(config: &TrainConfig, index: Option<u32>) -> Option<u32> {
    if config.trials.is_empty() { None } else { index.or(Some(0)) }
}

async fn run(args: &Args, config: TrainConfig) -> Result<mizzen_common::training::Trained, TrainError> {
    let trial = effective_trial(&config, args.trial);
    tracing::info!(data = %config.dataset.uri, algorithm = %config.algorithm, ?trial, "training");
    // The holdout files are written with the model, all or nothing.
    let mut extra: Vec<(String, train::Extra)> = Vec::new();
    let file_uri = |path: &PathBuf| {
        std::path::absolute(path).map(|p| format!("file://{}", p.display())).map_err(|e| TrainError {
            reason: "InvalidConfig",
            message: format!("{}: {e}", path.display()),
            permanent: true,
        })
    };
    if let Some(path) = &args.holdout_rows {
        extra.push((file_uri(path)?, holdout_rows));
    }
    if let Some(path) = &args.holdout_predictions {
        extra.push((file_uri(path)?, holdout_predictions));
    }
    let registry = args.registry_url.as_deref().map(|url| Client::new(url, args.registry_token.clone()));
    let (model, trained) = train::run(&config, trial, &extra, registry.as_ref()).await?;
    tracing::info!(
        model = %trained.model_uri,
        rows = model.rows,
        iterations = model.iterations,
        converged = model.converged,
        fit_seconds = model.fit_seconds,
        metrics = ?trained.metrics,
        "trained"
    );
    Ok(trained)
}

/// The holdout rows' 0-based row numbers in the file, one per line.
fn holdout_rows(model: &train::Model) -> Bytes {
    model.holdout_rows.iter().map(|r| format!("{r}\n")).collect::<String>().into()
}

/// The model's predictions on the holdout rows, one row per line: the class probabilities or the value.
fn holdout_predictions(model: &train::Model) -> Bytes {
    let width = model.holdout_predictions.len() / model.holdout_rows.len().max(1);
    let lines = model
        .holdout_predictions
        .chunks(width.max(1))
        .map(|row| row.iter().map(|v| format!("{v:e}")).collect::<Vec<_>>().join(",") + "\n");
    lines.collect::<String>().into()
}

#[tokio::main]
async fn main() -> ExitCode {
    mizzen_common::tls::install_crypto_provider();
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // A bad command line is a failed run like any other: a report (and termination message) too.
            eprintln!("{e}");
            let message = e.to_string();
            let first = message.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            let outcome = Outcome::Failed { reason: "InvalidConfig".into(), message: first.to_string() };
            let report = Report { trial: None, outcome }.to_termination_message();
            println!("{report}");
            let path = std::env::var_os("MIZZEN_TERMINATION_LOG").map(PathBuf::from);
            let default = std::path::Path::new("/dev/termination-log");
            if let Some(path) = path.as_deref().or(default.exists().then_some(default)) {
                let _ = std::fs::write(path, &report);
            }
            return ExitCode::from(2);
        }
    };
    if let Err(e) = telemetry::init(args.log_format, &args.log_filter) {
        eprintln!("mizzen-train: {e}");
        return ExitCode::from(2);
    }
    // The report names the trial the run trained (none for a single run), decided once.
    let config = config_of(&args);
    let trial = config.as_ref().ok().and_then(|c| effective_trial(c, args.trial));
    let result = match config {
        Ok(config) => run(&args, config).await,
        Err(e) => Err(e),
    };
    let (outcome, code) = match result {
        Ok(t) => (Outcome::Succeeded(t), 0),
        Err(e) => {
            tracing::error!(reason = e.reason, "{}", e.message);
            let code = if e.permanent { 2 } else { 1 };
            (Outcome::Failed { reason: e.reason.to_string(), message: e.message }, code)
        }
    };
    let report = Report { trial, outcome };
    let message = report.to_termination_message();
    println!("{message}");
    let default = std::path::Path::new("/dev/termination-log");
    let path = args.termination_log.as_deref().or(default.exists().then_some(default));
    if let Some(path) = path
        && let Err(e) = std::fs::write(path, &message)
    {
        tracing::warn!(path = %path.display(), %e, "cannot write the termination message");
    }
    ExitCode::from(code)
}
