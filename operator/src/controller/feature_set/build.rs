//! Pure builders for a FeatureSet: the StatefulSet running mizzen-features with a claim per replica, the
//! Services in front of it, and the materialization Job (and CronJob) that asks it to ingest the sources.
//!
//! Every child carries [`SPEC_ANNOTATION`], a digest of what the operator asked for, so a reconcile applies
//! a child only when that changed (an idle FeatureSet causes no writes).

use crate::api::v1alpha1::FeatureSet;
use crate::api::v1alpha1::feature_set::FeatureSetSpec;
use crate::controller::{Defaults, MANAGED_BY, digest, pods};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec,
    PodTemplateSpec, Service, ServicePort, ServiceSpec, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Label on every child and pod of a FeatureSet: its name.
pub const FEATURE_SET_LABEL: &str = "mizzen.dev/feature-set";
/// Label of a materialization Job: the digest of the spec it materializes, or `scheduled` (the CronJob's).
pub const MATERIALIZATION_LABEL: &str = "mizzen.dev/materialization";
/// Annotation of every child: a digest of the operator's last write of it.
pub const SPEC_ANNOTATION: &str = "mizzen.dev/spec-digest";
/// Annotation of the StatefulSet: the stored layout (key type, features) its pods serve.
pub const LAYOUT_ANNOTATION: &str = "mizzen.dev/layout";
/// Annotation of the FeatureSet a user changes (to any new value) to materialize again now.
pub const MATERIALIZE_ANNOTATION: &str = "mizzen.dev/materialize";
/// mizzen-features' port (Feast's feature server's).
pub const PORT: i32 = 6566;
/// mizzen-features exits with this when a retry cannot help (a bad row, a missing file).
pub const PERMANENT_EXIT_CODE: i32 = 2;
/// How long a materialization may take.
const DEADLINE_SECONDS: i64 = 3600;
const DATA_DIR: &str = "/var/lib/mizzen-features";
const PVC_ROOT: &str = "/mnt/pvc";
const STORE_CONTAINER: &str = "features";
const JOB_CONTAINER: &str = "materialize";

fn owner(fs: &FeatureSet) -> Vec<OwnerReference> {
    fs.controller_owner_ref(&()).into_iter().collect()
}

/// The labels of a child; `component` is `feature-store` (the store's pods) or `materialization`.
pub fn labels(fs: &FeatureSet, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "mizzen-features".to_string()),
        ("app.kubernetes.io/instance".to_string(), fs.name_any()),
        ("app.kubernetes.io/component".to_string(), component.to_string()),
        ("app.kubernetes.io/part-of".to_string(), "mizzen".to_string()),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (FEATURE_SET_LABEL.to_string(), fs.name_any()),
    ])
}

/// What selects the store's pods (and not the materialization Jobs' pods).
pub fn selector(fs: &FeatureSet) -> BTreeMap<String, String> {
    BTreeMap::from([
        (FEATURE_SET_LABEL.to_string(), fs.name_any()),
        ("app.kubernetes.io/component".to_string(), "feature-store".to_string()),
    ])
}

/// The headless Service that gives each replica its DNS name.
pub fn pods_service_name(fs: &FeatureSet) -> String {
    format!("{}-pods", fs.name_any())
}

/// In-cluster URL of the feature store (its Service).
pub fn url(fs: &FeatureSet) -> String {
    url_of(&fs.name_any(), &fs.namespace().unwrap_or_default())
}

/// In-cluster URL of the feature store of FeatureSet `name` in namespace `ns`.
pub fn url_of(name: &str, ns: &str) -> String {
    format!("http://{name}.{ns}.svc:{PORT}")
}

/// The URL of each replica, through the headless Service.
pub fn replica_urls(fs: &FeatureSet) -> Vec<String> {
    let (name, ns, pods) = (fs.name_any(), fs.namespace().unwrap_or_default(), pods_service_name(fs));
    (0..fs.spec.online.replicas.max(1)).map(|i| format!("http://{name}-{i}.{pods}.{ns}.svc:{PORT}")).collect()
}

/// The spec the store's pods serve: sources on claims (`pvc://CLAIM/PATH`) read from where the claim is
/// mounted, and the claims to mount.
fn served_spec(spec: &FeatureSetSpec) -> (FeatureSetSpec, Vec<String>) {
    let mut served = spec.clone();
    let mut claims: Vec<String> = Vec::new();
    for source in &mut served.sources {
        if let Some((claim, path)) = pods::pvc_path(&source.uri.0, PVC_ROOT) {
            source.uri.0 = path;
            if !claims.contains(&claim) {
                claims.push(claim);
            }
        }
    }
    // Neither the container settings nor the schedule change what the store serves: they stay out of what
    // its pods are given, so changing them rolls no pod.
    served.online = Default::default();
    served.schedule = None;
    (served, claims)
}

