//! Pure builders: from a ModelDeployment to the children the operator owns. No client, no clock: every
//! function here is a function of its arguments, so the reconcile can compare desired with observed state
//! and tests need no cluster.

use crate::api::v1alpha1::model_deployment::{
    ModelDeployment, ModelDeploymentSpec, ResolvedModel, ServerSpec,
};
use crate::controller::{Defaults, MANAGED_BY, pods};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec, Service,
    ServicePort, ServiceSpec, SleepAction,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use mizzen_common::registry::Resolved;
use std::collections::BTreeMap;

/// Label on every pod of a ModelDeployment.
pub const MODEL_DEPLOYMENT_LABEL: &str = "mizzen.dev/model-deployment";
/// Label on the two Services, `active` or `preview` (their EndpointSlices copy it, so the operator watches
/// only the active one's).
pub const SERVICE_LABEL: &str = "mizzen.dev/service";
/// Label naming the revision a pod belongs to; Services select on it.
pub const REVISION_LABEL: &str = "mizzen.dev/revision";
/// Annotation on an old revision's Deployment: when it is scaled down (seconds since the epoch).
pub const SCALE_DOWN_AT_ANNOTATION: &str = "mizzen.dev/scale-down-at";
/// REST (and metrics) and gRPC ports of mizzen-serve.
pub const HTTP_PORT: i32 = 8080;
pub const GRPC_PORT: i32 = 8081;
/// Where `pvc://CLAIM/PATH` models are mounted.
const MODEL_MOUNT: &str = "/models";

/// The model URI the server reads, and the volume that makes it readable: a `pvc://CLAIM/PATH` becomes
/// the claim mounted read-only and a `file://` path inside it; other schemes pass through.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSource {
    pub uri: String,
    pub claim: Option<String>,
}

pub fn model_source(uri: &str) -> ModelSource {
    match pods::pvc_path(uri, MODEL_MOUNT) {
        Some((claim, uri)) => ModelSource { uri, claim: Some(claim) },
        None => ModelSource { uri: uri.to_string(), claim: None },
    }
}

/// The model a revision's pods serve: the spec's, with a `registry://NAME@ALIAS` replaced by the version it
/// named when resolved (pods read `registry://NAME/VERSION`, so a restarted pod of an old revision keeps
/// serving its version after the alias moved).
#[derive(Clone, Debug, PartialEq)]
pub struct Served {
    pub uri: String,
    pub name: String,
    /// `spec.model.version`, else the registry's version; unset: `1`.
    pub version: Option<String>,
    /// `spec.model.sha256`, else what the registry recorded.
    pub sha256: Option<String>,
    /// The spec's URI when resolution replaced it.
    pub from: Option<String>,
}

/// What `md` serves, given its resolved registry version (for registry URIs).
pub fn served(md: &ModelDeployment, resolved: Option<&Resolved>) -> Served {
    let model = &md.spec.model;
    let mut served = Served {
        uri: model.uri.0.clone(),
        name: served_name(md),
        version: model.version.clone(),
        sha256: model.sha256.clone(),
        from: None,
    };
    if let Some(r) = resolved {
        served.uri = format!("registry://{}/{}", r.name, r.version);
        served.version = served.version.or_else(|| Some(r.version.clone()));
        served.sha256 = served.sha256.or_else(|| r.sha256.clone());
        served.from = (served.uri != model.uri.0).then(|| model.uri.0.clone());
    }
    served
}

impl Served {
    pub fn version(&self) -> String {
        self.version.clone().unwrap_or_else(|| "1".into())
    }

    pub fn status(&self) -> ResolvedModel {
        ResolvedModel {
            uri: self.uri.clone(),
            name: self.name.clone(),
            version: self.version(),
            sha256: self.sha256.clone(),
            from: self.from.clone(),
        }
    }
}

