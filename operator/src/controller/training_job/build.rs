//! Pure builders for a TrainingJob: the trainer's configuration and the Indexed Job that runs it.
//!
//! The Job has one completion index per trial (one without a search), `backoffLimitPerIndex` so a failed
//! trial does not stop the others, and a pod failure policy that fails an index at once when the trainer
//! exits with [`PERMANENT_EXIT_CODE`] (bad data or configuration: a retry cannot help) and does not count
//! evictions and preemptions. `ttlSecondsAfterFinished` is not put on the Job: the operator deletes the Job
//! itself once it has copied the results into the status, so a short ttl cannot lose them.

use super::search;
use crate::api::v1alpha1::FeatureSet;
use crate::api::v1alpha1::training_job::{Algorithm, Goal, Metric, Task, TrainingJob, TrainingJobSpec};
use crate::controller::{Defaults, MANAGED_BY, pods};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec, SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use mizzen_common::registry;
use mizzen_common::training::{
    self, CONFIG_ENV, DatasetConfig, FeatureSetJoin, Hyperparameter, Hyperparameters, TrainConfig,
};
use std::collections::BTreeMap;

/// Label on the Job and its pods.
pub const TRAINING_JOB_LABEL: &str = "mizzen.dev/training-job";
/// The trainer's container.
pub const CONTAINER: &str = "trainer";
/// mizzen-train exits with this code when retrying cannot help (invalid data or configuration).
pub const PERMANENT_EXIT_CODE: i32 = 2;
/// Where `pvc://` data and outputs are mounted.
const PVC_ROOT: &str = "/mnt/pvc";

/// A TrainingJob the operator refuses to run, with the condition reason and a message.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// The output directory: `spec.output.uri`, or `registry://NAME`.
pub fn output_uri(tj: &TrainingJob) -> String {
    tj.spec
        .output
        .uri
        .as_ref()
        .map(|u| u.0.clone())
        .unwrap_or_else(|| format!("registry://{}", tj.name_any()))
}

/// The metric that picks the best trial and fills the status' objective: the search's, else the deploy
/// gate's, else accuracy (classifiers) or r2 (regression); and whether lower is better.
pub fn objective(spec: &TrainingJobSpec) -> (Metric, bool) {
    if let Some(s) = &spec.search {
        let lower = match s.objective.goal {
            Some(Goal::Minimize) => true,
            Some(Goal::Maximize) => false,
            None => s.objective.metric.lower_is_better(),
        };
        return (s.objective.metric, lower);
    }
    let regression = match spec.task {
        Some(task) => task == Task::Regression,
        None => spec.algorithm == Algorithm::LinearRegression,
    };
    let metric = match &spec.deploy {
        Some(d) => d.when.metric,
        None if regression => Metric::R2,
        None => Metric::Accuracy,
    };
    (metric, metric.lower_is_better())
}

/// A metric's name as the trainer reports it, through the contract's type (a metric the API adds and the
/// trainer does not know fails to compile here).
pub fn metric_name(metric: Metric) -> String {
    use training::Metric as M;
    match metric {
        Metric::Accuracy => M::Accuracy,
        Metric::Precision => M::Precision,
        Metric::Recall => M::Recall,
        Metric::F1 => M::F1,
        Metric::LogLoss => M::LogLoss,
        Metric::RocAuc => M::RocAuc,
        Metric::Rmse => M::Rmse,
        Metric::Mae => M::Mae,
        Metric::R2 => M::R2,
    }
    .name()
    .to_string()
}

/// The API's algorithm as the trainer's contract names it (a learner added on one side and not the other
/// fails to compile here).
fn algorithm(algorithm: Algorithm) -> training::Algorithm {
    match algorithm {
        Algorithm::LogisticRegression => training::Algorithm::LogisticRegression,
        Algorithm::LinearRegression => training::Algorithm::LinearRegression,
        Algorithm::Mlp => training::Algorithm::Mlp,
    }
}

