//! Reads a CSV file with a header row.

use super::columns::{Builder, Place};
use super::{DataError, Dataset, HashingReader, Spec};
use std::io::Read;

/// Reads CSV with a header row.
pub fn read_csv<R: Read>(reader: R, spec: &Spec) -> Result<Dataset, DataError> {
    use std::io::BufRead as _;
    let mut hashing = HashingReader::new(reader);
    let dataset = {
        let mut buffered = std::io::BufReader::with_capacity(64 * 1024, &mut hashing);
        // Records end at '\n' only, and a '\r' before it is dropped from the last field (below): with the
        // default terminator a CRLF file's records were placed one line too early in error messages. A file
        // whose first line ends in a bare '\r' (old Mac style) keeps the default, which ends lines there.
        let head = buffered.fill_buf().map_err(|e| DataError::Unreadable(e.to_string()))?;
        let bare_cr = head
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .is_some_and(|i| head[i] == b'\r' && head.get(i + 1).is_some_and(|&b| b != b'\n'));
        let terminator = if bare_cr { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') };
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .terminator(terminator)
            .from_reader(buffered);
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
        let last = header.len() - 1;
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
                let cell = std::str::from_utf8(field(&record, i, last)).map_err(|_| {
                    DataError::Invalid(format!("line {line}: column {:?} is not valid UTF-8", header[i]))
                })?;
                builder.text(j, place, cell);
            }
            let cell = std::str::from_utf8(field(&record, label, last)).map_err(|_| {
                DataError::Invalid(format!("line {line}: column {:?} is not valid UTF-8", header[label]))
            })?;
            builder.label_text(place, Some(cell));
            debug_assert!(builder.rows_are_full());
        }
        builder
    };
    // Drain what the CSV reader left so the digest covers the whole file.
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| DataError::Unreadable(e.to_string()))?;
    dataset.finish(hashing.finish())
}

/// Field `i` of a record, without the '\r' of a CRLF line end on the `last` field.
fn field(record: &csv::ByteRecord, i: usize, last: usize) -> &[u8] {
    let f = &record[i];
    if i == last { f.strip_suffix(b"\r").unwrap_or(f) } else { f }
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

#[cfg(test)]
mod tests {
    //! CSV text is the handiest way to feed cells, so these tests cover the column and label checks of
    //! `columns.rs` too.

    use super::*;
    use crate::data::{Column, Kind, Labels, Task};
    use crate::prep::Classes;
    use crate::test_support::spec;

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
    fn numeric_class_labels_are_numbers_and_categories_keep_their_text() {
        // 01, 1, 1.0 and +1 are the number 1 (as pandas reads them for scikit-learn, and as Parquet holds them).
        let ds = csv("a,c,y\n1, small,01\n2,small,1.0\n3,x,+1\n4,x,0\n", &spec("y", Task::Classification))
            .unwrap();
        assert_eq!(ds.labels, Labels::Classes { y: vec![1, 1, 1, 0], classes: Classes::Int(vec![0, 1]) });
        assert_eq!(
            ds.columns[1].kind,
            Kind::Categorical { values: vec![" small".into(), "small".into(), "x".into()] }
        );
        // Text labels stay as written.
        let ds = csv("a,y\n1,b\n2,01\n3,1\n", &spec("y", Task::Classification)).unwrap();
        let names = ["01", "1", "b"].map(String::from).to_vec();
        assert_eq!(ds.labels, Labels::Classes { y: vec![2, 0, 1], classes: Classes::Str(names) });
    }

    #[test]
    fn values_beyond_float32_are_refused_naming_the_column() {
        let e = err("a,b,y\n1,2,0\n1e39,3,1\n", &spec("y", Task::Classification));
        assert!(
            e.contains("feature \"a\" has values beyond float32's range") && e.contains("data row 2"),
            "{e}"
        );
        let e = err("a,y\n1,2\n2,-5e40\n", &spec("y", Task::Regression));
        assert!(e.contains("label column \"y\" has values beyond float32's range"), "{e}");
    }

    #[test]
    fn crlf_files_read_like_lf_files_with_the_same_line_numbers() {
        let lf = "a,c,y\n1,red,0\n2,\"blue\",1\ntwo,red,0\n4,blue,1\n";
        let crlf = lf.replace('\n', "\r\n");
        let s = spec("y", Task::Classification);
        assert_eq!(err(&crlf, &s), err(lf, &s));
        assert!(err(&crlf, &s).contains("line 4: \"two\""), "{}", err(&crlf, &s));
        let mut s = s;
        s.features = Some(vec!["c".into(), "a".into()]);
        let fixed = lf.replace("two", "3");
        let (a, b) = (csv(&fixed, &s).unwrap(), csv(&fixed.replace('\n', "\r\n"), &s).unwrap());
        assert_eq!((a.columns, a.labels), (b.columns, b.labels));
        // Old Mac line ends (a bare '\r') still end lines.
        let cr = lf.replace("two", "3").replace('\n', "\r");
        assert_eq!(csv(&cr, &spec("y", Task::Classification)).unwrap().x.rows, 4);
        // A categorical last column keeps its values without the '\r'.
        let ds = csv("a,y,c\r\n1,0,red\r\n2,1,\"blue\"\r\n", &spec("y", Task::Classification)).unwrap();
        assert_eq!(ds.columns[1].kind, Kind::Categorical { values: vec!["red".into(), "blue".into()] });
    }

    #[test]
    fn a_continuous_label_is_refused_by_a_classifier_and_regressed_by_either() {
        let data = "a,y\n1,0.5\n2,1.25\n3,2\n4,0.5\n";
        let e = err(data, &spec("y", Task::Classification));
        assert!(e.contains("is continuous") && e.contains("use linearRegression or mlp"), "{e}");
        let ds = csv(data, &spec("y", Task::Either)).unwrap();
        assert_eq!(ds.labels, Labels::Values(vec![0.5, 1.25, 2.0, 0.5]));
        // Integer labels are classes for Either, unless there are more than MAX_INFERRED_CLASSES of them.
        let ds = csv("a,y\n1,3\n2,1\n3,3\n", &spec("y", Task::Either)).unwrap();
        assert_eq!(ds.labels, Labels::Classes { y: vec![1, 0, 1], classes: Classes::Int(vec![1, 3]) });
        let many: String =
            (0..=crate::data::MAX_INFERRED_CLASSES).map(|i| format!("{i},{}\n", i * 7)).collect();
        let ds = csv(&format!("a,y\n{many}"), &spec("y", Task::Either)).unwrap();
        assert!(matches!(ds.labels, Labels::Values(_)), "{:?}", ds.labels);
        // A classifier refuses more than MAX_CLASSES classes.
        let many: String = (0..=crate::data::MAX_CLASSES).map(|i| format!("{i},c{i}\n")).collect();
        let e = err(&format!("a,y\n{many}"), &spec("y", Task::Classification));
        assert!(e.contains("more than the 1000 classes"), "{e}");
    }
}
