//! `registry://NAME@ALIAS` and `registry://NAME/VERSION`: resolved through mizzen-registry (MLflow's REST
//! API) to the version, its ONNX file and the sha256 the registry recorded, then read with [`storage`] and
//! checked against that sha256.

use crate::storage::{self, StorageError};
use bytes::Bytes;
use serde_json::{Value, json};

/// Which version a registry URI names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ref {
    Alias(String),
    Version(u64),
}

/// A registry URI resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    pub version: String,
    /// The ONNX file's URI (`http://REGISTRY/api/2.0/mlflow-artifacts/artifacts/...` for artifacts the
    /// registry holds).
    pub file: String,
    /// What the registry recorded of the file (`mizzen.artifact.sha256`), when it did.
    pub sha256: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0:?} is not a registry URI: use registry://NAME@ALIAS or registry://NAME/VERSION")]
    InvalidUri(String),
    /// The registry could not be reached or answered nonsense: worth another try.
    #[error("{uri}: the registry at {registry} cannot be used: {message}")]
    Registry { uri: String, registry: String, message: String },
    /// The registry refused the request (4xx, or a 5xx for its own failure).
    #[error("{uri}: the registry at {registry} answered {status} {code}: {message}")]
    Refused { uri: String, registry: String, status: u16, code: String, message: String },
    #[error("reading {uri}: {source}")]
    Storage {
        uri: String,
        #[source]
        source: Box<StorageError>,
    },
    #[error("{uri}: the file read has sha256 {got}, but the registry recorded {want} for version {version}")]
    Digest { uri: String, version: String, got: String, want: String },
}

impl RegistryError {
    /// MLflow's error code, when the registry refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the registry said the object does not exist.
    pub fn is_missing(&self) -> bool {
        self.code() == Some("RESOURCE_DOES_NOT_EXIST")
    }

    /// Whether trying again later may help: the registry was unreachable or failed on its side.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Registry { .. } => true,
            Self::Refused { status, .. } => *status >= 500 || *status == 429,
            Self::Storage { source, .. } => !source.is_missing(),
            Self::InvalidUri(_) | Self::Digest { .. } => false,
        }
    }
}

/// The model name and version reference of `uri`.
pub fn parse(uri: &str) -> Result<(String, Ref), RegistryError> {
    let bad = || RegistryError::InvalidUri(uri.to_string());
    let rest = uri.strip_prefix("registry://").ok_or_else(bad)?;
    let (name, r) = if let Some((name, alias)) = rest.split_once('@') {
        (name, Ref::Alias(alias.to_string()))
    } else if let Some((name, version)) = rest.split_once('/') {
        (name, Ref::Version(version.parse().ok().filter(|&v| v > 0).ok_or_else(bad)?))
    } else {
        return Err(bad());
    };
    if name.is_empty() || matches!(&r, Ref::Alias(a) if a.is_empty()) {
        return Err(bad());
    }
    Ok((name.to_string(), r))
}

/// The environment variable naming the registry (`http://HOST:PORT`) in every Mizzen binary.
pub const URL_ENV: &str = "MIZZEN_REGISTRY_URL";
/// The environment variable holding the bearer token the registry asks for on writes, when it asks.
pub const TOKEN_ENV: &str = "MIZZEN_REGISTRY_TOKEN";

/// A registry run: its id and where its artifacts go (`mlflow-artifacts:/EXPERIMENT/RUN/artifacts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub id: String,
    pub artifact_uri: String,
}

