//! Reads a CSV or Parquet table from a storage URI into a raw row-major matrix of the feature columns and
//! a label vector, checking the columns and their values as it goes. Errors name the bad columns and the
//! first bad rows (as file lines for CSV, 1-based data rows for Parquet), so a user can fix the data.
//!
//! Numeric cells are stored as they are (`NaN` = missing); the cells of a string (categorical) column hold
//! the index of the value in that column's dictionary. A CSV column is categorical when it is declared so,
//! or when none of its values is a number; a column mixing numbers and words is refused.

use crate::matrix::Matrix;
use crate::prep::Classes;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;

/// Values taken to mean "missing".
const MISSING: &[&str] = &["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"];
/// How many bad rows an error quotes.
const EXAMPLES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The URI cannot be read (missing file, no access, unsupported scheme).
    #[error("cannot read the dataset: {0}")]
    Unreadable(String),
    /// The URI is malformed or its scheme unsupported: retrying cannot help.
    #[error("cannot read the dataset: {0}")]
    Unsupported(String),
    /// The data does not fit the spec; the message says what to fix.
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    /// The reason the TrainingJob's Failed condition carries.
    pub fn reason(&self) -> &'static str {
        match self {
            DataError::Unreadable(_) | DataError::Unsupported(_) => "DataUnreadable",
            DataError::Invalid(_) => "InvalidData",
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
                    return Err(DataError::Invalid(format!(
                        "cannot tell the format of {uri} from its extension: set dataset.format to csv or parquet"
                    )));
                }
            }
        };
        match name.as_str() {
            "csv" => Ok(Format::Csv),
            "parquet" => Ok(Format::Parquet),
            other => Err(DataError::Invalid(format!("unknown dataset format {other:?}: use csv or parquet"))),
        }
    }
}

/// Classification labels become class indexes; regression labels stay numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Classification,
    Regression,
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

/// Reads and checks the table at `uri`. Local files (`file://` or a plain path) are streamed; other
/// URIs are fetched whole first.
pub async fn load(uri: &str, format: Option<&str>, spec: &Spec) -> Result<Dataset, DataError> {
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
    match e {
        mizzen_common::storage::StorageError::Read { .. } => DataError::Unreadable(e.to_string()),
        // A URI this release cannot read is refused for good.
        _ => DataError::Unsupported(e.to_string()),
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
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256::new(), bytes: 0 }
    }

    fn finish(self) -> (String, u64) {
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

/// Where a cell is, for error messages.
#[derive(Clone, Copy)]
enum Place {
    /// 1-based line of a CSV file.
    Line(u64),
    /// 1-based data row.
    Row(usize),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Line(l) => write!(f, "line {l}"),
            Place::Row(r) => write!(f, "row {r}"),
        }
    }
}

/// Accumulates one feature column's dictionary and problems.
#[derive(Default)]
struct ColumnAcc {
    declared_categorical: bool,
    dictionary: HashMap<String, u32>,
    values: Vec<String>,
    /// (row, dictionary index) of string cells, written into the matrix once the column's kind is known.
    text_cells: Vec<(usize, u32)>,
    numbers: usize,
    present: usize,
    /// The first string cells, for the "mixed column" error.
    text_examples: Vec<(Place, String)>,
}

impl ColumnAcc {
    fn text(&mut self, row: usize, place: Place, value: &str) {
        self.present += 1;
        let next = self.values.len() as u32;
        let code = *self.dictionary.entry(value.to_owned()).or_insert_with(|| {
            self.values.push(value.to_owned());
            next
        });
        self.text_cells.push((row, code));
        if self.text_examples.len() < EXAMPLES {
            self.text_examples.push((place, value.to_owned()));
        }
    }
}

/// Builds a [`Dataset`] cell by cell; shared by the CSV and Parquet readers.
struct Builder {
    spec: Spec,
    names: Vec<String>,
    cols: Vec<ColumnAcc>,
    data: Vec<f64>,
    rows: usize,
    class_index: HashMap<String, u32>,
    class_names: Vec<String>,
    y_codes: Vec<u32>,
    y_values: Vec<f64>,
    label_problems: Vec<(Place, String)>,
    label_problem_count: usize,
}

