//! Registered models, their versions and aliases: MLflow's model registry API. Beyond MLflow: a version
//! whose source is in this registry must have its artifacts uploaded (complete) before it is created,
//! and is `READY` at once, with its ONNX file's sha256 and size recorded as `mizzen.*` tags; an alias
//! moves in one transaction; and a version an alias points at cannot be deleted.

use crate::artifacts;
use crate::error::ApiError;
use crate::filter::{self, Field};
use crate::params::Params;
use crate::store::Tx;
use crate::tracking::{self, Tag, page_json};
use crate::{App, Page, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Model {
    name: String,
    creation_timestamp: i64,
    last_updated_timestamp: i64,
    description: String,
    user_id: String,
    tags: Vec<Tag>,
    /// Alias -> version.
    aliases: BTreeMap<String, u64>,
    next_version: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Version {
    name: String,
    version: u64,
    creation_timestamp: i64,
    last_updated_timestamp: i64,
    description: String,
    user_id: String,
    source: String,
    run_id: String,
    run_link: String,
    status: String,
    tags: Vec<Tag>,
}

fn model_key(name: &str) -> String {
    format!("model/{name}")
}

fn versions_prefix(name: &str) -> String {
    format!("ver/{name}\u{1}")
}

fn version_key(name: &str, version: u64) -> String {
    format!("ver/{name}\u{1}{version:010}")
}

/// Names as MLflow's client allows them (no `/` or `:`), at most 256 characters, no control characters.
fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
    if name.len() > 256 || name.contains(['/', ':']) || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{what} {name:?} must be at most 256 characters without '/', ':' or control characters"
        )));
    }
    Ok(())
}

fn model(tx: &Tx<'_>, name: &str) -> Result<Model, ApiError> {
    tx.get(&model_key(name))?
        .ok_or_else(|| ApiError::not_found(format!("Registered Model with name={name} not found")))
}

fn version(tx: &Tx<'_>, name: &str, v: u64) -> Result<Version, ApiError> {
    tx.get(&version_key(name, v))?
        .ok_or_else(|| ApiError::not_found(format!("Model Version (name={name}, version={v}) not found")))
}

fn versions(tx: &Tx<'_>, name: &str) -> Result<Vec<Version>, ApiError> {
    Ok(tx.scan::<Version>(&versions_prefix(name))?.into_iter().map(|(_, v)| v).collect())
}

fn version_json(v: &Version, m: &Model) -> Value {
    let aliases: Vec<&String> = m.aliases.iter().filter(|(_, n)| **n == v.version).map(|(a, _)| a).collect();
    json!({
        "name": v.name, "version": v.version.to_string(), "creation_timestamp": v.creation_timestamp,
        "last_updated_timestamp": v.last_updated_timestamp, "user_id": v.user_id, "current_stage": "None",
        "description": v.description, "source": v.source, "run_id": v.run_id, "run_link": v.run_link,
        "status": v.status, "status_message": "", "tags": v.tags, "aliases": aliases,
    })
}

fn model_json(tx: &Tx<'_>, m: &Model) -> Result<Value, ApiError> {
    let latest = versions(tx, &m.name)?.pop();
    let aliases: Vec<Value> =
        m.aliases.iter().map(|(a, v)| json!({"alias": a, "version": v.to_string()})).collect();
    Ok(json!({
        "name": m.name, "creation_timestamp": m.creation_timestamp, "last_updated_timestamp": m.last_updated_timestamp,
        "user_id": m.user_id, "description": m.description, "tags": m.tags, "aliases": aliases,
        "latest_versions": latest.iter().map(|v| version_json(v, m)).collect::<Vec<_>>(),
    }))
}

fn tags(p: &Params) -> Result<Vec<Tag>, ApiError> {
    Ok(p.pairs("tags")?.into_iter().map(|(key, value)| Tag { key, value }).collect())
}

fn set(tags: &mut Vec<Tag>, key: String, value: String) {
    match tags.iter_mut().find(|t| t.key == key) {
        Some(t) => t.value = value,
        None => tags.push(Tag { key, value }),
    }
}

pub fn create_model(app: &App, p: &Params) -> Result<Value, ApiError> {
    let name = p.str("name")?;
    check_name(&name, "the model name")?;
    let (tags, description) = (tags(p)?, p.opt_str("description")?.unwrap_or_default());
    app.store.write(|tx| {
        if tx.get::<Model>(&model_key(&name))?.is_some() {
            return Err(ApiError::exists(format!("Registered Model (name={name}) already exists.")));
        }
        let now = now_ms();
        let m = Model {
            name: name.clone(),
            creation_timestamp: now,
            last_updated_timestamp: now,
            description,
            user_id: String::new(),
            tags,
            aliases: BTreeMap::new(),
            next_version: 1,
        };
        tx.put(&model_key(&name), &m)?;
        Ok(json!({"registered_model": model_json(tx, &m)?}))
    })
}

