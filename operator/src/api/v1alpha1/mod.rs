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