/// A client of mizzen-registry (or any MLflow tracking server with the artifact proxy): the calls Mizzen's
/// binaries make, over MLflow's REST API.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self { base: base.trim_end_matches('/').to_string(), token: token.filter(|t| !t.is_empty()), http }
    }

    /// The registry named by `MIZZEN_REGISTRY_URL` (and `MIZZEN_REGISTRY_TOKEN`), if any.
    pub fn from_env() -> Option<Self> {
        let base = std::env::var(URL_ENV).ok().filter(|u| !u.is_empty())?;
        Some(Self::new(&base, std::env::var(TOKEN_ENV).ok()))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn fail(&self, what: &str, message: String) -> RegistryError {
        RegistryError::Registry { uri: what.to_string(), registry: self.base.clone(), message }
    }

    /// One MLflow REST call: `GET` with `query`, or `POST`/`PATCH`/`DELETE` with a JSON body. `what` names
    /// the object for error messages.
    async fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        op: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, RegistryError> {
        let mut url = url::Url::parse(&format!("{}/api/2.0/mlflow/{op}", self.base))
            .map_err(|e| self.fail(what, format!("not a URL: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut req = self.http.request(method, url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await.map_err(|e| self.fail(what, error_chain(&e)))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| self.fail(what, format!("{status}: {e}")))?;
        if !status.is_success() {
            let mut message = body["message"].as_str().unwrap_or("no message").to_string();
            if status == reqwest::StatusCode::UNAUTHORIZED {
                message.push_str(match self.token {
                    None => {
                        "; this client sent no token: set MIZZEN_REGISTRY_TOKEN (trainer pods read it from \
                             the Secret the operator's --registry-token-secret names, in their own namespace)"
                    }
                    Some(_) => "; the token this client sent (MIZZEN_REGISTRY_TOKEN) is not the registry's",
                });
            }
            return Err(RegistryError::Refused {
                uri: what.to_string(),
                registry: self.base.clone(),
                status: status.as_u16(),
                code: body["error_code"].as_str().unwrap_or_default().to_string(),
                message: crate::shortened(&message, 600),
            });
        }
        Ok(body)
    }

    /// `GET /api/2.0/mlflow/{op}` with `query`.
    pub async fn get(&self, op: &str, query: &[(&str, &str)]) -> Result<Value, RegistryError> {
        self.call(op, reqwest::Method::GET, op, query, None).await
    }

    /// `PATCH /api/2.0/mlflow/{op}` with a JSON body.
    pub async fn patch(&self, op: &str, body: Value) -> Result<Value, RegistryError> {
        self.call(op, reqwest::Method::PATCH, op, &[], Some(body)).await
    }

    /// `POST /api/2.0/mlflow/{op}` with a JSON body.
    pub async fn post(&self, op: &str, body: Value) -> Result<Value, RegistryError> {
        self.call(op, reqwest::Method::POST, op, &[], Some(body)).await
    }

    /// Which version and file `uri` (`registry://NAME@ALIAS` or `registry://NAME/VERSION`) names.
    pub async fn resolve(&self, uri: &str) -> Result<Resolved, RegistryError> {
        let (name, r) = parse(uri)?;
        let body = match &r {
            Ref::Alias(alias) => {
                let q = [("name", name.as_str()), ("alias", alias.as_str())];
                self.call(uri, reqwest::Method::GET, "registered-models/alias", &q, None).await?
            }
            Ref::Version(v) => {
                let v = v.to_string();
                let q = [("name", name.as_str()), ("version", v.as_str())];
                self.call(uri, reqwest::Method::GET, "model-versions/get", &q, None).await?
            }
        };
        let mv = &body["model_version"];
        let field = |k: &str| {
            mv[k].as_str().map(str::to_string).ok_or_else(|| self.fail(uri, format!("the answer has no {k}")))
        };
        let (version, source) = (field("version")?, field("source")?);
        let tag = |key: &str| {
            mv["tags"]
                .as_array()?
                .iter()
                .find(|t| t["key"] == key)
                .and_then(|t| t["value"].as_str())
                .map(str::to_string)
        };
        let source = source.trim_end_matches('/');
        let file = match tag("mizzen.artifact.path") {
            Some(path) => format!("{source}/{path}"),
            None if source.ends_with(".onnx") => source.to_string(),
            None => format!("{source}/model.onnx"),
        };
        Ok(Resolved { name, version, file: self.artifact_url(&file), sha256: tag("mizzen.artifact.sha256") })
    }

    /// The URL of an artifact: `mlflow-artifacts:` URIs through this registry's artifact proxy, others as
    /// they are.
    pub fn artifact_url(&self, uri: &str) -> String {
        match uri.strip_prefix("mlflow-artifacts:") {
            Some(path) => {
                format!("{}/api/2.0/mlflow-artifacts/artifacts/{}", self.base, path.trim_start_matches('/'))
            }
            None => uri.to_string(),
        }
    }

    /// The id of the experiment `name`, created when it does not exist.
    pub async fn experiment(&self, name: &str) -> Result<String, RegistryError> {
        let query = [("experiment_name", name)];
        let get = || self.call(name, reqwest::Method::GET, "experiments/get-by-name", &query, None);
        match get().await {
            Ok(body) => {
                return id_of(&body["experiment"]["experiment_id"], || {
                    self.fail(name, "no experiment_id".into())
                });
            }
            Err(e) if !e.is_missing() => return Err(e),
            Err(_) => {}
        }
        let created = self
            .call(name, reqwest::Method::POST, "experiments/create", &[], Some(json!({"name": name})))
            .await;
        match created {
            Ok(body) => id_of(&body["experiment_id"], || self.fail(name, "no experiment_id".into())),
            // Made by someone else in between.
            Err(e) if e.code() == Some("RESOURCE_ALREADY_EXISTS") => {
                id_of(&get().await?["experiment"]["experiment_id"], || {
                    self.fail(name, "no experiment_id".into())
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Starts a run in `experiment_id`.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        tags: &[(String, String)],
    ) -> Result<Run, RegistryError> {
        let tags: Vec<Value> = tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        let now = now_ms();
        let body =
            json!({"experiment_id": experiment_id, "run_name": run_name, "start_time": now, "tags": tags});
        let answer = self.call(run_name, reqwest::Method::POST, "runs/create", &[], Some(body)).await?;
        let info = &answer["run"]["info"];
        let field = |k: &str| {
            info[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.fail(run_name, format!("the run has no {k}")))
        };
        Ok(Run { id: field("run_id")?, artifact_uri: field("artifact_uri")? })
    }

    /// Logs a run's params and metrics (and tags) in one batch.
    pub async fn log_batch(
        &self,
        run_id: &str,
        params: &[(String, String)],
        metrics: &[(String, f64)],
    ) -> Result<(), RegistryError> {
        let now = now_ms();
        let params: Vec<Value> = params.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        let metrics: Vec<Value> = metrics
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| json!({"key": k, "value": v, "timestamp": now, "step": 0}))
            .collect();
        let body = json!({"run_id": run_id, "params": params, "metrics": metrics, "tags": []});
        self.call(run_id, reqwest::Method::POST, "runs/log-batch", &[], Some(body)).await.map(drop)
    }

    /// Ends a run: `FINISHED` or `FAILED`.
    pub async fn end_run(&self, run_id: &str, status: &str) -> Result<(), RegistryError> {
        let body = json!({"run_id": run_id, "status": status, "end_time": now_ms()});
        self.call(run_id, reqwest::Method::POST, "runs/update", &[], Some(body)).await.map(drop)
    }

    /// Uploads `bytes` as `path` under `artifact_uri` (a run's `mlflow-artifacts:/...`).
    pub async fn upload(&self, artifact_uri: &str, path: &str, bytes: Bytes) -> Result<(), RegistryError> {
        let uri = format!("{}/{path}", artifact_uri.trim_end_matches('/'));
        let url = self.artifact_url(&uri);
        if url == uri {
            return Err(self.fail(&uri, "not an artifact of this registry (mlflow-artifacts:/...)".into()));
        }
        let mut req = self.http.put(&url).body(bytes);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let response = req.send().await.map_err(|e| self.fail(&uri, error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or_default();
            return Err(RegistryError::Refused {
                uri,
                registry: self.base.clone(),
                status: status.as_u16(),
                code: body["error_code"].as_str().unwrap_or_default().to_string(),
                message: crate::shortened(body["message"].as_str().unwrap_or("no message"), 400),
            });
        }
        Ok(())
    }

    /// Registers the model in `source` (a directory of this registry's artifacts) as a new version of `name`
    /// (created when new), made by run `run_id`, with `tags`, and points `alias` at it. Idempotent per run:
    /// when `run_id` already has a version of `name`, that version is the answer (a retried registration
    /// makes no second version).
    pub async fn register(
        &self,
        name: &str,
        source: &str,
        run_id: &str,
        tags: &[(String, String)],
        alias: Option<&str>,
    ) -> Result<String, RegistryError> {
        let created = self
            .call(name, reqwest::Method::POST, "registered-models/create", &[], Some(json!({"name": name})))
            .await;
        match created {
            Err(e) if e.code() != Some("RESOURCE_ALREADY_EXISTS") => return Err(e),
            _ => {}
        }
        let filter =
            format!("name = '{}' AND run_id = '{}'", name.replace('\'', ""), run_id.replace('\'', ""));
        let found = self
            .call(name, reqwest::Method::GET, "model-versions/search", &[("filter", filter.as_str())], None)
            .await?;
        let existing =
            found["model_versions"].as_array().and_then(|v| v.first()).and_then(|v| v["version"].as_str());
        let version = match existing {
            Some(v) => v.to_string(),
            None => {
                let tags: Vec<Value> = tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
                let body = json!({"name": name, "source": source, "run_id": run_id, "tags": tags});
                let answer =
                    self.call(name, reqwest::Method::POST, "model-versions/create", &[], Some(body)).await?;
                answer["model_version"]["version"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.fail(name, "the new version has no number".into()))?
            }
        };
        if let Some(alias) = alias {
            let body = json!({"name": name, "alias": alias, "version": version});
            self.call(name, reqwest::Method::POST, "registered-models/alias", &[], Some(body)).await?;
        }
        Ok(version)
    }
}

fn id_of(v: &Value, missing: impl FnOnce() -> RegistryError) -> Result<String, RegistryError> {
    v.as_str().map(str::to_string).ok_or_else(missing)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A reqwest error with its causes (connection refused, DNS), which its Display leaves out.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The model name and alias of a registry output, `registry://NAME` or `registry://NAME@ALIAS`; `None` for
/// other URIs.
pub fn parse_output(uri: &str) -> Option<(String, Option<String>)> {
    let rest = uri.strip_prefix("registry://")?.trim_end_matches('/');
    let (name, alias) = match rest.split_once('@') {
        Some((name, alias)) => (name, Some(alias.to_string())),
        None => (rest, None),
    };
    Some((name.to_string(), alias))
}

/// Asks the registry at `registry` (`http://HOST:PORT`) which version and file `uri` names.
pub async fn resolve(uri: &str, registry: &str) -> Result<Resolved, RegistryError> {
    Client::new(registry, None).resolve(uri).await
}

/// Resolves `uri` and reads its ONNX file, checked against the recorded sha256.
pub async fn read(uri: &str, registry: &str) -> Result<(Bytes, Resolved), RegistryError> {
    let resolved = Client::new(registry, None).resolve(uri).await?;
    let bytes = storage::read(&resolved.file)
        .await
        .map_err(|source| RegistryError::Storage { uri: uri.to_string(), source: Box::new(source) })?;
    if let Some(want) = &resolved.sha256 {
        let got = crate::sha256_hex(&bytes);
        if &got != want {
            return Err(RegistryError::Digest {
                uri: uri.to_string(),
                version: resolved.version.clone(),
                got,
                want: want.clone(),
            });
        }
    }
    Ok((bytes, resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_uris_name_an_alias_or_a_version() {
        assert_eq!(
            parse("registry://iris@champion").unwrap(),
            ("iris".into(), Ref::Alias("champion".into()))
        );
        assert_eq!(parse("registry://iris/3").unwrap(), ("iris".into(), Ref::Version(3)));
        for bad in [
            "registry://iris",
            "registry://iris/0",
            "registry://iris/x",
            "registry://@a",
            "registry://i@",
            "s3://b/k",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn registry_outputs_name_a_model_and_maybe_an_alias() {
        assert_eq!(parse_output("registry://iris"), Some(("iris".into(), None)));
        assert_eq!(parse_output("registry://iris@champion"), Some(("iris".into(), Some("champion".into()))));
        assert_eq!(parse_output("s3://b/k/"), None);
    }
}
