//! `mizzen-serve`: serves one ONNX model over the Open Inference Protocol v2 (REST and gRPC).

use anyhow::Context as _;
use clap::Parser;
use mizzen_common::{registry, shutdown, storage, telemetry};
use mizzen_serve::batcher::{BatchConfig, Batcher};
use mizzen_serve::grpc::{AdmissionLayer, GrpcInferenceServiceServer, Service};
use mizzen_serve::limits::Limits;
use mizzen_serve::metrics::Metrics;
use mizzen_serve::model::{self, SessionConfig};
use mizzen_serve::server::{Loaded, Server};
use mizzen_serve::{conn, rest};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Serves one ONNX model with ONNX Runtime over the Open Inference Protocol v2: REST (with the binary tensor
/// data extension) and gRPC (inference.GRPCInferenceService), with dynamic batching and /metrics.
#[derive(Parser, Debug)]
#[command(name = "mizzen-serve", version, about, long_about = None)]
struct Args {
    /// Where the ONNX file is: file://, http(s)://, s3://, gs:// or az:// (credentials from the usual
    /// environment variables), or registry://NAME@ALIAS or registry://NAME/VERSION (with --registry-url).
    #[arg(long, env = "MIZZEN_MODEL_URI", value_name = "URI")]
    model_uri: String,
    /// The model registry (mizzen-registry, http://HOST:PORT) that registry:// URIs are resolved through.
    #[arg(long, env = "MIZZEN_REGISTRY_URL", value_name = "URL")]
    registry_url: Option<String>,
    /// The sha256 the ONNX file must have (64 hex digits): a file with another digest is refused and the
    /// server never becomes ready.
    #[arg(long, env = "MIZZEN_MODEL_SHA256", value_name = "HEX", value_parser = sha256_hex)]
    model_sha256: Option<String>,
    /// Name the model is served under (/v2/models/NAME).
    #[arg(long, env = "MIZZEN_MODEL_NAME", default_value = "model")]
    model_name: String,
    /// Version the model is served under.
    #[arg(long, env = "MIZZEN_MODEL_VERSION", default_value = "1")]
    model_version: String,
    /// Address of the REST server (inference, health, /metrics).
    #[arg(long, env = "MIZZEN_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Address of the gRPC server.
    #[arg(long, env = "MIZZEN_GRPC_ADDR", default_value = "0.0.0.0:8081")]
    grpc_addr: SocketAddr,
    /// Path of libonnxruntime.so.
    #[arg(long, env = "ORT_DYLIB_PATH", value_name = "PATH")]
    ort_dylib_path: Option<PathBuf>,
    /// Threads inside one ONNX Runtime operator. Default: the CPUs available.
    #[arg(long, env = "MIZZEN_INTRA_OP_THREADS")]
    intra_op_threads: Option<usize>,
    /// Threads running independent operators of one graph in parallel.
    #[arg(long, env = "MIZZEN_INTER_OP_THREADS", default_value_t = 1)]
    inter_op_threads: usize,
    /// Let ONNX Runtime's threads spin between runs (lower latency when the CPUs are otherwise idle).
    #[arg(long, env = "MIZZEN_ORT_SPINNING", default_value_t = false, action = clap::ArgAction::Set)]
    ort_spinning: bool,
    /// Threads that accept connections, read and parse requests, run quick models and write answers.
    /// Default: half the CPUs available (at least one), leaving the rest to ONNX Runtime. More threads
    /// than the load needs cost more than they give: each hand-off between them wakes a sleeping one
    /// (measured in the README's benchmarks).
    #[arg(long, env = "MIZZEN_IO_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
    io_threads: Option<u16>,
    /// Requests of a few rows (inputs up to 16 times the one-row warm-up's size) run on the thread that
    /// parsed them, whatever else is in flight, when one row of the model runs in at most this many
    /// microseconds (timed after the warm-up): a hand-off to a model worker would cost more than the run,
    /// and batching such runs gains less than it costs. 0: never.
    #[arg(long, env = "MIZZEN_QUICK_RUN_MICROSECONDS", default_value_t = 20)]
    quick_run_microseconds: u64,
    /// Model workers, each with its own ONNX Runtime session.
    #[arg(long, env = "MIZZEN_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// Merge concurrent requests into one run when the model has a batch dimension.
    #[arg(long, env = "MIZZEN_BATCHING", default_value_t = true, action = clap::ArgAction::Set)]
    batching: bool,
    /// Most rows in one merged run.
    #[arg(long, env = "MIZZEN_MAX_BATCH_SIZE", default_value_t = 32)]
    max_batch_size: usize,
    /// Longest a request waits for others to join its batch, in microseconds.
    #[arg(long, env = "MIZZEN_MAX_QUEUE_DELAY_MICROSECONDS", default_value_t = 500)]
    max_queue_delay_microseconds: u64,
    /// Most requests waiting; past it requests get 503.
    #[arg(long, env = "MIZZEN_MAX_QUEUE_SIZE", default_value_t = 1024)]
    max_queue_size: usize,
    /// Largest request body (after decompression) or gRPC message, in bytes.
    #[arg(long, env = "MIZZEN_MAX_REQUEST_BYTES", default_value_t = 64 << 20)]
    max_request_bytes: usize,
    /// Memory budget for requests in flight, in bytes: bodies, decoded tensors and responses being built
    /// are reserved from it before they are allocated; past it requests wait (until their deadline) or get
    /// 503, and one that alone needs more gets 413.
    #[arg(long, env = "MIZZEN_MAX_INFLIGHT_BYTES", default_value_t = 256 << 20)]
    max_inflight_bytes: usize,
    /// Open REST connections; past it a new connection gets 503 and is closed.
    #[arg(long, env = "MIZZEN_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Open gRPC connections; past it a new connection is closed at once.
    #[arg(long, env = "MIZZEN_GRPC_MAX_CONNECTIONS", default_value_t = 256)]
    grpc_max_connections: usize,
    /// REST: from a request's first byte to the end of its headers, in milliseconds.
    #[arg(long, env = "MIZZEN_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// From a request's headers to the end of its body (REST 408, gRPC DEADLINE_EXCEEDED), in milliseconds.
    #[arg(long, env = "MIZZEN_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    body_timeout_ms: u64,
    /// REST: a keep-alive connection idle this long is closed; gRPC: a connection the client has sent
    /// nothing on (not even a ping answer) for this long is closed. In milliseconds.
    #[arg(long, env = "MIZZEN_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    idle_timeout_ms: u64,
    /// A response the client does not read for this long closes the connection, in milliseconds.
    #[arg(long, env = "MIZZEN_SEND_TIMEOUT_MS", default_value_t = 30_000)]
    send_timeout_ms: u64,
    /// Longest an inference may take once its request has arrived, queue and run included (a run past it
    /// is stopped), in milliseconds.
    #[arg(long, env = "MIZZEN_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// After SIGTERM: how long in-flight requests may finish before the remaining connections are closed,
    /// in milliseconds. Keep it under the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "MIZZEN_SHUTDOWN_GRACE_MS", default_value_t = 20_000)]
    shutdown_grace_ms: u64,
    /// gRPC: the server's keepalive ping interval, in milliseconds.
    #[arg(long, env = "MIZZEN_GRPC_KEEPALIVE_MS", default_value_t = 20_000)]
    grpc_keepalive_ms: u64,
    /// gRPC: concurrent streams on one connection.
    #[arg(long, env = "MIZZEN_GRPC_MAX_CONCURRENT_STREAMS", default_value_t = 128)]
    grpc_max_concurrent_streams: u32,
    /// gRPC: a connection is asked to go away after this long (clients reconnect), in milliseconds.
    #[arg(long, env = "MIZZEN_GRPC_MAX_CONNECTION_AGE_MS", default_value_t = 1_800_000)]
    grpc_max_connection_age_ms: u64,
    /// REST: longest request target (path and query), in bytes.
    #[arg(long, env = "MIZZEN_MAX_URI_BYTES", default_value_t = 8 << 10)]
    max_uri_bytes: usize,
    /// REST: most header fields in a request.
    #[arg(long, env = "MIZZEN_MAX_HEADERS", default_value_t = 100)]
    max_headers: usize,
    /// REST: most bytes of headers in a request.
    #[arg(long, env = "MIZZEN_MAX_HEADER_BYTES", default_value_t = 32 << 10)]
    max_header_bytes: usize,
    /// Log format.
    #[arg(long, env = "MIZZEN_LOG_FORMAT", value_enum, default_value_t = telemetry::LogFormat::Text)]
    log_format: telemetry::LogFormat,
    /// Log filter in RUST_LOG syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info,ort=warn")]
    log_filter: String,
}

impl Args {
    fn io_threads(&self) -> usize {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        self.io_threads.map_or((cpus / 2).max(1), usize::from)
    }

    fn limits(&self) -> Limits {
        let ms = Duration::from_millis;
        Limits {
            max_request_bytes: self.max_request_bytes,
            max_inflight_bytes: self.max_inflight_bytes,
            max_connections: self.max_connections.max(1),
            grpc_max_connections: self.grpc_max_connections.max(1),
            header_timeout: ms(self.header_timeout_ms),
            body_timeout: ms(self.body_timeout_ms),
            idle_timeout: ms(self.idle_timeout_ms),
            send_timeout: ms(self.send_timeout_ms),
            request_timeout: ms(self.request_timeout_ms),
            shutdown_grace: ms(self.shutdown_grace_ms),
            grpc_keepalive: ms(self.grpc_keepalive_ms),
            grpc_max_concurrent_streams: self.grpc_max_concurrent_streams.max(1),
            grpc_max_connection_age: ms(self.grpc_max_connection_age_ms),
            max_uri_bytes: self.max_uri_bytes,
            max_headers: self.max_headers,
            max_header_bytes: self.max_header_bytes,
        }
    }
}

/// Raises the open-file limit as far as allowed, and keeps the connection limits under it (with room for
/// the model, logs and the listeners), so the server never runs out of descriptors.
fn fit_connections(limits: &mut Limits) {
    let files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let room = usize::try_from(files).unwrap_or(usize::MAX).saturating_sub(128);
    let wanted = limits.max_connections + limits.grpc_max_connections;
    if wanted > room {
        let rest = (room * limits.max_connections / wanted).max(1);
        let grpc = room.saturating_sub(rest).max(1);
        tracing::warn!(
            files,
            max_connections = rest,
            grpc_max_connections = grpc,
            "the open-file limit is below the connection limits; lowering them"
        );
        (limits.max_connections, limits.grpc_max_connections) = (rest, grpc);
    }
}

/// glibc's malloc raises its mmap threshold (up to 32 MiB) each time a large block is freed, after which
/// large request buffers come from the heap and stay resident once freed: after a burst of large requests
/// the process would keep about a hundred MiB past its memory budget (measured by the attack tests). A
/// fixed threshold keeps large buffers mapped and returned on free. glibc reads it from the environment at
/// start, so the process sets it and executes itself again, once.
const MALLOC_MMAP_THRESHOLD: (&str, &str) = ("MALLOC_MMAP_THRESHOLD_", "262144");

/// gRPC flow-control window of a connection, in bytes.
const GRPC_CONNECTION_WINDOW: u32 = 512 << 10;

fn main() -> anyhow::Result<()> {
    if std::env::var_os(MALLOC_MMAP_THRESHOLD.0).is_none() {
        use std::os::unix::process::CommandExt as _;
        let exe = std::env::current_exe().context("finding the executable")?;
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(MALLOC_MMAP_THRESHOLD.0, MALLOC_MMAP_THRESHOLD.1)
            .exec();
        eprintln!("mizzen-serve: cannot set {}, running without it: {err}", MALLOC_MMAP_THRESHOLD.0);
    }
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.io_threads())
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    mizzen_common::tls::install_crypto_provider();
    telemetry::init(args.log_format, &args.log_filter).map_err(anyhow::Error::msg)?;
    let (metrics, registry) = Metrics::new(&args.model_name);
    let mut limits = args.limits();
    fit_connections(&mut limits);
    let server =
        Server::new(args.model_name.clone(), args.model_version.clone(), metrics.clone(), limits.clone());
    let shutdown = shutdown::on_signal();

    // Listen first: liveness answers while the model loads, readiness once it is warmed up.
    let http = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    let grpc = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding {}", args.grpc_addr))?;
    tracing::info!(http = %http.local_addr()?, grpc = %grpc.local_addr()?, "listening");

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    let rest =
        conn::serve_rest(http, rest::router(server.clone(), registry), server.clone(), shutdown.clone());
    let grpc_service = GrpcInferenceServiceServer::new(Service { server: server.clone() })
        // The admission layer refuses larger messages first, with RESOURCE_EXHAUSTED.
        .max_decoding_message_size(limits.max_request_bytes.saturating_add(5))
        .max_encoding_message_size(usize::MAX);
    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(limits.grpc_keepalive))
        .http2_keepalive_timeout(Some(limits.idle_timeout.min(limits.grpc_keepalive)))
        .max_concurrent_streams(limits.grpc_max_concurrent_streams)
        .http2_max_header_list_size(Some(64 << 10))
        // What a client can make one connection buffer while its message waits for the memory budget.
        .initial_connection_window_size(GRPC_CONNECTION_WINDOW)
        .initial_stream_window_size(GRPC_CONNECTION_WINDOW / 2)
        // A GOAWAY that lets calls in progress finish (tonic's age grace would cut them off instead).
        .max_connection_age(limits.grpc_max_connection_age)
        .layer(AdmissionLayer { server: server.clone() })
        .add_service(health_service)
        .add_service(grpc_service)
        .serve_with_incoming_shutdown(conn::grpc_incoming(grpc, &server), shutdown.clone().cancelled_owned());
    let grpc = conn::with_grace(grpc, shutdown.clone(), limits.shutdown_grace, "gRPC");

    let loading = {
        let (server, shutdown, health) = (server.clone(), shutdown.clone(), health.clone());
        async move {
            // SIGTERM while loading stops the load (its blocking part finishes on its own and is dropped).
            let loaded = tokio::select! {
                loaded = load(&args, metrics) => loaded,
                _ = shutdown.cancelled() => return Ok(()),
            };
            match loaded {
                Ok(loaded) => {
                    server.set_loaded(loaded);
                    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
                    health.set_serving::<GrpcInferenceServiceServer<Service>>().await;
                    tracing::info!("ready");
                    Ok(())
                }
                Err(e) => {
                    shutdown.cancel();
                    Err(e)
                }
            }
        }
    };
    let ((), grpc, loaded) = tokio::join!(rest, grpc, loading);
    loaded?;
    grpc?;
    tracing::info!("stopped");
    Ok(())
}