impl Builder {
    /// Checks the header against the spec; returns the builder and, per feature, the file column index.
    fn new(spec: &Spec, header: &[String]) -> Result<(Self, Vec<usize>, usize), DataError> {
        let mut seen = HashMap::new();
        for (i, h) in header.iter().enumerate() {
            if seen.insert(h.as_str(), i).is_some() {
                return Err(DataError::Invalid(format!("the file names column {h:?} twice")));
            }
        }
        let position = |name: &str| seen.get(name).copied();
        let label = position(&spec.label).ok_or_else(|| {
            DataError::Invalid(format!(
                "label column {:?} is not in the file; its columns are: {}",
                spec.label,
                header.join(", ")
            ))
        })?;
        let names: Vec<String> = match &spec.features {
            Some(f) => f.clone(),
            None => header.iter().filter(|h| **h != spec.label).cloned().collect(),
        };
        if names.is_empty() {
            return Err(DataError::Invalid(format!(
                "no feature columns: the file has only the label column {:?}",
                spec.label
            )));
        }
        let missing: Vec<&str> = names.iter().filter(|n| position(n).is_none()).map(String::as_str).collect();
        if !missing.is_empty() {
            return Err(DataError::Invalid(format!(
                "feature column(s) {} not in the file; its columns are: {}",
                quote_list(&missing),
                header.join(", ")
            )));
        }
        let undeclared: Vec<&str> =
            spec.categorical.iter().filter(|c| !names.contains(c)).map(String::as_str).collect();
        if !undeclared.is_empty() {
            return Err(DataError::Invalid(format!(
                "dataset.categorical names {} which is not a feature",
                quote_list(&undeclared)
            )));
        }
        let indexes = names.iter().map(|n| position(n).expect("checked")).collect();
        let cols = names
            .iter()
            .map(|n| ColumnAcc { declared_categorical: spec.categorical.contains(n), ..Default::default() })
            .collect();
        let builder = Self {
            spec: spec.clone(),
            names,
            cols,
            data: Vec::new(),
            rows: 0,
            class_index: HashMap::new(),
            class_names: Vec::new(),
            y_codes: Vec::new(),
            y_values: Vec::new(),
            label_problems: Vec::new(),
            label_problem_count: 0,
        };
        Ok((builder, indexes, label))
    }

    fn width(&self) -> usize {
        self.names.len()
    }

    /// A text cell of feature `j` in the current row (the row being pushed is `self.rows`).
    /// Categories keep their exact text (a client sends the same string to the served model); blanks
    /// around a number or a missing marker are ignored.
    fn text(&mut self, j: usize, place: Place, value: &str) {
        let trimmed = value.trim();
        if MISSING.contains(&trimmed) {
            self.data.push(f64::NAN);
            return;
        }
        let col = &mut self.cols[j];
        if !col.declared_categorical
            && let Ok(v) = trimmed.parse::<f64>()
        {
            col.present += 1;
            col.numbers += 1;
            self.data.push(if v.is_finite() { v } else { f64::NAN });
            return;
        }
        col.text(self.rows, place, value);
        self.data.push(f64::NAN);
    }

    /// A numeric cell of feature `j` (`None` = null).
    fn number(&mut self, j: usize, place: Place, value: Option<f64>) {
        match value {
            None => self.data.push(f64::NAN),
            Some(v) if self.cols[j].declared_categorical => {
                let text = format_number(v);
                self.cols[j].text(self.rows, place, &text);
                self.data.push(f64::NAN);
            }
            Some(v) => {
                let col = &mut self.cols[j];
                col.present += 1;
                col.numbers += 1;
                self.data.push(if v.is_finite() { v } else { f64::NAN });
            }
        }
    }

    fn label_problem(&mut self, place: Place, value: &str) {
        self.label_problem_count += 1;
        if self.label_problems.len() < EXAMPLES {
            self.label_problems.push((place, value.to_owned()));
        }
    }

    /// The current row's label as text; ends the row.
    fn label_text(&mut self, place: Place, value: Option<&str>) {
        let value = value.map(str::trim).filter(|v| !MISSING.contains(v));
        match (self.spec.task, value) {
            (_, None) => {
                self.label_problem(place, "(missing)");
                self.y_codes.push(0);
                self.y_values.push(f64::NAN);
            }
            (Task::Classification, Some(v)) => {
                let next = self.class_names.len() as u32;
                let code = *self.class_index.entry(v.to_owned()).or_insert_with(|| {
                    self.class_names.push(v.to_owned());
                    next
                });
                self.y_codes.push(code);
            }
            (Task::Regression, Some(v)) => match v.parse::<f64>() {
                Ok(x) if x.is_finite() => self.y_values.push(x),
                _ => {
                    self.label_problem(place, v);
                    self.y_values.push(f64::NAN);
                }
            },
        }
        self.rows += 1;
    }

