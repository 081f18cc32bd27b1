//! FeatureSet: one entity, its features, and the online store that serves them.

use super::common::{Condition, ContainerSpec, DataFormat, DataUri};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One entity and its features, materialized from batch files into an online store that serves
/// Feast-shaped lookups (`POST /get-online-features`, `POST /push`) and point-in-time retrieval for training.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "mizzen.dev",
    version = "v1alpha1",
    kind = "FeatureSet",
    namespaced,
    status = "FeatureSetStatus",
    shortname = "fset",
    category = "mizzen",
    cel,
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether the online store serves lookups"),
    printcolumn(name = "Entity", type_ = "string", json_path = ".spec.entity.name", priority = 1, description = "The entity the features describe"),
    printcolumn(name = "Rows", type_ = "integer", json_path = ".status.rowCount", description = "Entities in the online store"),
    printcolumn(name = "Last Materialization", type_ = "date", json_path = ".status.lastMaterialization.time", description = "When the last materialization finished"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url", priority = 1, description = "In-cluster URL of the feature store"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 52")
        .message("metadata.name must be a DNS label of at most 52 characters that starts with a letter: it names the StatefulSet, its Service and its Jobs"),
    validation = Rule::new("self.spec.features.all(f, f.name != self.spec.entity.joinKey)")
        .message("a feature must not have the entity's joinKey as its name"),
    validation = Rule::new("self.spec.entity.joinKey == oldSelf.spec.entity.joinKey && self.spec.entity.type == oldSelf.spec.entity.type")
        .message("entity.joinKey and entity.type cannot change: the stored rows are keyed by them; create a new FeatureSet")
)]
#[serde(rename_all = "camelCase")]
pub struct FeatureSetSpec {
    /// The entity the features describe, for example a customer.
    pub entity: Entity,
    /// The features, in the order lookups return them. The API server refuses a repeated name.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub features: Vec<Feature>,
    /// How long a value stays fresh, as a duration such as `24h` or `90m`. Online lookups report older
    /// values with status `OUTSIDE_MAX_AGE`, and point-in-time joins ignore them. Default: forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) > duration('0s')").message("ttl must be a positive duration such as 30s, 90m or 24h"))]
    pub ttl: Option<String>,
    /// Batch files the store is materialized from.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("sources must not repeat a name"))]
    pub sources: Vec<Source>,
    /// A cron schedule (five fields, or @hourly, @daily and so on) for materialization as a CronJob.
    /// Default: materialize once, and again whenever the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\\\\S+\\\\s+){4}\\\\S+)$')").message("schedule must be a cron expression with five fields, or @hourly, @daily, @weekly, @monthly or @yearly"))]
    pub schedule: Option<String>,
    /// The online store.
    #[serde(default)]
    pub online: OnlineSpec,
}

/// The entity: what a feature row is keyed by.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entity {
    /// Entity name, for example `customer`.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("entity.name must be an identifier: letters, digits and '_', not starting with a digit"))]
    pub name: String,
    /// The column that holds the entity key in sources and in lookups, for example `customer_id`.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("entity.joinKey must be an identifier: letters, digits and '_', not starting with a digit"))]
    pub join_key: String,
    /// Type of the key: `string` or `int64`.
    #[serde(rename = "type", default = "default_key_type")]
    pub key_type: KeyType,
}

fn default_key_type() -> KeyType {
    KeyType::String
}

/// Type of an entity key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum KeyType {
    String,
    Int64,
}

/// One feature.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Feature {
    /// Feature name: the source column it is read from and the name lookups return.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("feature name must be an identifier: letters, digits and '_', not starting with a digit"))]
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// What the feature means, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
}

/// Type of a feature value.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ValueType {
    Float32,
    Float64,
    Int32,
    Int64,
    String,
    Bool,
}

/// A batch file of timestamped feature rows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// Source name, unique in the FeatureSet.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("source name must be a DNS label: lowercase letters, digits and '-'"))]
    pub name: String,
    /// A CSV or Parquet file with the join key, a timestamp and some of the features.
    pub uri: DataUri,
    /// File format. Default: from the file extension (`.csv`, `.parquet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DataFormat>,
    /// The column holding each row's event time.
    #[serde(default = "super::training_job::default_timestamp_column")]
    #[schemars(length(min = 1, max = 256))]
    pub timestamp_column: String,
    /// An optional column holding when each row was written, to break ties between rows with the same event time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub created_timestamp_column: Option<String>,
}

