//! Builds a [`Dataset`] cell by cell, for the CSV and the Parquet reader alike: decides each column's kind
//! (numeric, or categorical with its dictionary), reads the labels into classes or values, and gathers the
//! problems into errors that name the columns and the first bad rows.

use super::{Column, DataError, Dataset, Kind, Labels, Spec, Task};
use crate::matrix::Matrix;
use crate::prep::Classes;
use std::collections::HashMap;

/// Values taken to mean "missing".
const MISSING: &[&str] = &["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"];
/// How many bad rows an error quotes.
const EXAMPLES: usize = 5;

/// Where a cell is, for error messages.
#[derive(Clone, Copy)]
pub(super) enum Place {
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
pub(super) struct Builder {
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
    pub(super) fn new(spec: &Spec, header: &[String]) -> Result<(Self, Vec<usize>, usize), DataError> {
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
            return Err(DataError::Config(format!(
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

    /// Whether every row pushed so far has a cell for each feature.
    pub(super) fn rows_are_full(&self) -> bool {
        self.data.len() == self.rows * self.names.len()
    }

    /// A text cell of feature `j` in the current row (the row being pushed is `self.rows`).
    /// Categories keep their exact text (a client sends the same string to the served model); blanks
    /// around a number or a missing marker are ignored.
    pub(super) fn text(&mut self, j: usize, place: Place, value: &str) {
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
    pub(super) fn number(&mut self, j: usize, place: Place, value: Option<f64>) {
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
    pub(super) fn label_text(&mut self, place: Place, value: Option<&str>) {
        let value = value.map(str::trim).filter(|v| !MISSING.contains(v));
        match (self.spec.task, value) {
            (_, None) => {
                self.label_problem(place, "(missing)");
                self.y_codes.push(0);
                self.y_values.push(f64::NAN);
            }
            (Task::Classification | Task::Either, Some(v)) => {
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

    pub(super) fn label_number(&mut self, place: Place, value: Option<f64>) {
        match value {
            Some(v) if v.is_finite() => match self.spec.task {
                Task::Regression => {
                    self.y_values.push(v);
                    self.rows += 1;
                }
                Task::Classification | Task::Either => self.label_text(place, Some(&format_number(v))),
            },
            _ => self.label_text(place, None),
        }
    }

    pub(super) fn finish(self, digest: (String, u64)) -> Result<Dataset, DataError> {
        let Builder { spec, names, cols, mut data, rows, class_names, y_codes, y_values, .. } = self;
        if rows == 0 {
            return Err(DataError::Invalid("the file has a header but no rows".into()));
        }
        if self.label_problem_count > 0 {
            let what = match spec.task {
                Task::Classification | Task::Either => "is missing",
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
        // The model takes and gives float32: a value beyond its range would train and then be infinite.
        for (j, column) in columns.iter().enumerate() {
            if column.kind != Kind::Numeric {
                continue;
            }
            if let Some(row) = (0..rows).find(|&r| data[r * width + j].abs() > f32::MAX as f64) {
                problems.push(format!(
                    "feature {:?} has values beyond float32's range (±3.4e38), such as {} in data row {}: the \
                     model takes float32 inputs; rescale the column",
                    column.name,
                    data[row * width + j],
                    row + 1
                ));
            }
        }
        if !problems.is_empty() {
            return Err(DataError::Invalid(problems.join("; ")));
        }
        if spec.task == Task::Regression
            && let Some(row) = y_values.iter().position(|v| v.abs() > f32::MAX as f64)
        {
            return Err(DataError::Invalid(format!(
                "label column {:?} has values beyond float32's range (±3.4e38), such as {} in data row {}: the \
                 model answers in float32; rescale the label",
                spec.label,
                y_values[row],
                row + 1
            )));
        }
        let labels = match spec.task {
            Task::Regression => Labels::Values(y_values),
            Task::Classification | Task::Either => labels_of(&spec, &class_names, y_codes)?,
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
/// A classifier refuses a label with more distinct values than this.
pub const MAX_CLASSES: usize = 1000;
/// How `Task::Either` (mlp) reads a label, the same for CSV and Parquet:
/// - a label whose every value is a number is numeric (`1`, `01`, `+1`, `1.0`, `1e0` and Parquet's 1.0 are
///   all the number 1);
/// - a numeric label with a value that is not an integer, or with more than `MAX_INFERRED_CLASSES`
///   distinct values, is a quantity: regression (the model answers `variable`);
/// - any other label holds classes: integer classes when numeric, else the values' text as written.
///
/// A classifier (`logisticRegression`) reads labels the same way and refuses a quantity with a message
/// that says to use a regressor, as scikit-learn refuses a continuous target.
pub const MAX_INFERRED_CLASSES: usize = 100;

/// The labels of a classification (or `Either`) read: `names` are the distinct label texts in order of
/// appearance and `codes` each row's index into them.
fn labels_of(spec: &Spec, names: &[String], codes: Vec<u32>) -> Result<Labels, DataError> {
    let numbers: Option<Vec<f64>> =
        names.iter().map(|n| n.parse::<f64>().ok().filter(|v| v.is_finite())).collect();
    if let Some(numbers) = numbers {
        let fractional = numbers.iter().find(|v| v.fract() != 0.0 || v.abs() >= 9.0e15);
        let mut distinct: Vec<i64> = numbers.iter().map(|&v| v as i64).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let quantity = fractional.is_some() || distinct.len() > MAX_INFERRED_CLASSES;
        if quantity && spec.task == Task::Either {
            return Ok(Labels::Values(codes.into_iter().map(|c| numbers[c as usize]).collect()));
        }
        if let Some(v) = fractional {
            return Err(DataError::Invalid(format!(
                "label column {:?} is continuous ({} distinct numbers, {v} among them): a classifier needs                  class labels; use linearRegression or mlp, which do regression on such a label",
                spec.label,
                names.len()
            )));
        }
        let class = |c: u32| distinct.binary_search(&(numbers[c as usize] as i64)).expect("a value") as u32;
        let y = codes.into_iter().map(class).collect();
        return classes(spec, Classes::Int(distinct.clone()), y);
    }
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| names[a].cmp(&names[b]));
    let mut remap = vec![0u32; order.len()];
    for (sorted, &original) in order.iter().enumerate() {
        remap[original] = sorted as u32;
    }
    let y = codes.into_iter().map(|c| remap[c as usize]).collect();
    classes(spec, Classes::Str(order.iter().map(|&i| names[i].clone()).collect()), y)
}

/// Class labels, if there are enough classes and not too many.
fn classes(spec: &Spec, classes: Classes, y: Vec<u32>) -> Result<Labels, DataError> {
    let n = classes.len();
    if n < 2 {
        let shown = match &classes {
            Classes::Int(v) => v.iter().map(i64::to_string).collect::<Vec<_>>(),
            Classes::Str(v) => v.clone(),
        };
        return Err(DataError::Invalid(format!(
            "label column {:?} has {n} class(es) ({}): a classifier needs at least two",
            spec.label,
            quote_list(&shown.iter().map(String::as_str).collect::<Vec<_>>())
        )));
    }
    if n > MAX_CLASSES {
        return Err(DataError::Invalid(format!(
            "label column {:?} has {n} distinct values: more than the {MAX_CLASSES} classes a classifier \
             takes; if it is a quantity, use linearRegression or mlp (regression)",
            spec.label
        )));
    }
    Ok(Labels::Classes { y, classes })
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