    fn label_number(&mut self, place: Place, value: Option<f64>) {
        match value {
            Some(v) if v.is_finite() => match self.spec.task {
                Task::Regression => {
                    self.y_values.push(v);
                    self.rows += 1;
                }
                Task::Classification => self.label_text(place, Some(&format_number(v))),
            },
            _ => self.label_text(place, None),
        }
    }

    fn finish(self, digest: (String, u64)) -> Result<Dataset, DataError> {
        let Builder { spec, names, cols, mut data, rows, class_names, y_codes, y_values, .. } = self;
        if rows == 0 {
            return Err(DataError::Invalid("the file has a header but no rows".into()));
        }
        if self.label_problem_count > 0 {
            let what = match spec.task {
                Task::Classification => "is missing",
                Task::Regression => "is missing or not a number",
            };
            return Err(DataError::Invalid(format!(
                "label column {:?} {what} in {} row(s): {}",
                spec.label,
                self.label_problem_count,
                examples(&self.label_problems)
            )));
        }
        let width = names.len();
        let mut columns = Vec::with_capacity(width);
        let mut problems = Vec::new();
        for (j, (name, col)) in names.into_iter().zip(cols).enumerate() {
            if col.present == 0 {
                problems.push(format!("feature {name:?} has no values: it is missing in every row"));
                continue;
            }
            if col.text_cells.is_empty() {
                columns.push(Column { name, kind: Kind::Numeric });
                continue;
            }
            if col.numbers > 0 {
                problems.push(format!(
                    "feature {name:?} has {} value(s) that are not numbers among {} numbers: {}; \
                     fix them, or list the column in dataset.categorical to one-hot encode it",
                    col.text_cells.len(),
                    col.numbers,
                    examples(&col.text_examples)
                ));
                continue;
            }
            for &(row, code) in &col.text_cells {
                data[row * width + j] = code as f64;
            }
            columns.push(Column { name, kind: Kind::Categorical { values: col.values } });
        }
        if !problems.is_empty() {
            return Err(DataError::Invalid(problems.join("; ")));
        }
        let labels = match spec.task {
            Task::Regression => Labels::Values(y_values),
            Task::Classification => {
                if class_names.len() < 2 {
                    return Err(DataError::Invalid(format!(
                        "label column {:?} has {} class(es) ({}): a classifier needs at least two",
                        spec.label,
                        class_names.len(),
                        quote_list(&class_names.iter().map(String::as_str).collect::<Vec<_>>())
                    )));
                }
                let (classes, order) = sort_classes(&class_names);
                let mut remap = vec![0u32; order.len()];
                for (sorted, &original) in order.iter().enumerate() {
                    remap[original] = sorted as u32;
                }
                Labels::Classes { y: y_codes.into_iter().map(|c| remap[c as usize]).collect(), classes }
            }
        };
        data.shrink_to_fit();
        Ok(Dataset {
            columns,
            x: Matrix::from_vec(rows, width, data),
            labels,
            sha256: digest.0,
            bytes: digest.1,
        })
    }
}

/// Integers sort numerically (and the ONNX label output is int64); anything else sorts as strings.
/// Returns the classes and, for each sorted position, the original index.
fn sort_classes(names: &[String]) -> (Classes, Vec<usize>) {
    let mut order: Vec<usize> = (0..names.len()).collect();
    // Only labels that print back as written ("1", not "01" or "+1"), so two labels never become one class.
    let ints: Option<Vec<i64>> =
        names.iter().map(|n| n.parse::<i64>().ok().filter(|i| i.to_string() == *n)).collect();
    match ints {
        Some(ints) => {
            order.sort_by_key(|&i| ints[i]);
            (Classes::Int(order.iter().map(|&i| ints[i]).collect()), order)
        }
        None => {
            order.sort_by(|&a, &b| names[a].cmp(&names[b]));
            (Classes::Str(order.iter().map(|&i| names[i].clone()).collect()), order)
        }
    }
}

/// `3` for 3.0, else the shortest round-trip form.
fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

fn quote_list(items: &[&str]) -> String {
    items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
}

fn examples(items: &[(Place, String)]) -> String {
    items.iter().map(|(p, v)| format!("{p}: {v:?}")).collect::<Vec<_>>().join(", ")
}

