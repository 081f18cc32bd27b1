//! The contract between the operator and `mizzen-features materialize`: the report a materialization Job's
//! pod leaves as its termination message, which the operator copies into the FeatureSet's status.

use serde::{Deserialize, Serialize};

/// What a materialization did: source rows read (as the first replica counted them), entities its online
/// store holds afterwards, and how long it took.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub rows: u64,
    pub entities: u64,
    pub seconds: f64,
    /// Rows per source, in the order ingested.
    pub sources: Vec<(String, u64)>,
}