/// The trainer's configuration, or why the run cannot start.
/// `registry` says whether the operator has a model registry for registry:// outputs; `feature_set` is the
/// FeatureSet a run from one reads (its features are the default inputs).
pub fn config(
    tj: &TrainingJob,
    registry: bool,
    feature_set: Option<&FeatureSet>,
) -> Result<TrainConfig, Refusal> {
    let spec = &tj.spec;
    let output = output_uri(tj);
    if output.starts_with("registry://") && !registry {
        return Err(Refusal {
            reason: "RegistryUnavailable",
            message: format!(
                "output {output}: the operator runs without a model registry (--registry-url); install the \
                 registry (helm install with registry.enabled, or manifests/install.yaml), or set spec.output.uri \
                 to a directory such as \
                 s3://BUCKET/PREFIX/ or pvc://CLAIM/PATH/"
            ),
        });
    }
    let (data, join) = match (&spec.dataset.uri, &spec.dataset.feature_set) {
        (Some(uri), _) => (uri.0.clone(), None),
        (None, Some(source)) => {
            // The features asked for, else all of the FeatureSet's; the labels file's key, time and other
            // columns are not features. (Without the FeatureSet at hand, as once its Job is made, the Job
            // already holds what it was told.)
            let features = spec.dataset.features.clone().unwrap_or_else(|| {
                feature_set
                    .map(|fs| fs.spec.features.iter().map(|f| f.name.clone()).collect())
                    .unwrap_or_default()
            });
            let ns = tj.namespace().unwrap_or_default();
            let join = FeatureSetJoin {
                name: format!("{ns}/{}", source.name),
                url: crate::controller::feature_set::build::url_of(&source.name, &ns),
                view: source.name.clone(),
                features,
                timestamp_column: source.timestamp_column.clone(),
            };
            (source.labels_uri.0.clone(), Some(join))
        }
        (None, None) => {
            return Err(Refusal {
                reason: "InvalidDataset",
                message: "set dataset.uri or dataset.featureSet".into(),
            });
        }
    };
    let h = &spec.hyperparameters;
    let mut hyperparameters = Hyperparameters::new();
    let mut put = |k: Hyperparameter, v: Option<String>| {
        if let Some(v) = v {
            hyperparameters.insert(k, v);
        }
    };
    put(Hyperparameter::L2, h.l2.map(|v| v.to_string()));
    put(Hyperparameter::MaxIterations, h.max_iterations.map(|v| v.to_string()));
    put(Hyperparameter::Tolerance, h.tolerance.map(|v| v.to_string()));
    put(
        Hyperparameter::HiddenLayers,
        h.hidden_layers.as_ref().map(|l| l.iter().map(i32::to_string).collect::<Vec<_>>().join(",")),
    );
    put(Hyperparameter::LearningRate, h.learning_rate.map(|v| v.to_string()));
    put(Hyperparameter::BatchSize, h.batch_size.map(|v| v.to_string()));
    put(Hyperparameter::Patience, h.patience.map(|v| v.to_string()));
    put(Hyperparameter::Seed, h.seed.map(|v| v.to_string()));
    // The API server admits only known names (CEL); a name it let through that the trainer does not know
    // is refused here rather than sent.
    let trials = spec
        .search
        .as_ref()
        .map(search::trials)
        .unwrap_or_default()
        .into_iter()
        .map(|trial| {
            trial
                .into_iter()
                .map(|(k, v)| k.parse::<Hyperparameter>().map(|h| (h, v)))
                .collect::<Result<_, _>>()
        })
        .collect::<Result<Vec<Hyperparameters>, String>>()
        .map_err(|message| Refusal { reason: "InvalidHyperparameter", message })?;
    Ok(TrainConfig {
        dataset: DatasetConfig {
            uri: pods::pvc_path(&data, PVC_ROOT).map(|(_, u)| u).unwrap_or_else(|| data.clone()),
            format: spec.dataset.format.map(|f| format!("{f:?}").to_ascii_lowercase()),
            label: spec.dataset.label.clone(),
            features: join.as_ref().map(|j| j.features.clone()).or_else(|| spec.dataset.features.clone()),
            feature_set: join,
            categorical: spec.dataset.categorical.clone(),
        },
        algorithm: algorithm(spec.algorithm),
        task: spec.task.map(|t| match t {
            Task::Classification => training::ModelTask::Classification,
            Task::Regression => training::ModelTask::Regression,
        }),
        hyperparameters,
        trials,
        holdout_fraction: spec.validation.holdout_fraction,
        split_seed: spec.validation.seed.max(0) as u64,
        output_uri: pods::pvc_path(&output, PVC_ROOT).map(|(_, u)| u).unwrap_or(output),
        experiment: Some(tj.name_any()),
        requested_by: Some(format!("{}/{}", tj.namespace().unwrap_or_default(), tj.name_any())),
    })
}

