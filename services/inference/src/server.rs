//! The protocol-independent core: the loaded model, readiness, limits, and one `infer` that REST and gRPC
//! share.

use crate::batcher::Batcher;
use crate::error::InferError;
use crate::limits::{Budget, Limits, Reservation};
use crate::metrics::{Metrics, ProtocolLabels, RequestLabels};
use crate::model::ModelInfo;
use crate::tensor::Tensor;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

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
    pub limits: Limits,
    /// Bytes of requests in flight, counted before they are allocated.
    pub budget: Arc<Budget>,
}

impl Server {
    pub fn new(model_name: String, model_version: String, metrics: Metrics, limits: Limits) -> Arc<Self> {
        let budget = Budget::new(limits.max_inflight_bytes, metrics.inflight_bytes.clone());
        Arc::new(Self { model_name, model_version, loaded: OnceLock::new(), metrics, limits, budget })
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

    /// Checks the request against the model, reserves its outputs (ONNX Runtime's and our copy) when the
    /// signature fixes their size, runs it (inline or through the queue), and waits for its outputs until
    /// `deadline`.
    pub async fn infer(
        &self,
        loaded: &Loaded,
        inputs: Vec<Tensor>,
        outputs: &[String],
        reservation: &mut Reservation,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<Tensor>, InferError> {
        let mut checked = loaded.info.check(inputs, outputs)?;
        // What the reservation holds now is the inputs': it goes with them into the queue, so a request
        // that times out keeps its bytes counted until its run has dropped them.
        checked.held = Some(reservation.split());
        if let Some(bytes) = loaded.info.output_bytes(checked.rows) {
            reservation.grow(bytes.saturating_mul(2), deadline).await?;
        }
        let checked = match loaded.batcher.try_inline(checked, deadline.into_std()) {
            Ok(result) => return self.count_outputs(loaded, result, reservation),
            Err(checked) => checked,
        };
        let rx = loaded.batcher.submit(checked, deadline.into_std())?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => self.count_outputs(loaded, result, reservation),
            Ok(Err(_)) => Err(InferError::internal("the model worker dropped the request")),
            Err(_) => Err(InferError::unavailable(format!(
                "timed out after {:?} (--request-timeout-ms)",
                self.limits.request_timeout
            ))
            .counted_as("timeout")),
        }
    }

    /// Keeps the outputs counted: ONNX Runtime's copy is gone once the run returns, ours stays until the
    /// response is built. Outputs the signature could not size are counted now that they exist.
    fn count_outputs(
        &self,
        loaded: &Loaded,
        result: Result<Vec<Tensor>, InferError>,
        reservation: &mut Reservation,
    ) -> Result<Vec<Tensor>, InferError> {
        let outputs = result?;
        let bytes: usize =
            outputs.iter().map(|t| crate::tensor::decoded_bytes(t.datatype(), t.data.len(), 0)).sum();
        if loaded.info.output_bytes(0).is_some() {
            reservation.shrink(reservation.bytes().saturating_sub(bytes));
        } else {
            reservation.try_grow(bytes)?;
        }
        Ok(outputs)
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
