//! The artifact proxy (`/api/2.0/mlflow-artifacts/artifacts/PATH`): uploads are streamed to a temporary
//! file while their sha256 is computed, made durable, moved into a content-addressed blob
//! (`blobs/AB/ABCDEF...`), and only then recorded under their path in the metadata store, so a path is
//! never visible before its bytes are complete. Downloads stream the blob back.

use crate::App;
use crate::error::ApiError;
use crate::store::Tx;
use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What the store records of an artifact.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Artifact {
    pub sha256: String,
    pub size: u64,
}

/// The longest artifact path accepted.
const MAX_PATH: usize = 1024;

fn art_key(path: &str) -> String {
    format!("art/{path}")
}

/// The path inside this registry of a `mlflow-artifacts:` URI (`mlflow-artifacts:/1/RUN/artifacts/model`
/// -> `1/RUN/artifacts/model`); `None` for other URIs.
pub fn registry_path(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("mlflow-artifacts:")?;
    let rest = match rest.strip_prefix("//") {
        Some(after_host) => after_host.split_once('/').map_or("", |(_, p)| p),
        None => rest,
    };
    Some(rest.trim_matches('/').to_string())
}

/// Every artifact under directory `dir` (paths relative to it), in path order.
pub fn files_under(tx: &Tx<'_>, dir: &str) -> Result<Vec<(String, Artifact)>, ApiError> {
    let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
    Ok(tx
        .scan::<Artifact>(&art_key(&prefix))?
        .into_iter()
        .map(|(k, a)| (k[art_key(&prefix).len()..].to_string(), a))
        .collect())
}

/// A relative path of non-empty segments, none `.` or `..`, without control characters or backslashes.
fn check_path(path: &str) -> Result<(), ApiError> {
    let bad = path.is_empty()
        || path.len() > MAX_PATH
        || path.split('/').any(|s| s.is_empty() || s == "." || s == "..")
        || path.chars().any(|c| c.is_control() || c == '\\');
    if bad {
        return Err(ApiError::invalid(format!(
            "invalid artifact path {path:?}: relative, at most {MAX_PATH} characters, no empty, '.' or '..' segments"
        )));
    }
    Ok(())
}

impl App {
    pub(crate) fn blob(&self, sha256: &str) -> PathBuf {
        self.data_dir.join("blobs").join(&sha256[..2]).join(sha256)
    }
}

