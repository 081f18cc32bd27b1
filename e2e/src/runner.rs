//! A small test runner for the e2e suite: tests that must run first and alone (they change cluster-wide
//! state such as CRDs) run serially, the rest concurrently, each in its own namespace and with a time
//! limit. It prints libtest-style lines, so `cargo test` output reads as usual.

use crate::Cluster;
use anyhow::Result;
use futures::StreamExt;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub type TestFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// One end-to-end test.
pub struct Test {
    pub name: &'static str,
    pub run: fn(Cluster) -> TestFuture,
    /// Runs before the others, alone.
    pub serial: bool,
}

/// Runs the tests that match the command line's filter and prints the result. `setup` runs after the
/// serial tests and before the others (whichever the filter selected), so a filtered run has what the
/// concurrent tests need.
pub fn main(tests: Vec<Test>, setup: fn(Cluster) -> TestFuture) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for t in &tests {
            println!("{}: test", t.name);
        }
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let exact = args.iter().any(|a| a == "--exact");
    let selected: Vec<Test> = tests
        .into_iter()
        .filter(|t| {
            filters.is_empty()
                || filters.iter().any(|f| if exact { t.name == *f } else { t.name.contains(f.as_str()) })
        })
        .collect();
    let concurrency = std::env::var("MIZZEN_E2E_CONCURRENCY").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let timeout = Duration::from_secs(
        std::env::var("MIZZEN_E2E_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(180),
    );

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let started = Instant::now();
        let cluster = match Cluster::connect().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        println!("\nrunning {} tests", selected.len());
        let (serial, parallel): (Vec<Test>, Vec<Test>) = selected.into_iter().partition(|t| t.serial);
        let mut failed = Vec::new();
        let mut passed = 0;
        for t in serial {
            match run_one(&t, cluster.clone(), timeout).await {
                Ok(()) => passed += 1,
                Err(e) => failed.push((t.name, e)),
            }
        }
        if !parallel.is_empty()
            && let Err(e) = setup(cluster.clone()).await
        {
            eprintln!("error: setting up the cluster: {e:#}");
            return ExitCode::FAILURE;
        }
        let results: Vec<(&'static str, Result<()>)> = futures::stream::iter(parallel)
            .map(|t| {
                let cluster = cluster.clone();
                async move { (t.name, run_one(&t, cluster, timeout).await) }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for (name, r) in results {
            match r {
                Ok(()) => passed += 1,
                Err(e) => failed.push((name, e)),
            }
        }
        if !failed.is_empty() {
            println!("\nfailures:\n");
            for (name, e) in &failed {
                println!("---- {name} ----\n{e:#}\n");
            }
        }
        let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
        println!(
            "\ntest result: {verdict}. {passed} passed; {} failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s\n",
            failed.len(),
            started.elapsed().as_secs_f64()
        );
        if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
    })
}

async fn run_one(t: &Test, cluster: Cluster, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let result = match tokio::time::timeout(timeout, (t.run)(cluster)).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("timed out after {timeout:?}")),
    };
    let verdict = if result.is_ok() { "ok" } else { "FAILED" };
    println!("test {} ... {verdict} ({:.1}s)", t.name, start.elapsed().as_secs_f64());
    result
}
