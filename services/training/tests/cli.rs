//! The real mizzen-train binary on bad input: it ends with a reason a user can act on (in its report and
//! termination message), the exit code that tells Kubernetes whether a retry can help, and writes no model.

use std::process::Command;

struct Run {
    code: i32,
    report: serde_json::Value,
    wrote_model: bool,
}

fn train(csv: Option<&str>, uri: Option<&str>, algorithm: &str, extra: &[&str]) -> Run {
    train_with_env(csv, uri, algorithm, extra, &[])
}

fn train_with_env(
    csv: Option<&str>,
    uri: Option<&str>,
    algorithm: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Run {
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
        .envs(env.iter().copied())
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

#[test]
fn the_label_is_never_a_feature() {
    let csv = "a,y\n1,0\n2,1\n3,0\n4,1\n5,0\n";
    let run = train(Some(csv), None, "logisticRegression", &["--features", "a,y"]);
    assert_refused(&run, 2, "InvalidConfig", &["the label \"y\" is also listed as a feature"]);
}

#[test]
fn a_continuous_label_is_refused_by_a_classifier_before_training() {
    let csv: String = (0..50).map(|i| format!("{i},{}\n", i as f64 * 0.37)).collect();
    let run = train(Some(&format!("a,y\n{csv}")), None, "logisticRegression", &[]);
    assert_refused(
        &run,
        2,
        "InvalidData",
        &["label column \"y\" is continuous", "use linearRegression or mlp"],
    );
}

/// A loopback HTTP server for one test, stopped when dropped: `/cut.csv` sends half of `body` and hangs up
/// on the first GET (a server that cannot resume a transfer) and all of it after; `/missing.csv` is a 404.
/// Counts the GETs of each.
struct FlakyServer {
    port: u16,
    gets: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, usize>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FlakyServer {
    fn start(body: String) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let gets = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (counts, stopped) = (gets.clone(), stop.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let mut words = head.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("").to_string());
                let n = {
                    let mut counts = counts.lock().unwrap();
                    let n = counts.entry(path.clone()).or_insert(0);
                    if method == "GET" {
                        *n += 1;
                    }
                    *n
                };
                let reply = match path.as_str() {
                    "/cut.csv" => {
                        let header = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                        let sent = if n == 1 { &body[..body.len() / 2] } else { &body[..] };
                        format!("{header}{}", if method == "HEAD" { "" } else { sent })
                    }
                    _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found".to_string(),
                };
                let _ = conn.write_all(reply.as_bytes());
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
        });
        Self { port, gets, stop, thread: Some(thread) }
    }

    fn gets(&self, path: &str) -> usize {
        self.gets.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for FlakyServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A remote read cut short is tried again from the start, inside the run (with the retry in the log);
/// a missing object is not tried again, and its run ends `DataUnreadable` with exit 1 (for the Job to
/// retry later).
#[test]
fn a_remote_read_cut_short_is_tried_again_and_a_missing_one_is_not() {
    let rows: String = (0..20_000).map(|i| format!("{},{}\n", i % 97, i % 2)).collect();
    let server = FlakyServer::start(format!("a,y\n{rows}"));
    let dir = tempfile::tempdir().unwrap();
    let run = |file: &str| {
        Command::new(env!("CARGO_BIN_EXE_mizzen-train"))
            .args(["--data", &format!("http://127.0.0.1:{}/{file}", server.port), "--label", "y"])
            .args(["--algorithm", "logisticRegression", "--output", &dir.path().join(file).to_string_lossy()])
            .output()
            .unwrap()
    };
    let out = run("cut.csv");
    let (report, log) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}\n{log}");
    assert!(log.contains("trying again from the start"), "{log}");
    assert_eq!(server.gets("/cut.csv"), 2);
    let out = run("missing.csv");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((out.status.code(), report["reason"].as_str()), (Some(1), Some("DataUnreadable")), "{report}");
    assert_eq!(server.gets("/missing.csv"), 1, "a missing object is asked for once");
}

/// `--task` (the TrainingJob's `spec.task`) decides an mlp's task instead of the label: integer counts
/// regressed, recorded in model.json; a task the algorithm does not do, or an unknown one, is refused.
#[test]
fn a_task_overrides_the_label_for_mlp_only() {
    let rows: String = (0..200).map(|i| format!("{},{}\n", i % 10, (i % 10) * 3 + i % 2)).collect();
    let csv = format!("a,y\n{rows}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("counts.csv");
    std::fs::write(&data, &csv).unwrap();
    for (task, output) in [("regression", "variable"), ("classification", "probabilities")] {
        let out = dir.path().join(task);
        let run = Command::new(env!("CARGO_BIN_EXE_mizzen-train"))
            .args(["--data", &data.to_string_lossy(), "--label", "y", "--algorithm", "mlp", "--task", task])
            .args(["--set", "maxIterations=5", "--output", &out.to_string_lossy()])
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stdout));
        let model: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
        assert_eq!(model["task"], task);
        assert!(model["outputs"].to_string().contains(output), "{}", model["outputs"]);
    }
    let run = train(Some(&csv), None, "logisticRegression", &["--task", "regression"]);
    assert_refused(&run, 2, "InvalidConfig", &["task regression does not suit logisticRegression"]);
    let run = train(Some(&csv), None, "mlp", &["--task", "ranking"]);
    assert_refused(&run, 2, "InvalidConfig", &["unknown task \"ranking\""]);
}

