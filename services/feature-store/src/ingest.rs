//! Batch ingestion: a CSV or Parquet file of a source as the same columns a push carries (`{column:
//! [values]}`), so it is checked by the same rules ([`Schema::rows`]): every row first, the first bad one
//! named, nothing written unless all are good. Columns the FeatureSet does not know are left out (batch
//! files often carry more).

use crate::Error;
use crate::schema::Schema;
use arrow_array::Array as _;
use arrow_array::cast::AsArray as _;
use arrow_schema::{DataType, TimeUnit};
use mizzen_api::v1alpha1::feature_set::{KeyType, ValueType};
use serde_json::{Map, Value as Json};

/// The columns of `schema` a file should give: the join key, the timestamps, then the features; with the
/// JSON form each CSV cell takes (`None`: the time, kept as text).
fn wanted(schema: &Schema, timestamp: &str, created: Option<&str>) -> Vec<(String, Option<Kind>)> {
    let key = match schema.key_type {
        KeyType::String => Kind::Text,
        KeyType::Int64 => Kind::Int,
    };
    let mut out = vec![(schema.join_key.clone(), Some(key)), (timestamp.to_string(), None)];
    out.extend(created.map(|c| (c.to_string(), None)));
    out.extend(schema.features.iter().map(|(name, t)| {
        let kind = match t {
            ValueType::Float32 | ValueType::Float64 => Kind::Float,
            ValueType::Int32 | ValueType::Int64 => Kind::Int,
            ValueType::String => Kind::Text,
            ValueType::Bool => Kind::Bool,
        };
        (name.clone(), Some(kind))
    }));
    out
}

#[derive(Clone, Copy)]
enum Kind {
    Float,
    Int,
    Text,
    Bool,
}

/// A CSV cell as JSON for its column: empty is null; numbers that do not parse stay text, so the schema's
/// check names them.
fn cell(kind: Option<Kind>, text: &str) -> Json {
    if text.is_empty() {
        return Json::Null;
    }
    match kind {
        None | Some(Kind::Text) => Json::String(text.to_string()),
        Some(Kind::Int) => {
            text.trim().parse::<i64>().map_or_else(|_| Json::String(text.to_string()), Json::from)
        }
        Some(Kind::Float) => match text.trim() {
            "NaN" | "nan" => Json::Null,
            t => t
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| Json::String(text.to_string()), Json::Number),
        },
        Some(Kind::Bool) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Json::Bool(true),
            "false" | "0" => Json::Bool(false),
            _ => Json::String(text.to_string()),
        },
    }
}

