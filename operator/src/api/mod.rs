//! The Mizzen API types, one module per version and one file per kind.

pub mod crd;
pub mod v1alpha1;
pub mod validation_cases;