/// Configuration mistakes are `InvalidConfig`, found before the data is read (the data's URI here does
/// not exist: reading it would end `DataUnreadable`).
#[test]
fn configuration_mistakes_are_refused_as_such_before_reading() {
    let nowhere = Some("/nonexistent/table.csv");
    for (extra, message) in [
        (&["--holdout", "1.5"][..], "holdout fraction 1.5 must be in (0, 1)"),
        (&["--format", "xls"][..], "unknown dataset format \"xls\""),
        (&["--features", "a", "--categorical", "b"][..], "dataset.categorical names \"b\""),
    ] {
        let run = train(None, nowhere, "logisticRegression", extra);
        assert_refused(&run, 2, "InvalidConfig", &[message]);
    }
    let run = train(None, Some("/nonexistent/table.txt"), "logisticRegression", &[]);
    assert_refused(&run, 2, "InvalidConfig", &["cannot tell the format", "set dataset.format"]);
}

/// A fit too big for the memory the trainer may use is refused before it allocates, with the estimate and
/// the limit in the message; a fit that fits runs under the same kind of limit; and a limit that cannot
/// be read is a configuration mistake.
#[test]
fn a_fit_too_big_for_the_memory_limit_is_refused_with_the_numbers() {
    let rows: String = (0..3000).map(|i| format!("{},c{i},{}\n", i % 7, i % 2)).collect();
    let csv = format!("a,c,y\n{rows}");
    let limit = |v| [("MIZZEN_TRAIN_MEMORY_LIMIT", v)];
    let big = ["--set", "hiddenLayers=4096,4096"];
    let run = train_with_env(Some(&csv), None, "mlp", &big, &limit("256Mi"));
    assert_refused(
        &run,
        2,
        "InvalidData",
        &[
            "GiB of memory",
            "more than the 256 MiB of MIZZEN_TRAIN_MEMORY_LIMIT",
            "2400 of them one-hot levels",
        ],
    );
    let fits = train_with_env(Some(&csv), None, "logisticRegression", &[], &limit("1Gi"));
    assert_eq!(fits.report["phase"], "Succeeded", "{}", fits.report);
    let unreadable = train_with_env(Some(&csv), None, "logisticRegression", &[], &limit("lots"));
    assert_refused(&unreadable, 2, "InvalidConfig", &["MIZZEN_TRAIN_MEMORY_LIMIT=\"lots\"", "2Gi"]);
}

