//! The protocol-independent core: the loaded model, readiness, and one `infer` that REST and gRPC share.

use crate::batcher::Batcher;
use crate::error::InferError;
use crate::metrics::{Metrics, ProtocolLabels, RequestLabels};
use crate::model::ModelInfo;
use crate::tensor::Tensor;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Server name and version, as `GET /v2` reports them.
pub const SERVER_NAME: &str = "mizzen-serve";
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Protocol extensions, as `GET /v2` reports them.
pub const EXTENSIONS: [&str; 1] = ["binary_tensor_data"];

/// The model once loaded and warmed up.
pub struct Loaded {
    pub info: Arc<ModelInfo>,
    pub batcher: Batcher,
}

/// Shared by the REST and gRPC front ends.
pub struct Server {
    /// The name the model is served under, known before it is loaded.
    pub model_name: String,
    pub model_version: String,
    loaded: OnceLock<Loaded>,
    pub metrics: Metrics,
    pub request_timeout: Duration,
    pub max_request_bytes: usize,
}

impl Server {
    pub fn new(
        model_name: String,
        model_version: String,
        metrics: Metrics,
        request_timeout: Duration,
        max_request_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            model_name,
            model_version,
            loaded: OnceLock::new(),
            metrics,
            request_timeout,
            max_request_bytes,
        })
    }

    /// Marks the model loaded and warmed up: the server is ready from now on.
    pub fn set_loaded(&self, loaded: Loaded) {
        let _ = self.loaded.set(loaded);
    }

    pub fn is_ready(&self) -> bool {
        self.loaded.get().is_some()
    }

    /// The loaded model, if `name`/`version` address it; 404 for another model, 503 while loading.
    pub fn model(&self, name: &str, version: &str) -> Result<&Loaded, InferError> {
        crate::model::addresses(&self.model_name, &self.model_version, name, version)?;
        self.loaded.get().ok_or_else(|| InferError::unavailable(format!("model {name:?} is loading")))
    }

    /// Checks the request against the model, queues it, and waits for its outputs.
    pub async fn infer(
        &self,
        name: &str,
        version: &str,
        inputs: Vec<Tensor>,
        outputs: &[String],
    ) -> Result<(Arc<ModelInfo>, Vec<Tensor>), InferError> {
        let loaded = self.model(name, version)?;
        let checked = loaded.info.check(inputs, outputs)?;
        let checked = match loaded.batcher.try_inline(checked) {
            Ok(result) => return result.map(|outs| (loaded.info.clone(), outs)),
            Err(checked) => checked,
        };
        let rx = loaded.batcher.submit(checked)?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(result)) => result.map(|outs| (loaded.info.clone(), outs)),
            Ok(Err(_)) => Err(InferError::internal("the model worker dropped the request")),
            Err(_) => Err(InferError::unavailable(format!("timed out after {:?}", self.request_timeout))),
        }
    }

    /// Counts one request and, when dropped, records its outcome and duration.
    pub fn track(&self, protocol: &'static str) -> RequestTracker<'_> {
        self.metrics.inflight.inc();
        RequestTracker { server: self, protocol, start: Instant::now(), outcome: None }
    }
}

/// Records a request's metrics when it ends.
pub struct RequestTracker<'a> {
    server: &'a Server,
    protocol: &'static str,
    start: Instant,
    outcome: Option<Result<(), &'static str>>,
}

impl RequestTracker<'_> {
    pub fn finish<T>(&mut self, result: &Result<T, InferError>) {
        self.outcome = Some(result.as_ref().map(|_| ()).map_err(InferError::reason));
    }
}

impl Drop for RequestTracker<'_> {
    fn drop(&mut self) {
        let m = &self.server.metrics;
        m.inflight.dec();
        let (outcome, reason) = match self.outcome {
            Some(Ok(())) => ("success", ""),
            Some(Err(reason)) => ("error", reason),
            None => ("error", "cancelled"),
        };
        m.requests.get_or_create(&RequestLabels { protocol: self.protocol, outcome, reason }).inc();
        m.request_duration
            .get_or_create(&ProtocolLabels { protocol: self.protocol })
            .observe(self.start.elapsed().as_secs_f64());
    }
}