pub fn get_model(app: &App, p: &Params) -> Result<Value, ApiError> {
    let name = p.str("name")?;
    app.store.read(|tx| Ok(json!({"registered_model": model_json(tx, &model(tx, &name)?)?})))
}

/// Changes model `name` by `f` in one transaction; answers the changed model.
fn change_model(app: &App, name: &str, f: impl FnOnce(&mut Model)) -> Result<Value, ApiError> {
    app.store.write(|tx| {
        let mut m = model(tx, name)?;
        f(&mut m);
        m.last_updated_timestamp = now_ms();
        tx.put(&model_key(name), &m)?;
        Ok(json!({"registered_model": model_json(tx, &m)?}))
    })
}

pub fn rename_model(app: &App, p: &Params) -> Result<Value, ApiError> {
    let (name, new_name) = (p.str("name")?, p.str("new_name")?);
    check_name(&new_name, "the new model name")?;
    app.store.write(|tx| {
        let mut m = model(tx, &name)?;
        if tx.get::<Model>(&model_key(&new_name))?.is_some() {
            return Err(ApiError::exists(format!("Registered Model (name={new_name}) already exists.")));
        }
        for mut v in versions(tx, &name)? {
            tx.delete(&version_key(&name, v.version))?;
            v.name = new_name.clone();
            tx.put(&version_key(&new_name, v.version), &v)?;
        }
        tx.delete(&model_key(&name))?;
        m.name = new_name.clone();
        m.last_updated_timestamp = now_ms();
        tx.put(&model_key(&new_name), &m)?;
        Ok(json!({"registered_model": model_json(tx, &m)?}))
    })
}

pub fn update_model(app: &App, p: &Params) -> Result<Value, ApiError> {
    let (name, description) = (p.str("name")?, p.opt_str("description")?);
    change_model(app, &name, |m| {
        if let Some(d) = description {
            m.description = d;
        }
    })
}

pub fn delete_model(app: &App, p: &Params) -> Result<Value, ApiError> {
    let name = p.str("name")?;
    app.store.write(|tx| {
        model(tx, &name)?;
        for v in versions(tx, &name)? {
            tx.delete(&version_key(&name, v.version))?;
        }
        tx.delete(&model_key(&name))?;
        Ok(json!({}))
    })
}

pub fn search_models(app: &App, p: &Params) -> Result<Value, ApiError> {
    let clauses = filter::parse(&p.opt_str("filter")?.unwrap_or_default())?;
    let page = Page::from(p, 100)?;
    app.store.read(|tx| {
        let mut models: Vec<Model> = tx.scan::<Model>("model/")?.into_iter().map(|(_, m)| m).collect();
        models.retain(|m| {
            filter::matches(&clauses, |f| match f {
                "name" => Some(Field::Str(m.name.clone())),
                f => f
                    .strip_prefix("tag.")
                    .and_then(|k| m.tags.iter().find(|t| t.key == k))
                    .map(|t| Field::Str(t.value.clone())),
            })
        });
        let order = p.list("order_by");
        let newest_first = order.iter().filter_map(Value::as_str).any(|o| {
            let o = o.to_ascii_lowercase();
            o.contains("timestamp") && o.ends_with("desc")
        });
        if newest_first {
            models.sort_by_key(|m| std::cmp::Reverse(m.last_updated_timestamp));
        }
        let (items, token) = page.cut(models);
        let items = items.iter().map(|m| model_json(tx, m)).collect::<Result<Vec<_>, _>>()?;
        Ok(page_json("registered_models", items, token))
    })
}

pub fn set_model_tag(app: &App, p: &Params) -> Result<Value, ApiError> {
    let (name, key, value) = (p.str("name")?, p.str("key")?, p.opt_str("value")?.unwrap_or_default());
    change_model(app, &name, |m| set(&mut m.tags, key, value)).map(|_| json!({}))
}

pub fn delete_model_tag(app: &App, p: &Params) -> Result<Value, ApiError> {
    let (name, key) = (p.str("name")?, p.str("key")?);
    change_model(app, &name, |m| m.tags.retain(|t| t.key != key)).map(|_| json!({}))
}

