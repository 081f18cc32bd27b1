//! Reads and writes artifacts (models, datasets) at storage URIs through one layer built on `object_store`:
//! `file://`, `http(s)://`, `s3://`, `gs://` and `az://`. Cloud credentials come from the usual
//! environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`).

use bytes::Bytes;
use object_store::ObjectStoreExt as _;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{uri:?} is not a valid URI: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("{scheme}:// URIs are not supported here: {hint}")]
    Unsupported { scheme: String, hint: &'static str },
    #[error("reading {uri}: {source}")]
    Read {
        uri: String,
        #[source]
        source: object_store::Error,
    },
    #[error("writing {uri}: {source}")]
    Write {
        uri: String,
        #[source]
        source: object_store::Error,
    },
}

/// Reads the whole object at `uri`.
pub async fn read(uri: &str) -> Result<Bytes, StorageError> {
    let (store, path) = resolve(uri)?;
    let result = store.get(&path).await.map_err(|source| StorageError::Read { uri: uri.into(), source })?;
    result.bytes().await.map_err(|source| StorageError::Read { uri: uri.into(), source })
}

/// A blocking reader over the object at `uri`, streamed as it is read (for large files: nothing holds the
/// whole object). Read it from a blocking thread (`spawn_blocking`), not from async code.
pub async fn blocking_reader(uri: &str) -> Result<impl std::io::Read + Send + 'static, StorageError> {
    use futures::TryStreamExt as _;
    let (store, path) = resolve(uri)?;
    let result = store.get(&path).await.map_err(|source| StorageError::Read { uri: uri.into(), source })?;
    let stream = result.into_stream().map_err(std::io::Error::other);
    Ok(tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream)))
}

/// Writes `bytes` as the object at `uri`, replacing it (for `file://`, parent directories are created).
pub async fn write(uri: &str, bytes: Bytes) -> Result<(), StorageError> {
    let (store, path) = resolve(uri)?;
    store.put(&path, bytes.into()).await.map_err(|source| StorageError::Write { uri: uri.into(), source })?;
    Ok(())
}

/// Moves the object at `from` to `to` (the same store), replacing `to`: an atomic rename on a local file
/// system, a copy and a delete on object stores.
pub async fn rename(from: &str, to: &str) -> Result<(), StorageError> {
    let (store, from_path) = resolve(from)?;
    let (_, to_path) = resolve(to)?;
    store.rename(&from_path, &to_path).await.map_err(|source| StorageError::Write { uri: to.into(), source })
}

/// Deletes the object at `uri`; a missing object is not an error.
pub async fn delete(uri: &str) -> Result<(), StorageError> {
    let (store, path) = resolve(uri)?;
    match store.delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(StorageError::Write { uri: uri.into(), source }),
    }
}

/// Whether objects can be written under the directory `dir`: writes a small probe object there and deletes
/// it. For `file://`, the directories the probe needed are removed again, so a check leaves nothing.
pub async fn check_writable(dir: &str) -> Result<(), StorageError> {
    let dir = dir.trim_end_matches('/');
    // The local directories that do not exist yet, deepest first.
    let mut created = Vec::new();
    if let Ok(url) = Url::parse(dir)
        && url.scheme() == "file"
        && let Ok(path) = url.to_file_path()
    {
        let mut p = Some(path.as_path());
        while let Some(d) = p.filter(|d| !d.exists()) {
            created.push(d.to_path_buf());
            p = d.parent();
        }
    }
    let probe = format!("{dir}/.mizzen-write-check-{}", std::process::id());
    let result = match write(&probe, Bytes::from_static(b"")).await {
        Ok(()) => delete(&probe).await,
        Err(e) => Err(e),
    };
    for d in created {
        let _ = std::fs::remove_dir(d);
    }
    result
}

