//! One training run, end to end: read and check the data, split the holdout, fit the preprocessing and
//! the model on the training rows, score the holdout, export ONNX, and write the model and its metadata.

use crate::data::{self, DataError, Dataset, Labels, Task};
use crate::features::{self, FeatureStats};
use crate::learn::{self, Algorithm, FitError, Params, Target};
use crate::network::Network;
use crate::onnx::{self, ModelDoc};
use crate::prep::{Classes, Preprocessing};
use crate::{memory, metrics, split};
use bytes::Bytes;
use mizzen_common::registry::{self, Client, RegistryError};
use mizzen_common::training::{Hyperparameters, ModelTask, TrainConfig, Trained};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Instant;

/// Why a run failed: a CamelCase reason for the TrainingJob's condition and a message to act on.
/// `permanent` failures (bad data, bad configuration) are not worth retrying.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TrainError {
    pub reason: &'static str,
    pub message: String,
    pub permanent: bool,
}

impl TrainError {
    fn config(message: String) -> Self {
        Self { reason: "InvalidConfig", message, permanent: true }
    }
}

impl From<DataError> for TrainError {
    fn from(e: DataError) -> Self {
        let permanent = !matches!(e, DataError::Unreadable(_) | DataError::Missing(_));
        Self { reason: e.reason(), message: e.to_string(), permanent }
    }
}

impl From<FitError> for TrainError {
    fn from(e: FitError) -> Self {
        Self { reason: e.reason(), message: e.to_string(), permanent: true }
    }
}

/// A trained, scored model, before it is written.
#[derive(Clone, Debug)]
pub struct Model {
    pub algorithm: Algorithm,
    pub prep: Preprocessing,
    pub network: Network,
    pub classes: Option<Classes>,
    pub metrics: BTreeMap<String, f64>,
    pub hyperparameters: BTreeMap<String, String>,
    pub stats: Vec<FeatureStats>,
    pub iterations: u32,
    pub converged: bool,
    pub final_loss: f64,
    pub rows: usize,
    /// For each holdout row, its 0-based row in the file.
    pub holdout_rows: Vec<u32>,
    /// The model's predictions on the holdout rows (probabilities row-major, or values).
    pub holdout_predictions: Vec<f64>,
    pub fit_seconds: f64,
    /// The trainer's peak resident memory by the end of the fit (Linux), in bytes.
    pub peak_memory_bytes: Option<u64>,
    pub dataset_sha256: String,
    pub dataset_bytes: u64,
}

/// The hyperparameters of trial `trial`: the base ones overridden by the trial's.
pub fn hyperparameters(config: &TrainConfig, trial: Option<u32>) -> Result<Hyperparameters, TrainError> {
    let mut h = config.hyperparameters.clone();
    if let Some(i) = trial {
        let t = config.trials.get(i as usize).ok_or_else(|| {
            TrainError::config(format!(
                "trial {i} does not exist: the search has {} trials",
                config.trials.len()
            ))
        })?;
        h.extend(t.clone());
    }
    // Checked before any data is read: what does not apply, and values that cannot be used; the rest of
    // the configuration the data does not decide.
    learn::check_applies(config.algorithm, &h)?;
    Params::from_hyperparameters(&h)?;
    split::check_fraction(config.holdout_fraction)?;
    task(config.algorithm, config.task)?;
    data::Format::pick(config.dataset.format.as_deref(), &config.dataset.uri)?;
    if let Some(features) = &config.dataset.features
        && let Some(c) = config.dataset.categorical.iter().find(|c| !features.contains(c))
    {
        return Err(TrainError::config(format!(
            "dataset.categorical names {c:?}, which is not among dataset.features"
        )));
    }
    Ok(h)
}

pub fn algorithm(config: &TrainConfig) -> Result<Algorithm, TrainError> {
    Ok(config.algorithm)
}

/// How the label is read: a classifier's classes, a regressor's values, or (mlp, which does both, unless
/// the configuration says which) as the label says ([`data::MAX_INFERRED_CLASSES`]). A task the algorithm
/// does not do is a configuration mistake.
pub fn task(algorithm: Algorithm, task: Option<ModelTask>) -> Result<Task, TrainError> {
    match (ModelTask::of(algorithm), task) {
        (Some(does), Some(asked)) if does != asked => Err(TrainError::config(format!(
            "task {} does not suit {algorithm}, which does {}; mlp does either",
            asked.name(),
            does.name()
        ))),
        (Some(ModelTask::Regression), _) | (None, Some(ModelTask::Regression)) => Ok(Task::Regression),
        (Some(ModelTask::Classification), _) | (None, Some(ModelTask::Classification)) => {
            Ok(Task::Classification)
        }
        (None, None) => Ok(Task::Either),
    }
}

