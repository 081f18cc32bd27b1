//! mizzen-train: reads a CSV or Parquet table, checks it against the spec, splits a seeded holdout,
//! preprocesses (impute, standardize, one-hot), fits a logistic regression, ridge regression or MLP,
//! scores it, and writes an ONNX model with the preprocessing inside the graph plus its metadata.

pub mod data;
pub mod features;
pub mod matrix;
pub mod network;
pub mod prep;
pub mod split;

pub use matrix::Matrix;
pub use network::{Dense, Head, Network};