/// Bytes of a quantity such as `64Mi`, `1G` or `1048576`; `None` for forms a cache size has no use for.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(q.len());
    let (number, unit) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * scale) as u64)
}

fn meta(fs: &FeatureSet, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: fs.namespace(),
        labels: Some(labels),
        owner_references: Some(owner(fs)),
        ..Default::default()
    }
}

/// Stamps `meta` with the digest of `spec` (what the operator asks for), and `extra` annotations.
fn stamped<T: serde::Serialize>(mut meta: ObjectMeta, spec: &T, extra: &[(&str, String)]) -> ObjectMeta {
    let mut annotations = BTreeMap::new();
    for (k, v) in extra {
        annotations.insert(k.to_string(), v.clone());
    }
    let identity = serde_json::json!({"labels": meta.labels, "annotations": annotations,
                                      "spec": serde_json::to_value(spec).unwrap_or_default()});
    annotations.insert(SPEC_ANNOTATION.into(), digest(&identity));
    meta.annotations = Some(annotations);
    meta
}

/// The digest a child was stamped with, if any.
pub fn stamp(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations.as_ref()?.get(SPEC_ANNOTATION).map(String::as_str)
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value), ..Default::default() }
}

/// The StatefulSet `NAME`: `online.replicas` pods of mizzen-features, each with its own claim `data`
/// (kept when the FeatureSet goes, as StatefulSets keep theirs), the sources' claims mounted read-only.
/// A change of the served spec rolls its pods one at a time; each keeps its claim.
pub fn stateful_set(fs: &FeatureSet, defaults: &Defaults) -> StatefulSet {
    let online = &fs.spec.online;
    let c = &online.container;
    let (served, claims) = served_spec(&fs.spec);
    let served = serde_json::json!({"metadata": {"name": fs.name_any()}, "spec": served});
    let cache = quantity_bytes(&online.cache_size).unwrap_or(64 << 20);
    let vars = vec![
        env("MIZZEN_FEATURE_SET", served.to_string()),
        env("MIZZEN_FEATURES_LISTEN", format!("0.0.0.0:{PORT}")),
        env("MIZZEN_FEATURES_DATA_DIR", DATA_DIR.into()),
        env("MIZZEN_FEATURES_CACHE_BYTES", cache.to_string()),
        env("MIZZEN_LOG_FORMAT", "json".into()),
    ];
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    mounts.push(VolumeMount { name: "data".into(), mount_path: DATA_DIR.into(), ..Default::default() });
    for (i, claim) in claims.iter().enumerate() {
        let (volume, mount) = pods::pvc_volume(&format!("source-{i}"), claim, PVC_ROOT, true);
        volumes.push(volume);
        mounts.push(mount);
    }
    let mut pod = pods::placed(
        c,
        PodSpec {
            containers: vec![Container {
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: PORT,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                readiness_probe: Some(pods::http_probe("/ready", 2, 3)),
                liveness_probe: Some(pods::http_probe("/health", 10, 3)),
                // Recovery replays the log's tail before the store answers: up to 10 minutes.
                startup_probe: Some(pods::http_probe("/health", 2, 300)),
                volume_mounts: Some(mounts),
                ..pods::container(STORE_CONTAINER, c, &defaults.features_image, vars)
            }],
            volumes: (!volumes.is_empty()).then_some(volumes),
            ..Default::default()
        },
    );
    // The claim is writable by the pod's group, whatever the volume's owner.
    if let Some(sc) = pod.security_context.as_mut() {
        sc.fs_group = Some(65532);
        sc.fs_group_change_policy = Some("OnRootMismatch".into());
    }
    let spec = StatefulSetSpec {
        replicas: Some(online.replicas),
        service_name: Some(pods_service_name(fs)),
        // Replicas are independent copies: they start and stop together, not one after another.
        pod_management_policy: Some("Parallel".into()),
        selector: LabelSelector { match_labels: Some(selector(fs)), ..Default::default() },
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: Some(labels(fs, "feature-store")), ..Default::default() }),
            spec: Some(pod),
        },
        volume_claim_templates: Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta { name: Some("data".into()), ..Default::default() },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: online.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".into(),
                        Quantity(online.storage_size.clone()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let layout = serde_json::to_string(&fs.spec.layout()).unwrap_or_default();
    let meta = meta(fs, fs.name_any(), labels(fs, "feature-store"));
    StatefulSet {
        metadata: stamped(meta, &spec, &[(LAYOUT_ANNOTATION, layout)]),
        spec: Some(spec),
        status: None,
    }
}

/// The store's layout a StatefulSet runs, from its annotation.
pub fn running_layout(sts: &StatefulSet) -> Option<crate::api::v1alpha1::feature_set::StoredLayout> {
    let text = sts.metadata.annotations.as_ref()?.get(LAYOUT_ANNOTATION)?;
    serde_json::from_str(text).ok()
}

