//! The Mizzen API types (`mizzen.dev`), one module per version and one file per kind, with their CEL
//! rules, the table of validation cases that exercises every rule, and CRD generation. The operator, the
//! services and the e2e suite depend on this crate, not on each other, for the types.

pub mod crd;
pub mod v1alpha1;
pub mod validation_cases;