/// Where a model's inputs come from when it was trained from a FeatureSet: the FeatureSet and its features
/// in the model's input order, recorded with the model (registry tags, ONNX metadata) so serving can fetch
/// the same features.
fn feature_set_tags(config: &TrainConfig) -> Vec<(String, String)> {
    let Some(join) = &config.dataset.feature_set else { return Vec::new() };
    vec![
        ("mizzen.featureset".to_string(), join.name.clone()),
        ("mizzen.featureset.features".to_string(), join.features.join(",")),
    ]
}

/// Reads the dataset the configuration names.
pub async fn load(config: &TrainConfig) -> Result<Dataset, TrainError> {
    let algorithm = algorithm(config)?;
    let label = &config.dataset.label;
    if config.dataset.features.as_ref().is_some_and(|f| f.contains(label)) {
        return Err(TrainError::config(format!(
            "the label {label:?} is also listed as a feature: a model must not see the answer it is trained to \
             give; remove it from the features"
        )));
    }
    let spec = data::Spec {
        label: config.dataset.label.clone(),
        features: config.dataset.features.clone(),
        categorical: config.dataset.categorical.clone(),
        task: task(algorithm, config.task)?,
    };
    let retries = data::read_retries()?;
    if let Some(join) = &config.dataset.feature_set {
        return Ok(
            data::load_joined(&config.dataset.uri, config.dataset.format.as_deref(), join, &spec).await?
        );
    }
    Ok(data::load(&config.dataset.uri, config.dataset.format.as_deref(), &spec, retries).await?)
}

/// Splits, preprocesses, fits and scores. Consumes the dataset (its matrix becomes the design matrix in
/// place when every feature is numeric).
pub fn train(
    mut ds: Dataset,
    config: &TrainConfig,
    hyperparameters: &Hyperparameters,
    limit: Option<memory::Limit>,
) -> Result<Model, TrainError> {
    let algorithm = algorithm(config)?;
    let params = Params::from_hyperparameters(hyperparameters)?;
    let rows = ds.x.rows;
    // Timed from here: split, preprocessing and fit (what a scikit-learn Pipeline's fit covers).
    let start = Instant::now();
    let (holdout, origin) = split::shuffle_split(&mut ds, config.holdout_fraction, config.split_seed)?;
    let (prep, stats) = features::fit(&ds, holdout)?;
    if let Some(limit) = limit {
        let outputs = match &ds.labels {
            Labels::Classes { classes, .. } => classes.len(),
            Labels::Values(_) => 1,
        };
        check_memory(limit, rows, &prep, algorithm, &params, outputs)?;
    }
    let x = features::design(&mut ds, &prep);
    let train_x = x.rows_slice(holdout, rows);
    let test_x = x.rows_slice(0, holdout);
    let fit_seconds;
    let (fit, classes, metrics, predictions) = match &ds.labels {
        Labels::Classes { y, classes } => {
            let target = Target::Classes { y: &y[holdout..], n_classes: classes.len() };
            let fit = learn::fit(algorithm, train_x, target, &params)?;
            fit_seconds = start.elapsed().as_secs_f64();
            let proba = fit.network.predict(test_x);
            let m = metrics::classification(&y[..holdout], &proba, classes.len());
            (fit, Some(classes.clone()), m, proba)
        }
        Labels::Values(y) => {
            let fit = learn::fit(algorithm, train_x, Target::Values(&y[holdout..]), &params)?;
            fit_seconds = start.elapsed().as_secs_f64();
            let pred = fit.network.predict(test_x);
            let m = metrics::regression(&y[..holdout], &pred);
            (fit, None, m, pred)
        }
    };
    let mut holdout_rows = origin;
    holdout_rows.truncate(holdout);
    let peak_memory_bytes = memory::peak_bytes();
    Ok(Model {
        algorithm,
        prep,
        network: fit.network,
        classes,
        metrics,
        hyperparameters: learn::resolved(algorithm, &params),
        stats,
        iterations: fit.iterations,
        converged: fit.converged,
        final_loss: fit.final_loss,
        rows,
        holdout_rows,
        holdout_predictions: predictions,
        fit_seconds,
        peak_memory_bytes,
        dataset_sha256: ds.sha256.clone(),
        dataset_bytes: ds.bytes,
    })
}