pub fn create_version(app: &App, p: &Params) -> Result<Value, ApiError> {
    let (name, source) = (p.str("name")?, p.str("source")?);
    let run_id = p.opt_str("run_id")?.unwrap_or_default();
    let mut tags = tags(p)?;
    let run_link = p.opt_str("run_link")?.unwrap_or_default();
    let description = p.opt_str("description")?.unwrap_or_default();
    app.store.write(|tx| {
        let mut m = model(tx, &name)?;
        if !run_id.is_empty() {
            tracking::run(tx, &run_id)?;
        }
        // A source in this registry must be complete: its artifacts uploaded, before the version exists.
        if let Some(path) = artifacts::registry_path(&source) {
            let files = artifacts::files_under(tx, &path)?;
            if files.is_empty() {
                return Err(ApiError::invalid(format!(
                    "source {source} has no artifacts in this registry: upload them first (a version's source is \
                     the directory that holds the model)"
                )));
            }
            let onnx: Vec<_> = files.iter().filter(|(p, _)| p.ends_with(".onnx")).collect();
            if let [(file, a)] = onnx.as_slice() {
                set(&mut tags, "mizzen.artifact.path".into(), file.clone());
                set(&mut tags, "mizzen.artifact.sha256".into(), a.sha256.clone());
                set(&mut tags, "mizzen.artifact.size".into(), a.size.to_string());
                // The signature from the file itself, when it is an ONNX model.
                match crate::onnx::signature(&app.blob(&a.sha256)) {
                    Ok(sig) => {
                        let json = serde_json::to_string(&sig).unwrap_or_default();
                        set(&mut tags, "mizzen.onnx.signature".into(), json);
                    }
                    Err(e) => tracing::info!(%name, file = %file, %e, "no ONNX signature"),
                }
            }
        }
        let now = now_ms();
        let v = Version {
            name: name.clone(),
            version: m.next_version,
            creation_timestamp: now,
            last_updated_timestamp: now,
            description,
            user_id: String::new(),
            source,
            run_id,
            run_link,
            status: "READY".into(),
            tags,
        };
        m.next_version += 1;
        m.last_updated_timestamp = now;
        tx.put(&version_key(&name, v.version), &v)?;
        tx.put(&model_key(&name), &m)?;
        Ok(json!({"model_version": version_json(&v, &m)}))
    })
}

pub fn get_version(app: &App, p: &Params) -> Result<Value, ApiError> {
    let (name, v) = (p.str("name")?, p.version()?);
    app.store.read(|tx| {
        let m = model(tx, &name)?;
        Ok(json!({"model_version": version_json(&version(tx, &name, v)?, &m)}))
    })
}

/// Changes version `v` of model `name` by `f` in one transaction; answers the changed version.
fn change_version(app: &App, name: &str, v: u64, f: impl FnOnce(&mut Version)) -> Result<Value, ApiError> {
    app.store.write(|tx| {
        let m = model(tx, name)?;
        let mut ver = version(tx, name, v)?;
        f(&mut ver);
        ver.last_updated_timestamp = now_ms();
        tx.put(&version_key(name, v), &ver)?;
        Ok(json!({"model_version": version_json(&ver, &m)}))
    })
}

pub fn update_version(app: &App, p: &Params) -> Result<Value, ApiError> {
    let (name, v, description) = (p.str("name")?, p.version()?, p.opt_str("description")?);
    change_version(app, &name, v, |ver| {
        if let Some(d) = description {
            ver.description = d;
        }
    })
}

