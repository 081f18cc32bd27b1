//! Reads a CSV or Parquet table from a storage URI into a raw row-major matrix of the feature columns and
//! a label vector, checking the columns and their values as it goes. Errors name the bad columns and the
//! first bad rows (as file lines for CSV, 1-based data rows for Parquet), so a user can fix the data.
//!
//! Numeric cells are stored as they are (`NaN` = missing); the cells of a string (categorical) column hold
//! the index of the value in that column's dictionary. A CSV column is categorical when it is declared so,
//! or when none of its values is a number; a column mixing numbers and words is refused.

mod columns;
mod csv;
mod parquet;

pub use self::columns::{MAX_CLASSES, MAX_INFERRED_CLASSES};
pub use self::csv::read_csv;
pub use self::parquet::read_parquet;

use crate::matrix::Matrix;
use crate::prep::Classes;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::io::Read;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading failed on the way (a refused or dropped connection, a stall, a server error): another try
    /// may succeed.
    #[error("cannot read the dataset: {0}")]
    Unreadable(String),
    /// The object does not exist or access to it is refused: the same again soon (the Job may retry it
    /// later, when an upstream step may have written it or access been granted).
    #[error("cannot read the dataset: {0}")]
    Missing(String),
    /// The URI is malformed or its scheme unsupported: retrying cannot help.
    #[error("cannot read the dataset: {0}")]
    Unsupported(String),
    /// The data does not fit the spec; the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// The configuration cannot be used (an unknown format, a holdout fraction out of range, a categorical
    /// column that is not a feature), whatever the data.
    #[error("{0}")]
    Config(String),
}

impl DataError {
    /// The reason the TrainingJob's Failed condition carries.
    pub fn reason(&self) -> &'static str {
        match self {
            DataError::Unreadable(_) | DataError::Missing(_) | DataError::Unsupported(_) => "DataUnreadable",
            DataError::Invalid(_) => "InvalidData",
            DataError::Config(_) => "InvalidConfig",
        }
    }
}

/// File formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

impl Format {
    /// `explicit` (`csv`, `parquet`) or else from the URI's extension.
    pub fn pick(explicit: Option<&str>, uri: &str) -> Result<Self, DataError> {
        let name = match explicit {
            Some(f) => f.to_ascii_lowercase(),
            None => {
                let path = uri.split(['?', '#']).next().unwrap_or(uri).to_ascii_lowercase();
                if path.ends_with(".csv") || path.ends_with(".csv.txt") {
                    "csv".into()
                } else if path.ends_with(".parquet") || path.ends_with(".pq") {
                    "parquet".into()
                } else {
                    return Err(DataError::Config(format!(
                        "cannot tell the format of {uri} from its extension: set dataset.format to csv or parquet"
                    )));
                }
            }
        };
        match name.as_str() {
            "csv" => Ok(Format::Csv),
            "parquet" => Ok(Format::Parquet),
            other => Err(DataError::Config(format!("unknown dataset format {other:?}: use csv or parquet"))),
        }
    }
}

/// Classification labels become class indexes; regression labels stay numbers. `Either` (mlp, which does
/// both) lets the label decide, by the rule of [`MAX_INFERRED_CLASSES`]'s docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Classification,
    Regression,
    Either,
}

/// What to read.
#[derive(Clone, Debug)]
pub struct Spec {
    pub label: String,
    /// Feature columns in order; `None` = every other column in file order.
    pub features: Option<Vec<String>>,
    /// Columns to one-hot encode even if their values look numeric.
    pub categorical: Vec<String>,
    pub task: Task,
}

/// A feature column's kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Numeric,
    /// Cells hold indexes into `values` (in order of first appearance).
    Categorical {
        values: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
}

/// The label column.
#[derive(Clone, Debug, PartialEq)]
pub enum Labels {
    /// Class index per row into `classes` (sorted as scikit-learn sorts them).
    Classes {
        y: Vec<u32>,
        classes: Classes,
    },
    Values(Vec<f64>),
}