/// Refuses a fit whose design matrix and learner state (estimated) would take the trainer's resident
/// memory past `limit`, before allocating them.
fn check_memory(
    limit: memory::Limit,
    rows: usize,
    prep: &Preprocessing,
    algorithm: Algorithm,
    params: &Params,
    outputs: usize,
) -> Result<(), TrainError> {
    let need = memory::estimate(rows, prep, algorithm, params, outputs);
    let used = memory::resident_bytes().unwrap_or(0);
    if used.saturating_add(need) <= limit.bytes {
        return Ok(());
    }
    let levels: usize = prep.categorical.iter().map(|c| c.levels.len()).sum();
    Err(TrainError {
        reason: "InvalidData",
        message: format!(
            "this fit needs about {} of memory ({} for the design matrix of {rows} rows x {} columns \
             ({levels} of them one-hot levels) and the {algorithm} state, {} already holding the table), more than \
             the {} of {}; give the trainer more memory (the TrainingJob's resources, or {}), or use fewer \
             features or levels, or a smaller network",
            memory::human(used.saturating_add(need)),
            memory::human(need),
            prep.width(),
            memory::human(used),
            memory::human(limit.bytes),
            limit.source,
            memory::LIMIT_ENV,
        ),
        permanent: true,
    })
}

/// The directory a run writes to: the output URI, under `trials/I/` for a search's trial. A plain path
/// becomes a `file://` URI.
pub fn output_dir(config: &TrainConfig, trial: Option<u32>) -> Result<String, TrainError> {
    let base = config.output_uri.trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_string()
    } else {
        let path = std::path::absolute(base)
            .map_err(|e| TrainError::config(format!("output {}: {e}", config.output_uri)))?;
        format!("file://{}", path.display())
    };
    Ok(match trial {
        Some(i) => format!("{base}/trials/{i}"),
        None => base,
    })
}

/// The model's metadata, written next to it as `model.json`.
pub fn metadata(
    model: &Model,
    config: &TrainConfig,
    trial: Option<u32>,
    model_sha256: &str,
) -> serde_json::Value {
    let numeric: Vec<&str> = model.prep.numeric.iter().map(|f| f.name.as_str()).collect();
    let categorical: Vec<&str> = model.prep.categorical.iter().map(|f| f.name.as_str()).collect();
    let mut inputs = serde_json::Map::new();
    if !numeric.is_empty() {
        inputs.insert(
            "input".into(),
            json!({"datatype": "FP32", "shape": [-1, numeric.len()], "features": numeric}),
        );
    }
    if !categorical.is_empty() {
        inputs.insert(
            "categories".into(),
            json!({"datatype": "BYTES", "shape": [-1, categorical.len()], "features": categorical}),
        );
    }
    let outputs = match &model.classes {
        Some(_) => json!(["label", "probabilities"]),
        None => json!(["variable"]),
    };
    json!({
        "format": "onnx",
        "producer": format!("mizzen-train {}", env!("CARGO_PKG_VERSION")),
        "algorithm": model.algorithm.name(),
        "task": if model.classes.is_some() { "classification" } else { "regression" },
        "label": config.dataset.label,
        "inputs": inputs,
        "outputs": outputs,
        "classes": model.classes,
        "hyperparameters": model.hyperparameters,
        "metrics": model.metrics,
        "trial": trial,
        "modelSha256": model_sha256,
        "dataset": {
            "uri": config.dataset.uri,
            "sha256": model.dataset_sha256,
            "bytes": model.dataset_bytes,
            "rows": model.rows,
            "trainRows": model.rows - model.holdout_rows.len(),
            "holdoutRows": model.holdout_rows.len(),
            "holdoutFraction": config.holdout_fraction,
            "splitSeed": config.split_seed,
        },
        "preprocessing": model.prep,
        "featureStats": model.stats,
        "training": {
            "iterations": model.iterations,
            "converged": model.converged,
            "finalLoss": model.final_loss,
            "fitSeconds": model.fit_seconds,
            "peakMemoryBytes": model.peak_memory_bytes,
        },
    })
}

/// A storage failure while writing the outputs: `OutputUnwritable` (worth a retry) or `OutputUnsupported`.
fn unwritable(e: mizzen_common::storage::StorageError) -> TrainError {
    let transient = matches!(e, mizzen_common::storage::StorageError::Write { .. });
    TrainError {
        reason: if transient { "OutputUnwritable" } else { "OutputUnsupported" },
        message: e.to_string(),
        permanent: !transient,
    }
}