/// The online store: a StatefulSet running mizzen-features with a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnlineSpec {
    /// Pods serving lookups; each holds a full copy.
    #[serde(default = "default_online_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// Size of each pod's PersistentVolumeClaim, as a quantity such as `1Gi`.
    #[serde(default = "default_storage_size")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("online.storageSize must be a positive quantity such as 1Gi"))]
    pub storage_size: String,
    /// StorageClass of the claims. Default: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// Memory for the in-process cache of hot rows, as a quantity such as `64Mi`.
    #[serde(default = "default_cache_size")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("online.cacheSize must be a quantity such as 64Mi"))]
    pub cache_size: String,
    /// The feature store's container: image, resources, environment.
    #[serde(default, flatten)]
    pub container: ContainerSpec,
}

impl Default for OnlineSpec {
    fn default() -> Self {
        Self {
            replicas: default_online_replicas(),
            storage_size: default_storage_size(),
            storage_class_name: None,
            cache_size: default_cache_size(),
            container: ContainerSpec::default(),
        }
    }
}

fn default_online_replicas() -> i32 {
    1
}
fn default_storage_size() -> String {
    "1Gi".into()
}
fn default_cache_size() -> String {
    "64Mi".into()
}

/// Observed state of a FeatureSet, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureSetStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `Materialized`, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// In-cluster base URL of the feature store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The last finished materialization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_materialization: Option<Materialization>,
    /// Entities in the online store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<i64>,
}

/// One materialization run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Materialization {
    /// When it finished.
    pub time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// Source rows it read.
    pub rows: i64,
    /// How long it took, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// The Job that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
}

/// What a feature store's stored rows depend on: the type of the key and the features' names and types, in
/// order (rows are stored by feature position). The operator and mizzen-features both judge a change of
/// spec by it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StoredLayout {
    pub key_type: KeyType,
    pub features: Vec<(String, ValueType)>,
}

impl FeatureSetSpec {
    pub fn layout(&self) -> StoredLayout {
        StoredLayout {
            key_type: self.entity.key_type,
            features: self.features.iter().map(|f| (f.name.clone(), f.value_type)).collect(),
        }
    }
}

impl StoredLayout {
    /// Whether rows stored under this layout can be served under `new`: the same key type, and this layout's
    /// features first in `new`, with the same names and types (features are only appended). Says why not.
    pub fn can_become(&self, new: &StoredLayout) -> Result<(), String> {
        if self.key_type != new.key_type {
            return Err(format!(
                "the entity key type changed from {:?} to {:?}",
                self.key_type, new.key_type
            ));
        }
        for (i, (name, kind)) in self.features.iter().enumerate() {
            match new.features.get(i) {
                Some((n, k)) if n == name && k == kind => {}
                Some((n, k)) => {
                    return Err(format!(
                        "feature {} was {name} ({kind:?}) and is now {n} ({k:?}): features can only be appended \
                         at the end, with the stored ones kept in their order and types",
                        i + 1
                    ));
                }
                None => {
                    return Err(format!(
                        "feature {name} ({kind:?}) was removed: features can only be appended at the end"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    fn layout(features: &[(&str, ValueType)]) -> StoredLayout {
        StoredLayout {
            key_type: KeyType::String,
            features: features.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
        }
    }

    #[test]
    fn features_can_only_be_appended() {
        use ValueType::*;
        let old = layout(&[("a", Float64), ("b", Int64)]);
        assert!(old.can_become(&old).is_ok());
        assert!(old.can_become(&layout(&[("a", Float64), ("b", Int64), ("c", String)])).is_ok());
        let err = old.can_become(&layout(&[("a", Float64)])).unwrap_err();
        assert!(err.contains("b (Int64) was removed"), "{err}");
        let err = old.can_become(&layout(&[("b", Int64), ("a", Float64)])).unwrap_err();
        assert!(err.contains("feature 1 was a (Float64) and is now b (Int64)"), "{err}");
        let err = old.can_become(&layout(&[("a", Float32), ("b", Int64)])).unwrap_err();
        assert!(err.contains("is now a (Float32)"), "{err}");
        let mut int_key = old.clone();
        int_key.key_type = KeyType::Int64;
        assert!(old.can_become(&int_key).unwrap_err().contains("key type"));
    }
}