/// The revision: a hash of everything that changes what a pod serves (the model and the server template),
/// and nothing else, so a change of replicas, autoscaling or strategy never makes a revision.
pub fn revision(spec: &ModelDeploymentSpec, served: &Served) -> String {
    let identity = serde_json::json!({
        "model": { "uri": served.uri, "name": served.name, "version": served.version, "sha256": served.sha256 },
        "server": spec.server,
        "minReadySeconds": spec.strategy.blue_green.min_ready_seconds,
    });
    // Ten base-36 digits that start with a letter keep NAME-REVISION a valid DNS label.
    format!("r{}", crate::controller::digest(&identity))
}

/// The name models are served under: `spec.model.name`, else the ModelDeployment's name.
pub fn served_name(md: &ModelDeployment) -> String {
    md.spec.model.name.clone().unwrap_or_else(|| md.name_any())
}

fn owner(md: &ModelDeployment) -> Vec<OwnerReference> {
    md.controller_owner_ref(&()).into_iter().collect()
}

/// Labels on every child and pod: the recommended `app.kubernetes.io` set and ours.
pub fn labels(md: &ModelDeployment, revision: Option<&str>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "mizzen-serve".to_string()),
        ("app.kubernetes.io/instance".to_string(), md.name_any()),
        ("app.kubernetes.io/component".to_string(), "inference".to_string()),
        ("app.kubernetes.io/part-of".to_string(), "mizzen".to_string()),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (MODEL_DEPLOYMENT_LABEL.to_string(), md.name_any()),
    ]);
    if let Some(rev) = revision {
        l.insert(REVISION_LABEL.to_string(), rev.to_string());
    }
    l
}

/// The selector of one revision's pods.
pub fn revision_selector(md: &ModelDeployment, revision: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MODEL_DEPLOYMENT_LABEL.to_string(), md.name_any()),
        (REVISION_LABEL.to_string(), revision.to_string()),
    ])
}

