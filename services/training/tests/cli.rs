//! The real mizzen-train binary on bad input: it ends with a reason a user can act on (in its report and
//! termination message), the exit code that tells Kubernetes whether a retry can help, and writes no model.

use std::process::Command;

struct Run {
    code: i32,
    report: serde_json::Value,
    wrote_model: bool,
}

fn train(csv: Option<&str>, uri: Option<&str>, algorithm: &str, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let data = match (csv, uri) {
        (Some(text), _) => {
            let path = dir.path().join("data.csv");
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        }
        (None, Some(uri)) => uri.to_string(),
        (None, None) => unreachable!(),
    };
    let log = dir.path().join("termination-log");
    let out = Command::new(env!("CARGO_BIN_EXE_mizzen-train"))
        .args(["--data", &data, "--label", "y", "--algorithm", algorithm])
        .args([
            "--output",
            &dir.path().join("model").to_string_lossy(),
            "--termination-log",
            &log.to_string_lossy(),
        ])
        .args(extra)
        .output()
        .unwrap();
    let message = std::fs::read_to_string(&log).expect("a termination message is always written");
    assert!(message.len() <= 4096, "termination messages fit Kubernetes' limit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), message, "the report is also printed");
    Run {
        code: out.status.code().unwrap_or(-1),
        report: serde_json::from_str(&message).unwrap(),
        wrote_model: dir.path().join("model").exists(),
    }
}

fn assert_refused(run: &Run, code: i32, reason: &str, message_parts: &[&str]) {
    assert_eq!(run.report["phase"], "Failed", "{}", run.report);
    assert_eq!(run.code, code, "{}", run.report);
    assert_eq!(run.report["reason"], reason, "{}", run.report);
    let message = run.report["message"].as_str().unwrap();
    for part in message_parts {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    assert!(!run.wrote_model, "a failed run writes nothing");
}

#[test]
fn a_missing_label_column_names_the_columns_there_are() {
    let run = train(Some("a,b\n1,2\n3,4\n"), None, "logisticRegression", &[]);
    assert_refused(&run, 2, "InvalidData", &["label column \"y\" is not in the file", "a, b"]);
}

#[test]
fn an_all_missing_feature_is_named() {
    let run = train(Some("a,b,y\n1,,0\n2,NA,1\n3,,0\n"), None, "logisticRegression", &[]);
    assert_refused(&run, 2, "InvalidData", &["feature \"b\" has no values"]);
}

#[test]
fn non_numeric_values_name_the_column_and_lines() {
    let run = train(Some("a,y\n1,0\n2,1\ntwo,0\n4,1\n"), None, "logisticRegression", &[]);
    assert_refused(&run, 2, "InvalidData", &["feature \"a\"", "line 4: \"two\"", "dataset.categorical"]);
    let run = train(Some("a,y\n1,0.5\n2,high\n"), None, "linearRegression", &[]);
    assert_refused(&run, 2, "InvalidData", &["label column \"y\"", "line 3: \"high\""]);
}

#[test]
fn empty_files_are_refused() {
    assert_refused(&train(Some(""), None, "logisticRegression", &[]), 2, "InvalidData", &["empty"]);
    assert_refused(&train(Some("a,y\n"), None, "logisticRegression", &[]), 2, "InvalidData", &["no rows"]);
}

#[test]
fn unreadable_uris_say_so_and_only_a_read_failure_is_worth_a_retry() {
    let run = train(None, Some("file:///no/such/dir/data.csv"), "logisticRegression", &[]);
    assert_refused(&run, 1, "DataUnreadable", &["/no/such/dir/data.csv"]);
    let run = train(None, Some("ftp://host/data.csv"), "logisticRegression", &[]);
    assert_refused(&run, 2, "DataUnreadable", &["ftp:// URIs are not supported"]);
}

#[test]
fn bad_hyperparameters_are_refused() {
    let csv = "a,y\n1,0\n2,1\n3,0\n4,1\n5,0\n";
    let run = train(Some(csv), None, "logisticRegression", &["--set", "l2=-1"]);
    assert_refused(&run, 2, "InvalidHyperparameter", &["l2"]);
    let run = train(Some(csv), None, "logisticRegression", &["--set", "momentum=0.9"]);
    assert_refused(&run, 2, "InvalidHyperparameter", &["momentum"]);
    let run = train(Some(csv), None, "svm", &[]);
    assert_refused(&run, 2, "InvalidConfig", &["svm"]);
}