/// Trials the Job runs: one per search trial, else one.
pub fn trial_count(config: &TrainConfig) -> i32 {
    config.trials.len().max(1) as i32
}

pub fn labels(tj: &TrainingJob) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "mizzen-train".to_string()),
        ("app.kubernetes.io/instance".to_string(), tj.name_any()),
        ("app.kubernetes.io/component".to_string(), "training".to_string()),
        ("app.kubernetes.io/part-of".to_string(), "mizzen".to_string()),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (TRAINING_JOB_LABEL.to_string(), tj.name_any()),
    ])
}

/// The Job, named like the TrainingJob.
pub fn job(tj: &TrainingJob, config: &TrainConfig, defaults: &Defaults) -> Job {
    let spec = &tj.spec;
    let trials = trial_count(config);
    let parallelism = spec.search.as_ref().map_or(1, |s| s.parallelism).clamp(1, trials);
    let c = &spec.trainer;
    let mut env = vec![EnvVar {
        name: CONFIG_ENV.into(),
        value: Some(serde_json::to_string(config).expect("a config serializes")),
        ..Default::default()
    }];
    env.push(EnvVar { name: "MIZZEN_LOG_FORMAT".into(), value: Some("json".into()), ..Default::default() });
    if let Some(url) = defaults.registry_url.as_ref().filter(|_| config.output_uri.starts_with("registry://"))
    {
        env.push(EnvVar { name: registry::URL_ENV.into(), value: Some(url.clone()), ..Default::default() });
        if let Some((name, key)) = &defaults.registry_token_secret {
            // Optional: without the Secret in this namespace the pod starts, sends no token, and a registry
            // that asks for one refuses it with a message the TrainingJob's status carries.
            let from = SecretKeySelector { name: name.clone(), key: key.clone(), optional: Some(true) };
            env.push(EnvVar {
                name: registry::TOKEN_ENV.into(),
                value_from: Some(EnvVarSource { secret_key_ref: Some(from), ..Default::default() }),
                ..Default::default()
            });
        }
    }
    // Claims: the data's read-only, the output's writable (one mount if they are the same claim).
    let data = spec.dataset.uri.as_ref().or(spec.dataset.feature_set.as_ref().map(|f| &f.labels_uri));
    let data_claim = data.and_then(|u| pods::pvc_path(&u.0, PVC_ROOT)).map(|(c, _)| c);
    let output_claim = pods::pvc_path(&output_uri(tj), PVC_ROOT).map(|(c, _)| c);
    let mut claims: Vec<(String, bool)> = Vec::new();
    if let Some(claim) = &output_claim {
        claims.push((claim.clone(), false));
    }
    if let Some(claim) = data_claim.filter(|d| Some(d) != output_claim.as_ref()) {
        claims.push((claim, true));
    }
    let (volumes, mounts): (Vec<_>, Vec<_>) = claims
        .iter()
        .enumerate()
        .map(|(i, (claim, ro))| pods::pvc_volume(&format!("data-{i}"), claim, PVC_ROOT, *ro))
        .unzip();
    let labels = labels(tj);
    Job {
        metadata: ObjectMeta {
            name: Some(tj.name_any()),
            namespace: tj.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(tj.controller_owner_ref(&()).into_iter().collect()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(trials),
            parallelism: Some(parallelism),
            backoff_limit_per_index: Some(spec.backoff_limit),
            active_deadline_seconds: spec.active_deadline_seconds,
            suspend: Some(spec.suspend),
            pod_failure_policy: Some(pods::failure_policy(CONTAINER, PERMANENT_EXIT_CODE, "FailIndex")),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(pods::placed(
                    c,
                    PodSpec {
                        restart_policy: Some("Never".into()),
                        containers: vec![Container {
                            volume_mounts: (!mounts.is_empty()).then_some(mounts),
                            ..pods::container(CONTAINER, c, &defaults.train_image, env)
                        }],
                        volumes: (!volumes.is_empty()).then_some(volumes),
                        ..Default::default()
                    },
                )),
            },
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tj(yaml: &str) -> TrainingJob {
        let mut t: TrainingJob = serde_saphyr::from_str(yaml).unwrap();
        t.metadata.namespace = Some("ml".into());
        t.metadata.uid = Some("uid-1".into());
        t
    }

    const BASE: &str = "apiVersion: mizzen.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: iris}\nspec:\n  \
        dataset: {uri: s3://data/iris.csv, label: species}\n  algorithm: logisticRegression\n  \
        output: {uri: s3://models/iris/}\n";

    fn defaults() -> Defaults {
        Defaults {
            serve_image: "mizzen-serve:test".into(),
            train_image: "mizzen-train:test".into(),
            features_image: "features".into(),
            registry_url: None,
            registry_token_secret: None,
        }
    }

    #[test]
    fn the_api_and_the_trainer_spell_every_metric_and_algorithm_alike() {
        use Metric::*;
        for m in [Accuracy, Precision, Recall, F1, LogLoss, RocAuc, Rmse, Mae, R2] {
            assert_eq!(serde_json::to_value(m).unwrap(), metric_name(m), "{m:?}");
        }
        for a in [Algorithm::LogisticRegression, Algorithm::LinearRegression, Algorithm::Mlp] {
            assert_eq!(serde_json::to_value(a).unwrap(), algorithm(a).name(), "{a:?}");
        }
    }

    #[test]
    fn a_single_run_is_one_index_with_the_spec_mapped() {
        let t = tj(&format!(
            "{BASE}  backoffLimit: 3\n  activeDeadlineSeconds: 600\n  ttlSecondsAfterFinished: 5\n  suspend: true\n  \
             hyperparameters: {{l2: 0.5, maxIterations: 7}}\n"
        ));
        let config = config(&t, false, None).unwrap();
        assert_eq!(config.hyperparameters[&Hyperparameter::L2], "0.5");
        assert_eq!(config.hyperparameters[&Hyperparameter::MaxIterations], "7");
        assert_eq!(config.algorithm, training::Algorithm::LogisticRegression);
        assert_eq!(config.output_uri, "s3://models/iris/");
        assert!(config.trials.is_empty());
        let job = job(&t, &config, &defaults());
        let s = job.spec.unwrap();
        assert_eq!((s.completions, s.parallelism), (Some(1), Some(1)));
        assert_eq!(s.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!(s.backoff_limit_per_index, Some(3));
        assert_eq!(s.active_deadline_seconds, Some(600));
        assert_eq!(s.suspend, Some(true));
        assert_eq!(s.ttl_seconds_after_finished, None, "the operator deletes the Job after copying results");
        let rules = s.pod_failure_policy.unwrap().rules;
        assert_eq!(rules[0].action, "FailIndex");
        assert_eq!(rules[0].on_exit_codes.as_ref().unwrap().values, [PERMANENT_EXIT_CODE]);
        let pod = s.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("mizzen-train:test"));
        assert_eq!(c.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
        let env = c.env.as_ref().unwrap();
        let passed: TrainConfig = serde_json::from_str(env[0].value.as_deref().unwrap()).unwrap();
        assert_eq!(passed, config);
        assert_eq!(job.metadata.owner_references.unwrap()[0].uid, "uid-1");
    }

    /// An mlp's task passes to the trainer as the spec says, and decides the default objective: r2 for a
    /// regression, accuracy for a classification (without a task the label decides, after the run).
    #[test]
    fn an_mlp_task_reaches_the_trainer_and_sets_the_objective() {
        let mlp = BASE.replace("logisticRegression", "mlp");
        for (task, trainer, metric) in [
            ("regression", Some(training::ModelTask::Regression), Metric::R2),
            ("classification", Some(training::ModelTask::Classification), Metric::Accuracy),
        ] {
            let t = tj(&format!("{mlp}  task: {task}\n"));
            assert_eq!(config(&t, false, None).unwrap().task, trainer, "{task}");
            assert_eq!(objective(&t.spec).0, metric, "{task}");
            let json = serde_json::to_value(config(&t, false, None).unwrap()).unwrap();
            assert_eq!(json["task"], task);
        }
        let t = tj(&mlp);
        assert_eq!(config(&t, false, None).unwrap().task, None);
        assert!(serde_json::to_value(config(&t, false, None).unwrap()).unwrap().get("task").is_none());
    }

    #[test]
    fn a_search_is_one_index_per_trial() {
        let t = tj(&format!(
            "{BASE}  search:\n    algorithm: grid\n    maxTrials: 10\n    parallelism: 3\n    \
             objective: {{metric: logLoss}}\n    parameters: [{{name: l2, categorical: ['0.1', '1', '10']}}]\n"
        ));
        let config = config(&t, false, None).unwrap();
        assert_eq!(config.trials.len(), 3);
        let s = job(&t, &config, &defaults()).spec.unwrap();
        assert_eq!((s.completions, s.parallelism), (Some(3), Some(3)));
        assert_eq!(objective(&t.spec), (Metric::LogLoss, true));
    }

    #[test]
    fn pvc_uris_are_mounted_and_registry_outputs_need_the_registry() {
        let t = tj(&BASE
            .replace("s3://data/iris.csv", "pvc://data/iris.csv")
            .replace("s3://models/iris/", "pvc://models/iris/"));
        let config = config(&t, false, None).unwrap();
        assert_eq!(config.dataset.uri, "file:///mnt/pvc/data/iris.csv");
        assert_eq!(config.output_uri, "file:///mnt/pvc/models/iris/");
        let pod = job(&t, &config, &defaults()).spec.unwrap().template.spec.unwrap();
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!((mounts[0].mount_path.as_str(), mounts[0].read_only), ("/mnt/pvc/models", Some(false)));
        assert_eq!((mounts[1].mount_path.as_str(), mounts[1].read_only), ("/mnt/pvc/data", Some(true)));

        let t = tj(&BASE.replace(
            "uri: s3://data/iris.csv, label: species",
            "featureSet: {name: customers, labelsUri: s3://data/labels.csv}, label: species",
        ));
        let fs: FeatureSet = serde_saphyr::from_str(
            "apiVersion: mizzen.dev/v1alpha1\nkind: FeatureSet\nmetadata: {name: customers, namespace: ml}\nspec:\n  \
             entity: {name: c, joinKey: id}\n  features: [{name: spend, type: float64}, {name: visits, type: int64}]\n  \
             sources: [{name: daily, uri: \"s3://d/a.csv\"}]\n",
        )
        .unwrap();
        let config = super::config(&t, false, Some(&fs)).unwrap();
        let join = config.dataset.feature_set.clone().unwrap();
        assert_eq!((join.name.as_str(), join.url.as_str()), ("ml/customers", "http://customers.ml.svc:6566"));
        assert_eq!(config.dataset.uri, "s3://data/labels.csv");
        assert_eq!(config.dataset.features, Some(vec!["spend".to_string(), "visits".to_string()]));
        assert_eq!(join.timestamp_column, "event_timestamp");

        // registry:// outputs (the default) need the operator's registry.
        let t = tj(&BASE.replace("  output: {uri: s3://models/iris/}\n", ""));
        let refusal = super::config(&t, false, None).unwrap_err();
        assert_eq!(refusal.reason, "RegistryUnavailable");
        assert!(refusal.message.contains("registry://iris"), "{}", refusal.message);
        let config = super::config(&t, true, None).unwrap();
        assert_eq!(config.output_uri, "registry://iris");
        assert_eq!(config.experiment.as_deref(), Some("iris"));
        let mut with_registry = defaults();
        with_registry.registry_url = Some("http://mizzen-registry.mizzen-system.svc:5000".into());
        let pod = job(&t, &config, &with_registry).spec.unwrap().template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        let url = env.iter().find(|e| e.name == "MIZZEN_REGISTRY_URL").and_then(|e| e.value.as_deref());
        assert_eq!(url, Some("http://mizzen-registry.mizzen-system.svc:5000"));
        assert!(!env.iter().any(|e| e.name == "MIZZEN_REGISTRY_TOKEN"), "no Secret named, no token: {env:?}");
        // With a token Secret named, the pods read it from their own namespace, optionally.
        with_registry.registry_token_secret = Some(("registry-token".into(), "token".into()));
        let pod = job(&t, &config, &with_registry).spec.unwrap().template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        let token = env.iter().find(|e| e.name == "MIZZEN_REGISTRY_TOKEN").expect("the token's variable");
        let from = token.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).expect("from a Secret");
        assert_eq!(
            (from.name.as_str(), from.key.as_str(), from.optional),
            ("registry-token", "token", Some(true))
        );
        assert_eq!(token.value, None, "never the token itself in the pod spec");
        // Not for outputs elsewhere.
        let s3 = tj(BASE);
        let pod = job(&s3, &super::config(&s3, true, None).unwrap(), &with_registry)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert!(
            !pod.containers[0].env.clone().unwrap().iter().any(|e| e.name.starts_with("MIZZEN_REGISTRY"))
        );
    }
}
