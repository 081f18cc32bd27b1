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

impl StorageError {
    /// Whether the object does not exist or access to it is refused: trying again at once cannot help.
    pub fn is_missing(&self) -> bool {
        use object_store::Error as E;
        matches!(
            self,
            StorageError::Read {
                source: E::NotFound { .. } | E::PermissionDenied { .. } | E::Unauthenticated { .. },
                ..
            }
        )
    }
}

/// How long a remote read may wait. There is no limit on a whole transfer (a large file on a slow link
/// takes as long as it takes): a connection must be made within `connect`, and a transfer that sends no
/// byte for `stall` is given up. Requests that fail (and, when the server gives an ETag, bodies cut off
/// midway, resumed from where they stopped) are retried with backoff by `object_store` before the read
/// fails.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub connect: std::time::Duration,
    pub stall: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { connect: std::time::Duration::from_secs(10), stall: std::time::Duration::from_secs(60) }
    }
}

impl Limits {
    /// The defaults, or `MIZZEN_STORAGE_CONNECT_TIMEOUT_SECONDS` and `MIZZEN_STORAGE_STALL_TIMEOUT_SECONDS`.
    pub fn from_env() -> Self {
        let secs = |name: &str, default: std::time::Duration| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v > 0.0)
                .map_or(default, std::time::Duration::from_secs_f64)
        };
        let d = Self::default();
        Self {
            connect: secs("MIZZEN_STORAGE_CONNECT_TIMEOUT_SECONDS", d.connect),
            stall: secs("MIZZEN_STORAGE_STALL_TIMEOUT_SECONDS", d.stall),
        }
    }
}

/// Reads the whole object at `uri`.
pub async fn read(uri: &str) -> Result<Bytes, StorageError> {
    read_with(uri, Limits::from_env()).await
}

/// [`read`] with explicit limits.
pub async fn read_with(uri: &str, limits: Limits) -> Result<Bytes, StorageError> {
    use futures::TryStreamExt as _;
    let mut stream = stream(uri, limits).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.try_next().await.map_err(|e| read_error(uri, e))? {
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

/// A blocking reader over the object at `uri`, streamed as it is read (for large files: nothing holds the
/// whole object). Read it from a blocking thread (`spawn_blocking`), not from async code. Its errors name
/// the URI.
pub async fn blocking_reader(uri: &str) -> Result<impl std::io::Read + Send + 'static, StorageError> {
    blocking_reader_with(uri, Limits::from_env()).await
}

/// [`blocking_reader`] with explicit limits.
pub async fn blocking_reader_with(
    uri: &str,
    limits: Limits,
) -> Result<impl std::io::Read + Send + 'static, StorageError> {
    use futures::TryStreamExt as _;
    let named = uri.to_string();
    let stream = stream(uri, limits).await?.map_err(move |e| std::io::Error::other(read_error(&named, e)));
    Ok(tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream)))
}

/// A read failure, naming the URI.
fn read_error(uri: &str, source: object_store::Error) -> StorageError {
    StorageError::Read { uri: uri.into(), source }
}

/// The object's bytes as they arrive, each chunk within `limits.stall` of the one before.
async fn stream(
    uri: &str,
    limits: Limits,
) -> Result<futures::stream::BoxStream<'static, Result<Bytes, object_store::Error>>, StorageError> {
    use futures::StreamExt as _;
    let (store, path) = resolve_with(uri, limits)?;
    let get = tokio::time::timeout(limits.stall, store.get(&path))
        .await
        .map_err(|_| read_error(uri, stalled(limits.stall)))?;
    let body = get.map_err(|e| read_error(uri, e))?.into_stream();
    let stall = limits.stall;
    Ok(futures::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(stall, body.next()).await {
            Ok(Some(item)) => Some((item, Some(body))),
            Ok(None) => None,
            Err(_) => Some((Err(stalled(stall)), None)),
        }
    })
    .boxed())
}

fn stalled(stall: std::time::Duration) -> object_store::Error {
    object_store::Error::Generic {
        store: "mizzen",
        source: format!("no data for {} s (MIZZEN_STORAGE_STALL_TIMEOUT_SECONDS)", stall.as_secs_f64())
            .into(),
    }
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
    resolve_with(uri, Limits::from_env())
}

fn resolve_with(
    uri: &str,
    limits: Limits,
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
    // No limit on a whole request (object_store's default cuts every transfer at 30 s): the stall limit
    // guards reads instead.
    if url.scheme() != "file" {
        options.push(("connect_timeout".into(), format!("{}ms", limits.connect.as_millis().max(1))));
        options.push(("timeout".into(), "3650days".into()));
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

    /// An HTTP server on loopback that answers every GET with `body`, sent in `chunks` pieces `gap` apart,
    /// and stops sending after `stop_after` pieces (holding the connection open).
    async fn trickle(body: Vec<u8>, chunks: usize, gap: Duration, stop_after: usize) -> String {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    if crate::testing::read_request_head(&mut conn).await.is_none() {
                        return;
                    }
                    let headers = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(headers.as_bytes()).await;
                    for (i, piece) in body.chunks(body.len().div_ceil(chunks)).enumerate() {
                        if i == stop_after {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                        tokio::time::sleep(gap).await;
                        if conn.write_all(piece).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{addr}/data.csv")
    }

    use std::time::Duration;

    /// A transfer longer than object_store's default 30 s request timeout, but never silent for long,
    /// completes (it used to be cut at 30 s).
    #[tokio::test]
    async fn a_slow_transfer_is_not_cut_while_bytes_keep_coming() {
        let body: Vec<u8> = (0..32 * 1024).map(|i| (i % 251) as u8).collect();
        let uri = trickle(body.clone(), 32, Duration::from_secs(1), usize::MAX).await;
        let limits = Limits { connect: Duration::from_secs(5), stall: Duration::from_secs(5) };
        let started = std::time::Instant::now();
        let got = read_with(&uri, limits).await.unwrap();
        assert_eq!(got.len(), body.len());
        assert_eq!(&got[..], &body[..]);
        assert!(started.elapsed() > Duration::from_secs(30), "the transfer took {:?}", started.elapsed());
    }

    /// A transfer that stops sending is given up after the stall limit, with the URI in the error, through
    /// the streaming reader too.
    #[tokio::test]
    async fn a_stalled_transfer_fails_naming_the_uri() {
        let body = vec![b'x'; 4096];
        let uri = trickle(body, 4, Duration::from_millis(50), 2).await;
        let limits = Limits { connect: Duration::from_secs(5), stall: Duration::from_millis(700) };
        let err = read_with(&uri, limits).await.unwrap_err().to_string();
        assert!(err.contains(&uri) && err.contains("no data for 0.7 s"), "{err}");
        let mut reader = blocking_reader_with(&uri, limits).await.unwrap();
        let err = tokio::task::spawn_blocking(move || {
            let mut sink = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut sink).unwrap_err().to_string()
        })
        .await
        .unwrap();
        assert!(err.contains(&uri) && err.contains("no data for 0.7 s"), "{err}");
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
