//! Mizzen's own registry client (`mizzen_common::registry::Client`, what mizzen-train, mizzen-serve and the
//! operator use) against a real mizzen-registry: the run flow, an idempotent registration, aliases,
//! resolution to the file and digest, the bearer token, and clear errors (refused vs unreachable).

use bytes::Bytes;
use mizzen_common::registry::{Client, RegistryError};

async fn start(token: Option<&str>) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let app =
        mizzen_registry::App::open(dir.path().join("data"), 64 << 20, token.map(str::to_string)).unwrap();
    let url = mizzen_registry::testing::serve(app).await.unwrap();
    (url, dir)
}

#[tokio::test]
async fn a_run_is_logged_registered_once_aliased_and_resolved() {
    let (url, _dir) = start(Some("s3cret")).await;
    let client = Client::new(&url, Some("s3cret".into()));
    let experiment = client.experiment("churn").await.unwrap();
    assert_eq!(client.experiment("churn").await.unwrap(), experiment, "found, not made twice");
    let run = client.create_run(&experiment, "train", &[("mizzen.trial".into(), "0".into())]).await.unwrap();
    assert!(run.artifact_uri.starts_with("mlflow-artifacts:/"), "{run:?}");
    let params = [("l2".to_string(), "0.1".to_string())];
    let metrics = [("accuracy".to_string(), 0.9), ("nan".to_string(), f64::NAN)];
    client.log_batch(&run.id, &params, &metrics).await.unwrap();
    let onnx = Bytes::from_static(b"not really onnx, but bytes with a digest");
    client.upload(&run.artifact_uri, "model/model.onnx", onnx.clone()).await.unwrap();
    client.upload(&run.artifact_uri, "model/model.json", Bytes::from_static(b"{}")).await.unwrap();
    client.end_run(&run.id, "FINISHED").await.unwrap();

    let source = format!("{}/model", run.artifact_uri);
    let tags = [("mizzen.trainingjob".to_string(), "ml/churn".to_string())];
    let v = client.register("churn", &source, &run.id, &tags, Some("champion")).await.unwrap();
    assert_eq!(v, "1");
    // A retried registration of the same run makes no second version.
    assert_eq!(client.register("churn", &source, &run.id, &tags, Some("champion")).await.unwrap(), "1");

    let resolved = client.resolve("registry://churn@champion").await.unwrap();
    assert_eq!((resolved.name.as_str(), resolved.version.as_str()), ("churn", "1"));
    assert_eq!(resolved.sha256.as_deref(), Some(mizzen_common::sha256_hex(&onnx).as_str()));
    assert!(resolved.file.starts_with(&format!("{url}/api/2.0/mlflow-artifacts/artifacts/")), "{resolved:?}");
    assert!(resolved.file.ends_with("/model/model.onnx"), "{resolved:?}");
    let (bytes, _) = mizzen_common::registry::read("registry://churn/1", &url).await.unwrap();
    assert_eq!(bytes, onnx);

    // A second run becomes version 2; the alias moves with it.
    let run2 = client.create_run(&experiment, "train", &[]).await.unwrap();
    client.upload(&run2.artifact_uri, "model/model.onnx", Bytes::from_static(b"v2")).await.unwrap();
    let source = format!("{}/model", run2.artifact_uri);
    let v2 = client.register("churn", &source, &run2.id, &[], Some("champion")).await.unwrap();
    assert_eq!(v2, "2");
    assert_eq!(client.resolve("registry://churn@champion").await.unwrap().version, "2");
    assert_eq!(client.resolve("registry://churn/1").await.unwrap().version, "1");
}

#[tokio::test]
async fn refusals_and_an_unreachable_registry_say_which_is_which() {
    let (url, _dir) = start(Some("s3cret")).await;
    // No token: refused with the registry's code, and not worth a retry.
    let e = Client::new(&url, None).experiment("x").await.unwrap_err();
    assert!(matches!(&e, RegistryError::Refused { status: 401, .. }), "{e}");
    assert!(!e.is_transient() && e.to_string().contains("Bearer"), "{e}");
    let client = Client::new(&url, Some("s3cret".into()));
    let e = client.resolve("registry://nobody@champion").await.unwrap_err();
    assert!(e.is_missing() && !e.is_transient(), "{e}");
    assert!(e.to_string().contains("nobody"), "{e}");
    // A source in the registry with nothing uploaded cannot be registered.
    let run = client.create_run(&client.experiment("x").await.unwrap(), "r", &[]).await.unwrap();
    let e =
        client.register("x", &format!("{}/model", run.artifact_uri), &run.id, &[], None).await.unwrap_err();
    assert_eq!(e.code(), Some("INVALID_PARAMETER_VALUE"), "{e}");
    // Nobody listening: transient, and the cause is named.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let e = Client::new(&format!("http://{closed}"), None).resolve("registry://a/1").await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().to_lowercase().contains("connect"), "{e}");
}
