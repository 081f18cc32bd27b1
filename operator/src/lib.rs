//! Mizzen's operator: the API types of `mizzen.dev/v1alpha1` and the controllers that reconcile them.

/// The API types live in their own crate; `crate::api` keeps naming them here.
pub use mizzen_api as api;
pub mod conditions;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod server;