/// Checks, before any data is read, that the run's output directory (and the directories of `extra`
/// output files) can be written, so a run that could not publish fails at once.
pub async fn check_outputs(
    config: &TrainConfig,
    trial: Option<u32>,
    extra: &[String],
    registry: Option<&Client>,
) -> Result<(), TrainError> {
    use mizzen_common::storage::check_writable;
    for uri in extra {
        let dir = uri.rsplit_once('/').map_or(uri.as_str(), |(d, _)| d);
        check_writable(dir).await.map_err(unwritable)?;
    }
    if registry::parse_output(&config.output_uri).is_some() {
        // Reachable, and the experiment exists or can be made, before any data is read.
        let client = registry_client(registry)?;
        client.experiment(&experiment(config)).await.map_err(registry_failure)?;
        return Ok(());
    }
    check_writable(&output_dir(config, trial)?).await.map_err(unwritable)
}

/// The registry a registry output needs, or why there is none.
fn registry_client(registry: Option<&Client>) -> Result<&Client, TrainError> {
    registry.ok_or_else(|| {
        TrainError::config(format!(
            "a registry:// output needs the registry's address: pass --registry-url or set {}",
            registry::URL_ENV
        ))
    })
}

/// The experiment a registry output's runs go to: the configured one, else the model's name.
fn experiment(config: &TrainConfig) -> String {
    config.experiment.clone().unwrap_or_else(|| {
        registry::parse_output(&config.output_uri).map(|(name, _)| name).unwrap_or_default()
    })
}

/// A registry failure: `RegistryUnavailable` (worth a retry) or `RegistryRefused`.
fn registry_failure(e: RegistryError) -> TrainError {
    let transient = e.is_transient();
    TrainError {
        reason: if transient { "RegistryUnavailable" } else { "RegistryRefused" },
        message: e.to_string(),
        permanent: !transient,
    }
}

/// Logs the run in the registry (params, metrics, `model/model.onnx` and `model/model.json` as artifacts)
/// and, for a single run, registers the model as a new version (moving the output's alias to it). A
/// search's trials only log their runs: the operator registers the best.
async fn publish_to_registry(
    client: &Client,
    model: &Model,
    config: &TrainConfig,
    trial: Option<u32>,
    files: [(&str, Bytes); 2],
    sha: &str,
) -> Result<(String, String, Option<String>), TrainError> {
    let (name, alias) = registry::parse_output(&config.output_uri).unwrap_or_default();
    let experiment_id = client.experiment(&experiment(config)).await.map_err(registry_failure)?;
    let mut tags = vec![
        ("mizzen.dataset.uri".to_string(), config.dataset.uri.clone()),
        ("mizzen.dataset.sha256".to_string(), model.dataset_sha256.clone()),
        ("mizzen.algorithm".to_string(), model.algorithm.name().to_string()),
    ];
    if let Some(by) = &config.requested_by {
        tags.push(("mizzen.trainingjob".to_string(), by.clone()));
    }
    tags.extend(feature_set_tags(config));
    let run_name = match trial {
        Some(i) => format!("trial-{i}"),
        None => "train".to_string(),
    };
    let mut run_tags = tags.clone();
    run_tags.push(("mlflow.runName".to_string(), run_name.clone()));
    if let Some(i) = trial {
        run_tags.push(("mizzen.trial".to_string(), i.to_string()));
    }
    let run = client.create_run(&experiment_id, &run_name, &run_tags).await.map_err(registry_failure)?;
    let params: Vec<(String, String)> =
        model.hyperparameters.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let metrics: Vec<(String, f64)> = model.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let logged = async {
        client.log_batch(&run.id, &params, &metrics).await?;
        for (file, bytes) in files {
            client.upload(&run.artifact_uri, &format!("model/{file}"), bytes).await?;
        }
        client.end_run(&run.id, "FINISHED").await
    };
    if let Err(e) = logged.await {
        // Best effort: the run shows as failed rather than running forever.
        let _ = client.end_run(&run.id, "FAILED").await;
        return Err(registry_failure(e));
    }
    let source = format!("{}/model", run.artifact_uri);
    if trial.is_some() {
        return Ok((format!("{source}/model.onnx"), run.id, None));
    }
    tags.push(("mizzen.model.sha256".to_string(), sha.to_string()));
    let version =
        client.register(&name, &source, &run.id, &tags, alias.as_deref()).await.map_err(registry_failure)?;
    Ok((format!("registry://{name}/{version}"), run.id, Some(version)))
}