/// The Deployment of one revision, `NAME-REVISION`, made with `replicas` (later changes of the count go
/// through its scale subresource).
pub fn deployment(
    md: &ModelDeployment,
    served: &Served,
    revision: &str,
    replicas: i32,
    defaults: &Defaults,
) -> Deployment {
    let spec = &md.spec;
    let source = model_source(&served.uri);
    Deployment {
        metadata: ObjectMeta {
            name: Some(format!("{}-{revision}", md.name_any())),
            namespace: md.namespace(),
            labels: Some(labels(md, Some(revision))),
            owner_references: Some(owner(md)),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            min_ready_seconds: Some(spec.strategy.blue_green.min_ready_seconds),
            revision_history_limit: Some(0),
            selector: LabelSelector {
                match_labels: Some(revision_selector(md, revision)),
                ..Default::default()
            },
            // A revision never changes its template, so the strategy only matters for scaling.
            strategy: Some(DeploymentStrategy { type_: Some("RollingUpdate".into()), ..Default::default() }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(md, Some(revision))), ..Default::default() }),
                spec: Some(pod(&spec.server, &source, served, defaults)),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// How long a serving pod keeps serving after it was told to stop, before SIGTERM: longer than kube-proxy
/// takes to drop it from its Service's rules.
pub const PRE_STOP_SECONDS: i64 = 5;

fn pod(server: &ServerSpec, source: &ModelSource, served: &Served, defaults: &Defaults) -> PodSpec {
    let c = &server.container;
    let env = |k: &str, v: String| EnvVar { name: k.into(), value: Some(v), ..Default::default() };
    let mut vars = vec![
        env("MIZZEN_MODEL_URI", source.uri.clone()),
        env("MIZZEN_MODEL_NAME", served.name.clone()),
        env("MIZZEN_MODEL_VERSION", served.version()),
        env("MIZZEN_HTTP_ADDR", format!("0.0.0.0:{HTTP_PORT}")),
        env("MIZZEN_GRPC_ADDR", format!("0.0.0.0:{GRPC_PORT}")),
        env("MIZZEN_BATCHING", server.batching.enabled.to_string()),
        env("MIZZEN_MAX_BATCH_SIZE", server.batching.max_batch_size.to_string()),
        env("MIZZEN_MAX_QUEUE_DELAY_MICROSECONDS", server.batching.max_queue_delay_microseconds.to_string()),
        env("MIZZEN_MAX_QUEUE_SIZE", server.batching.max_queue_size.to_string()),
        env("MIZZEN_MAX_REQUEST_BYTES", server.max_request_bytes.to_string()),
        env("MIZZEN_LOG_FORMAT", "json".into()),
    ];
    if let Some(sha) = &served.sha256 {
        vars.push(env("MIZZEN_MODEL_SHA256", sha.clone()));
    }
    if let Some(url) = defaults.registry_url.as_ref().filter(|_| source.uri.starts_with("registry://")) {
        vars.push(env("MIZZEN_REGISTRY_URL", url.clone()));
    }
    if let Some(n) = server.threads.intra_op {
        vars.push(env("MIZZEN_INTRA_OP_THREADS", n.to_string()));
    }
    if let Some(n) = server.threads.inter_op {
        vars.push(env("MIZZEN_INTER_OP_THREADS", n.to_string()));
    }
    let port = |name: &str, port: i32| ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let (volumes, mounts) = match &source.claim {
        Some(claim) => {
            let (volume, mount) = pods::pvc_volume("model", claim, MODEL_MOUNT, true);
            (Some(vec![volume]), Some(vec![mount]))
        }
        None => (None, None),
    };
    let spec = PodSpec {
        containers: vec![Container {
            ports: Some(vec![port("http", HTTP_PORT), port("grpc", GRPC_PORT)]),
            // Ready means loaded and warmed up; the startup probe gives a slow model load up to 10 minutes
            // before liveness starts counting.
            readiness_probe: Some(pods::http_probe("/v2/health/ready", 2, 3)),
            liveness_probe: Some(pods::http_probe("/v2/health/live", 10, 3)),
            startup_probe: Some(pods::http_probe("/v2/health/live", 2, 300)),
            volume_mounts: mounts,
            // A pod being deleted leaves its Service's endpoints while it still serves: kube-proxy (and any
            // other load balancer) needs a moment to stop sending it new requests, and SIGTERM only comes
            // after this, so no request reaches a server that has stopped taking them.
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    sleep: Some(SleepAction { seconds: PRE_STOP_SECONDS }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            // A server that cannot start says why in its last log lines, which become the termination
            // message the operator reports.
            ..pods::container("mizzen-serve", c, &defaults.serve_image, vars)
        }],
        volumes,
        // The preStop wait, then mizzen-serve's own grace for in-flight requests (20 s) after SIGTERM.
        termination_grace_period_seconds: Some(30),
        ..Default::default()
    };
    pods::placed(c, spec)
}

/// Service `NAME` (active) or `NAME-preview`, selecting one revision's pods.
pub fn service(md: &ModelDeployment, preview: bool, revision: &str) -> Service {
    let name = if preview { format!("{}-preview", md.name_any()) } else { md.name_any() };
    let mut labels = labels(md, None);
    labels.insert(SERVICE_LABEL.into(), if preview { "preview" } else { "active" }.into());
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: md.namespace(),
            labels: Some(labels),
            owner_references: Some(owner(md)),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(revision_selector(md, revision)),
            ports: Some(vec![port("http", HTTP_PORT), port("grpc", GRPC_PORT)]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The HPA that drives `spec.replicas` through the ModelDeployment's scale subresource, when
/// `spec.autoscaling` is set. CPU utilization defaults to 80% when no metric is given.
pub fn hpa(md: &ModelDeployment) -> Option<HorizontalPodAutoscaler> {
    let a = md.spec.autoscaling.as_ref()?;
    let mut metrics = Vec::new();
    let cpu = a
        .target_cpu_utilization_percentage
        .or((a.target_inflight_requests.is_none() && a.metrics.is_empty()).then_some(80));
    if let Some(cpu) = cpu {
        metrics.push(MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(cpu),
                    ..Default::default()
                },
            }),
            ..Default::default()
        });
    }
    if let Some(n) = a.target_inflight_requests {
        metrics.push(MetricSpec {
            type_: "Pods".into(),
            pods: Some(PodsMetricSource {
                metric: k8s_openapi::api::autoscaling::v2::MetricIdentifier {
                    name: "mizzen_inference_inflight_requests".into(),
                    ..Default::default()
                },
                target: MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                        n.to_string(),
                    )),
                    ..Default::default()
                },
            }),
            ..Default::default()
        });
    }
    metrics.extend(a.metrics.iter().cloned());
    Some(HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(md.name_any()),
            namespace: md.namespace(),
            labels: Some(labels(md, None)),
            owner_references: Some(owner(md)),
            ..Default::default()
        },
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(ModelDeployment::api_version(&()).into_owned()),
                kind: ModelDeployment::kind(&()).into_owned(),
                name: md.name_any(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(metrics),
            behavior: a.behavior.clone(),
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(yaml: &str) -> ModelDeployment {
        let mut md: ModelDeployment = serde_saphyr::from_str(yaml).unwrap();
        md.metadata.uid = Some("uid-1".into());
        md.metadata.namespace = Some("ns".into());
        md
    }

    const BASE: &str = r#"
apiVersion: mizzen.dev/v1alpha1
kind: ModelDeployment
metadata: {name: iris}
spec:
  model: {uri: "s3://models/iris.onnx"}
"#;

    fn defaults() -> Defaults {
        Defaults {
            serve_image: "mizzen-serve:test".into(),
            train_image: "mizzen-train:test".into(),
            features_image: "features".into(),
            registry_url: None,
            registry_token_secret: None,
        }
    }

    /// The revision of `m` serving its spec's model.
    fn rev(m: &ModelDeployment) -> String {
        revision(&m.spec, &served(m, None))
    }

    #[test]
    fn revision_ignores_scaling_and_strategy_but_not_model_or_server() {
        let a = md(BASE);
        let rev_a = rev(&a);
        assert!(rev_a.starts_with('r') && rev_a.len() == 10, "{rev_a}");
        let mut b = a.clone();
        b.spec.replicas = 7;
        b.spec.paused = true;
        b.spec.strategy.blue_green.scale_down_delay_seconds = 5;
        assert_eq!(rev(&b), rev_a, "replicas, pause and strategy must not make a revision");
        let mut c = a.clone();
        c.spec.model.uri.0 = "s3://models/iris-v2.onnx".into();
        assert_ne!(rev(&c), rev_a);
        let mut d = a.clone();
        d.spec.server.batching.max_batch_size = 8;
        assert_ne!(rev(&d), rev_a);
        let mut e = a.clone();
        e.spec.model.name = Some("other-name".into());
        assert_ne!(rev(&e), rev_a);
    }

    #[test]
    fn a_registry_alias_is_served_as_the_version_it_names() {
        let m = md(&BASE.replace("s3://models/iris.onnx", "registry://iris@champion"));
        let resolved = |version: &str, sha: &str| Resolved {
            name: "iris".into(),
            version: version.into(),
            file: "http://registry/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/model/model.onnx".into(),
            sha256: Some(sha.into()),
        };
        let v3 = served(&m, Some(&resolved("3", "aa")));
        assert_eq!(v3.uri, "registry://iris/3");
        assert_eq!((v3.version(), v3.sha256.as_deref()), ("3".to_string(), Some("aa")));
        assert_eq!(v3.status().from.as_deref(), Some("registry://iris@champion"));
        // The alias moving to another version is another revision; the same version is the same one.
        let rev3 = revision(&m.spec, &v3);
        assert_eq!(revision(&m.spec, &served(&m, Some(&resolved("3", "aa")))), rev3);
        assert_ne!(revision(&m.spec, &served(&m, Some(&resolved("4", "bb")))), rev3);
        let mut defaults = defaults();
        defaults.registry_url = Some("http://mizzen-registry.mizzen-system.svc:5000".into());
        let d = deployment(&m, &v3, &rev3, 1, &defaults);
        let env: BTreeMap<_, _> = d.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env["MIZZEN_MODEL_URI"], "registry://iris/3");
        assert_eq!(env["MIZZEN_MODEL_VERSION"], "3");
        assert_eq!(env["MIZZEN_MODEL_SHA256"], "aa");
        assert_eq!(env["MIZZEN_REGISTRY_URL"], "http://mizzen-registry.mizzen-system.svc:5000");
        // A version the user pinned wins over the registry's number.
        let mut pinned = m.clone();
        pinned.spec.model.version = Some("prod".into());
        assert_eq!(served(&pinned, Some(&resolved("3", "aa"))).version(), "prod");
    }

    #[test]
    fn deployment_runs_mizzen_serve_hardened_with_probes() {
        let m = md(BASE);
        let rev = rev(&m);
        let d = deployment(&m, &served(&m, None), &rev, 3, &defaults());
        assert_eq!(d.metadata.name.as_deref(), Some(format!("iris-{rev}").as_str()));
        assert_eq!(d.metadata.owner_references.as_ref().unwrap()[0].controller, Some(true));
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.selector.match_labels.unwrap()[REVISION_LABEL], rev);
        let pod = spec.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("mizzen-serve:test"));
        let env: BTreeMap<_, _> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env["MIZZEN_MODEL_URI"], "s3://models/iris.onnx");
        assert_eq!(env["MIZZEN_MODEL_NAME"], "iris");
        assert_eq!(
            c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(),
            Some("/v2/health/ready")
        );
        assert!(c.startup_probe.is_some() && c.liveness_probe.is_some());
        // Stopping: the preStop wait and mizzen-serve's 20 s grace fit in the pod's grace period.
        let wait = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap().sleep.as_ref().unwrap().seconds;
        assert!(wait == PRE_STOP_SECONDS && wait + 20 < pod.termination_grace_period_seconds.unwrap());
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(pod.security_context.unwrap().seccomp_profile.unwrap().type_, "RuntimeDefault");
    }

    #[test]
    fn pvc_models_are_mounted_read_only() {
        let m = md(&BASE.replace("s3://models/iris.onnx", "pvc://models/iris/model.onnx"));
        let d = deployment(&m, &served(&m, None), "rabc", 1, &defaults());
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.volumes.as_ref().unwrap()[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "models"
        );
        let c = &pod.containers[0];
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, "/models/models");
        let uri = c.env.as_ref().unwrap().iter().find(|e| e.name == "MIZZEN_MODEL_URI").unwrap();
        assert_eq!(uri.value.as_deref(), Some("file:///models/models/iris/model.onnx"));
    }

    #[test]
    fn services_select_one_revision() {
        let m = md(BASE);
        let active = service(&m, false, "rone");
        let preview = service(&m, true, "rtwo");
        assert_eq!(active.metadata.name.as_deref(), Some("iris"));
        assert_eq!(preview.metadata.name.as_deref(), Some("iris-preview"));
        assert_eq!(active.spec.unwrap().selector.unwrap()[REVISION_LABEL], "rone");
        assert_eq!(preview.spec.as_ref().unwrap().selector.as_ref().unwrap()[REVISION_LABEL], "rtwo");
        let ports: Vec<i32> = preview.spec.unwrap().ports.unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, [HTTP_PORT, GRPC_PORT]);
    }

    #[test]
    fn hpa_targets_the_model_deployment_and_defaults_to_cpu() {
        assert!(hpa(&md(BASE)).is_none());
        let m = md(&format!("{BASE}  autoscaling: {{minReplicas: 2, maxReplicas: 5}}\n"));
        let h = hpa(&m).unwrap().spec.unwrap();
        assert_eq!(h.scale_target_ref.kind, "ModelDeployment");
        assert_eq!(h.scale_target_ref.api_version.as_deref(), Some("mizzen.dev/v1alpha1"));
        assert_eq!((h.min_replicas, h.max_replicas), (Some(2), 5));
        let metrics = h.metrics.unwrap();
        assert_eq!(metrics[0].resource.as_ref().unwrap().target.average_utilization, Some(80));
        let m = md(&format!("{BASE}  autoscaling: {{maxReplicas: 5, targetInflightRequests: 4}}\n"));
        let metrics = hpa(&m).unwrap().spec.unwrap().metrics.unwrap();
        assert_eq!(metrics.len(), 1);
        assert_eq!(metrics[0].pods.as_ref().unwrap().metric.name, "mizzen_inference_inflight_requests");
    }
}
