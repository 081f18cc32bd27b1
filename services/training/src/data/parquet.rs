//! Reads a Parquet file (any row-group layout, snappy or zstd compression).

use super::columns::{Builder, Place};
use super::{DataError, Dataset, Spec};

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
    use crate::data::{Kind, Labels, Task};
    use crate::prep::Classes;
    use crate::test_support::spec;

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