/// Writes every `(uri, bytes)` or none: each goes to a temporary name next to it first, and only when all
/// are written are they renamed into place; on any failure what was written is deleted again.
pub async fn write_all(files: Vec<(String, Bytes)>) -> Result<(), TrainError> {
    use mizzen_common::storage::{delete, rename, write};
    let tmp = |uri: &str| match uri.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/.{name}.tmp-{}", std::process::id()),
        None => format!("{uri}.tmp-{}", std::process::id()),
    };
    let mut written: Vec<String> = Vec::new();
    let mut result = Ok(());
    for (uri, bytes) in &files {
        let t = tmp(uri);
        if let Err(e) = write(&t, bytes.clone()).await {
            result = Err(unwritable(e));
            break;
        }
        written.push(t);
    }
    let mut placed: Vec<&str> = Vec::new();
    if result.is_ok() {
        for (uri, _) in &files {
            if let Err(e) = rename(&tmp(uri), uri).await {
                result = Err(unwritable(e));
                break;
            }
            placed.push(uri);
        }
    }
    if result.is_err() {
        for uri in written.iter().map(String::as_str).chain(placed) {
            if let Err(e) = delete(uri).await {
                tracing::warn!(%uri, %e, "cannot remove a partial output");
            }
        }
    }
    result
}

/// Exports the model and writes `model.onnx` and `model.json` under the run's output directory, with
/// `extra` files (the holdout rows and predictions the CLI asks for), all or none.
pub async fn publish(
    model: &Model,
    config: &TrainConfig,
    trial: Option<u32>,
    extra: Vec<(String, Bytes)>,
    registry: Option<&Client>,
) -> Result<Trained, TrainError> {
    let doc = ModelDoc {
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{} trained by mizzen-train on {}", model.algorithm.name(), config.dataset.uri),
        metadata: std::iter::once(("mizzen.dataset_sha256".to_string(), model.dataset_sha256.clone()))
            .chain(feature_set_tags(config))
            .collect(),
    };
    let bytes = onnx::export(&model.prep, &model.network, model.classes.as_ref(), &doc)
        .map_err(|e| TrainError { reason: "ExportFailed", message: e.to_string(), permanent: true })?;
    let sha = data::hex(&Sha256::digest(&bytes));
    let meta = serde_json::to_vec_pretty(&metadata(model, config, trial, &sha)).expect("metadata serializes");
    let trained = |model_uri: String, run_id: Option<String>, version: Option<String>| Trained {
        metrics: model.metrics.clone(),
        hyperparameters: model.hyperparameters.clone(),
        model_uri,
        model_sha256: sha.clone(),
        dataset_sha256: model.dataset_sha256.clone(),
        run_id,
        version,
    };
    if registry::parse_output(&config.output_uri).is_some() {
        // The CLI's extra files first: a run that cannot write them registers nothing.
        write_all(extra).await?;
        let files = [("model.onnx", Bytes::from(bytes)), ("model.json", Bytes::from(meta))];
        let (uri, run_id, version) =
            publish_to_registry(registry_client(registry)?, model, config, trial, files, &sha).await?;
        return Ok(trained(uri, Some(run_id), version));
    }
    let dir = output_dir(config, trial)?;
    let model_uri = format!("{dir}/model.onnx");
    let mut files =
        vec![(model_uri.clone(), Bytes::from(bytes)), (format!("{dir}/model.json"), Bytes::from(meta))];
    files.extend(extra);
    write_all(files).await?;
    Ok(trained(model_uri, None, None))
}

/// What else a run writes, made from the trained model (the CLI's holdout files).
pub type Extra = fn(&Model) -> Bytes;

/// Checks the outputs can be written, then reads, trains and publishes trial `trial` of `config` (or the
/// single run) with the `extra` files: all of them or nothing. `registry` is where registry:// outputs go.
pub async fn run(
    config: &TrainConfig,
    trial: Option<u32>,
    extra: &[(String, Extra)],
    registry: Option<&Client>,
) -> Result<(Model, Trained), TrainError> {
    let hyper = hyperparameters(config, trial)?;
    let limit = memory::limit().map_err(TrainError::config)?;
    let extra_uris: Vec<String> = extra.iter().map(|(uri, _)| uri.clone()).collect();
    check_outputs(config, trial, &extra_uris, registry).await?;
    let ds = load(config).await?;
    let cfg = config.clone();
    let model = tokio::task::spawn_blocking(move || train(ds, &cfg, &hyper, limit))
        .await
        .map_err(|e| TrainError { reason: "TrainerFailed", message: e.to_string(), permanent: false })??;
    let files = extra.iter().map(|(uri, make)| (uri.clone(), make(&model))).collect();
    let trained = publish(&model, config, trial, files, registry).await?;
    Ok((model, trained))
}
