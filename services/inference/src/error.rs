//! Errors a request can meet, with Triton's mapping to HTTP status codes and gRPC codes.

/// What went wrong, which decides the status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed or does not fit the model: 400 / INVALID_ARGUMENT.
    Invalid,
    /// The body did not arrive in time: 408 / DEADLINE_EXCEEDED.
    Timeout,
    /// The body's Content-Encoding is not one the server reads: 415 / INVALID_ARGUMENT.
    Unsupported,
    /// Unknown model or version: 404 / NOT_FOUND.
    NotFound,
    /// The body is over the limit, or needs more memory than the whole budget: 413 / RESOURCE_EXHAUSTED.
    TooLarge,
    /// Not ready, queue full, memory budget in use, timed out, shutting down: 503 / UNAVAILABLE.
    Unavailable,
    /// A fault inside the server or ONNX Runtime: 500 / INTERNAL.
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InferError {
    pub kind: Kind,
    pub message: String,
    /// A finer label for the metrics than the kind's (e.g. `body_timeout`); empty: the kind's label.
    pub detail: &'static str,
}

impl InferError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), detail: "" }
    }
    /// The same error, counted in the metrics under `detail` instead of the kind's label.
    pub fn counted_as(mut self, detail: &'static str) -> Self {
        self.detail = detail;
        self
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(Kind::TooLarge, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, message)
    }

    pub fn http_status(&self) -> u16 {
        match self.kind {
            Kind::Invalid => 400,
            Kind::Timeout => 408,
            Kind::Unsupported => 415,
            Kind::NotFound => 404,
            Kind::TooLarge => 413,
            Kind::Unavailable => 503,
            Kind::Internal => 500,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self.kind {
            Kind::Invalid | Kind::Unsupported => tonic::Code::InvalidArgument,
            Kind::Timeout => tonic::Code::DeadlineExceeded,
            Kind::NotFound => tonic::Code::NotFound,
            Kind::TooLarge => tonic::Code::ResourceExhausted,
            Kind::Unavailable => tonic::Code::Unavailable,
            Kind::Internal => tonic::Code::Internal,
        }
    }

    /// A short static label for the request metric.
    pub fn reason(&self) -> &'static str {
        if !self.detail.is_empty() {
            return self.detail;
        }
        match self.kind {
            Kind::Invalid => "invalid_argument",
            Kind::Timeout => "body_timeout",
            Kind::Unsupported => "unsupported_encoding",
            Kind::NotFound => "not_found",
            Kind::TooLarge => "too_large",
            Kind::Unavailable => "unavailable",
            Kind::Internal => "internal",
        }
    }
}

/// A client's string as error messages show it: quoted, and cut to 128 characters, so a message never
/// echoes megabytes back.
pub fn shown(s: &str) -> String {
    const MOST: usize = 128;
    match s.char_indices().nth(MOST) {
        None => format!("{s:?}"),
        Some((end, _)) => format!("{:?}... ({} bytes)", &s[..end], s.len()),
    }
}

impl From<InferError> for tonic::Status {
    fn from(e: InferError) -> Self {
        tonic::Status::new(e.grpc_code(), e.message)
    }
}
