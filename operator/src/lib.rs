//! Mizzen's operator: the API types of `mizzen.dev/v1alpha1` and the controllers that reconcile them.

pub mod api;
pub mod conditions;
pub mod controller;
pub mod metrics;
pub mod server;