/// The run's exit code, report and the files left in `dir` after it.
fn run_in(dir: &std::path::Path, args: &[&str]) -> (i32, serde_json::Value, Vec<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_mizzen-train")).args(args).output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap();
    let mut left: Vec<String> =
        walk(dir).into_iter().map(|p| p.strip_prefix(dir).unwrap().display().to_string()).collect();
    left.sort();
    (out.status.code().unwrap_or(-1), report, left)
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() { walk(&p) } else { vec![p] }
        })
        .collect()
}

#[test]
fn outputs_are_all_or_nothing_and_checked_before_the_data_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("data.csv"), "a,y\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n").unwrap();
    std::fs::write(d.join("plain"), "").unwrap();
    let s = |p: &str| d.join(p).display().to_string();
    // mizzen-train on `data` with its output in `output`, and `extra` flags.
    let run = |data: &str, output: &str, extra: &[&str]| {
        let mut args =
            vec!["--data", data, "--label", "y", "--algorithm", "logisticRegression", "--output", output];
        args.extend_from_slice(extra);
        run_in(d, &args)
    };
    // An output no one can write (under a regular file) fails at once: the data, missing here, is never read.
    let (code, report, _) = run("file:///no/such/data.csv", &s("plain/model"), &[]);
    assert_eq!((code, report["reason"].as_str()), (1, Some("OutputUnwritable")), "{report}");
    assert!(report["message"].as_str().unwrap().contains("plain/model"), "{report}");
    // A holdout file that cannot be written: the run fails before training and leaves no model behind.
    let (code, report, left) = run(&s("data.csv"), &s("model"), &["--holdout-rows", &s("plain/rows.txt")]);
    assert_eq!((code, report["reason"].as_str()), (1, Some("OutputUnwritable")), "{report}");
    assert_eq!(left, ["data.csv", "plain"], "{report}");
    // A successful run writes its files under their names, and no temporary file is left.
    let (rows, predictions) = (s("rows.txt"), s("pred.txt"));
    let extra = ["--holdout-rows", &rows, "--holdout-predictions", &predictions];
    let (code, report, left) = run(&s("data.csv"), &s("model"), &extra);
    assert_eq!(code, 0, "{report}");
    assert_eq!(left, ["data.csv", "model/model.json", "model/model.onnx", "plain", "pred.txt", "rows.txt"]);
}

#[test]
fn hyperparameters_that_do_not_apply_or_cannot_be_used_are_refused_before_reading() {
    // The data is never read: the URI does not exist, and the refusal is about the hyperparameter.
    let missing = Some("file:///no/such/data.csv");
    let run = train(None, missing, "logisticRegression", &["--set", "hiddenLayers=64"]);
    assert_refused(
        &run,
        2,
        "InvalidHyperparameter",
        &["hiddenLayers", "does not apply to logisticRegression"],
    );
    let run = train(None, missing, "linearRegression", &["--set", "maxIterations=10"]);
    assert_refused(&run, 2, "InvalidHyperparameter", &["maxIterations", "it takes l2"]);
    let run = train(None, missing, "mlp", &["--set", "hiddenLayers="]);
    assert_refused(&run, 2, "InvalidHyperparameter", &["one or two layer widths"]);
    let run = train(None, missing, "mlp", &["--set", "hiddenLayers=8,8,8"]);
    assert_refused(&run, 2, "InvalidHyperparameter", &["one or two layer widths"]);
    let run = train(None, missing, "mlp", &["--set", "learningRate=1e9"]);
    assert_refused(&run, 2, "InvalidHyperparameter", &["learningRate", "(0, 1]"]);
}

#[test]
fn a_bad_command_line_gets_a_report_too() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("termination-log");
    let out = Command::new(env!("CARGO_BIN_EXE_mizzen-train"))
        .args(["--data", "x.csv", "--holdout", "lots"])
        .env("MIZZEN_TERMINATION_LOG", &log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["phase"].as_str(), report["reason"].as_str()),
        (Some("Failed"), Some("InvalidConfig"))
    );
    assert!(report["message"].as_str().unwrap().contains("--holdout"), "{report}");
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), String::from_utf8_lossy(&out.stdout).trim());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--help"), "clap's hint goes to stderr");
}
