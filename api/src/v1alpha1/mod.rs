//! `mizzen.dev/v1alpha1`: ModelDeployment, TrainingJob and FeatureSet.

pub mod common;
pub mod feature_set;
pub mod model_deployment;
pub mod training_job;

pub use common::{ContainerSpec, DataFormat, DataUri, GROUP, ModelUri, VERSION};
pub use feature_set::{FeatureSet, FeatureSetSpec, FeatureSetStatus};
pub use model_deployment::{ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus};
pub use training_job::{TrainingJob, TrainingJobSpec, TrainingJobStatus};

#[cfg(test)]
mod cel_tests;

#[cfg(test)]
mod default_tests {
    use super::feature_set::OnlineSpec;
    use super::model_deployment::{BatchingSpec, BlueGreenSpec, ServerSpec, StrategySpec, ThreadsSpec};
    use super::training_job::{Hyperparameters, OutputSpec, ValidationSpec};
    use super::*;
    use serde::de::DeserializeOwned;

    /// A struct's `Default` is what schemars writes as the schema default of an omitted field, and
    /// `{}` is what the API server then fills in from the fields' own defaults: the two must agree, or the
    /// API server refuses the CRD (or a default breaks a bound).
    fn default_matches_empty_object<T: Default + DeserializeOwned + PartialEq + std::fmt::Debug>() {
        let from_empty: T = serde_json::from_str("{}").unwrap();
        assert_eq!(T::default(), from_empty, "{}", std::any::type_name::<T>());
    }

    #[test]
    fn defaults_agree_with_field_defaults() {
        default_matches_empty_object::<ContainerSpec>();
        default_matches_empty_object::<ServerSpec>();
        default_matches_empty_object::<BatchingSpec>();
        default_matches_empty_object::<ThreadsSpec>();
        default_matches_empty_object::<StrategySpec>();
        default_matches_empty_object::<BlueGreenSpec>();
        default_matches_empty_object::<Hyperparameters>();
        default_matches_empty_object::<ValidationSpec>();
        default_matches_empty_object::<OutputSpec>();
        default_matches_empty_object::<OnlineSpec>();
    }
}
