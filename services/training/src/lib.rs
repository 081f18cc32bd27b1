//! mizzen-train: reads a CSV or Parquet table, checks it against the spec, splits a seeded holdout,
//! preprocesses (impute, standardize, one-hot), fits a logistic regression, ridge regression or MLP,
//! scores it, and writes an ONNX model with the preprocessing inside the graph plus its metadata.

pub mod data;
pub mod features;
pub mod learn;
pub mod matrix;
pub mod memory;
pub mod metrics;
pub mod network;
pub mod onnx;
pub mod prep;
pub mod split;
#[cfg(test)]
pub(crate) mod test_support;
pub mod train;
pub mod vector;

pub use matrix::Matrix;
pub use network::{Dense, Head, Network};
