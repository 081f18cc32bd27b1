//! The operator's smoke test (a ModelDeployment's pre-promotion check) against a real mizzen-serve process:
//! the in-cluster run needs real nodes, so its logic is tested here against the same server over loopback.

mod common;

use common::Serve;
use mizzen_api::v1alpha1::model_deployment::{ExpectedOutput, SmokeTestSpec};
use mizzen_operator::controller::model_deployment::smoke;

fn spec(request: &str, expected: Option<(&str, &str)>) -> SmokeTestSpec {
    SmokeTestSpec {
        request: request.into(),
        expected_output: expected.map(|(name, data)| ExpectedOutput { name: name.into(), data: data.into() }),
        timeout_seconds: 5,
    }
}

const SETOSA: &str =
    r#"{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_test_passes_only_on_the_expected_answer() {
    let s = Serve::start("iris_logreg.onnx", "iris", &[]);
    let client = reqwest::Client::new();
    let run = |spec: SmokeTestSpec, model: &'static str| {
        let (client, url) = (client.clone(), s.http.clone());
        async move { smoke::run(&client, &url, model, &spec).await.map_err(|e| (e.retry, e.message)) }
    };
    run(spec(SETOSA, None), "iris").await.expect("a plain success passes");
    run(spec(SETOSA, Some(("label", "[0]"))), "iris").await.expect("the expected label passes");
    // Wrong answers fail for good; no answer at all is retried.
    let (retry, err) = run(spec(SETOSA, Some(("label", "[2]"))), "iris").await.unwrap_err();
    assert!(!retry && err.contains("expected [2]"), "{err}");
    let (retry, err) = run(spec(SETOSA, Some(("nope", "[0]"))), "iris").await.unwrap_err();
    assert!(!retry && err.contains("no output \"nope\""), "{err}");
    let (retry, err) = run(spec(SETOSA, None), "other").await.unwrap_err();
    assert!(!retry && err.contains("404") && err.contains("unknown model"), "{err}");
    let bad = r#"{"inputs":[{"name":"float_input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#;
    let (retry, err) = run(spec(bad, None), "iris").await.unwrap_err();
    assert!(!retry && err.contains("400"), "{err}");
    let err = smoke::run(&client, "http://127.0.0.1:1", "iris", &spec(SETOSA, None)).await.unwrap_err();
    assert!(err.retry && err.message.contains("POST http://127.0.0.1:1/v2/models/iris/infer"), "{err}");
}

/// A server that answers each connection with `answer` and closes it.
async fn answering(answer: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let _ = conn.write_all(answer.as_bytes()).await;
        }
    });
    url
}

/// An answer cut short is no answer (tried again, the cause said); a whole answer that is not JSON fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_answer_is_retried_and_a_wrong_one_fails() {
    let client = reqwest::Client::new();
    let cut = answering("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"outp").await;
    let err = smoke::run(&client, &cut, "iris", &spec(SETOSA, None)).await.unwrap_err();
    assert!(err.retry && err.message.contains("incomplete answer"), "{err}");
    let html = answering("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n<html>").await;
    let err = smoke::run(&client, &html, "iris", &spec(SETOSA, None)).await.unwrap_err();
    assert!(!err.retry && err.message.contains("not JSON"), "{err}");
}