/// A CSV file (a header row, then rows) as columns.
pub fn csv_columns(
    bytes: &[u8],
    schema: &Schema,
    timestamp: &str,
    created: Option<&str>,
) -> Result<Map<String, Json>, Error> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| Error::invalid(format!("not a CSV file: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let picked: Vec<(usize, String, Option<Kind>)> = wanted(schema, timestamp, created)
        .into_iter()
        .filter_map(|(name, kind)| header.iter().position(|h| *h == name).map(|i| (i, name, kind)))
        .collect();
    let mut columns: Vec<Vec<Json>> = vec![Vec::new(); picked.len()];
    for (r, record) in reader.records().enumerate() {
        let record = record.map_err(|e| Error::invalid(format!("{}: {e}", crate::schema::csv_row(r))))?;
        for (c, (i, _, kind)) in picked.iter().enumerate() {
            columns[c].push(cell(*kind, record.get(*i).unwrap_or_default()));
        }
    }
    Ok(picked.into_iter().zip(columns).map(|((_, name, _), values)| (name, Json::Array(values))).collect())
}

/// A Parquet file as columns: numbers, strings and booleans as they are, timestamps (any unit, with or
/// without a zone: UTC) and dates as seconds since the epoch.
pub fn parquet_columns(
    bytes: bytes::Bytes,
    schema: &Schema,
    timestamp: &str,
    created: Option<&str>,
) -> Result<Map<String, Json>, Error> {
    let bad = |e: parquet::errors::ParquetError| Error::invalid(format!("not a valid Parquet file: {e}"));
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(bad)?;
    let header: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
    let picked: Vec<(usize, String)> = wanted(schema, timestamp, created)
        .into_iter()
        .filter_map(|(name, _)| header.iter().position(|h| *h == name).map(|i| (i, name)))
        .collect();
    let mut columns: Vec<Vec<Json>> = vec![Vec::new(); picked.len()];
    for batch in builder.with_batch_size(64 * 1024).build().map_err(bad)? {
        let batch = batch.map_err(|e| Error::invalid(format!("reading the Parquet file: {e}")))?;
        for (c, (i, name)) in picked.iter().enumerate() {
            append(name, batch.column(*i).as_ref(), &mut columns[c])?;
        }
    }
    Ok(picked.into_iter().zip(columns).map(|((_, name), values)| (name, Json::Array(values))).collect())
}

fn append(name: &str, array: &dyn arrow_array::Array, out: &mut Vec<Json>) -> Result<(), Error> {
    use arrow_array::types as t;
    macro_rules! each {
        ($a:expr, $f:expr) => {{
            let a = $a;
            out.extend((0..a.len()).map(|i| if a.is_valid(i) { $f(a.value(i)) } else { Json::Null }))
        }};
    }
    let float = |f: f64| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number);
    let seconds = |v: i64, per_second: f64| float(v as f64 / per_second);
    match array.data_type() {
        DataType::Float64 => each!(array.as_primitive::<t::Float64Type>(), float),
        DataType::Float32 => each!(array.as_primitive::<t::Float32Type>(), |v: f32| float(f64::from(v))),
        DataType::Int64 => each!(array.as_primitive::<t::Int64Type>(), Json::from),
        DataType::Int32 => each!(array.as_primitive::<t::Int32Type>(), Json::from),
        DataType::Int16 => each!(array.as_primitive::<t::Int16Type>(), Json::from),
        DataType::Int8 => each!(array.as_primitive::<t::Int8Type>(), Json::from),
        DataType::UInt32 => each!(array.as_primitive::<t::UInt32Type>(), Json::from),
        DataType::UInt16 => each!(array.as_primitive::<t::UInt16Type>(), Json::from),
        DataType::UInt8 => each!(array.as_primitive::<t::UInt8Type>(), Json::from),
        DataType::Boolean => each!(array.as_boolean(), Json::Bool),
        DataType::Utf8 => each!(array.as_string::<i32>(), |s: &str| Json::String(s.to_string())),
        DataType::LargeUtf8 => each!(array.as_string::<i64>(), |s: &str| Json::String(s.to_string())),
        DataType::Utf8View => each!(array.as_string_view(), |s: &str| Json::String(s.to_string())),
        DataType::Timestamp(unit, _) => {
            let per_second = match unit {
                TimeUnit::Second => 1.0,
                TimeUnit::Millisecond => 1e3,
                TimeUnit::Microsecond => 1e6,
                TimeUnit::Nanosecond => 1e9,
            };
            match unit {
                TimeUnit::Second => {
                    each!(array.as_primitive::<t::TimestampSecondType>(), |v| seconds(v, per_second))
                }
                TimeUnit::Millisecond => {
                    each!(array.as_primitive::<t::TimestampMillisecondType>(), |v| seconds(v, per_second))
                }
                TimeUnit::Microsecond => {
                    each!(array.as_primitive::<t::TimestampMicrosecondType>(), |v| seconds(v, per_second))
                }
                TimeUnit::Nanosecond => {
                    each!(array.as_primitive::<t::TimestampNanosecondType>(), |v| seconds(v, per_second))
                }
            }
        }
        DataType::Date32 => {
            each!(array.as_primitive::<t::Date32Type>(), |d: i32| Json::from(i64::from(d) * 86_400))
        }
        other => {
            return Err(Error::invalid(format!("column {name:?} is {other}, which no feature type takes")));
        }
    }
    Ok(())
}
