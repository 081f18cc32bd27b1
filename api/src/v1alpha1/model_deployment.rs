//! ModelDeployment: serve one ONNX model with mizzen-serve, scale it, and roll new versions out blue-green.

use super::common::{Condition, ContainerSpec, ModelUri};
use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscalerBehavior, MetricSpec};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation that promotes a waiting preview: its value is the preview revision (as shown in
/// `status.previewRevision`), so a stale annotation can never promote a later revision.
pub const PROMOTE_ANNOTATION: &str = "mizzen.dev/promote";
/// Annotation that aborts an in-flight rollout: its value is the revision to abort. Active goes back to stable.
pub const ABORT_ANNOTATION: &str = "mizzen.dev/abort";
/// Annotation that retries an aborted rollout: its value is a time (Unix seconds, e.g. `$(date +%s)`, or
/// RFC 3339) later than `status.abortedAt`. An abort otherwise lasts until the spec changes.
pub const RETRY_ANNOTATION: &str = "mizzen.dev/retry";
/// Annotation that asks the operator to resolve a `registry://NAME@ALIAS` model URI again now, rather than
/// within `--registry-poll-seconds`: any new value (for example `$(date +%s)`) does.
pub const RESOLVE_ANNOTATION: &str = "mizzen.dev/resolve";

/// Serve one ONNX model over the Open Inference Protocol v2 (REST and gRPC) and roll new versions out blue-green.
///
/// The operator runs one Deployment per revision (`NAME-REVISION`, where the revision is a hash of the
/// resolved model and the server template), the Service `NAME` that points at the active revision and
/// `NAME-preview` that points at the newest one.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "mizzen.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    status = "ModelDeploymentStatus",
    shortname = "mdep",
    category = "mizzen",
    cel,
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether the active revision serves the model"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Healthy, Progressing, Paused or Degraded"),
    printcolumn(name = "Active", type_ = "string", json_path = ".status.activeRevision", description = "Revision the Service NAME points at"),
    printcolumn(name = "Preview", type_ = "string", json_path = ".status.previewRevision", description = "Revision the Service NAME-preview points at"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas", description = "Desired replicas of the active revision"),
    printcolumn(name = "Available", type_ = "integer", json_path = ".status.availableReplicas", description = "Available replicas of the active revision"),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model.uri", priority = 1, description = "Where the model comes from"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url", priority = 1, description = "In-cluster URL of the active Service"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 52")
        .message("metadata.name must be a DNS label of at most 52 characters that starts with a letter: it names the Services NAME and NAME-preview and the Deployments NAME-REVISION")
)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// The model to serve.
    pub model: ModelSpec,
    /// Desired number of serving pods of the active revision. `kubectl scale` and an HPA change it through
    /// the scale subresource; a change of replicas alone never starts a rollout.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: i32,
    /// When set, the operator owns a HorizontalPodAutoscaler that targets this ModelDeployment and
    /// drives `spec.replicas` between `minReplicas` and `maxReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// How a new revision replaces the active one.
    #[serde(default)]
    pub strategy: StrategySpec,
    /// Old revisions scaled down to zero that are kept (their Deployments, for history); older ones are
    /// deleted. Revisions kept warm after a switch do not count.
    #[serde(default = "default_revision_history_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub revision_history_limit: i32,
    /// Hold the rollout: a new revision is created and shown on the preview Service but never promoted
    /// while paused. Paused time does not count toward the progress deadline.
    #[serde(default)]
    pub paused: bool,
    /// The inference server's container: image, resources, batching, threads and environment.
    #[serde(default)]
    pub server: ServerSpec,
}

fn default_replicas() -> i32 {
    1
}

/// Which model a ModelDeployment serves and under which name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Where the ONNX file is: `registry://NAME@ALIAS`, `registry://NAME/VERSION`, `s3://BUCKET/KEY`,
    /// `gs://`, `az://`, `http(s)://`, `file:///PATH` (inside the image) or `pvc://CLAIM/PATH`.
    /// Changing it starts a blue-green rollout.
    pub uri: ModelUri,
    /// Name the model is served under in the Open Inference Protocol (`/v2/models/NAME`).
    /// Default: the ModelDeployment's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9_.-]*$')").message("model.name may hold letters, digits, '_', '.' and '-', and starts with a letter or digit"))]
    pub name: Option<String>,
    /// Version the model is served under (`/v2/models/NAME/versions/VERSION`). Default: the registry
    /// version for `registry://` URIs, else `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9_.-]*$')").message("model.version may hold letters, digits, '_', '.' and '-', and starts with a letter or digit"))]
    pub version: Option<String>,
    /// Expected sha256 digest of the ONNX file, as 64 hex digits. When set, a file with another digest is
    /// refused and the revision never becomes ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-f0-9]{64}$')").message("model.sha256 must be 64 lowercase hex digits"))]
    #[schemars(length(max = 64))]
    pub sha256: Option<String>,
}