/// A sha256 digest as 64 hex digits (lower-cased).
fn sha256_hex(text: &str) -> Result<String, String> {
    let hex = text.trim().to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err("expected 64 hex digits".into())
    }
}

/// Fetches the model, builds the sessions, warms them up with a real inference, and starts the workers.
async fn load(args: &Args, metrics: Metrics) -> anyhow::Result<Loaded> {
    let start = Instant::now();
    let bytes = if args.model_uri.starts_with("registry://") {
        let registry = args.registry_url.as_deref().with_context(|| {
            format!("{} needs the registry's address: --registry-url or MIZZEN_REGISTRY_URL", args.model_uri)
        })?;
        let (bytes, resolved) = registry::read(&args.model_uri, registry).await?;
        tracing::info!(
            uri = %args.model_uri,
            version = %resolved.version,
            file = %resolved.file,
            sha256 = resolved.sha256.as_deref().unwrap_or("not recorded"),
            "resolved through the registry"
        );
        bytes
    } else {
        storage::read(&args.model_uri).await?
    };
    if let Some(want) = &args.model_sha256 {
        let got = mizzen_common::sha256_hex(&bytes);
        anyhow::ensure!(
            &got == want,
            "{}: the file has sha256 {got}, but {want} was asked for",
            args.model_uri
        );
    }
    let env = model::init_runtime(args.ort_dylib_path.as_deref())?;
    let cfg = SessionConfig {
        intra_op_threads: args
            .intra_op_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
        inter_op_threads: args.inter_op_threads,
        spinning: args.ort_spinning,
    };
    let (workers, name, version) =
        (args.workers as usize, args.model_name.clone(), args.model_version.clone());
    let quick_run = Duration::from_micros(args.quick_run_microseconds);
    let (info, runners, quick) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let (info, mut runners) = model::load(&env, &bytes, &cfg, workers, &name, &version)?;
        for runner in &mut runners {
            runner
                .run(&info, model::warmup_inputs(&info), None)
                .map_err(|e| anyhow::anyhow!("the warm-up inference failed: {e}"))?;
        }
        let quick = quick_run > Duration::ZERO && model::runs_within(&info, &mut runners[0], quick_run);
        Ok((info, runners, quick))
    })
    .await??;
    let info = Arc::new(info);
    let config = BatchConfig {
        enabled: args.batching,
        max_batch_size: args.max_batch_size.max(1),
        max_queue_delay: Duration::from_micros(args.max_queue_delay_microseconds),
        max_queue_size: args.max_queue_size.max(1),
    };
    let load_time = start.elapsed();
    metrics.model_load_seconds.set(load_time.as_secs_f64());
    tracing::info!(
        model = %info.name,
        version = %info.version,
        inputs = ?info.inputs.iter().map(|i| (&i.name, i.datatype.name(), &i.shape)).collect::<Vec<_>>(),
        batchable = info.batchable,
        quick,
        load_ms = load_time.as_millis() as u64,
        "model loaded and warmed up"
    );
    let batcher = Batcher::start(info.clone(), runners, config, metrics, quick);
    Ok(Loaded { info, batcher })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_defaults_are_the_documented_limits() {
        let args = Args::parse_from(["mizzen-serve", "--model-uri", "file:///m.onnx"]);
        assert_eq!(format!("{:?}", args.limits()), format!("{:?}", Limits::default()));
    }
}