/// The Service `NAME` (ready replicas, the URL clients use), or with `headless` the Service `NAME-pods` that
/// names each replica (what materialization reaches each one through).
pub fn service(fs: &FeatureSet, headless: bool) -> Service {
    let name = if headless { pods_service_name(fs) } else { fs.name_any() };
    let spec = ServiceSpec {
        selector: Some(selector(fs)),
        cluster_ip: headless.then(|| "None".to_string()),
        ports: Some(vec![ServicePort {
            name: Some("http".into()),
            port: PORT,
            target_port: Some(IntOrString::String("http".into())),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    Service {
        metadata: stamped(meta(fs, name, labels(fs, "feature-store")), &spec, &[]),
        spec: Some(spec),
        status: None,
    }
}

/// What identifies a materialization: everything that changes what it writes (the entity, features, ttl,
/// sources, the replicas it writes to) and the manual trigger annotation's value.
pub fn materialization_key(fs: &FeatureSet) -> String {
    let s = &fs.spec;
    let trigger = fs.annotations().get(MATERIALIZE_ANNOTATION);
    digest(&serde_json::json!({"entity": s.entity, "features": s.features, "ttl": s.ttl,
                               "sources": s.sources, "replicas": s.online.replicas, "trigger": trigger}))
}

/// The Job that materializes `key`: `NAME-m-KEY`.
pub fn job_name(fs: &FeatureSet, key: &str) -> String {
    format!("{}-m-{key}", fs.name_any())
}

/// A materialization's Job: `mizzen-features materialize` asking every replica to ingest every source, in
/// order. A refusal (exit 2) fails it at once; anything else is tried again up to three times.
fn job_spec(fs: &FeatureSet, defaults: &Defaults, key: &str) -> JobSpec {
    let c = &fs.spec.online.container;
    let mut args = vec!["materialize".to_string()];
    for url in replica_urls(fs) {
        args.extend(["--url".to_string(), url]);
    }
    for source in &fs.spec.sources {
        args.extend(["--source".to_string(), source.name.clone()]);
    }
    args.extend(["--deadline-seconds".into(), DEADLINE_SECONDS.to_string()]);
    args.extend(["--report-file".into(), "/dev/termination-log".into()]);
    let mut labels = labels(fs, "materialization");
    labels.insert(MATERIALIZATION_LABEL.into(), key.into());
    let vars = vec![env("MIZZEN_LOG_FORMAT", "json".into())];
    JobSpec {
        backoff_limit: Some(3),
        active_deadline_seconds: Some(DEADLINE_SECONDS + 300),
        pod_failure_policy: Some(pods::failure_policy(JOB_CONTAINER, PERMANENT_EXIT_CODE, "FailJob")),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
            spec: Some(pods::placed(
                c,
                PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        args: Some(args),
                        // The store does the work; this pod only asks and waits.
                        resources: None,
                        ..pods::container(JOB_CONTAINER, c, &defaults.features_image, vars)
                    }],
                    ..Default::default()
                },
            )),
        },
        ..Default::default()
    }
}

/// The Job that materializes the spec as it is now (key [`materialization_key`]).
pub fn job(fs: &FeatureSet, defaults: &Defaults, key: &str) -> Job {
    let mut labels = labels(fs, "materialization");
    labels.insert(MATERIALIZATION_LABEL.into(), key.into());
    Job {
        metadata: meta(fs, job_name(fs, key), labels),
        spec: Some(job_spec(fs, defaults, key)),
        status: None,
    }
}

