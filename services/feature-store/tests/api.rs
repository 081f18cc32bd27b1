//! mizzen-features over HTTP, as a client sees it: Feast's request and response shapes, ttl, the order of
//! writes, point-in-time retrieval, every refusal, restarts, and kill -9 during pushes.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

const FEATURE_SET: &str = r#"
apiVersion: mizzen.dev/v1alpha1
kind: FeatureSet
metadata: {name: customers}
spec:
  entity: {name: customer, joinKey: customer_id, type: int64}
  features:
    - {name: spend, type: float64}
    - {name: visits, type: int32}
    - {name: segment, type: string}
  ttl: 1h
  sources:
    - {name: events, uri: "s3://data/events.csv", timestampColumn: ts, createdTimestampColumn: created}
"#;

struct Server {
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Stops serving and waits until the store is closed.
    async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn serve(dir: &Path) -> Server {
    let (name, spec) = mizzen_features::read_feature_set(FEATURE_SET).unwrap();
    let app = mizzen_features::App::open(dir, &name, &spec, 1 << 20).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, mizzen_features::router(app)).await.unwrap();
    });
    Server { addr, task: Some(task) }
}

/// POST `path` with `body` and no content type (as older Feast clients send): status and JSON.
async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn ago(minutes: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    jiff::Timestamp::from_second(now - minutes * 60).unwrap().to_string()
}

async fn push(addr: SocketAddr, df: Value) -> (u16, Value) {
    post(addr, "/push", &json!({"push_source_name": "events", "df": df, "to": "online_and_offline"})).await
}

/// `{feature: (values, statuses)}` of a lookup of `ids`.
async fn lookup(addr: SocketAddr, ids: &[i64]) -> Value {
    let request = json!({"features": ["customers:spend", "customers:visits", "customers:segment"],
                         "entities": {"customer_id": ids}});
    let (status, body) = post(addr, "/get-online-features", &request).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn column<'a>(body: &'a Value, i: usize, what: &str) -> &'a Value {
    &body["results"][i][what]
}