/// Reads CSV with a header row.
pub fn read_csv<R: Read>(reader: R, spec: &Spec) -> Result<Dataset, DataError> {
    let mut hashing = HashingReader::new(reader);
    let dataset = {
        let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(&mut hashing);
        let header: Vec<String> = csv
            .headers()
            .map_err(|e| csv_error(&e))?
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_owned())
            .collect();
        if header.is_empty() || header.iter().all(String::is_empty) {
            return Err(DataError::Invalid("the file is empty: no header row and no data".into()));
        }
        let (mut builder, indexes, label) = Builder::new(spec, &header)?;
        let mut record = csv::ByteRecord::new();
        loop {
            match csv.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => return Err(csv_error(&e)),
            }
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            let place = Place::Line(line);
            for (j, &i) in indexes.iter().enumerate() {
                let cell = std::str::from_utf8(&record[i]).map_err(|_| {
                    DataError::Invalid(format!("line {line}: column {:?} is not valid UTF-8", header[i]))
                })?;
                builder.text(j, place, cell);
            }
            let cell = std::str::from_utf8(&record[label]).map_err(|_| {
                DataError::Invalid(format!("line {line}: column {:?} is not valid UTF-8", header[label]))
            })?;
            builder.label_text(place, Some(cell));
            debug_assert_eq!(builder.data.len(), builder.rows * builder.width());
        }
        builder
    };
    // Drain what the CSV reader left so the digest covers the whole file.
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| DataError::Unreadable(e.to_string()))?;
    dataset.finish(hashing.finish())
}

fn csv_error(e: &csv::Error) -> DataError {
    match e.kind() {
        csv::ErrorKind::Io(io) => DataError::Unreadable(io.to_string()),
        csv::ErrorKind::UnequalLengths { pos, expected_len, len } => DataError::Invalid(format!(
            "line {}: {len} fields where the header has {expected_len}",
            pos.as_ref().map(|p| p.line()).unwrap_or(0)
        )),
        _ => DataError::Invalid(format!("not a valid CSV file: {e}")),
    }
}