/// Horizontal autoscaling of the active revision. The HPA targets the ModelDeployment's scale
/// subresource, whose selector holds only the active revision's pods, so preview pods never dilute averages.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
pub struct AutoscalingSpec {
    /// Lower bound for the HPA.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 10000))]
    pub min_replicas: i32,
    /// Upper bound for the HPA.
    #[schemars(range(min = 1, max = 10000))]
    pub max_replicas: i32,
    /// Target average CPU utilization, in percent of the CPU request. Default: 80 when no other metric is
    /// given.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "targetCPUUtilizationPercentage")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// Target average number of in-flight inference requests per pod (the server's
    /// `mizzen_inference_inflight_requests` gauge), served to the HPA by a custom-metrics adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub target_inflight_requests: Option<i32>,
    /// Further metrics, exactly as in an `autoscaling/v2` HorizontalPodAutoscaler.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub metrics: Vec<MetricSpec>,
    /// Scale-up and scale-down behavior, exactly as in an `autoscaling/v2` HorizontalPodAutoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

fn default_min_replicas() -> i32 {
    1
}

/// The rollout strategy. Blue-green is the only strategy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrategySpec {
    /// Blue-green: a new revision runs beside the active one, is checked through the preview Service and
    /// takes all traffic at once when promoted.
    #[serde(default)]
    pub blue_green: BlueGreenSpec,
}

/// Blue-green settings, with Argo Rollouts' semantics.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.autoPromotion || self.autoPromotionSeconds == 0").message("autoPromotionSeconds needs autoPromotion: true"))]
#[x_kube(validation = Rule::new("self.progressDeadlineSeconds > self.minReadySeconds").message("progressDeadlineSeconds must be greater than minReadySeconds"))]
pub struct BlueGreenSpec {
    /// Promote a new revision on its own once it is fully available (and its smoke test passed). When
    /// false, the rollout waits for `kubectl annotate mdep NAME mizzen.dev/promote=REVISION`.
    #[serde(default = "default_true")]
    pub auto_promotion: bool,
    /// Seconds to wait, once the preview is fully available, before promoting it on its own.
    #[serde(default)]
    #[schemars(range(min = 0, max = 86400))]
    pub auto_promotion_seconds: i32,
    /// Replicas of a new revision before promotion. Default: `spec.replicas`. On promotion it is scaled
    /// to `spec.replicas` first, and the switch waits for that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub preview_replicas: Option<i32>,
    /// Seconds the old revision stays at full size after a switch, so a rollback is instant and clients
    /// with open connections drain.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_delay_seconds: i32,
    /// At most this many old revisions are kept warm during their scale-down delay; older ones are scaled
    /// down at once.
    #[serde(default = "default_scale_down_revision_limit")]
    #[schemars(range(min = 0, max = 10))]
    pub scale_down_revision_limit: i32,
    /// Seconds a pod must be ready before it counts as available.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub min_ready_seconds: i32,
    /// Seconds a new revision may take to become available before the ModelDeployment is Degraded
    /// (`Progressing=False`, reason `ProgressDeadlineExceeded`). Paused time does not count.
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 1, max = 86400))]
    pub progress_deadline_seconds: i32,
    /// Abort the rollout, sending traffic back to stable, when the progress deadline passes.
    #[serde(default)]
    pub progress_deadline_abort: bool,
    /// An inference request sent to the preview Service before promotion; promotion waits until it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_test: Option<SmokeTestSpec>,
}

impl Default for BlueGreenSpec {
    fn default() -> Self {
        Self {
            auto_promotion: true,
            auto_promotion_seconds: 0,
            preview_replicas: None,
            scale_down_delay_seconds: default_scale_down_delay(),
            scale_down_revision_limit: default_scale_down_revision_limit(),
            min_ready_seconds: 0,
            progress_deadline_seconds: default_progress_deadline(),
            progress_deadline_abort: false,
            smoke_test: None,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_scale_down_delay() -> i32 {
    30
}
fn default_revision_history_limit() -> i32 {
    2
}
fn default_scale_down_revision_limit() -> i32 {
    2
}
fn default_progress_deadline() -> i32 {
    600
}

/// A smoke test: one Open Inference Protocol request to the preview revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmokeTestSpec {
    /// The body of `POST /v2/models/NAME/infer`, as JSON, for example
    /// `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}`.
    #[schemars(length(min = 2, max = 65536))]
    #[x_kube(validation = Rule::new("self.startsWith('{') && self.contains('\"inputs\"')").message("smokeTest.request must be a JSON object with \"inputs\", the body of an infer request"))]
    pub request: String,
    /// If set, the output named here must hold exactly these values (compared as JSON), for example `[0]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_output: Option<ExpectedOutput>,
    /// Seconds to wait for the answer.
    #[serde(default = "default_smoke_timeout")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: i32,
}

fn default_smoke_timeout() -> i32 {
    10
}

/// What one output of the smoke test must hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedOutput {
    /// Output name, for example `label`.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The expected `data` of that output as a JSON array, for example `[0]`.
    #[schemars(length(min = 2, max = 65536))]
    #[x_kube(validation = Rule::new("self.startsWith('[')").message("expectedOutput.data must be a JSON array"))]
    pub data: String,
}

/// The inference server's container and its tuning.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Image, pull policy, resources, environment, node selector and service account of the serving pods.
    #[serde(default, flatten)]
    pub container: ContainerSpec,
    /// Dynamic batching: concurrent requests are merged into one ONNX Runtime run.
    #[serde(default)]
    pub batching: BatchingSpec,
    /// ONNX Runtime thread pools. Default: sized from the container's CPU limit.
    #[serde(default)]
    pub threads: ThreadsSpec,
    /// Largest request body in bytes.
    #[serde(default = "default_max_body_bytes")]
    #[schemars(range(min = 1024, max = 1073741824))]
    pub max_request_bytes: i64,
}

