//! The `mizzen` CLI against a real mizzen-registry, as a person uses it: push scikit-learn's ONNX export
//! (skl2onnx) with an alias, push again, refuse a file that is not ONNX, list models and versions, move the
//! alias, show a version with its lineage, and say clearly what went wrong.

use std::process::Command;

/// `mizzen ARGS` against `url`: exit code, stdout, stderr.
fn mizzen(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mizzen"))
        .args(["--registry-url", url])
        .args(args)
        .env_remove("MIZZEN_REGISTRY_TOKEN")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn push_list_promote_and_show() {
    let r = mizzen_registry::testing::Background::start();
    let models =
        mizzen_common::testing::generated("services/inference/models/make_models.py", "models", "inputs.npz");
    let onnx = models.join("iris_logreg.onnx");
    let file = onnx.to_str().unwrap();
    let sha = mizzen_common::sha256_hex(&std::fs::read(&onnx).unwrap());

    let (code, out, err) =
        mizzen(&r.url, &["push", file, "--name", "iris", "--alias", "champion", "--tag", "team=ml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("registry://iris/1 sha256:{sha}\niris@champion: 1\n"));
    let (code, out, err) = mizzen(&r.url, &["push", file, "--name", "iris", "--description", "retrained"]);
    assert_eq!(
        (code, out.lines().next()),
        (0, Some(format!("registry://iris/2 sha256:{sha}").as_str())),
        "{err}"
    );

    // Not ONNX: refused before anything is written.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("model.onnx");
    std::fs::write(&csv, "a,b\n1,2\n").unwrap();
    let (code, _, err) = mizzen(&r.url, &["push", csv.to_str().unwrap(), "--name", "iris"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not an ONNX model"), "{err}");

    let (code, out, _) = mizzen(&r.url, &["models"]);
    assert_eq!(code, 0);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["iris", "2", "champion=1"], "{out}");

    let (_, out, _) = mizzen(&r.url, &["versions", "iris"]);
    let rows: Vec<Vec<&str>> = out.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "two versions, the refused file is not one:\n{out}");
    assert_eq!(
        &rows[0][..4],
        ["1", "champion", &sha[..12], &std::fs::metadata(&onnx).unwrap().len().to_string()]
    );
    assert_eq!(rows[1][1], "-", "{out}");

    let (code, out, _) = mizzen(&r.url, &["alias", "iris", "champion", "2"]);
    assert_eq!((code, out.as_str()), (0, "iris@champion: 1 -> 2\n"));

    let (code, out, err) = mizzen(&r.url, &["show", "iris@champion"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("registry://iris/2\n"), "{out}");
    for want in
        [format!("sha256:      {sha}"), "aliases:     champion".into(), "description: retrained".into()]
    {
        assert!(out.contains(&want), "{want:?} not in\n{out}");
    }
    assert!(out.contains("pushedFile") && out.contains("iris_logreg.onnx"), "{out}");
    // skl2onnx's iris classifier: four floats in, a label and the probabilities out.
    assert!(out.contains("float_input    FP32 [-1, 4]"), "{out}");
    let (_, out, _) = mizzen(&r.url, &["show", "registry://iris/1"]);
    assert!(out.contains("team = ml") && out.contains("aliases:     -"), "{out}");
    let (_, out, _) = mizzen(&r.url, &["show", "iris/1", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["model_version"]["version"], "1");
    assert_eq!(json["run"]["info"]["status"], "FINISHED");
}

#[test]
fn mistakes_are_said_plainly() {
    let r = mizzen_registry::testing::Background::start();
    let (code, _, err) = mizzen(&r.url, &["show", "iris@nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("RESOURCE_DOES_NOT_EXIST") && err.contains("iris"), "{err}");
    let (code, _, err) = mizzen(&r.url, &["show", "not a reference"]);
    assert_eq!(code, 1);
    assert!(err.contains("registry://NAME@ALIAS"), "{err}");
    let (code, _, err) = mizzen(&r.url, &["alias", "iris", "champion", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("iris"), "{err}");
    let (code, _, err) = mizzen(&r.url, &["push", "/no/such/file.onnx", "--name", "iris"]);
    assert!(code == 1 && err.contains("/no/such/file.onnx"), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (code, _, err) = mizzen(&format!("http://{closed}"), &["models"]);
    assert_eq!(code, 1);
    assert!(err.to_lowercase().contains("connect"), "{err}");
}