/// Reads Parquet (any row-group layout, snappy or zstd compression).
pub fn read_parquet<T: parquet::file::reader::ChunkReader + 'static>(
    source: T,
    digest: (String, u64),
    spec: &Spec,
) -> Result<Dataset, DataError> {
    use arrow_array::Array as _;
    use arrow_array::cast::AsArray as _;
    use arrow_schema::DataType;
    let not_parquet =
        |e: parquet::errors::ParquetError| DataError::Invalid(format!("not a valid Parquet file: {e}"));
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(source)
        .map_err(not_parquet)?;
    let header: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
    let (mut rows, indexes, label) = Builder::new(spec, &header)?;
    let reader = builder.with_batch_size(64 * 1024).build().map_err(not_parquet)?;
    // Each cell becomes either a number or text; strings and dictionaries of strings are text.
    enum Cells<'a> {
        Numbers(Vec<Option<f64>>),
        Text(Box<dyn Fn(usize) -> Option<&'a str> + 'a>),
    }
    fn cells<'a>(name: &str, array: &'a dyn arrow_array::Array) -> Result<Cells<'a>, DataError> {
        macro_rules! prim {
            ($t:ty) => {{
                let a = array.as_primitive::<$t>();
                Cells::Numbers((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i) as f64)).collect())
            }};
        }
        Ok(match array.data_type() {
            DataType::Float64 => prim!(arrow_array::types::Float64Type),
            DataType::Float32 => prim!(arrow_array::types::Float32Type),
            DataType::Int64 => prim!(arrow_array::types::Int64Type),
            DataType::Int32 => prim!(arrow_array::types::Int32Type),
            DataType::Int16 => prim!(arrow_array::types::Int16Type),
            DataType::Int8 => prim!(arrow_array::types::Int8Type),
            DataType::UInt64 => prim!(arrow_array::types::UInt64Type),
            DataType::UInt32 => prim!(arrow_array::types::UInt32Type),
            DataType::UInt16 => prim!(arrow_array::types::UInt16Type),
            DataType::UInt8 => prim!(arrow_array::types::UInt8Type),
            DataType::Boolean => {
                let a = array.as_boolean();
                Cells::Numbers((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i) as u8 as f64)).collect())
            }
            DataType::Utf8 => {
                let a = array.as_string::<i32>();
                Cells::Text(Box::new(move |i| a.is_valid(i).then(|| a.value(i))))
            }
            DataType::LargeUtf8 => {
                let a = array.as_string::<i64>();
                Cells::Text(Box::new(move |i| a.is_valid(i).then(|| a.value(i))))
            }
            DataType::Utf8View => {
                let a = array.as_string_view();
                Cells::Text(Box::new(move |i| a.is_valid(i).then(|| a.value(i))))
            }
            DataType::Dictionary(_, value) if matches!(**value, DataType::Utf8 | DataType::LargeUtf8) => {
                let d = array.as_any_dictionary();
                let keys = d.normalized_keys();
                let values = d.values();
                let get: Box<dyn Fn(usize) -> &'a str + 'a> = if **value == DataType::Utf8 {
                    let v = values.as_string::<i32>();
                    Box::new(move |k| v.value(k))
                } else {
                    let v = values.as_string::<i64>();
                    Box::new(move |k| v.value(k))
                };
                Cells::Text(Box::new(move |i| array.is_valid(i).then(|| get(keys[i]))))
            }
            other => {
                return Err(DataError::Invalid(format!(
                    "column {name:?} has Parquet/Arrow type {other}, which the trainer cannot read: use numbers or strings"
                )));
            }
        })
    }
    let mut seen = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| DataError::Invalid(format!("reading Parquet data: {e}")))?;
        let feature_cells: Vec<Cells> =
            indexes.iter().map(|&i| cells(&header[i], batch.column(i).as_ref())).collect::<Result<_, _>>()?;
        let label_cells = cells(&header[label], batch.column(label).as_ref())?;
        for r in 0..batch.num_rows() {
            let place = Place::Row(seen + r + 1);
            for (j, c) in feature_cells.iter().enumerate() {
                match c {
                    Cells::Numbers(v) => rows.number(j, place, v[r]),
                    Cells::Text(f) => match f(r) {
                        Some(s) => rows.text(j, place, s),
                        None => rows.number(j, place, None),
                    },
                }
            }
            match &label_cells {
                Cells::Numbers(v) => rows.label_number(place, v[r]),
                Cells::Text(f) => rows.label_text(place, f(r)),
            }
        }
        seen += batch.num_rows();
    }
    rows.finish(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(label: &str, task: Task) -> Spec {
        Spec { label: label.into(), features: None, categorical: vec![], task }
    }

    fn csv(text: &str, spec: &Spec) -> Result<Dataset, DataError> {
        read_csv(text.as_bytes(), spec)
    }

    #[test]
    fn reads_numbers_strings_and_missing_values() {
        let ds = csv("a,color,y\n1.5,red,b\nNA,blue,a\n3,,b\n", &spec("y", Task::Classification)).unwrap();
        assert_eq!(ds.columns[0], Column { name: "a".into(), kind: Kind::Numeric });
        assert_eq!(
            ds.columns[1],
            Column {
                name: "color".into(),
                kind: Kind::Categorical { values: vec!["red".into(), "blue".into()] }
            }
        );
        assert_eq!(ds.x.row(0), &[1.5, 0.0]);
        assert!(ds.x.row(1)[0].is_nan());
        assert_eq!(ds.x.row(1)[1], 1.0);
        assert!(ds.x.row(2)[1].is_nan());
        assert_eq!(
            ds.labels,
            Labels::Classes { y: vec![1, 0, 1], classes: Classes::Str(vec!["a".into(), "b".into()]) }
        );
        assert_eq!(ds.sha256.len(), 64);
    }

    #[test]
    fn integer_classes_sort_numerically_and_features_follow_the_spec_order() {
        let mut s = spec("y", Task::Classification);
        s.features = Some(vec!["b".into(), "a".into()]);
        let ds = csv("a,b,y\n1,2,10\n3,4,9\n5,6,10\n", &s).unwrap();
        assert_eq!(ds.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(ds.x.row(1), &[4.0, 3.0]);
        assert_eq!(ds.labels, Labels::Classes { y: vec![1, 0, 1], classes: Classes::Int(vec![9, 10]) });
    }

    #[test]
    fn declared_categorical_columns_take_numbers_as_words() {
        let mut s = spec("y", Task::Regression);
        s.categorical = vec!["zip".into()];
        let ds = csv("zip,y\n10115,1.0\n20095,2\n10115,3\n", &s).unwrap();
        assert_eq!(ds.columns[0].kind, Kind::Categorical { values: vec!["10115".into(), "20095".into()] });
        assert_eq!(ds.labels, Labels::Values(vec![1.0, 2.0, 3.0]));
    }

    fn err(text: &str, spec: &Spec) -> String {
        csv(text, spec).unwrap_err().to_string()
    }

    #[test]
    fn bad_data_is_refused_with_the_columns_and_rows_to_fix() {
        let s = spec("y", Task::Classification);
        let e = err("a,b\n1,2\n", &s);
        assert!(e.contains("label column \"y\" is not in the file; its columns are: a, b"), "{e}");
        let e = err("a,y\nNA,1\n,0\n", &s);
        assert!(e.contains("feature \"a\" has no values"), "{e}");
        let e = err("a,y\n1,1\n2,0\nabc,1\n4,0\nx y,1\n", &s);
        assert!(e.contains("feature \"a\" has 2 value(s) that are not numbers"), "{e}");
        assert!(e.contains("line 4: \"abc\"") && e.contains("line 6: \"x y\""), "{e}");
        assert!(e.contains("dataset.categorical"), "{e}");
        let e = err("", &s);
        assert!(e.contains("empty"), "{e}");
        let e = err("a,y\n", &s);
        assert!(e.contains("no rows"), "{e}");
        let e = err("a,y\n1,1\n2,\n", &s);
        assert!(e.contains("label column \"y\" is missing in 1 row(s): line 3"), "{e}");
        let e = err("a,y\n1,1\n2,1\n", &s);
        assert!(e.contains("has 1 class(es) (\"1\")"), "{e}");
        let e = err("a,y\n1,1\n2,1,3\n", &s);
        assert!(e.contains("line 3: 3 fields where the header has 2"), "{e}");
        let e = err("a,y\n1,1\n2,abc\n", &spec("y", Task::Regression));
        assert!(e.contains("missing or not a number in 1 row(s): line 3: \"abc\""), "{e}");
        let mut missing = spec("y", Task::Classification);
        missing.features = Some(vec!["a".into(), "zz".into()]);
        let e = err("a,y\n1,1\n", &missing);
        assert!(e.contains("feature column(s) \"zz\" not in the file"), "{e}");
    }

    #[test]
    fn class_labels_that_read_alike_stay_apart_and_categories_keep_their_text() {
        let ds = csv("a,c,y\n1, small,01\n2,small,1\n3,x,1\n", &spec("y", Task::Classification)).unwrap();
        assert_eq!(
            ds.labels,
            Labels::Classes { y: vec![0, 1, 1], classes: Classes::Str(vec!["01".into(), "1".into()]) }
        );
        assert_eq!(
            ds.columns[1].kind,
            Kind::Categorical { values: vec![" small".into(), "small".into(), "x".into()] }
        );
    }

    #[test]
    fn formats_come_from_the_extension_or_the_spec() {
        assert_eq!(Format::pick(None, "s3://b/x.CSV").unwrap(), Format::Csv);
        assert_eq!(Format::pick(None, "file:///d/x.parquet").unwrap(), Format::Parquet);
        assert_eq!(Format::pick(Some("parquet"), "s3://b/x").unwrap(), Format::Parquet);
        assert!(Format::pick(None, "s3://b/x").unwrap_err().to_string().contains("dataset.format"));
    }

    #[tokio::test]
    async fn unreadable_uris_say_so() {
        let e = load("file:///no/such/data.csv", None, &spec("y", Task::Classification)).await.unwrap_err();
        assert_eq!(e.reason(), "DataUnreadable");
        assert!(e.to_string().contains("/no/such/data.csv"), "{e}");
    }

    #[test]
    fn parquet_reads_typed_columns() {
        use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
        use std::sync::Arc;
        let batch = RecordBatch::try_from_iter([
            ("x", Arc::new(Float64Array::from(vec![Some(1.0), None, Some(3.0)])) as ArrayRef),
            ("c", Arc::new(StringArray::from(vec![Some("u"), Some("v"), None])) as ArrayRef),
            ("y", Arc::new(Int64Array::from(vec![0, 1, 0])) as ArrayRef),
        ])
        .unwrap();
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let ds =
            read_parquet(bytes::Bytes::from(buf), ("d".into(), 0), &spec("y", Task::Classification)).unwrap();
        assert_eq!(ds.columns[1].kind, Kind::Categorical { values: vec!["u".into(), "v".into()] });
        assert!(ds.x.row(1)[0].is_nan());
        assert_eq!(ds.labels, Labels::Classes { y: vec![0, 1, 0], classes: Classes::Int(vec![0, 1]) });
    }
}
