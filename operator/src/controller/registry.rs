//! The model registry as the operator uses it: `registry://NAME@ALIAS` model URIs resolved to a version
//! (cached for `--registry-poll-seconds`, resolved again at once when `mizzen.dev/resolve` changes), and
//! the best trial of a search registered as a version.

use mizzen_common::registry::{Client, Resolved};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often an alias is looked up again when nothing asks sooner.
pub const DEFAULT_POLL: Duration = Duration::from_secs(30);

/// A resolution remembered: for which URI and annotation value, when, and the answer.
struct Entry {
    uri: String,
    asked: Option<String>,
    at: Instant,
    resolved: Resolved,
}

/// Resolves registry URIs for the ModelDeployment controller.
pub struct Resolver {
    client: Option<Client>,
    poll: Duration,
    cache: Mutex<HashMap<String, Entry>>,
}

impl Resolver {
    pub fn new(client: Option<Client>, poll: Duration) -> Self {
        Self { client, poll, cache: Mutex::new(HashMap::new()) }
    }

    /// How soon an alias is looked up again.
    pub fn poll(&self) -> Duration {
        self.poll
    }

    pub fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    /// The version `uri` names for the object `key` now: from the cache while it is fresh (a
    /// `registry://NAME/VERSION` stays fresh; an alias for [`Resolver::poll`], and only while the object's
    /// `mizzen.dev/resolve` annotation is `asked`), else from the registry.
    pub async fn resolve(&self, key: &str, uri: &str, asked: Option<&str>) -> Result<Resolved, String> {
        let pinned = !uri.contains('@');
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = cache.get(key)
                && e.uri == uri
                && (pinned || (e.asked.as_deref() == asked && e.at.elapsed() < self.poll))
            {
                return Ok(e.resolved.clone());
            }
        }
        let client = self.client.as_ref().ok_or_else(|| {
            format!(
                "{uri}: the operator has no registry to resolve it through (start it with --registry-url)"
            )
        })?;
        let resolved = client.resolve(uri).await.map_err(|e| e.to_string())?;
        let entry =
            Entry { uri: uri.to_string(), asked: asked.map(str::to_string), at: Instant::now(), resolved };
        let answer = entry.resolved.clone();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        // Entries of deleted objects go after a while; a live pinned one is merely looked up again.
        cache.retain(|_, e| e.at.elapsed() < FORGET_AFTER);
        cache.insert(key.to_string(), entry);
        Ok(answer)
    }
}

/// How long a resolution is remembered at most.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real mizzen-registry on loopback with model `iris`: versions 1 and 2 (any source will do for
    /// resolution), `champion` on version 1.
    async fn registry() -> (Client, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let app = mizzen_registry::App::open(dir.path().join("data"), 1 << 20, None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = mizzen_registry::router(Arc::clone(&app));
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let http = reqwest::Client::new();
        let post = |op: &str, body: serde_json::Value| {
            let req = http.post(format!("{url}/api/2.0/mlflow/{op}")).json(&body);
            async move { assert_eq!(req.send().await.unwrap().status(), 200) }
        };
        post("registered-models/create", serde_json::json!({"name": "iris"})).await;
        for v in ["1", "2"] {
            post(
                "model-versions/create",
                serde_json::json!({"name": "iris", "source": format!("s3://m/{v}/")}),
            )
            .await;
        }
        post(
            "registered-models/alias",
            serde_json::json!({"name": "iris", "alias": "champion", "version": "1"}),
        )
        .await;
        (Client::new(&url, None), dir)
    }

    async fn move_alias(client: &Client, version: &str) {
        let body = serde_json::json!({"name": "iris", "alias": "champion", "version": version});
        let url = format!("{}/api/2.0/mlflow/registered-models/alias", client.base());
        assert_eq!(reqwest::Client::new().post(url).json(&body).send().await.unwrap().status(), 200);
    }

    #[tokio::test]
    async fn an_alias_is_looked_up_again_after_the_poll_or_when_asked() {
        let (client, _dir) = registry().await;
        let hour = Resolver::new(Some(client.clone()), Duration::from_secs(3600));
        let uri = "registry://iris@champion";
        assert_eq!(hour.resolve("ml/a", uri, None).await.unwrap().version, "1");
        move_alias(&client, "2").await;
        // Within the poll interval the cached answer stands...
        assert_eq!(hour.resolve("ml/a", uri, None).await.unwrap().version, "1");
        // ... until the object asks (a new mizzen.dev/resolve value) ...
        assert_eq!(hour.resolve("ml/a", uri, Some("1")).await.unwrap().version, "2");
        // ... and the cache is per object: another one resolves for itself.
        move_alias(&client, "1").await;
        assert_eq!(hour.resolve("ml/b", uri, None).await.unwrap().version, "1");
        assert_eq!(hour.resolve("ml/a", uri, Some("1")).await.unwrap().version, "2");
        // With a poll interval passed, every reconcile looks again.
        let always = Resolver::new(Some(client.clone()), Duration::ZERO);
        assert_eq!(always.resolve("ml/a", uri, None).await.unwrap().version, "1");
        move_alias(&client, "2").await;
        assert_eq!(always.resolve("ml/a", uri, None).await.unwrap().version, "2");
        // A pinned version never changes, so it is not asked again; an unknown alias is an error.
        assert_eq!(hour.resolve("ml/c", "registry://iris/1", None).await.unwrap().version, "1");
        let e = hour.resolve("ml/d", "registry://iris@nobody", None).await.unwrap_err();
        assert!(e.contains("nobody"), "{e}");
    }

    #[tokio::test]
    async fn without_a_registry_the_error_says_how_to_get_one() {
        let none = Resolver::new(None, DEFAULT_POLL);
        let e = none.resolve("ml/a", "registry://iris@champion", None).await.unwrap_err();
        assert!(e.contains("--registry-url") && e.contains("registry://iris@champion"), "{e}");
    }
}
