//! Batch ingestion from CSV and Parquet files at storage URIs: every row checked first (a bad one named,
//! nothing written), the latest value per entity online, and the rate.

use serde_json::{Value, json};
use std::sync::Arc;

/// The FeatureSet, its sources being files in `dir`.
fn feature_set(dir: &std::path::Path) -> String {
    let d = dir.display();
    format!(
        r#"{{"metadata": {{"name": "customers"}}, "spec": {{
  "entity": {{"name": "customer", "joinKey": "customer_id", "type": "int64"}},
  "features": [{{"name": "spend", "type": "float64"}}, {{"name": "segment", "type": "string"}},
               {{"name": "active", "type": "bool"}}],
  "sources": [{{"name": "daily", "uri": "file://{d}/daily.csv", "timestampColumn": "ts"}},
              {{"name": "bad", "uri": "file://{d}/bad.csv", "timestampColumn": "ts"}},
              {{"name": "missing", "uri": "file://{d}/missing.csv", "timestampColumn": "ts"}},
              {{"name": "history", "uri": "file://{d}/history.parquet", "timestampColumn": "ts"}}]}}}}"#
    )
}

async fn serve(dir: &std::path::Path) -> std::net::SocketAddr {
    let (name, spec) = mizzen_features::read_feature_set(&feature_set(dir)).unwrap();
    let app = mizzen_features::App::open(&dir.join("data"), &name, &spec, 64 << 20).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, mizzen_features::router(app)).await.unwrap() });
    addr
}

