//! Experiments and runs: MLflow's tracking API, with each run's artifacts under
//! `mlflow-artifacts:/EXPERIMENT/RUN/artifacts` (served by this registry's artifact proxy).

use crate::error::ApiError;
use crate::filter::{self, Field};
use crate::params::Params;
use crate::store::Tx;
use crate::{App, Page, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The experiment runs go to when none is named, as MLflow's server has it.
pub const DEFAULT_EXPERIMENT: &str = "0";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: String,
    pub creation_time: i64,
    pub last_update_time: i64,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub run_uuid: String,
    pub run_name: String,
    pub experiment_id: String,
    pub user_id: String,
    pub status: String,
    pub start_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    pub artifact_uri: String,
    pub lifecycle_stage: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metric {
    pub key: String,
    pub value: Value,
    pub timestamp: i64,
    pub step: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunData {
    #[serde(default)]
    pub metrics: Vec<Metric>,
    #[serde(default)]
    pub params: Vec<Tag>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub info: RunInfo,
    pub data: RunData,
}

const STATUSES: [&str; 5] = ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

/// Creates the default experiment when the store has none.
pub fn init(app: &App) -> Result<(), ApiError> {
    app.store.write(|tx| {
        if tx.get::<Experiment>(&exp_key(DEFAULT_EXPERIMENT))?.is_none() {
            put_experiment(tx, DEFAULT_EXPERIMENT, "Default", Vec::new())?;
        }
        Ok(())
    })
}

fn exp_key(id: &str) -> String {
    format!("exp/{id}")
}

fn run_key(id: &str) -> String {
    format!("run/{id}")
}

fn put_experiment(tx: &mut Tx<'_>, id: &str, name: &str, tags: Vec<Tag>) -> Result<Experiment, ApiError> {
    let now = now_ms();
    let e = Experiment {
        experiment_id: id.to_string(),
        name: name.to_string(),
        artifact_location: format!("mlflow-artifacts:/{id}"),
        lifecycle_stage: "active".into(),
        creation_time: now,
        last_update_time: now,
        tags,
    };
    tx.put(&exp_key(id), &e)?;
    tx.put(&format!("expname/{name}"), &id)?;
    Ok(e)
}

fn tags(p: &Params, key: &str) -> Result<Vec<Tag>, ApiError> {
    Ok(p.pairs(key)?.into_iter().map(|(key, value)| Tag { key, value }).collect())
}

pub fn create_experiment(app: &App, p: &Params) -> Result<Value, ApiError> {
    let name = p.str("name")?;
    let tags = tags(p, "tags")?;
    app.store.write(|tx| {
        if tx.get::<String>(&format!("expname/{name}"))?.is_some() {
            return Err(ApiError::exists(format!("Experiment(name={name}) already exists.")));
        }
        let next = tx.get::<u64>("counter/exp")?.unwrap_or(0) + 1;
        tx.put("counter/exp", &next)?;
        let e = put_experiment(tx, &next.to_string(), &name, tags)?;
        Ok(json!({"experiment_id": e.experiment_id}))
    })
}

fn experiment(tx: &Tx<'_>, id: &str) -> Result<Experiment, ApiError> {
    tx.get(&exp_key(id))?.ok_or_else(|| ApiError::not_found(format!("No Experiment with id={id} exists")))
}

pub fn get_experiment(app: &App, p: &Params) -> Result<Value, ApiError> {
    let id = p.str("experiment_id")?;
    app.store.read(|tx| Ok(json!({"experiment": experiment(tx, &id)?})))
}

pub fn get_experiment_by_name(app: &App, p: &Params) -> Result<Value, ApiError> {
    let name = p.str("experiment_name")?;
    app.store.read(|tx| {
        let id: String = tx
            .get(&format!("expname/{name}"))?
            .ok_or_else(|| ApiError::not_found(format!("Could not find experiment with name '{name}'")))?;
        Ok(json!({"experiment": experiment(tx, &id)?}))
    })
}

pub fn search_experiments(app: &App, p: &Params) -> Result<Value, ApiError> {
    let clauses = filter::parse(&p.opt_str("filter")?.unwrap_or_default())?;
    let page = Page::from(p, 1000)?;
    let mut all: Vec<Experiment> =
        app.store.read(|tx| tx.scan("exp/"))?.into_iter().map(|(_, e)| e).collect();
    all.retain(|e| {
        filter::matches(&clauses, |f| match f {
            "name" => Some(Field::Str(e.name.clone())),
            "experiment_id" => Some(Field::Str(e.experiment_id.clone())),
            f => f.strip_prefix("tag.").and_then(|k| tag(&e.tags, k)),
        })
    });
    all.sort_by(|a, b| b.last_update_time.cmp(&a.last_update_time).then(a.name.cmp(&b.name)));
    let (items, token) = page.cut(all);
    Ok(page_json("experiments", items, token))
}

fn tag(tags: &[Tag], key: &str) -> Option<Field> {
    tags.iter().find(|t| t.key == key).map(|t| Field::Str(t.value.clone()))
}

/// `{"NAME": items, "next_page_token": ...}` (no token on the last page).
pub fn page_json<T: Serialize>(name: &str, items: Vec<T>, token: Option<String>) -> Value {
    let mut out = json!({ name: items });
    if let Some(t) = token {
        out["next_page_token"] = json!(t);
    }
    out
}

pub fn create_run(app: &App, p: &Params) -> Result<Value, ApiError> {
    let experiment_id = p.opt_str("experiment_id")?.unwrap_or_else(|| DEFAULT_EXPERIMENT.into());
    let mut tags = tags(p, "tags")?;
    let run_id = new_run_id();
    let run_name = match (p.opt_str("run_name")?, tags.iter().find(|t| t.key == "mlflow.runName")) {
        (Some(n), _) if !n.is_empty() => n,
        (_, Some(t)) => t.value.clone(),
        _ => format!("run-{}", &run_id[..8]),
    };
    if !tags.iter().any(|t| t.key == "mlflow.runName") {
        tags.push(Tag { key: "mlflow.runName".into(), value: run_name.clone() });
    }
    let user_id = p.opt_str("user_id")?.unwrap_or_default();
    let start_time = p.opt_int("start_time")?.unwrap_or_else(now_ms);
    app.store.write(|tx| {
        experiment(tx, &experiment_id)?;
        let run = Run {
            info: RunInfo {
                run_id: run_id.clone(),
                run_uuid: run_id.clone(),
                run_name,
                experiment_id: experiment_id.clone(),
                user_id,
                status: "RUNNING".into(),
                start_time,
                end_time: None,
                artifact_uri: format!("mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"),
                lifecycle_stage: "active".into(),
            },
            data: RunData { tags, ..RunData::default() },
        };
        tx.put(&run_key(&run_id), &run)?;
        Ok(json!({"run": run}))
    })
}

fn new_run_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run_id(p: &Params) -> Result<String, ApiError> {
    match p.opt_str("run_id")?.filter(|s| !s.is_empty()) {
        Some(id) => Ok(id),
        None => p.str("run_uuid"),
    }
}

pub fn run(tx: &Tx<'_>, id: &str) -> Result<Run, ApiError> {
    tx.get(&run_key(id))?.ok_or_else(|| ApiError::not_found(format!("Run with id={id} not found")))
}

pub fn get_run(app: &App, p: &Params) -> Result<Value, ApiError> {
    let id = run_id(p)?;
    app.store.read(|tx| Ok(json!({"run": run(tx, &id)?})))
}

/// Changes run `id` by `f` in one transaction.
fn change_run<R>(
    app: &App,
    id: &str,
    f: impl FnOnce(&mut Run) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    app.store.write(|tx| {
        let mut r = run(tx, id)?;
        let out = f(&mut r)?;
        tx.put(&run_key(id), &r)?;
        Ok(out)
    })
}

pub fn update_run(app: &App, p: &Params) -> Result<Value, ApiError> {
    let id = run_id(p)?;
    let status = p.opt_str("status")?;
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::invalid(format!("Invalid run status {s:?}: one of {}", STATUSES.join(", "))));
    }
    let end_time = p.opt_int("end_time")?;
    let name = p.opt_str("run_name")?.filter(|n| !n.is_empty());
    change_run(app, &id, |r| {
        if let Some(s) = status {
            r.info.status = s;
        }
        if end_time.is_some() {
            r.info.end_time = end_time;
        }
        if let Some(n) = name {
            r.info.run_name = n.clone();
            set(&mut r.data.tags, "mlflow.runName", n);
        }
        Ok(json!({"run_info": r.info}))
    })
}