/// `PUT .../artifacts/PATH`: stores the body as the artifact at PATH (replacing one there).
pub async fn upload(State(app): State<Arc<App>>, UrlPath(path): UrlPath<String>, req: Request) -> Response {
    match store_upload(&app, &path, req.into_body()).await {
        Ok(size) => {
            app.metrics.artifact("in", size);
            axum::Json(serde_json::json!({})).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// How many bytes of an upload are gathered before they go to the hasher and the writer.
const BLOCK: usize = 1 << 20;
/// How many blocks may wait for the hasher or the writer (the memory an upload holds at most).
const QUEUED: usize = 8;
/// How many bytes the writer writes before it syncs them.
const SYNC_EVERY: usize = 4 << 20;

/// What the upload loop hands the hasher and the writer: a run of the body's chunks, or the end.
enum Block {
    Chunks(Arc<Vec<bytes::Bytes>>),
    /// The body ended complete.
    End,
}

/// A blocking thread that hands its `state` and every run of chunks it is sent to `each` and, once `End`
/// arrives, returns `end(state)`; `None` when the sender went away first (the upload failed).
fn consumer<S: Send + 'static, T: Send + 'static>(
    mut blocks: tokio::sync::mpsc::Receiver<Block>,
    mut state: S,
    each: impl Fn(&mut S, &[bytes::Bytes]) -> std::io::Result<()> + Send + 'static,
    end: impl FnOnce(S) -> std::io::Result<T> + Send + 'static,
) -> tokio::task::JoinHandle<std::io::Result<Option<T>>> {
    tokio::task::spawn_blocking(move || {
        while let Some(block) = blocks.blocking_recv() {
            match block {
                Block::Chunks(chunks) => each(&mut state, &chunks)?,
                Block::End => return end(state).map(Some),
            }
        }
        Ok(None)
    })
}

/// Stores an upload; its size. The body is received here while one thread computes its sha256 and another
/// writes it to a temporary file, so the three overlap.
async fn store_upload(app: &Arc<App>, path: &str, body: Body) -> Result<u64, ApiError> {
    use std::io::Write as _;
    check_path(path)?;
    let tmp = app.data_dir.join("tmp").join(format!("upload-{:016x}", rand::random::<u64>()));
    let io = |e: std::io::Error| ApiError::internal(format!("storing artifact {path}: {e}"));
    let (to_hasher, blocks) = tokio::sync::mpsc::channel(QUEUED);
    let hashed = consumer(
        blocks,
        Sha256::new(),
        |hasher, chunks| {
            chunks.iter().for_each(|c| hasher.update(c));
            Ok(())
        },
        |hasher| Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()),
    );
    let (to_writer, blocks) = tokio::sync::mpsc::channel(QUEUED);
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let written = consumer(
        blocks,
        (file, 0usize),
        |(file, unsynced), chunks| {
            chunks.iter().try_for_each(|c| file.write_all(c))?;
            // Written back as it comes, while the hash is computed, so little is left for the end.
            *unsynced += chunks.iter().map(bytes::Bytes::len).sum::<usize>();
            if *unsynced >= SYNC_EVERY {
                file.sync_data()?;
                *unsynced = 0;
            }
            Ok(())
        },
        |(file, _)| file.sync_all(),
    );
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    let mut run = Vec::new();
    let mut run_len = 0;
    let received: Result<(), ApiError> = async {
        let send = |run: Vec<bytes::Bytes>| {
            let run = Arc::new(run);
            let (h, w) = (to_hasher.clone(), to_writer.clone());
            async move {
                // A send fails only when its consumer stopped on an error, which is reported below.
                h.send(Block::Chunks(run.clone())).await.is_ok() && w.send(Block::Chunks(run)).await.is_ok()
            }
        };
        loop {
            let next = tokio::time::timeout(app.upload_stall, stream.try_next()).await.map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_PARAMETER_VALUE",
                    format!("the upload of {path} sent nothing for {} s", app.upload_stall.as_secs_f64()),
                )
            })?;
            let Some(chunk) = next.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_PARAMETER_VALUE",
                    format!("reading the upload: {e}"),
                )
            })?
            else {
                break;
            };
            size += chunk.len() as u64;
            if size > app.max_artifact_bytes {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "INVALID_PARAMETER_VALUE",
                    format!("artifact {path} is larger than the limit of {} bytes", app.max_artifact_bytes),
                ));
            }
            run_len += chunk.len();
            run.push(chunk);
            if run_len >= BLOCK {
                run_len = 0;
                if !send(std::mem::take(&mut run)).await {
                    return Ok(());
                }
            }
        }
        if send(run).await {
            let _ = to_hasher.send(Block::End).await;
            let _ = to_writer.send(Block::End).await;
        }
        Ok(())
    }
    .await;
    drop((to_hasher, to_writer));
    fn joined<T>(
        r: Result<std::io::Result<Option<T>>, tokio::task::JoinError>,
        path: &str,
    ) -> Result<Option<T>, ApiError> {
        r.map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(format!("storing artifact {path}: {e}")))
    }
    let written = joined(written.await, path).map(|w| w.is_some());
    let hashed = joined(hashed.await, path);
    let sha256 = match (received, written, hashed) {
        (Ok(()), Ok(true), Ok(Some(sha256))) => sha256,
        (received, written, hashed) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(received.err().or(written.err()).or(hashed.err()).unwrap_or_else(|| {
                ApiError::internal(format!("storing artifact {path}: the upload stopped early"))
            }));
        }
    };
    let app = app.clone();
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let io = |e: std::io::Error| ApiError::internal(format!("storing artifact {path}: {e}"));
        let blob = app.blob(&sha256);
        let dir = blob.parent().expect("blobs have a directory");
        std::fs::create_dir_all(dir).map_err(io)?;
        if blob.exists() {
            std::fs::remove_file(&tmp).map_err(io)?;
        } else {
            std::fs::rename(&tmp, &blob).map_err(io)?;
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        app.store.write(|tx| tx.put(&art_key(&path), &Artifact { sha256, size }))?;
        Ok(size)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

/// `GET .../artifacts/PATH`: the artifact's bytes.
pub async fn download(State(app): State<Arc<App>>, UrlPath(path): UrlPath<String>) -> Response {
    let lookup = app.clone();
    let key = art_key(&path);
    let found = tokio::task::spawn_blocking(move || lookup.store.read(|tx| tx.get::<Artifact>(&key))).await;
    let artifact = match found {
        Ok(Ok(Some(a))) => a,
        Ok(Ok(None)) => {
            return ApiError::not_found(format!("artifact {path} does not exist")).into_response();
        }
        Ok(Err(e)) => return e.into_response(),
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    match tokio::fs::File::open(app.blob(&artifact.sha256)).await {
        Ok(file) => {
            app.metrics.artifact("out", artifact.size);
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, artifact.size.to_string()),
                    (header::ETAG, format!("\"{}\"", artifact.sha256)),
                ],
                Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 16)),
            )
                .into_response()
        }
        Err(e) => ApiError::internal(format!("artifact {path}: {e}")).into_response(),
    }
}

/// `GET .../artifacts?path=DIR`: the files and directories directly in DIR (names relative to it).
pub async fn list(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Response {
    let dir = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "path")
        .map(|(_, v)| v.trim_matches('/').to_string())
        .unwrap_or_default();
    let listed = tokio::task::spawn_blocking(move || app.store.read(|tx| files_under(tx, &dir))).await;
    let files = match listed {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return e.into_response(),
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    let mut entries: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for (rel, a) in files {
        match rel.split_once('/') {
            Some((sub, _)) => entries.insert(sub.to_string(), None),
            None => entries.insert(rel, Some(a.size)),
        };
    }
    let files: Vec<serde_json::Value> = entries
        .into_iter()
        .map(|(name, size)| match size {
            Some(s) => serde_json::json!({"path": name, "is_dir": false, "file_size": s}),
            None => serde_json::json!({"path": name, "is_dir": true}),
        })
        .collect();
    axum::Json(serde_json::json!({"files": files})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_are_relative_and_plain() {
        for ok in ["0/run/artifacts/model/model.onnx", "a", "x/y.z"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/abs", "a/../b", "..", "./a", "a//b", "a/", "a\\b", "a\u{0}b"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path(&"a".repeat(MAX_PATH + 1)).is_err());
        assert_eq!(
            registry_path("mlflow-artifacts:/1/r/artifacts/model").as_deref(),
            Some("1/r/artifacts/model")
        );
        assert_eq!(registry_path("mlflow-artifacts://host:5000/1/r/").as_deref(), Some("1/r"));
        assert_eq!(registry_path("s3://bucket/model"), None);
    }
}