#[tokio::test]
async fn feast_shapes_ttl_order_of_writes_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path()).await;
    let ten_ago = ago(10);
    let (status, body) = push(
        s.addr,
        json!({"customer_id": [1, 2, 3], "ts": [ten_ago, ten_ago, ago(120)], "spend": [10.5, null, 7.0],
               "visits": [3, 4, 5], "segment": ["gold", "silver", "bronze"]}),
    )
    .await;
    assert_eq!((status, &body["rows"]), (200, &json!(3)), "{body}");

    // Column-major, the join key first with epoch-0 timestamps; unknown entity NOT_FOUND, null NULL_VALUE,
    // a value older than the ttl (1h) OUTSIDE_MAX_AGE with a null value.
    let body = lookup(s.addr, &[1, 2, 3, 99]).await;
    assert_eq!(body["metadata"]["feature_names"], json!(["customer_id", "spend", "visits", "segment"]));
    assert_eq!(*column(&body, 0, "values"), json!([1, 2, 3, 99]));
    assert_eq!(column(&body, 0, "event_timestamps")[0], "1970-01-01T00:00:00Z");
    assert_eq!(*column(&body, 1, "values"), json!([10.5, null, null, null]));
    assert_eq!(
        *column(&body, 1, "statuses"),
        json!(["PRESENT", "NULL_VALUE", "OUTSIDE_MAX_AGE", "NOT_FOUND"])
    );
    assert_eq!(*column(&body, 3, "values"), json!(["gold", "silver", null, null]));
    assert_eq!(column(&body, 1, "event_timestamps")[0], json!(ten_ago));

    // A newer row overwrites; an older one is ignored (and counted); a row with only some features
    // leaves the others alone; the same event time with a later created time wins.
    let (_, body) = push(s.addr, json!({"customer_id": [1], "ts": [ago(5)], "spend": [20.0]})).await;
    assert_eq!(body["ignored_older_values"], 0);
    let (_, body) =
        push(s.addr, json!({"customer_id": [1], "ts": [ago(30)], "spend": [1.0], "visits": [1]})).await;
    assert_eq!(body["ignored_older_values"], 2, "{body}");
    let t = ago(3);
    push(
        s.addr,
        json!({"customer_id": [2, 2], "ts": [t, t], "created": [ago(1), ago(2)], "visits": [40, 41]}),
    )
    .await;
    let body = lookup(s.addr, &[1, 2]).await;
    assert_eq!(*column(&body, 1, "values"), json!([20.0, null]));
    assert_eq!(*column(&body, 2, "values"), json!([3, 40]), "the later created time wins the tie");

    // full_feature_names and a feature service named like the FeatureSet.
    let request =
        json!({"feature_service": "customers", "entities": {"customer_id": [1]}, "full_feature_names": true});
    let (_, body) = post(s.addr, "/get-online-features", &request).await;
    assert_eq!(
        body["metadata"]["feature_names"],
        json!(["customer_id", "customers__spend", "customers__visits", "customers__segment"])
    );

    // Refusals: 4xx with {"error"}, and a refused push writes nothing (row 0 is fine, row 1 is not).
    let refusals = [
        ("/push", json!({"push_source_name": "nope", "df": {}}), 404, "no push source \"nope\""),
        (
            "/push",
            json!({"push_source_name": "events", "df": {"customer_id": [50, 51], "ts": [ago(1), ago(1)], "visits": [1, 2.5]}}),
            400,
            "row 1, column \"visits\"",
        ),
        (
            "/push",
            json!({"push_source_name": "events", "df": {"customer_id": [52], "ts": ["soon"], "visits": [1]}}),
            400,
            "is not a time",
        ),
        (
            "/push",
            json!({"push_source_name": "events", "df": {"customer_id": [53, 54], "ts": [ago(1)]}}),
            400,
            "every column needs one per row",
        ),
        (
            "/push",
            json!({"push_source_name": "events", "df": {"customer_id": [55], "ts": [ago(1)], "colour": ["red"]}}),
            400,
            "not a feature",
        ),
        (
            "/push",
            json!({"push_source_name": "events", "df": {"customer_id": ["x"], "ts": [ago(1)]}}),
            400,
            "not an int64",
        ),
        (
            "/push",
            json!({"push_source_name": "events", "df": {"customer_id": [56], "ts": [ago(1)]}, "to": "sideways"}),
            400,
            "online, offline",
        ),
        (
            "/get-online-features",
            json!({"features": ["customers:height"], "entities": {"customer_id": [1]}}),
            404,
            "no feature \"height\"",
        ),
        (
            "/get-online-features",
            json!({"features": ["drivers:spend"], "entities": {"customer_id": [1]}}),
            404,
            "not served here",
        ),
        (
            "/get-online-features",
            json!({"features": ["customers:spend"], "entities": {"driver_id": [1]}}),
            400,
            "join key is \"customer_id\"",
        ),
        ("/get-online-features", json!({"entities": {"customer_id": [1]}}), 400, "name the features"),
        ("/get-online-features", json!("not an object"), 400, "not the expected JSON"),
        ("/write-to-online-store", json!({"feature_view_name": "drivers", "df": {}}), 404, "not served here"),
        ("/nowhere", json!({}), 404, "no such endpoint"),
    ];
    for (path, body, want, says) in refusals {
        let (status, answer) = post(s.addr, path, &body).await;
        assert_eq!(status, want, "{path} {body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{path} {body}: {error}");
    }
    let body = lookup(s.addr, &[50]).await;
    assert_eq!(column(&body, 2, "statuses")[0], "NOT_FOUND", "a refused push wrote its good row");

    // Feast's remote online store writes through /write-to-online-store.
    let write = json!({"feature_view_name": "customers", "df": {"customer_id": [7], "ts": [ago(1)], "segment": ["new"]}});
    assert_eq!(post(s.addr, "/write-to-online-store", &write).await.0, 200);
    assert_eq!(column(&lookup(s.addr, &[7]).await, 3, "values")[0], "new");

    let metrics = reqwest::get(format!("http://{}/metrics", s.addr)).await.unwrap().text().await.unwrap();
    for line in [
        "mizzen_features_online_entities{feature_set=\"customers\"} 4",
        "status=\"OUTSIDE_MAX_AGE\"",
        "endpoint=\"push\"",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn historical_retrieval_is_point_in_time_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = serve(dir.path()).await;
        let df = json!({"customer_id": [1, 1, 1, 2], "visits": [1, 2, 3, 9],
            "ts": ["2024-05-01T00:00:00Z", "2024-05-01T02:00:00Z", "2024-05-01T01:00:00Z", "2024-05-01T00:30:00Z"]});
        assert_eq!(push(s.addr, df).await.0, 200);
        // Online only: not in the offline history.
        let online = json!({"push_source_name": "events", "to": "online",
                            "df": {"customer_id": [1], "ts": ["2024-05-01T00:10:00Z"], "visits": [100]}});
        assert_eq!(post(s.addr, "/push", &online).await.0, 200);
        s.stop().await;
    }
    // A restart keeps everything.
    let s = serve(dir.path()).await;
    let request = json!({"features": ["customers:visits"], "format": "json",
        "entities": {"customer_id": [1, 1, 1, 1, 2, 3], "label": [true, false, true, false, true, false],
            "event_timestamp": ["2024-04-30T23:00:00Z", "2024-05-01T00:30:00Z", "2024-05-01T01:59:59Z",
                                "2024-05-01T03:30:00Z", "2024-05-01T01:30:00Z", "2024-05-01T01:00:00Z"]}});
    let (status, body) = post(s.addr, "/get-historical-features", &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["columns"], json!(["customer_id", "event_timestamp", "label", "visits"]));
    // Before any row: null; as of 00:30: 1; as of 01:59:59: 3 (the late row for 01:00); 03:30 is 1h30
    // after the last row (02:00), past the 1h ttl: null; entity 2 at exactly its ttl boundary: 9.
    assert_eq!(body["values"][3], json!([null, 1, 3, null, 9, null]), "{body}");
    assert_eq!(body["values"][2], json!([true, false, true, false, true, false]));
    let csv = reqwest::Client::new()
        .post(format!("http://{}/get-historical-features", s.addr))
        .body(
            json!({"features": ["customers:visits"], "format": "csv",
                     "entities": {"customer_id": [1], "event_timestamp": ["2024-05-01T02:30:00Z"]}})
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv, "customer_id,event_timestamp,visits\n1,2024-05-01T02:30:00Z,2\n");

    // As Parquet: the same answer, each column typed (the key as int64, times as UTC microseconds, the
    // feature as its type, the label as the booleans it holds).
    let mut parquet_request = request.clone();
    parquet_request["format"] = json!("parquet");
    let response = reqwest::Client::new()
        .post(format!("http://{}/get-historical-features", s.addr))
        .body(parquet_request.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/vnd.apache.parquet");
    let bytes = response.bytes().await.unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let batch = reader.map(Result::unwrap).next().unwrap();
    let fields: Vec<String> =
        batch.schema().fields().iter().map(|f| format!("{}:{}", f.name(), f.data_type())).collect();
    assert_eq!(
        fields,
        ["customer_id:Int64", "event_timestamp:Timestamp(µs, \"UTC\")", "label:Boolean", "visits:Int32"]
    );
    use arrow_array::cast::AsArray as _;
    let visits: Vec<Option<i32>> =
        batch.column(3).as_primitive::<arrow_array::types::Int32Type>().iter().collect();
    assert_eq!(visits, [None, Some(1), Some(3), None, Some(9), None]);
    let at = batch.column(1).as_primitive::<arrow_array::types::TimestampMicrosecondType>().value(1);
    assert_eq!(at, 1_714_523_400_000_000, "2024-05-01T00:30:00Z");
    let (status, body) = post(
        s.addr,
        "/get-historical-features",
        &json!({"features": ["customers:visits"],
        "format": "xml", "entities": {"customer_id": [1], "event_timestamp": ["2024-05-01T02:30:00Z"]}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("use json, csv or parquet"), "{body}");
}

#[tokio::test]
async fn concurrent_writes_and_reads_never_go_back_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(serve(dir.path()).await);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let addr = s.addr;
            tokio::spawn(async move {
                for step in 0..40i64 {
                    let ids: Vec<i64> = (0..10).collect();
                    let ts = vec![format!("2024-05-01T00:{:02}:{:02}Z", step, w * 10); 10];
                    let visits = vec![step * 10 + w; 10];
                    let df = json!({"customer_id": ids, "ts": ts, "visits": visits});
                    assert_eq!(push(addr, df).await.0, 200);
                }
            })
        })
        .collect();
    let reader = {
        let addr = s.addr;
        tokio::spawn(async move {
            let mut last = [-1i64; 10];
            for _ in 0..200 {
                let request = json!({"features": ["customers:visits"], "entities": {"customer_id": (0..10).collect::<Vec<_>>()}});
                let (_, body) = post(addr, "/get-online-features", &request).await;
                // Everything here is older than the ttl: the times still come back and only move forward.
                for (i, t) in body["results"][1]["event_timestamps"].as_array().unwrap().iter().enumerate() {
                    let micros = t.as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_microsecond();
                    if body["results"][1]["statuses"][i] != "NOT_FOUND" {
                        assert!(micros >= last[i], "entity {i} went back in time");
                        last[i] = micros;
                    }
                }
            }
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    reader.await.unwrap();
    // The newest write (step 39, writer 3) won everywhere.
    let request = json!({"features": ["customers:visits"], "entities": {"customer_id": [0, 9]}});
    let (_, body) = post(s.addr, "/get-online-features", &request).await;
    assert_eq!(
        body["results"][1]["event_timestamps"],
        json!(["2024-05-01T00:39:30Z", "2024-05-01T00:39:30Z"])
    );
}

/// The data written under one schema is kept when features are appended (old rows read with the new
/// feature empty), and a schema that would misread it (a feature removed, reordered or retyped) is refused
/// at start with a message, leaving the data as it was.
#[tokio::test]
async fn appended_features_keep_the_data_and_other_schema_changes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path()).await;
    let (status, body) = push(
        s.addr,
        json!({"customer_id": [7], "ts": [ago(5)], "spend": [1.5], "visits": [2], "segment": ["a"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    s.stop().await;

    let (name, spec) = mizzen_features::read_feature_set(FEATURE_SET).unwrap();
    let open = |features: serde_json::Value| {
        let mut spec = serde_json::to_value(&spec).unwrap();
        spec["features"] = features;
        let spec = serde_json::from_value(spec).unwrap();
        mizzen_features::App::open(dir.path(), &name, &spec, 1 << 20).map(|_| ())
    };
    let refused = |features: serde_json::Value, why: &str| {
        let err = open(features).expect_err("refused").message;
        assert!(err.contains("cannot read it") && err.contains(why), "{err}");
    };
    refused(
        json!([{"name": "spend", "type": "float64"}, {"name": "visits", "type": "int32"}]),
        "segment (String) was removed",
    );
    refused(
        json!([{"name": "visits", "type": "int32"}, {"name": "spend", "type": "float64"}, {"name": "segment", "type": "string"}]),
        "feature 1 was spend (Float64) and is now visits (Int32)",
    );
    refused(
        json!([{"name": "spend", "type": "float32"}, {"name": "visits", "type": "int32"}, {"name": "segment", "type": "string"}]),
        "is now spend (Float32)",
    );
    let appended = json!([{"name": "spend", "type": "float64"}, {"name": "visits", "type": "int32"},
                          {"name": "segment", "type": "string"}, {"name": "tier", "type": "int64"}]);
    open(appended.clone()).unwrap();
    // Once appended, going back would drop the new feature's data: refused too.
    refused(
        json!([{"name": "spend", "type": "float64"}, {"name": "visits", "type": "int32"}, {"name": "segment", "type": "string"}]),
        "tier (Int64) was removed",
    );

    let mut spec = serde_json::to_value(&spec).unwrap();
    spec["features"] = appended;
    let spec = serde_json::from_value(spec).unwrap();
    let app = mizzen_features::App::open(dir.path(), &name, &spec, 1 << 20).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task =
        tokio::spawn(async move { axum::serve(listener, mizzen_features::router(app)).await.unwrap() });
    let request = json!({"features": ["customers:spend", "customers:segment", "customers:tier"],
                         "entities": {"customer_id": [7]}});
    let (status, body) = post(addr, "/get-online-features", &request).await;
    task.abort();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1]["values"], json!([1.5]), "{body}");
    assert_eq!(body["results"][2]["values"], json!(["a"]), "{body}");
    assert_eq!(body["results"][3]["statuses"], json!(["NOT_FOUND"]), "{body}");
}