async fn post(addr: std::net::SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(format!("http://{addr}{path}")).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn spend(addr: std::net::SocketAddr, ids: &[i64]) -> Value {
    let body = json!({"features": ["customers:spend"], "entities": {"customer_id": ids}});
    post(addr, "/get-online-features", body).await.1["results"][1]["values"].clone()
}

#[tokio::test]
async fn csv_and_parquet_files_are_ingested_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(dir.path()).await;

    // 100,000 rows for 20,000 customers, in no particular time order, with an extra column the FeatureSet
    // does not have; the latest (by time) row of each customer must win.
    const ROWS: i64 = 100_000;
    let mut csv = String::from("customer_id,ts,spend,segment,active,unused\n");
    let mut latest = vec![(i64::MIN, 0.0f64); 20_000];
    for i in 0..ROWS {
        let id = (i * 7919) % 20_000;
        let t = 1_700_000_000 + (i * 104_729) % 1_000_000;
        let spend = (i % 1000) as f64 / 4.0;
        if t > latest[id as usize].0 {
            latest[id as usize] = (t, spend);
        }
        let when = jiff::Timestamp::from_second(t).unwrap();
        csv.push_str(&format!("{id},{when},{spend},s{},{},x\n", i % 5, i % 2 == 0));
    }
    let path = dir.path().join("daily.csv");
    std::fs::write(&path, &csv).unwrap();
    let (status, body) = post(addr, "/ingest", json!({"source": "daily"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], ROWS);
    assert_eq!(body["entities"], 20_000, "the online store's entities after the file");
    let rate = ROWS as f64 / body["seconds"].as_f64().unwrap();
    println!("ingested {ROWS} CSV rows at {rate:.0} rows/s");
    let ids: Vec<i64> = (0..20_000).step_by(997).collect();
    let want: Vec<Value> = ids.iter().map(|&i| json!(latest[i as usize].1)).collect();
    assert_eq!(spend(addr, &ids).await, json!(want));

    // One bad row (the fourth: a spend that is not a number) refuses the file; nothing of it is written.
    let bad = "customer_id,ts,spend\n900001,2024-01-01T00:00:00Z,1.5\n900002,2024-01-01T00:00:00Z,2\n\
               900003,2024-01-01T00:00:00Z,3\n900004,2024-01-01T00:00:00Z,lots\n";
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, bad).unwrap();
    let (status, body) = post(addr, "/ingest", json!({"source": "bad"})).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("row 4 (line 5), column \"spend\"") && error.contains("bad.csv"), "{error}");
    assert_eq!(spend(addr, &[900001]).await, json!([null]), "nothing of a refused file is written");

    // Parquet, with timestamps in microseconds and nulls.
    use arrow_array::{
        ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("customer_id", Arc::new(Int64Array::from(vec![1_000_001, 1_000_002, 1_000_001]))),
        (
            "ts",
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    1_700_000_000_000_000,
                    1_700_000_000_000_000,
                    1_700_000_100_000_000,
                ])
                .with_timezone("UTC"),
            ),
        ),
        ("spend", Arc::new(Float64Array::from(vec![Some(1.0), None, Some(3.0)]))),
        ("segment", Arc::new(StringArray::from(vec!["a", "b", "c"]))),
        ("active", Arc::new(BooleanArray::from(vec![true, false, true]))),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let path = dir.path().join("history.parquet");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let (status, body) = post(addr, "/ingest", json!({"source": "history"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(spend(addr, &[1_000_001, 1_000_002]).await, json!([3.0, null]));

    // Refusals: an unknown source, a missing file; a client cannot name a file for the server to read.
    assert_eq!(post(addr, "/ingest", json!({"source": "weekly"})).await.0, 404);
    let (status, body) = post(addr, "/ingest", json!({"source": "missing"})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(addr, "/ingest", json!({"source": "daily", "uri": "file:///etc/passwd"})).await;
    assert_eq!(status, 400, "{body}");
}

/// `mizzen-features materialize` (what a FeatureSet's materialization Job runs): it waits for a store that
/// is not up yet, asks every replica for every source and reports what was read; a refused file fails it
/// at once as permanent, with the row named; a store that never answers fails it at the deadline.
#[tokio::test]
async fn materialize_waits_for_the_stores_ingests_every_source_and_tells_a_refusal_from_an_outage() {
    use mizzen_features::materialize::{Failure, Plan, run};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("daily.csv"), "customer_id,ts,spend\n1,2024-01-01T00:00:00Z,1.5\n2,2024-01-01T00:00:00Z,2.5\n1,2024-01-02T00:00:00Z,3.5\n").unwrap();
    let parquet = dir.path().join("history.parquet");
    {
        use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("customer_id", Arc::new(Int64Array::from(vec![3]))),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![1_700_000_000_000_000]).with_timezone("UTC")),
            ),
        ];
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&parquet).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    std::fs::write(dir.path().join("bad.csv"), "customer_id,ts,spend\n9,2024-01-01T00:00:00Z,lots\n")
        .unwrap();

    // The second replica's port is taken now and served only a moment later, as a store still starting.
    let first = serve(dir.path()).await;
    let (name, spec) = mizzen_features::read_feature_set(&feature_set(dir.path())).unwrap();
    let later = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let second = later.local_addr().unwrap();
    drop(later);
    let data = dir.path().join("data-2");
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let app = mizzen_features::App::open(&data, &name, &spec, 1 << 20).unwrap();
        let listener = tokio::net::TcpListener::bind(second).await.unwrap();
        axum::serve(listener, mizzen_features::router(app)).await.unwrap();
    });
    let plan = |sources: &[&str], deadline: u64| Plan {
        urls: vec![format!("http://{first}"), format!("http://{second}/")],
        sources: sources.iter().map(|s| s.to_string()).collect(),
        to: "online_and_offline".into(),
        deadline: Duration::from_secs(deadline),
    };
    let report = run(&plan(&["daily", "history"], 30)).await.unwrap();
    assert_eq!((report.rows, report.entities), (4, 3), "{report:?}");
    assert_eq!(report.sources, [("daily".to_string(), 3), ("history".to_string(), 1)]);
    assert_eq!(spend(second, &[1, 2]).await, json!([3.5, 2.5]), "the second replica has the rows too");

    match run(&plan(&["daily", "bad"], 30)).await {
        Err(Failure::Permanent(m)) => {
            assert!(m.contains("row 1 (line 2), column \"spend\"") && m.contains("bad.csv"), "{m}")
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let unreachable = Plan { urls: vec![format!("http://{closed}")], ..plan(&["daily"], 2) };
    let started = std::time::Instant::now();
    match run(&unreachable).await {
        Err(Failure::GaveUp(m)) => assert!(m.contains("did not succeed before the deadline"), "{m}"),
        other => panic!("expected to give up, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10), "gave up after {:?}", started.elapsed());
}
