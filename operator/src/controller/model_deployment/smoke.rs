//! The smoke test: one Open Inference Protocol request to the preview revision before promotion. The
//! request body is the user's; the answer must be a success and, when `expectedOutput` is set, hold exactly
//! those values in that output.

use crate::api::v1alpha1::model_deployment::SmokeTestSpec;
use serde_json::Value;
use std::time::Duration;

/// Why a smoke test did not pass.
#[derive(Debug)]
pub struct Failure {
    /// No answer came (connection refused, timed out): the preview may not be reachable yet, so the test
    /// is tried again rather than failed.
    pub retry: bool,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Sends the smoke test to `base_url` (for example `http://NAME-preview.NS.svc:8080`) for model `model`.
pub async fn run(
    client: &reqwest::Client,
    base_url: &str,
    model: &str,
    spec: &SmokeTestSpec,
) -> Result<(), Failure> {
    answered(client, base_url, model, spec).await.map_err(|(retry, message)| Failure { retry, message })
}

async fn answered(
    client: &reqwest::Client,
    base_url: &str,
    model: &str,
    spec: &SmokeTestSpec,
) -> Result<(), (bool, String)> {
    let url = format!("{}/v2/models/{model}/infer", base_url.trim_end_matches('/'));
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body(spec.request.clone())
        .timeout(Duration::from_secs(spec.timeout_seconds.max(1) as u64))
        .send()
        .await
        .map_err(|e| (true, format!("POST {url}: {}", chain(&e))))?;
    let status = response.status();
    // An answer cut short (the connection closed, the timeout hit mid-body) is no answer: tried again.
    let bytes = response
        .bytes()
        .await
        .map_err(|e| (true, format!("POST {url}: incomplete answer: {}", chain(&e))))?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| (false, format!("POST {url}: the answer is not JSON: {e}")))?;
    if !status.is_success() {
        let why = body.get("error").and_then(Value::as_str).unwrap_or("no error message");
        return Err((false, format!("POST {url} answered {status}: {why}")));
    }
    let Some(expected) = &spec.expected_output else { return Ok(()) };
    let want: Value = serde_json::from_str(&expected.data)
        .map_err(|e| (false, format!("expectedOutput.data is not JSON: {e}")))?;
    let output = body
        .get("outputs")
        .and_then(Value::as_array)
        .and_then(|outs| {
            outs.iter().find(|o| o.get("name").and_then(Value::as_str) == Some(expected.name.as_str()))
        })
        .ok_or_else(|| (false, format!("the answer has no output {:?}", expected.name)))?;
    let got = output.get("data").cloned().unwrap_or(Value::Null);
    if same(&got, &want) {
        Ok(())
    } else {
        Err((false, format!("output {:?} is {got}, expected {want}", expected.name)))
    }
}

/// JSON equality, with numbers compared by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        _ => a == b,
    }
}

/// An error with its causes, `a: b: c`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out += &format!(": {e}");
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::same;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value() {
        assert!(same(&json!([1, 2.0]), &json!([1.0, 2])));
        assert!(!same(&json!([1, 2]), &json!([1, 3])));
        assert!(!same(&json!([1]), &json!([1, 1])));
        assert!(same(&json!(["a"]), &json!(["a"])));
    }
}
