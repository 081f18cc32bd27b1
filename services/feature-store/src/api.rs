//! Feast's feature-server endpoints over one FeatureSet, plus historical retrieval, health and metrics.
//!
//! Bodies are read as JSON whatever their content type says (older Feast clients send none). Every
//! mistake of the client is a 4xx with `{"error": ...}`.

use crate::schema::{Key, Row, Value, csv_row, format_time, frame_row, parquet_row, parse_time_micros};
use crate::store::{OFFLINE_FLAG, ONLINE_FLAG, Targets};
use crate::{App, Error, metrics};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use std::sync::Arc;
use std::time::Instant;

/// The largest request body: a push or an entity table for historical retrieval.
pub const MAX_BODY_BYTES: usize = 64 << 20;
/// The most entities in one online lookup.
pub const MAX_LOOKUP_ENTITIES: usize = 10_000;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/get-online-features", post(online))
        .route("/push", post(push))
        .route("/write-to-online-store", post(write_to_online_store))
        .route("/get-historical-features", post(historical))
        .route("/ingest", post(ingest))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(|| async { "ready" }))
        .route(
            "/metrics",
            get(|State(app): State<Arc<App>>| async move {
                mizzen_common::metrics::response(&app.metrics.registry)
            }),
        )
        .fallback(|| async {
            Error::not_found("no such endpoint: see the README for the feature server's API")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// Runs `handler` for `endpoint`, counting it, timing it and counting refusals.
async fn measured<F>(app: &App, endpoint: &'static str, handler: F) -> Response
where
    F: std::future::Future<Output = Result<Response, Error>>,
{
    let start = Instant::now();
    let label = metrics::Endpoint { endpoint };
    let response = match handler.await {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_client_error() {
                app.metrics.refused.get_or_create(&label).inc();
            }
            e.into_response()
        }
    };
    app.metrics.requests.get_or_create(&label).inc();
    app.metrics.duration.get_or_create(&label).observe(start.elapsed().as_secs_f64());
    response
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Error> {
    let lenient;
    let body = if body.windows(3).any(|w| w == b"NaN") || body.windows(8).any(|w| w == b"Infinity") {
        lenient = non_finite_as_null(body);
        &lenient[..]
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("the body is not the expected JSON: {e}")))
}

/// Python's `json` (what `requests` sends) writes a missing float from pandas as the bare token `NaN`
/// (and infinities as `Infinity`), which is not JSON; outside strings, they are read as null.
fn non_finite_as_null(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let (mut i, mut in_string, mut escaped) = (0, false, false);
    while i < body.len() {
        let b = body[i];
        if in_string {
            in_string = escaped || b != b'"';
            escaped = !escaped && b == b'\\';
        } else if b == b'"' {
            in_string = true;
        } else if let Some(token) =
            [&b"NaN"[..], b"Infinity", b"-Infinity"].into_iter().find(|t| body[i..].starts_with(t))
        {
            out.extend_from_slice(b"null");
            i += token.len();
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

#[derive(Deserialize)]
struct OnlineRequest {
    #[serde(default)]
    features: Option<Vec<String>>,
    #[serde(default)]
    feature_service: Option<String>,
    entities: Map<String, Json>,
    #[serde(default)]
    full_feature_names: bool,
}

/// Feature references (`NAME:feature`, or a bare feature name) as feature indices; every feature when
/// the request names the FeatureSet as its feature service.
fn features(app: &App, refs: Option<&[String]>, service: Option<&str>) -> Result<Vec<usize>, Error> {
    let schema = app.store.schema();
    match (refs, service) {
        (Some(refs), _) if !refs.is_empty() => refs
            .iter()
            .map(|r| {
                let (view, feature) = r.split_once(':').unwrap_or((schema.name.as_str(), r.as_str()));
                if view != schema.name {
                    return Err(Error::not_found(format!(
                        "feature view {view:?} is not served here: this is FeatureSet {:?}",
                        schema.name
                    )));
                }
                schema
                    .feature(feature)
                    .ok_or_else(|| Error::not_found(format!("{:?} has no feature {feature:?}", schema.name)))
            })
            .collect(),
        (_, Some(service)) if service == schema.name => Ok((0..schema.features.len()).collect()),
        (_, Some(service)) => Err(Error::not_found(format!(
            "no feature service {service:?}: this store serves FeatureSet {:?} (use it as the service name)",
            schema.name
        ))),
        _ => Err(Error::invalid(
            "name the features (\"features\": [\"NAME:feature\"]) or a \"feature_service\"",
        )),
    }
}

/// The entity keys of a request's `entities`, which must hold the join key and nothing else.
fn entity_keys(app: &App, entities: &Map<String, Json>, limit: usize) -> Result<Vec<Key>, Error> {
    let schema = app.store.schema();
    if let Some(other) = entities.keys().find(|k| **k != schema.join_key) {
        return Err(Error::invalid(format!(
            "entities has {other:?}; this FeatureSet's join key is {:?}",
            schema.join_key
        )));
    }
    let Some(Json::Array(values)) = entities.get(&schema.join_key) else {
        return Err(Error::invalid(format!("entities needs a list of {:?} values", schema.join_key)));
    };
    if values.len() > limit {
        return Err(Error::invalid(format!("at most {limit} entities per request, not {}", values.len())));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, v)| schema.key(v).map_err(|e| Error::invalid(format!("entity {i}: {e}"))))
        .collect()
}

fn feature_name(app: &App, index: usize, full: bool) -> String {
    let schema = app.store.schema();
    if full {
        format!("{}__{}", schema.name, schema.features[index].0)
    } else {
        schema.features[index].0.clone()
    }
}

/// `POST /get-online-features`: the join key column first, then one column per feature, each with
/// `values`, `statuses` and `event_timestamps`.
async fn online(State(app): State<Arc<App>>, body: Bytes) -> Response {
    measured(&app, "get-online-features", async {
        let request: OnlineRequest = parse(&body)?;
        let wanted = features(&app, request.features.as_deref(), request.feature_service.as_deref())?;
        let keys = entity_keys(&app, &request.entities, MAX_LOOKUP_ENTITIES)?;
        let rows = app.store.lookup(&keys)?;
        let (now, ttl) = (now_micros(), app.store.schema().ttl_micros);
        let epoch = format_time(0);
        let mut names = vec![Json::String(app.store.schema().join_key.clone())];
        let mut results = vec![json!({
            "values": keys.iter().map(Key::to_json).collect::<Vec<_>>(),
            "statuses": vec!["PRESENT"; keys.len()],
            "event_timestamps": vec![epoch.as_str(); keys.len()],
        })];
        for &f in &wanted {
            names.push(Json::String(feature_name(&app, f, request.full_feature_names)));
            let (mut values, mut statuses, mut times) = (
                Vec::with_capacity(keys.len()),
                Vec::with_capacity(keys.len()),
                Vec::with_capacity(keys.len()),
            );
            for row in &rows {
                let cell = row.as_ref().and_then(|r| r[f].as_ref());
                let (value, status, time) = match cell {
                    None => (Json::Null, "NOT_FOUND", epoch.clone()),
                    Some(c) if ttl.is_some_and(|t| now - c.event_micros > t) => {
                        (Json::Null, "OUTSIDE_MAX_AGE", format_time(c.event_micros))
                    }
                    Some(c) if c.value == Value::Null => {
                        (Json::Null, "NULL_VALUE", format_time(c.event_micros))
                    }
                    Some(c) => {
                        app.metrics.value_age.observe(((now - c.event_micros) as f64 / 1e6).max(0.0));
                        (c.value.to_json(), "PRESENT", format_time(c.event_micros))
                    }
                };
                app.metrics.values.get_or_create(&metrics::Status { status }).inc();
                values.push(value);
                statuses.push(status);
                times.push(time);
            }
            results.push(json!({"values": values, "statuses": statuses, "event_timestamps": times}));
        }
        Ok(axum::Json(json!({"metadata": {"feature_names": names}, "results": results})).into_response())
    })
    .await
}

#[derive(Deserialize)]
struct PushRequest {
    push_source_name: String,
    df: Map<String, Json>,
    #[serde(default = "default_to")]
    to: String,
}

fn default_to() -> String {
    "online".into()
}

/// Writes rows where `to` says, off the async threads (it syncs to disk).
async fn write_rows(
    app: &Arc<App>,
    rows: Vec<Row>,
    to: u8,
    to_name: &'static str,
) -> Result<crate::store::Written, Error> {
    let n = rows.len();
    let store_app = app.clone();
    let written = tokio::task::spawn_blocking(move || store_app.store.write(&rows, Targets(to)))
        .await
        .map_err(|e| Error::internal(format!("the write stopped: {e}")))??;
    app.metrics.rows.get_or_create(&metrics::To { to: to_name }).inc_by(n as u64);
    if to & ONLINE_FLAG != 0 {
        app.metrics.entities.set(app.store.entity_count()? as i64);
    }
    Ok(written)
}

/// [`write_rows`], answering what it did.
async fn write(app: &Arc<App>, rows: Vec<Row>, to: u8, to_name: &'static str) -> Result<Response, Error> {
    let written = write_rows(app, rows, to, to_name).await?;
    Ok(axum::Json(json!({"rows": written.rows, "ignored_older_values": written.ignored_older}))
        .into_response())
}

/// `POST /push`: rows of a push source (a source of the FeatureSet, its timestamp columns as declared) to
/// the online store, the offline log, or both. All rows are checked first: one bad row refuses them all.
async fn push(State(app): State<Arc<App>>, body: Bytes) -> Response {
    measured(&app.clone(), "push", async move {
        let request: PushRequest = parse(&body)?;
        let schema = app.store.schema();
        let Some(source) = schema.sources.get(&request.push_source_name) else {
            return Err(Error::not_found(format!(
                "no push source {:?} in FeatureSet {:?} (its sources: {})",
                request.push_source_name,
                schema.name,
                schema.sources.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        let (to, name) = targets(&request.to)?;
        let rows = schema.rows(&request.df, &source.timestamp, source.created.as_deref(), frame_row)?;
        write(&app, rows, to, name).await
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestRequest {
    source: String,
    #[serde(default = "default_ingest_to")]
    to: String,
}

/// The largest file `POST /ingest` reads (it is checked whole in memory before anything is written).
pub const MAX_INGEST_BYTES: u64 = 1 << 30;

fn default_ingest_to() -> String {
    "online_and_offline".into()
}

/// Where `to` sends rows: its flags and its metric label.
fn targets(to: &str) -> Result<(u8, &'static str), Error> {
    Ok(match to.to_ascii_lowercase().as_str() {
        "online" => (ONLINE_FLAG, "online"),
        "offline" => (OFFLINE_FLAG, "offline"),
        "online_and_offline" | "both" => (ONLINE_FLAG | OFFLINE_FLAG, "online_and_offline"),
        other => {
            return Err(Error::invalid(format!(
                "to is {other:?}: use online, offline or online_and_offline (both)"
            )));
        }
    })
}

/// `POST /ingest` {`source`, `to`}: a source's CSV or Parquet file (at most 1 GiB), read from its URI and
/// checked whole (the first bad row named, nothing written unless every row is good), written as one batch.
async fn ingest(State(app): State<Arc<App>>, body: Bytes) -> Response {
    measured(&app.clone(), "ingest", async move {
        let request: IngestRequest = parse(&body)?;
        let (to, name) = targets(&request.to)?;
        let schema = app.store.schema();
        let Some(source) = schema.sources.get(&request.source).cloned() else {
            return Err(Error::not_found(format!(
                "no source {:?} in FeatureSet {:?}",
                request.source, schema.name
            )));
        };
        // Only the FeatureSet's own sources: a client never names a file for the server to read.
        let (uri, parquet) = (source.uri.clone(), source.parquet);
        let missing = |e: mizzen_common::storage::StorageError| {
            if e.is_missing() { Error::not_found(e.to_string()) } else { Error::invalid(e.to_string()) }
        };
        let reader = mizzen_common::storage::blocking_reader(&uri).await.map_err(missing)?;
        let read_uri = uri.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            use std::io::Read as _;
            let mut bytes = Vec::new();
            reader
                .take(MAX_INGEST_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| Error::invalid(format!("reading {read_uri}: {e}")))?;
            if bytes.len() as u64 > MAX_INGEST_BYTES {
                return Err(Error::invalid(format!(
                    "{read_uri} is larger than {MAX_INGEST_BYTES} bytes: split it into smaller files"
                )));
            }
            Ok(bytes::Bytes::from(bytes))
        })
        .await
        .map_err(|e| Error::internal(format!("the read stopped: {e}")))??;
        let started = Instant::now();
        let parse_app = app.clone();
        let rows = tokio::task::spawn_blocking(move || {
            let schema = parse_app.store.schema();
            let columns = if parquet {
                crate::ingest::parquet_columns(bytes, schema, &source.timestamp, source.created.as_deref())?
            } else {
                crate::ingest::csv_columns(&bytes, schema, &source.timestamp, source.created.as_deref())?
            };
            let name = if parquet { parquet_row } else { csv_row };
            schema.rows(&columns, &source.timestamp, source.created.as_deref(), name)
        })
        .await
        .map_err(|e| Error::internal(format!("the ingestion stopped: {e}")))?
        .map_err(|e| Error { message: format!("{uri}: {}", e.message), ..e })?;
        let n = rows.len();
        let written = write_rows(&app, rows, to, name).await?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(source = %request.source, %uri, rows = n, seconds, "ingested");
        let entities = app.store.entity_count()?;
        Ok(axum::Json(json!({"rows": written.rows, "ignored_older_values": written.ignored_older,
                             "seconds": seconds, "entities": entities}))
        .into_response())
    })
    .await
}

#[derive(Deserialize)]
struct WriteRequest {
    feature_view_name: String,
    df: Map<String, Json>,
}

/// `POST /write-to-online-store`: rows straight to the online store (what Feast's remote online store
/// sends), with the event time in the first source's timestamp column found in `df`, else
/// `event_timestamp`.
async fn write_to_online_store(State(app): State<Arc<App>>, body: Bytes) -> Response {
    measured(&app.clone(), "write-to-online-store", async move {
        let request: WriteRequest = parse(&body)?;
        let schema = app.store.schema();
        if request.feature_view_name != schema.name {
            return Err(Error::not_found(format!(
                "feature view {:?} is not served here: this is FeatureSet {:?}",
                request.feature_view_name, schema.name
            )));
        }
        let (timestamp, created) = schema
            .sources
            .values()
            .find(|s| request.df.contains_key(&s.timestamp))
            .map(|s| (s.timestamp.clone(), s.created.clone()))
            .unwrap_or(("event_timestamp".into(), Some("created".into())));
        let rows = schema.rows(&request.df, &timestamp, created.as_deref(), frame_row)?;
        write(&app, rows, ONLINE_FLAG, "online").await
    })
    .await
}

#[derive(Deserialize)]
struct HistoricalRequest {
    #[serde(default)]
    features: Option<Vec<String>>,
    #[serde(default)]
    feature_service: Option<String>,
    #[serde(alias = "entity_df")]
    entities: Map<String, Json>,
    #[serde(default = "default_timestamp_column")]
    timestamp_column: String,
    #[serde(default)]
    full_feature_names: bool,
    #[serde(default = "default_format")]
    format: String,
}

fn default_timestamp_column() -> String {
    "event_timestamp".into()
}
fn default_format() -> String {
    "json".into()
}

/// `POST /get-historical-features`: for each entity row (the join key, a timestamp and any other columns,
/// kept), each feature's latest value at or before the row's time and within ttl, else null. As JSON
/// (`{"columns": [...], "values": [[column 0], [column 1], ...]}`) or CSV.
async fn historical(State(app): State<Arc<App>>, body: Bytes) -> Response {
    measured(&app.clone(), "get-historical-features", async move {
        let request: HistoricalRequest = parse(&body)?;
        let format = request.format.to_ascii_lowercase();
        if !["json", "csv", "parquet"].contains(&format.as_str()) {
            return Err(Error::invalid(format!("format {:?}: use json, csv or parquet", request.format)));
        }
        let wanted = features(&app, request.features.as_deref(), request.feature_service.as_deref())?;
        let schema = app.store.schema().clone();
        let column = |name: &str| match request.entities.get(name) {
            Some(Json::Array(values)) => Ok(values),
            _ => Err(Error::invalid(format!("entities needs a list of {name:?} values"))),
        };
        let keys = column(&schema.join_key)?;
        let times = column(&request.timestamp_column)?;
        let mut extra: Vec<(&String, &Vec<Json>)> = Vec::new();
        for (name, values) in &request.entities {
            if name == &schema.join_key || name == &request.timestamp_column {
                continue;
            }
            let Json::Array(values) = values else {
                return Err(Error::invalid(format!("column {name:?} must be a list of values")));
            };
            extra.push((name, values));
        }
        for (name, len) in std::iter::once((&request.timestamp_column, times.len()))
            .chain(extra.iter().map(|(n, v)| (*n, v.len())))
        {
            if len != keys.len() {
                return Err(Error::invalid(format!("column {name:?} has {len} values, not {}", keys.len())));
            }
        }
        let mut rows = Vec::with_capacity(keys.len());
        for (i, (k, t)) in keys.iter().zip(times).enumerate() {
            let key = schema.key(k).map_err(|e| Error::invalid(format!("row {i}: {e}")))?;
            let at = parse_time_micros(t)
                .map_err(|e| Error::invalid(format!("row {i}, {:?}: {e}", request.timestamp_column)))?;
            rows.push((key, at));
        }
        let (row_keys, row_times): (Vec<Key>, Vec<i64>) =
            if format == "parquet" { rows.iter().cloned().unzip() } else { Default::default() };
        let (store_app, wanted_in) = (app.clone(), wanted.clone());
        let joined = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<Value>>, Error> {
            let wanted_keys = rows.iter().map(|(k, _)| k.clone()).collect();
            let histories = store_app.store.history(&wanted_keys)?;
            let indexed: std::collections::HashMap<&Key, crate::pit::History> = histories
                .iter()
                .map(|(k, rows)| (k, crate::pit::History::new(rows, schema.features.len())))
                .collect();
            Ok(wanted_in
                .iter()
                .map(|&f| {
                    rows.iter()
                        .map(|(k, at)| {
                            indexed
                                .get(k)
                                .and_then(|h| h.as_of(f, *at, schema.ttl_micros))
                                .map_or(Value::Null, |(v, _)| v.clone())
                        })
                        .collect()
                })
                .collect())
        })
        .await
        .map_err(|e| Error::internal(format!("the join stopped: {e}")))??;
        if format == "parquet" {
            let features = wanted
                .iter()
                .zip(joined)
                .map(|(&f, values)| {
                    (
                        feature_name(&app, f, request.full_feature_names),
                        app.store.schema().features[f].1,
                        values,
                    )
                })
                .collect();
            let table = crate::export::Table {
                key: (&app.store.schema().join_key, row_keys),
                time: (&request.timestamp_column, row_times),
                extra: extra.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect(),
                features,
            };
            let bytes = crate::export::to_parquet(table)?;
            return Ok(([(header::CONTENT_TYPE, "application/vnd.apache.parquet")], bytes).into_response());
        }
        let mut names: Vec<String> =
            vec![app.store.schema().join_key.clone(), request.timestamp_column.clone()];
        names.extend(extra.iter().map(|(n, _)| (*n).clone()));
        names.extend(wanted.iter().map(|&f| feature_name(&app, f, request.full_feature_names)));
        let mut columns: Vec<Vec<Json>> = vec![keys.clone(), times.clone()];
        columns.extend(extra.iter().map(|(_, v)| (*v).clone()));
        columns.extend(joined.iter().map(|c| c.iter().map(Value::to_json).collect()));
        if format == "csv" {
            return Ok(([(header::CONTENT_TYPE, "text/csv")], to_csv(&names, &columns)).into_response());
        }
        Ok(axum::Json(json!({"columns": names, "values": columns})).into_response())
    })
    .await
}

fn csv_field(v: &Json) -> String {
    match v {
        Json::Null => String::new(),
        Json::String(s) => Value::Str(s.clone()).to_csv(),
        other => other.to_string(),
    }
}

fn to_csv(names: &[String], columns: &[Vec<Json>]) -> String {
    let mut out = names.iter().map(|n| Value::Str(n.clone()).to_csv()).collect::<Vec<_>>().join(",");
    out.push('\n');
    for r in 0..columns.first().map_or(0, Vec::len) {
        out.push_str(&columns.iter().map(|c| csv_field(&c[r])).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn pythons_non_finite_floats_are_read_as_null_outside_strings() {
        let body = br#"{"a": [NaN, 1.5, Infinity, -Infinity], "b": "NaN \" Infinity", "c": [NaN]}"#;
        let fixed = super::non_finite_as_null(body);
        let v: serde_json::Value = serde_json::from_slice(&fixed).unwrap();
        assert_eq!(v["a"], serde_json::json!([null, 1.5, null, null]));
        assert_eq!(v["b"], "NaN \" Infinity");
        assert_eq!(v["c"], serde_json::json!([null]));
    }
}