/// The store and path of `uri`, with clear errors for schemes this layer does not read.
fn resolve(
    uri: &str,
) -> Result<(Box<dyn object_store::ObjectStore>, object_store::path::Path), StorageError> {
    let url =
        Url::parse(uri).map_err(|e| StorageError::InvalidUri { uri: uri.into(), reason: e.to_string() })?;
    match url.scheme() {
        "file" | "http" | "https" | "s3" | "gs" | "az" | "abfs" | "abfss" => {}
        "registry" => {
            return Err(StorageError::Unsupported {
                scheme: "registry".into(),
                hint: "resolve registry:// URIs through mizzen-registry first",
            });
        }
        "pvc" => {
            return Err(StorageError::Unsupported {
                scheme: "pvc".into(),
                hint: "the operator mounts the claim and passes a file:// URI",
            });
        }
        other => {
            return Err(StorageError::Unsupported {
                scheme: other.into(),
                hint: "use file://, http(s)://, s3://, gs:// or az://",
            });
        }
    }
    // Cloud credentials and settings from the environment (AWS_*, GOOGLE_*, AZURE_*); plain http:// is
    // allowed when asked for by the scheme (object_store refuses it by default).
    let mut options: Vec<(String, String)> = std::env::vars()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, _)| ["aws_", "google_", "azure_"].iter().any(|p| k.starts_with(p)))
        .collect();
    if url.scheme() == "http" {
        options.push(("allow_http".into(), "true".into()));
    }
    object_store::parse_url_opts(&url, options)
        .map_err(|e| StorageError::InvalidUri { uri: uri.into(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_a_local_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.onnx");
        std::fs::write(&path, b"bytes").unwrap();
        let got = read(&format!("file://{}", path.display())).await.unwrap();
        assert_eq!(&got[..], b"bytes");
    }

    #[tokio::test]
    async fn writes_create_directories_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("file://{}/a/b/model.json", dir.path().display());
        write(&uri, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(&read(&uri).await.unwrap()[..], b"{}");
        let err = write("registry://iris", Bytes::new()).await.unwrap_err().to_string();
        assert!(err.contains("mizzen-registry"), "{err}");
    }

    #[tokio::test]
    async fn renames_deletes_and_write_checks() {
        let dir = tempfile::tempdir().unwrap();
        let base = format!("file://{}/out", dir.path().display());
        check_writable(&format!("{base}/deeper")).await.unwrap();
        assert!(!dir.path().join("out").exists(), "the check leaves nothing");
        std::fs::create_dir(dir.path().join("out")).unwrap();
        check_writable(&base).await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("out")).unwrap().count(), 0, "the probe is gone");
        write(&format!("{base}/a.tmp"), Bytes::from_static(b"a")).await.unwrap();
        rename(&format!("{base}/a.tmp"), &format!("{base}/a")).await.unwrap();
        assert_eq!(&read(&format!("{base}/a")).await.unwrap()[..], b"a");
        assert!(!dir.path().join("out/a.tmp").exists());
        delete(&format!("{base}/a")).await.unwrap();
        delete(&format!("{base}/a")).await.unwrap();
        // Under a regular file, no directory can be made (not even by root).
        std::fs::write(dir.path().join("plain"), b"").unwrap();
        let err = check_writable(&format!("file://{}/plain/out", dir.path().display())).await.unwrap_err();
        assert!(err.to_string().contains("writing") && err.to_string().contains("plain/out"), "{err}");
    }

    #[tokio::test]
    async fn blocking_readers_stream_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.csv");
        let text = "a,b\n".repeat(100_000);
        std::fs::write(&path, &text).unwrap();
        let mut reader = blocking_reader(&format!("file://{}", path.display())).await.unwrap();
        let got = tokio::task::spawn_blocking(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut reader, &mut s).unwrap();
            s
        })
        .await
        .unwrap();
        assert_eq!(got, text);
    }

    #[tokio::test]
    async fn missing_files_and_bad_schemes_are_clear_errors() {
        let err = read("file:///definitely/not/here.onnx").await.unwrap_err().to_string();
        assert!(err.contains("/definitely/not/here.onnx"), "{err}");
        let err = read("ftp://host/x").await.unwrap_err().to_string();
        assert!(err.contains("ftp:// URIs are not supported"), "{err}");
        let err = read("registry://iris@champion").await.unwrap_err().to_string();
        assert!(err.contains("mizzen-registry"), "{err}");
        let err = read("not a uri").await.unwrap_err().to_string();
        assert!(err.contains("not a valid URI"), "{err}");
    }
}