fn set(tags: &mut Vec<Tag>, key: &str, value: String) {
    match tags.iter_mut().find(|t| t.key == key) {
        Some(t) => t.value = value,
        None => tags.push(Tag { key: key.into(), value }),
    }
}

/// A metric value as MLflow sends it: a number, or NaN/Infinity as text.
fn metric(key: String, value: f64, timestamp: i64, step: i64) -> Metric {
    let value =
        if value.is_finite() { json!(value) } else { json!(value.to_string().replace("inf", "Infinity")) };
    Metric { key, value, timestamp, step }
}

/// Keeps the latest value of each metric (by step, then timestamp), as MLflow's run data does.
fn log_metrics(r: &mut Run, metrics: Vec<Metric>) {
    for m in metrics {
        match r.data.metrics.iter_mut().find(|x| x.key == m.key) {
            Some(x) if (m.step, m.timestamp) >= (x.step, x.timestamp) => *x = m,
            Some(_) => {}
            None => r.data.metrics.push(m),
        }
    }
}

fn log_params(r: &mut Run, params: Vec<Tag>) -> Result<(), ApiError> {
    for p in params {
        match r.data.params.iter().find(|x| x.key == p.key) {
            Some(x) if x.value != p.value => {
                return Err(ApiError::invalid(format!(
                    "Changing param values is not allowed. Param with key='{}' was already logged with value='{}' \
                     for run ID='{}'. Attempted logging new value '{}'.",
                    p.key, x.value, r.info.run_id, p.value
                )));
            }
            Some(_) => {}
            None => r.data.params.push(p),
        }
    }
    Ok(())
}