impl Labels {
    pub fn len(&self) -> usize {
        match self {
            Labels::Classes { y, .. } => y.len(),
            Labels::Values(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Swaps rows `i` and `j`.
    pub fn swap(&mut self, i: usize, j: usize) {
        match self {
            Labels::Classes { y, .. } => y.swap(i, j),
            Labels::Values(v) => v.swap(i, j),
        }
    }
}

/// A table read and checked.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub columns: Vec<Column>,
    /// Raw cells, row-major, one column per feature.
    pub x: Matrix,
    pub labels: Labels,
    /// sha256 of the file's bytes.
    pub sha256: String,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// The environment variable that sets how many times a remote read that failed on the way is tried again.
pub const READ_RETRIES_ENV: &str = "MIZZEN_STORAGE_READ_RETRIES";
/// Tries again after a failed remote read, by default.
pub const DEFAULT_READ_RETRIES: u32 = 3;

/// Tries again after a failed remote read: [`READ_RETRIES_ENV`] or [`DEFAULT_READ_RETRIES`].
pub fn read_retries() -> Result<u32, DataError> {
    match std::env::var(READ_RETRIES_ENV) {
        Err(_) => Ok(DEFAULT_READ_RETRIES),
        Ok(v) => v.trim().parse().ok().filter(|&n| n <= 10).ok_or_else(|| {
            DataError::Config(format!("{READ_RETRIES_ENV}={v:?}: use a number of retries from 0 to 10"))
        }),
    }
}

/// Reads and checks the table at `uri`. Local files (`file://` or a plain path) are streamed; other
/// URIs are streamed (CSV) or fetched whole (Parquet), and a read that fails on the way
/// ([`DataError::Unreadable`]: a dropped connection, a stall, a server error) is tried again from the
/// start `retries` times, after 2, 4, 8 ... seconds, for servers that cannot resume a transfer.
pub async fn load(uri: &str, format: Option<&str>, spec: &Spec, retries: u32) -> Result<Dataset, DataError> {
    let mut attempt = 0;
    loop {
        match load_once(uri, format, spec).await {
            Err(DataError::Unreadable(message)) if attempt < retries && local_path(uri).is_none() => {
                attempt += 1;
                let wait = std::time::Duration::from_secs(1 << attempt.min(6));
                tracing::warn!(
                    uri,
                    attempt,
                    retries,
                    wait_seconds = wait.as_secs(),
                    error = %message,
                    "reading the dataset failed; trying again from the start"
                );
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// A training set from a FeatureSet: the labels file at `uri` (CSV: the entity key, the event time and the
/// label, and any other columns) sent to the FeatureSet's store, which answers each row with the features'
/// values as of its time (point-in-time: no value from the row's future); the answer is read as a CSV
/// dataset. The store's refusals (an unknown feature, a bad key or time, named by row) are the data's
/// fault; an unreachable store is worth another try.
pub async fn load_joined(
    uri: &str,
    format: Option<&str>,
    join: &mizzen_common::training::FeatureSetJoin,
    spec: &Spec,
) -> Result<Dataset, DataError> {
    if Format::pick(format, uri)? != Format::Csv {
        return Err(DataError::Config(format!(
            "the labels file {uri} must be CSV to be joined with FeatureSet {} (Parquet labels are not read yet)",
            join.name
        )));
    }
    // The store takes at most 64 MiB of JSON; a larger labels file is refused before it is read whole.
    let reader = mizzen_common::storage::blocking_reader(uri).await.map_err(storage_error)?;
    let read_uri = uri.to_string();
    let bytes = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        reader
            .take(MAX_LABELS_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::Unreadable(format!("{read_uri}: {e}")))?;
        if bytes.len() as u64 > MAX_LABELS_BYTES {
            return Err(DataError::Invalid(format!(
                "the labels file {read_uri} is larger than {} MiB, the most one join sends to the feature store: \
                 split it into several TrainingJobs' labels or sample it",
                MAX_LABELS_BYTES >> 20
            )));
        }
        Ok(bytes)
    })
    .await
    .map_err(|e| DataError::Unreadable(e.to_string()))??;
    let entities = labels_as_columns(&bytes, uri)?;
    let request = serde_json::json!({
        "features": join.features.iter().map(|f| format!("{}:{f}", join.view)).collect::<Vec<_>>(),
        "entities": entities,
        "timestamp_column": join.timestamp_column,
        "format": "csv",
    });
    let url = format!("{}/get-historical-features", join.url.trim_end_matches('/'));
    let unreachable = |e: String| {
        DataError::Unreadable(format!("the feature store of FeatureSet {} ({url}): {e}", join.name))
    };
    let response = reqwest::Client::new()
        .post(&url)
        .json(&request)
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| unreachable(e.to_string()))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.into_owned());
        let message = format!("joining {uri} with FeatureSet {}: {status}: {message}", join.name);
        return Err(if status.is_client_error() {
            DataError::Invalid(message)
        } else {
            unreachable(message)
        });
    }
    let spec = spec.clone();
    tokio::task::spawn_blocking(move || read_csv(std::io::Cursor::new(body), &spec))
        .await
        .map_err(|e| DataError::Unreadable(e.to_string()))?
}

/// The largest labels file joined with a FeatureSet: as JSON it must fit the store's 64 MiB body limit.
pub const MAX_LABELS_BYTES: u64 = 32 << 20;

/// A CSV file's columns as JSON lists of strings (an empty cell: null), as the feature store takes entity
/// rows.
fn labels_as_columns(
    bytes: &[u8],
    uri: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, DataError> {
    let mut reader = ::csv::ReaderBuilder::new().from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| DataError::Invalid(format!("{uri}: the header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut columns: Vec<Vec<serde_json::Value>> = vec![Vec::new(); header.len()];
    for (r, record) in reader.records().enumerate() {
        let record = record.map_err(|e| DataError::Invalid(format!("{uri}: line {}: {e}", r + 2)))?;
        for (c, column) in columns.iter_mut().enumerate() {
            let cell = record.get(c).unwrap_or_default();
            column.push(if cell.is_empty() { serde_json::Value::Null } else { cell.into() });
        }
    }
    Ok(header.into_iter().zip(columns.into_iter().map(serde_json::Value::Array)).collect())
}

async fn load_once(uri: &str, format: Option<&str>, spec: &Spec) -> Result<Dataset, DataError> {
    let format = Format::pick(format, uri)?;
    let local = local_path(uri);
    match (format, local) {
        (Format::Csv, Some(path)) => {
            let file = std::fs::File::open(&path)
                .map_err(|e| DataError::Unreadable(format!("{}: {e}", path.display())))?;
            let spec = spec.clone();
            tokio::task::spawn_blocking(move || {
                read_csv(std::io::BufReader::with_capacity(1 << 20, file), &spec)
            })
            .await
            .map_err(|e| DataError::Unreadable(e.to_string()))?
        }
        (Format::Parquet, Some(path)) => {
            let spec = spec.clone();
            tokio::task::spawn_blocking(move || {
                let digest = {
                    let mut file = std::fs::File::open(&path)
                        .map_err(|e| DataError::Unreadable(format!("{}: {e}", path.display())))?;
                    let mut hasher = HashingReader::new(&mut file);
                    std::io::copy(&mut hasher, &mut std::io::sink())
                        .map_err(|e| DataError::Unreadable(format!("{}: {e}", path.display())))?;
                    hasher.finish()
                };
                let file = std::fs::File::open(&path)
                    .map_err(|e| DataError::Unreadable(format!("{}: {e}", path.display())))?;
                read_parquet(file, digest, &spec)
            })
            .await
            .map_err(|e| DataError::Unreadable(e.to_string()))?
        }
        // Remote CSV is streamed; remote Parquet (read from its footer backwards) is fetched whole.
        (Format::Csv, None) => {
            let reader = mizzen_common::storage::blocking_reader(uri).await.map_err(storage_error)?;
            let spec = spec.clone();
            tokio::task::spawn_blocking(move || {
                read_csv(std::io::BufReader::with_capacity(1 << 20, reader), &spec)
            })
            .await
            .map_err(|e| DataError::Unreadable(e.to_string()))?
        }
        (Format::Parquet, None) => {
            let bytes = mizzen_common::storage::read(uri).await.map_err(storage_error)?;
            let spec = spec.clone();
            tokio::task::spawn_blocking(move || {
                let digest = (hex(&Sha256::digest(&bytes)), bytes.len() as u64);
                read_parquet(bytes, digest, &spec)
            })
            .await
            .map_err(|e| DataError::Unreadable(e.to_string()))?
        }
    }
}

fn storage_error(e: mizzen_common::storage::StorageError) -> DataError {
    // A server's error page can be long.
    let message = mizzen_common::shortened(&e.to_string(), 600);
    match e {
        _ if e.is_missing() => DataError::Missing(message),
        mizzen_common::storage::StorageError::Read { .. } => DataError::Unreadable(message),
        // A URI this release cannot read is refused for good.
        _ => DataError::Unsupported(message),
    }
}

/// `file:///p` or a plain path.
fn local_path(uri: &str) -> Option<std::path::PathBuf> {
    if let Some(rest) = uri.strip_prefix("file://") {
        return Some(rest.into());
    }
    (!uri.contains("://")).then(|| uri.into())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Hashes what passes through.
pub(super) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub(super) fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256::new(), bytes: 0 }
    }

    pub(super) fn finish(self) -> (String, u64) {
        (hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::spec;

    #[test]
    fn formats_come_from_the_extension_or_the_spec() {
        assert_eq!(Format::pick(None, "s3://b/x.CSV").unwrap(), Format::Csv);
        assert_eq!(Format::pick(None, "file:///d/x.parquet").unwrap(), Format::Parquet);
        assert_eq!(Format::pick(Some("parquet"), "s3://b/x").unwrap(), Format::Parquet);
        assert!(Format::pick(None, "s3://b/x").unwrap_err().to_string().contains("dataset.format"));
    }

    #[tokio::test]
    async fn unreadable_uris_say_so() {
        let e =
            load("file:///no/such/data.csv", None, &spec("y", Task::Classification), 3).await.unwrap_err();
        assert_eq!(e.reason(), "DataUnreadable");
        assert!(e.to_string().contains("/no/such/data.csv"), "{e}");
    }
}