impl Default for ServerSpec {
    fn default() -> Self {
        Self {
            container: ContainerSpec::default(),
            batching: BatchingSpec::default(),
            threads: ThreadsSpec::default(),
            max_request_bytes: default_max_body_bytes(),
        }
    }
}

fn default_max_body_bytes() -> i64 {
    64 << 20
}

/// Dynamic batching of concurrent requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchingSpec {
    /// Merge concurrent requests into one run when the model has a batch dimension.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Most rows in one merged run.
    #[serde(default = "default_max_batch_size")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_batch_size: i32,
    /// Longest a request waits in the queue for others to join its batch, in microseconds.
    #[serde(default = "default_max_queue_delay")]
    #[schemars(range(min = 0, max = 1000000))]
    pub max_queue_delay_microseconds: i32,
    /// Most requests waiting; past it the server answers 503 so clients back off.
    #[serde(default = "default_max_queue_size")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_queue_size: i32,
}

impl Default for BatchingSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_batch_size: default_max_batch_size(),
            max_queue_delay_microseconds: default_max_queue_delay(),
            max_queue_size: default_max_queue_size(),
        }
    }
}

fn default_max_batch_size() -> i32 {
    32
}
fn default_max_queue_delay() -> i32 {
    500
}
fn default_max_queue_size() -> i32 {
    1024
}

/// ONNX Runtime thread pools.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThreadsSpec {
    /// Threads inside one operator (matrix multiply and so on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub intra_op: Option<i32>,
    /// Threads running independent operators of one graph in parallel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub inter_op: Option<i32>,
}

/// Derived summary of a ModelDeployment, for humans; conditions are the API.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ModelDeploymentPhase {
    /// Not yet reconciled.
    #[default]
    Pending,
    /// A revision is being created, scaled up or switched to.
    Progressing,
    /// A preview waits for promotion or `spec.paused` is set.
    Paused,
    /// The active revision is the newest and fully available.
    Healthy,
    /// The rollout was aborted or passed its progress deadline, or the spec cannot be served.
    Degraded,
}

/// Observed state of a ModelDeployment, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Derived summary: Pending, Progressing, Paused, Healthy or Degraded.
    #[serde(default)]
    pub phase: ModelDeploymentPhase,
    /// `Ready`, `Available`, `Progressing`, `Paused` and `Degraded`, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Revision the active Service `NAME` points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_revision: Option<String>,
    /// Newest revision, which the preview Service `NAME-preview` points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_revision: Option<String>,
    /// Last fully promoted revision: where an abort sends traffic back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// Pods of the active revision (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,
    /// Ready pods of the active revision.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Available pods of the active revision (ready for minReadySeconds).
    #[serde(default)]
    pub available_replicas: i32,
    /// Pods of the newest revision.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Label selector of the active revision's pods, as a string, for the scale subresource and the HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// In-cluster base URL of the active Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// In-cluster base URL of the preview Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_url: Option<String>,
    /// The model the newest revision serves, resolved (registry aliases replaced by versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ResolvedModel>,
    /// When the newest revision's rollout started (or was last unpaused), for the progress deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_started_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When the newest revision became fully available as a preview, for `autoPromotionSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_available_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The last smoke test: which revision, whether it passed, and why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_test: Option<SmokeTestStatus>,
    /// When the newest revision's rollout was aborted (by `mizzen.dev/abort` or past its deadline with
    /// `progressDeadlineAbort`). It stays aborted until the spec changes or `mizzen.dev/retry` names a later
    /// time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// The outcome of a smoke test against a preview revision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmokeTestStatus {
    /// The revision tested.
    pub revision: String,
    /// Whether the answer was a success and matched `expectedOutput`.
    pub passed: bool,
    /// What went wrong, when it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A model URI after resolution.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedModel {
    /// The URI the ONNX file is read from.
    pub uri: String,
    /// Name served under.
    pub name: String,
    /// Version served under.
    pub version: String,
    /// sha256 of the ONNX file, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The URI asked for (`spec.model.uri`), when resolution changed it: `registry://iris@champion` resolved
    /// to `registry://iris/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}