pub fn log_metric(app: &App, p: &Params) -> Result<Value, ApiError> {
    let id = run_id(p)?;
    let m = metric(
        p.str("key")?,
        p.float("value")?,
        p.opt_int("timestamp")?.unwrap_or_else(now_ms),
        p.opt_int("step")?.unwrap_or(0),
    );
    change_run(app, &id, |r| {
        log_metrics(r, vec![m]);
        Ok(json!({}))
    })
}

pub fn log_param(app: &App, p: &Params) -> Result<Value, ApiError> {
    let id = run_id(p)?;
    let param = Tag { key: p.str("key")?, value: p.opt_str("value")?.unwrap_or_default() };
    change_run(app, &id, |r| {
        log_params(r, vec![param])?;
        Ok(json!({}))
    })
}

pub fn set_tag(app: &App, p: &Params) -> Result<Value, ApiError> {
    let id = run_id(p)?;
    let (key, value) = (p.str("key")?, p.opt_str("value")?.unwrap_or_default());
    change_run(app, &id, |r| {
        if key == "mlflow.runName" {
            r.info.run_name = value.clone();
        }
        set(&mut r.data.tags, &key, value);
        Ok(json!({}))
    })
}

pub fn log_batch(app: &App, p: &Params) -> Result<Value, ApiError> {
    let id = run_id(p)?;
    let metrics = p
        .list("metrics")
        .into_iter()
        .map(|m| {
            let m = Params::from_value(m)?;
            Ok(metric(
                m.str("key")?,
                m.float("value")?,
                m.opt_int("timestamp")?.unwrap_or_else(now_ms),
                m.opt_int("step")?.unwrap_or(0),
            ))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let params = tags(p, "params")?;
    let new_tags = tags(p, "tags")?;
    change_run(app, &id, |r| {
        log_params(r, params)?;
        log_metrics(r, metrics);
        for t in new_tags {
            if t.key == "mlflow.runName" {
                r.info.run_name = t.value.clone();
            }
            set(&mut r.data.tags, &t.key, t.value);
        }
        Ok(json!({}))
    })
}

pub fn search_runs(app: &App, p: &Params) -> Result<Value, ApiError> {
    let experiments: Vec<String> = p
        .list("experiment_ids")
        .iter()
        .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
        .collect();
    let clauses = filter::parse(&p.opt_str("filter")?.unwrap_or_default())?;
    let page = Page::from(p, 1000)?;
    let mut runs: Vec<Run> = app
        .store
        .read(|tx| tx.scan::<Run>("run/"))?
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| experiments.is_empty() || experiments.contains(&r.info.experiment_id))
        .filter(|r| filter::matches(&clauses, |f| run_field(r, f)))
        .collect();
    let order: Vec<String> =
        p.list("order_by").iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
    runs.sort_by(|a, b| {
        for o in &order {
            let mut words = o.split_whitespace();
            let field = filter::parse(&format!("{} = 0", words.next().unwrap_or(""))).ok();
            let name = field.and_then(|c| c.first().map(filter::Clause::field_name));
            let desc = words.next().is_some_and(|w| w.eq_ignore_ascii_case("desc"));
            let (x, y) = name.map(|n| (run_field(a, &n), run_field(b, &n))).unwrap_or((None, None));
            let c = cmp_fields(x, y);
            if c.is_ne() {
                return if desc { c.reverse() } else { c };
            }
        }
        b.info.start_time.cmp(&a.info.start_time).then(a.info.run_id.cmp(&b.info.run_id))
    });
    let (items, token) = page.cut(runs);
    Ok(page_json("runs", items, token))
}

fn cmp_fields(a: Option<Field>, b: Option<Field>) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a, b) {
        (Some(Field::Num(x)), Some(Field::Num(y))) => x.partial_cmp(&y).unwrap_or(Equal),
        (Some(Field::Str(x)), Some(Field::Str(y))) => x.cmp(&y),
        (Some(_), None) => Less,
        (None, Some(_)) => Greater,
        _ => Equal,
    }
}

fn run_field(r: &Run, f: &str) -> Option<Field> {
    let s = |v: &str| Some(Field::Str(v.to_string()));
    match f {
        "run_id" | "run_uuid" => s(&r.info.run_id),
        "run_name" => s(&r.info.run_name),
        "status" => s(&r.info.status),
        "user_id" => s(&r.info.user_id),
        "start_time" => Some(Field::Num(r.info.start_time as f64)),
        "end_time" => r.info.end_time.map(|t| Field::Num(t as f64)),
        f => {
            if let Some(k) = f.strip_prefix("tag.") {
                tag(&r.data.tags, k)
            } else if let Some(k) = f.strip_prefix("param.") {
                tag(&r.data.params, k)
            } else if let Some(k) = f.strip_prefix("metric.") {
                r.data.metrics.iter().find(|m| m.key == k).and_then(|m| m.value.as_f64()).map(Field::Num)
            } else {
                None
            }
        }
    }
}
