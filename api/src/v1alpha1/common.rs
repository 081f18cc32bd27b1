//! Types shared by the three kinds: conditions, server containers, storage URIs.

use k8s_openapi::api::core::v1::{EnvVar, LocalObjectReference, ResourceRequirements, Toleration};
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The API group of every Mizzen kind.
pub const GROUP: &str = "mizzen.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Upper bound on URI length, which also keeps CEL rule cost bounded.
pub const MAX_URI_LEN: u32 = 2048;

/// Condition status values, as in `metav1.Condition`.
pub mod status {
    pub const TRUE: &str = "True";
    pub const FALSE: &str = "False";
    pub const UNKNOWN: &str = "Unknown";
}

/// A `metav1.Condition` with the list-map key `type`, so server-side apply merges conditions by type.
pub type Condition = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Image pull policy for a container, as in `core/v1`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

/// The container that runs one of Mizzen's binaries: image, resources and environment.
///
/// Shared by the inference server, the trainer and the feature store so that every pod the operator makes is
/// configured the same way.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// Container image. Default: the image of this operator's release for the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// When the kubelet pulls the image (`Always`, `IfNotPresent`, `Never`).
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// Secrets used to pull the image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// CPU and memory requests and limits of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables, for example cloud credentials for `s3://` URIs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub env: Vec<EnvVar>,
    /// Node selector for the pods, to place them on chosen nodes.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub node_selector: std::collections::BTreeMap<String, String>,
    /// Tolerations of the pods, to let them onto tainted nodes (GPU nodes, or the local cluster's real node,
    /// tainted `mizzen.dev/node=real:NoSchedule`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
    /// Service account the pods run as. Default: the namespace's `default` account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
}

const PVC_RULE: &str =
    "!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+')";
const PVC_MESSAGE: &str =
    "a pvc URI is pvc://CLAIM/PATH, with CLAIM the name of a PersistentVolumeClaim in the same namespace";

/// A string schema for a URI: the allowed schemes, the `pvc://CLAIM/PATH` form and an optional extra rule.
fn uri_schema(schemes: &str, extra: Option<(&str, &str)>) -> Schema {
    let listed =
        schemes.replace("https?", "http|https").split('|').map(|s| format!("{s}://")).collect::<Vec<_>>();
    let scheme_message = format!("uri must start with {}", listed.join(", "));
    let mut rules = vec![
        serde_json::json!({ "rule": format!("self.matches('^({schemes})://.+')"), "message": scheme_message }),
        serde_json::json!({ "rule": PVC_RULE, "message": PVC_MESSAGE }),
    ];
    if let Some((rule, message)) = extra {
        rules.push(serde_json::json!({ "rule": rule, "message": message }));
    }
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_URI_LEN,
        "x-kubernetes-validations": rules,
    })
}

/// A URI string type whose schema carries its rules, so the API server refuses a bad URI wherever the
/// type is used.
macro_rules! uri_type {
    ($(#[$doc:meta])* $name:ident, schemes = $schemes:literal, extra = $extra:expr) => {
        $(#[$doc])*
        #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                uri_schema($schemes, $extra)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

uri_type!(
    /// Where a model lives: `registry://NAME@ALIAS`, `registry://NAME/VERSION`, `s3://`, `gs://`, `az://`,
    /// `http(s)://`, `file:///` or `pvc://CLAIM/PATH`.
    ModelUri,
    schemes = "registry|s3|gs|az|https?|file|pvc",
    extra = Some((
        "!self.startsWith('registry://') || \
         self.matches('^registry://[a-z0-9]([-a-z0-9]*[a-z0-9])?(@[a-z0-9]([-a-z0-9]*[a-z0-9])?|/[1-9][0-9]*)$')",
        "a registry URI is registry://NAME@ALIAS or registry://NAME/VERSION, with VERSION a positive integer",
    ))
);

uri_type!(
    /// Where data lives: `s3://`, `gs://`, `az://`, `http(s)://`, `file:///` or `pvc://CLAIM/PATH`.
    DataUri,
    schemes = "s3|gs|az|https?|file|pvc",
    extra = None
);

uri_type!(
    /// Where a trained model is published: `registry://NAME`, `registry://NAME@ALIAS` (the registry assigns
    /// the version), or a directory URI such as `s3://BUCKET/PREFIX/`.
    OutputUri,
    schemes = "registry|s3|gs|az|file|pvc",
    extra = Some((
        "!self.startsWith('registry://') || \
         self.matches('^registry://[a-z0-9]([-a-z0-9]*[a-z0-9])?(@[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$')",
        "a registry output is registry://NAME or registry://NAME@ALIAS: the registry assigns the version",
    ))
);

/// A file format for tabular data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DataFormat {
    Csv,
    Parquet,
}