/// The CronJob `NAME` materializing on `spec.schedule`; `None` without a schedule. Runs never overlap.
pub fn cron_job(fs: &FeatureSet, defaults: &Defaults) -> Option<CronJob> {
    let schedule = fs.spec.schedule.clone()?;
    let mut labels = labels(fs, "materialization");
    labels.insert(MATERIALIZATION_LABEL.into(), "scheduled".into());
    let spec = CronJobSpec {
        schedule,
        concurrency_policy: Some("Forbid".into()),
        successful_jobs_history_limit: Some(1),
        failed_jobs_history_limit: Some(1),
        job_template: JobTemplateSpec {
            metadata: Some(ObjectMeta { labels: Some(labels.clone()), ..Default::default() }),
            spec: Some(job_spec(fs, defaults, "scheduled")),
        },
        ..Default::default()
    };
    Some(CronJob {
        metadata: stamped(meta(fs, fs.name_any(), labels), &spec, &[]),
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn fs(yaml: &str) -> FeatureSet {
        let mut fs: FeatureSet = serde_saphyr::from_str(yaml).unwrap();
        fs.metadata.namespace = Some("ml".into());
        fs.metadata.uid = Some("uid-1".into());
        fs
    }

    const CUSTOMERS: &str = r#"
apiVersion: mizzen.dev/v1alpha1
kind: FeatureSet
metadata: {name: customers}
spec:
  entity: {name: customer, joinKey: customer_id}
  features: [{name: spend, type: float64}]
  sources:
    - {name: daily, uri: "pvc://data/customers/daily.csv"}
    - {name: weekly, uri: "s3://bucket/weekly.parquet"}
  online: {replicas: 2, storageClassName: fast, cacheSize: 32Mi, env: [{name: AWS_REGION, value: eu-west-1}]}
"#;

    fn defaults() -> Defaults {
        Defaults {
            serve_image: "serve".into(),
            train_image: "train".into(),
            features_image: "features:1".into(),
            registry_url: None,
            registry_token_secret: None,
        }
    }

    #[test]
    fn the_store_serves_the_spec_with_claims_mounted_and_a_claim_per_replica() {
        let fs = fs(CUSTOMERS);
        let sts = stateful_set(&fs, &defaults());
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!((spec.replicas, spec.service_name.as_deref()), (Some(2), Some("customers-pods")));
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("features:1"));
        let env: BTreeMap<_, _> =
            c.env.iter().flatten().map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default())).collect();
        assert_eq!(env["MIZZEN_FEATURES_CACHE_BYTES"], (32u64 << 20).to_string());
        assert_eq!(env["AWS_REGION"], "eu-west-1", "the user's variables reach the store");
        let served: serde_json::Value = serde_json::from_str(&env["MIZZEN_FEATURE_SET"]).unwrap();
        assert_eq!(served["metadata"]["name"], "customers");
        assert_eq!(served["spec"]["sources"][0]["uri"], "file:///mnt/pvc/data/customers/daily.csv");
        assert_eq!(served["spec"]["sources"][1]["uri"], "s3://bucket/weekly.parquet");
        let mounts = c.volume_mounts.clone().unwrap();
        assert_eq!(mounts[0].mount_path, DATA_DIR);
        assert_eq!((mounts[1].mount_path.as_str(), mounts[1].read_only), ("/mnt/pvc/data", Some(true)));
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(pod.security_context.as_ref().unwrap().fs_group, Some(65532));
        assert_eq!(running_layout(&sts), Some(fs.spec.layout()));
        // The store's pods are selected; the Jobs' pods are not.
        let selected = spec.selector.match_labels.as_ref().unwrap();
        let job = job(&fs, &defaults(), "k");
        let job_labels =
            job.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap();
        assert!(selected.iter().any(|(k, v)| job_labels.get(k) != Some(v)));
    }

    #[test]
    fn materialization_asks_every_replica_for_every_source_and_changes_with_what_it_writes() {
        let fs = fs(CUSTOMERS);
        let key = materialization_key(&fs);
        let job = job(&fs, &defaults(), &key);
        assert_eq!(job.metadata.name.as_deref(), Some(format!("customers-m-{key}").as_str()));
        let args =
            job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].args.clone().unwrap();
        let text = args.join(" ");
        assert!(text.starts_with("materialize --url http://customers-0.customers-pods.ml.svc:6566 --url http://customers-1.customers-pods.ml.svc:6566 --source daily --source weekly"), "{text}");
        let mut scaled = fs.clone();
        scaled.spec.online.cache_size = "1Gi".into();
        assert_eq!(materialization_key(&scaled), key, "the cache size writes nothing");
        scaled.spec.online.replicas = 3;
        assert_ne!(materialization_key(&scaled), key, "a new replica needs the data");
        let mut triggered = fs.clone();
        triggered.annotations_mut().insert(MATERIALIZE_ANNOTATION.into(), "now".into());
        assert_ne!(materialization_key(&triggered), key);
        assert!(cron_job(&fs, &defaults()).is_none());
        let mut scheduled = fs.clone();
        scheduled.spec.schedule = Some("@hourly".into());
        let cron = cron_job(&scheduled, &defaults()).unwrap();
        assert_eq!(cron.spec.as_ref().unwrap().concurrency_policy.as_deref(), Some("Forbid"));
    }

    #[test]
    fn children_are_stamped_with_what_was_asked() {
        let fs = fs(CUSTOMERS);
        let a = stateful_set(&fs, &defaults());
        assert_eq!(stamp(&a.metadata), stamp(&stateful_set(&fs, &defaults()).metadata));
        let mut more = fs.clone();
        more.spec.online.replicas = 3;
        assert_ne!(stamp(&a.metadata), stamp(&stateful_set(&more, &defaults()).metadata));
        assert_ne!(stamp(&service(&fs, true).metadata), stamp(&service(&fs, false).metadata));
        assert_eq!(quantity_bytes("64Mi"), Some(64 << 20));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("lots"), None);
    }
}