pub fn delete_version(app: &App, p: &Params) -> Result<Value, ApiError> {
    let (name, v) = (p.str("name")?, p.version()?);
    app.store.write(|tx| {
        let m = model(tx, &name)?;
        version(tx, &name, v)?;
        let pointing: Vec<&String> = m.aliases.iter().filter(|(_, n)| **n == v).map(|(a, _)| a).collect();
        if !pointing.is_empty() {
            return Err(ApiError::invalid(format!(
                "version {v} of {name} is what alias(es) {} point at: move or delete them first",
                pointing.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        tx.delete(&version_key(&name, v))?;
        Ok(json!({}))
    })
}

pub fn search_versions(app: &App, p: &Params) -> Result<Value, ApiError> {
    let clauses = filter::parse(&p.opt_str("filter")?.unwrap_or_default())?;
    let page = Page::from(p, 10_000)?;
    app.store.read(|tx| {
        let models: BTreeMap<String, Model> =
            tx.scan::<Model>("model/")?.into_iter().map(|(_, m)| (m.name.clone(), m)).collect();
        let mut all: Vec<Version> = tx.scan::<Version>("ver/")?.into_iter().map(|(_, v)| v).collect();
        all.retain(|v| {
            filter::matches(&clauses, |f| match f {
                "name" => Some(Field::Str(v.name.clone())),
                "run_id" => Some(Field::Str(v.run_id.clone())),
                "source_path" | "source" => Some(Field::Str(v.source.clone())),
                "version_number" | "version" => Some(Field::Num(v.version as f64)),
                f => f
                    .strip_prefix("tag.")
                    .and_then(|k| v.tags.iter().find(|t| t.key == k))
                    .map(|t| Field::Str(t.value.clone())),
            })
        });
        // Newest first within a model, as MLflow orders them.
        all.sort_by(|a, b| a.name.cmp(&b.name).then(b.version.cmp(&a.version)));
        let (items, token) = page.cut(all);
        let items: Vec<Value> =
            items.iter().filter_map(|v| models.get(&v.name).map(|m| version_json(v, m))).collect();
        Ok(page_json("model_versions", items, token))
    })
}

pub fn download_uri(app: &App, p: &Params) -> Result<Value, ApiError> {
    let (name, v) = (p.str("name")?, p.version()?);
    app.store.read(|tx| {
        model(tx, &name)?;
        Ok(json!({"artifact_uri": version(tx, &name, v)?.source}))
    })
}

pub fn set_version_tag(app: &App, p: &Params) -> Result<Value, ApiError> {
    let (name, v) = (p.str("name")?, p.version()?);
    let (key, value) = (p.str("key")?, p.opt_str("value")?.unwrap_or_default());
    change_version(app, &name, v, |ver| set(&mut ver.tags, key, value)).map(|_| json!({}))
}

pub fn delete_version_tag(app: &App, p: &Params) -> Result<Value, ApiError> {
    let (name, v, key) = (p.str("name")?, p.version()?, p.str("key")?);
    change_version(app, &name, v, |ver| ver.tags.retain(|t| t.key != key)).map(|_| json!({}))
}

/// Alias names as MLflow allows them: word characters and `-`, at most 255, not `latest` or `v<digits>`
/// (those name versions in `models:/` URIs).
fn check_alias(alias: &str) -> Result<(), ApiError> {
    let reserved = alias.eq_ignore_ascii_case("latest")
        || (alias.len() > 1
            && alias.starts_with(['v', 'V'])
            && alias[1..].bytes().all(|b| b.is_ascii_digit()));
    if alias.len() > 255 || !alias.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') || reserved {
        return Err(ApiError::invalid(format!(
            "alias {alias:?} must be at most 255 letters, digits, '_' or '-', and not 'latest' or 'v' followed by digits"
        )));
    }
    Ok(())
}

pub fn set_alias(app: &App, p: &Params) -> Result<Value, ApiError> {
    let (name, alias, v) = (p.str("name")?, p.str("alias")?, p.version()?);
    check_alias(&alias)?;
    app.store.write(|tx| {
        let mut m = model(tx, &name)?;
        version(tx, &name, v)?;
        m.aliases.insert(alias, v);
        m.last_updated_timestamp = now_ms();
        tx.put(&model_key(&name), &m)?;
        Ok(json!({}))
    })
}

pub fn delete_alias(app: &App, p: &Params) -> Result<Value, ApiError> {
    let (name, alias) = (p.str("name")?, p.str("alias")?);
    app.store.write(|tx| {
        let mut m = model(tx, &name)?;
        if m.aliases.remove(&alias).is_none() {
            return Err(ApiError::invalid(format!("Registered model alias {alias} not found.")));
        }
        m.last_updated_timestamp = now_ms();
        tx.put(&model_key(&name), &m)?;
        Ok(json!({}))
    })
}

pub fn get_by_alias(app: &App, p: &Params) -> Result<Value, ApiError> {
    let (name, alias) = (p.str("name")?, p.str("alias")?);
    app.store.read(|tx| {
        let m = model(tx, &name)?;
        let v = *m
            .aliases
            .get(&alias)
            .ok_or_else(|| ApiError::invalid(format!("Registered model alias {alias} not found.")))?;
        Ok(json!({"model_version": version_json(&version(tx, &name, v)?, &m)}))
    })
}

/// The newest version (MLflow's stage `None`; stages are deprecated and nothing here has another).
pub fn latest_versions(app: &App, p: &Params) -> Result<Value, ApiError> {
    let name = p.str("name")?;
    let stages: Vec<String> =
        p.list("stages").iter().filter_map(|s| s.as_str().map(str::to_ascii_lowercase)).collect();
    app.store.read(|tx| {
        let m = model(tx, &name)?;
        let latest = versions(tx, &name)?.pop();
        let wanted = stages.is_empty() || stages.iter().any(|s| s == "none");
        let items: Vec<Value> = latest.iter().filter(|_| wanted).map(|v| version_json(v, &m)).collect();
        Ok(json!({"model_versions": items}))
    })
}
