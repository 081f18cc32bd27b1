//! `mizzen-features materialize`: what a FeatureSet's materialization Job runs. It asks each replica of the
//! feature store to ingest each source (`POST /ingest`), in order, and reports what was read.
//!
//! A replica that is not up yet, a refused connection or a 5xx is tried again (with backoff) until the
//! deadline; a 4xx (a bad row, a missing file, an unknown source) cannot be cured by trying again and ends
//! the run at once as a [`Failure::Permanent`]. The report is JSON, small enough for a termination message
//! (the operator copies it into the FeatureSet's status).

pub use mizzen_common::features::Report;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// One run: the replicas' base URLs, the sources, where rows go (`to` of `/ingest`) and a deadline.
#[derive(Clone, Debug)]
pub struct Plan {
    pub urls: Vec<String>,
    pub sources: Vec<String>,
    pub to: String,
    pub deadline: Duration,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The feature store refused the request (4xx): trying again cannot help.
    #[error("{0}")]
    Permanent(String),
    /// The deadline passed with a replica unreachable or failing.
    #[error("{0}")]
    GaveUp(String),
}

#[derive(Deserialize)]
struct Ingested {
    rows: u64,
    #[serde(default)]
    entities: u64,
}

/// Runs `plan`.
pub async fn run(plan: &Plan) -> Result<Report, Failure> {
    let started = Instant::now();
    let deadline = started + plan.deadline;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Failure::GaveUp(format!("an HTTP client: {e}")))?;
    let mut report = Report::default();
    for (i, url) in plan.urls.iter().enumerate() {
        let url = url.trim_end_matches('/');
        for source in &plan.sources {
            let body = serde_json::json!({"source": source, "to": plan.to});
            let ingested = post_until(&client, &format!("{url}/ingest"), &body, deadline).await?;
            tracing::info!(url, source, rows = ingested.rows, entities = ingested.entities, "ingested");
            if i == 0 {
                report.rows += ingested.rows;
                report.entities = ingested.entities;
                report.sources.push((source.clone(), ingested.rows));
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// POSTs `body` to `url` until it is answered with a 2xx (the parsed answer) or a 4xx (a permanent failure
/// with the server's message), or `deadline` passes.
async fn post_until(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    deadline: Instant,
) -> Result<Ingested, Failure> {
    let mut wait = Duration::from_millis(250);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let why = match client.post(url).json(body).timeout(left.max(Duration::from_millis(1))).send().await {
            Ok(r) if r.status().is_success() => {
                return r.json::<Ingested>().await.map_err(|e| Failure::Permanent(format!("{url}: {e}")));
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or(text);
                return Err(Failure::Permanent(format!("{url} refused {body}: {status}: {message}")));
            }
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        if Instant::now() + wait >= deadline {
            return Err(Failure::GaveUp(format!("{url} did not succeed before the deadline: {why}")));
        }
        tracing::info!(url, %why, "not done yet; trying again");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}
