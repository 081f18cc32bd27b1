//! Historical retrieval as a Parquet file: each column typed as the FeatureSet types it (the key, the
//! rows' times as UTC microseconds, each feature by its type), and the entity rows' other columns (labels,
//! say) as numbers, booleans or strings, whichever all their values are.

use crate::Error;
use crate::schema::{Key, Value};
use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use mizzen_api::v1alpha1::feature_set::ValueType;
use serde_json::Value as Json;
use std::sync::Arc;

/// The joined table: the key column, the time column, the entity rows' other columns, the features.
pub struct Table<'a> {
    pub key: (&'a str, Vec<Key>),
    pub time: (&'a str, Vec<i64>),
    pub extra: Vec<(&'a str, &'a [Json])>,
    pub features: Vec<(String, ValueType, Vec<Value>)>,
}

/// An entity row column: numbers (integers if every one is), booleans, or else text.
fn extra_column(values: &[Json]) -> ArrayRef {
    let present = || values.iter().filter(|v| !v.is_null());
    if present().all(|v| v.as_i64().is_some()) {
        return Arc::new(values.iter().map(Json::as_i64).collect::<Int64Array>());
    }
    if present().all(Json::is_number) {
        return Arc::new(values.iter().map(Json::as_f64).collect::<Float64Array>());
    }
    if present().all(Json::is_boolean) {
        return Arc::new(values.iter().map(Json::as_bool).collect::<BooleanArray>());
    }
    let text = |v: &Json| match v {
        Json::Null => None,
        Json::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    Arc::new(values.iter().map(text).collect::<StringArray>())
}

fn feature_column(kind: ValueType, values: &[Value]) -> ArrayRef {
    let float = |v: &Value| match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        _ => None,
    };
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    };
    match kind {
        ValueType::Float64 => Arc::new(values.iter().map(float).collect::<Float64Array>()),
        ValueType::Float32 => {
            Arc::new(values.iter().map(|v| float(v).map(|f| f as f32)).collect::<Float32Array>())
        }
        ValueType::Int64 => Arc::new(values.iter().map(int).collect::<Int64Array>()),
        ValueType::Int32 => Arc::new(
            values.iter().map(|v| int(v).and_then(|i| i32::try_from(i).ok())).collect::<Int32Array>(),
        ),
        ValueType::Bool => Arc::new(
            values
                .iter()
                .map(|v| if let Value::Bool(b) = v { Some(*b) } else { None })
                .collect::<BooleanArray>(),
        ),
        ValueType::String => Arc::new(
            values
                .iter()
                .map(|v| if let Value::Str(s) = v { Some(s.clone()) } else { None })
                .collect::<StringArray>(),
        ),
    }
}

/// The table as the bytes of a Parquet file (one row group, zstd).
pub fn to_parquet(table: Table<'_>) -> Result<Vec<u8>, Error> {
    let key: ArrayRef = match table.key.1.first() {
        Some(Key::Str(_)) => Arc::new(
            table
                .key
                .1
                .iter()
                .map(|k| if let Key::Str(s) = k { Some(s.clone()) } else { None })
                .collect::<StringArray>(),
        ),
        _ => Arc::new(
            table
                .key
                .1
                .iter()
                .map(|k| if let Key::Int(i) = k { Some(*i) } else { None })
                .collect::<Int64Array>(),
        ),
    };
    let mut columns: Vec<(&str, ArrayRef)> = vec![
        (table.key.0, key),
        (table.time.0, Arc::new(TimestampMicrosecondArray::from(table.time.1).with_timezone("UTC"))),
    ];
    columns.extend(table.extra.iter().map(|(name, values)| (*name, extra_column(values))));
    columns.extend(
        table.features.iter().map(|(name, kind, values)| (name.as_str(), feature_column(*kind, values))),
    );
    let batch = RecordBatch::try_from_iter(columns)
        .map_err(|e| Error::invalid(format!("the joined columns do not make a table: {e}")))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), Some(props))
        .map_err(|e| Error::internal(format!("writing Parquet: {e}")))?;
    writer.write(&batch).map_err(|e| Error::internal(format!("writing Parquet: {e}")))?;
    writer.close().map_err(|e| Error::internal(format!("writing Parquet: {e}")))?;
    Ok(out)
}
