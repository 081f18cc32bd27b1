//! `mizzen-serve`: serves one ONNX model over the Open Inference Protocol v2 (REST and gRPC).

use anyhow::Context as _;
use clap::Parser;
use mizzen_common::{shutdown, storage, telemetry};
use mizzen_serve::batcher::{BatchConfig, Batcher};
use mizzen_serve::grpc::{GrpcInferenceServiceServer, Service};
use mizzen_serve::metrics::Metrics;
use mizzen_serve::model::{self, SessionConfig};
use mizzen_serve::server::{Loaded, Server};
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
    /// environment variables).
    #[arg(long, env = "MIZZEN_MODEL_URI", value_name = "URI")]
    model_uri: String,
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
    /// Largest request body, in bytes (REST and gRPC).
    #[arg(long, env = "MIZZEN_MAX_REQUEST_BYTES", default_value_t = 64 << 20)]
    max_request_bytes: usize,
    /// Longest an inference may take, queue included, in milliseconds.
    #[arg(long, env = "MIZZEN_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Log format.
    #[arg(long, env = "MIZZEN_LOG_FORMAT", value_enum, default_value_t = telemetry::LogFormat::Text)]
    log_format: telemetry::LogFormat,
    /// Log filter in RUST_LOG syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info,ort=warn")]
    log_filter: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mizzen_common::tls::install_crypto_provider();
    telemetry::init(args.log_format, &args.log_filter).map_err(anyhow::Error::msg)?;
    let (metrics, registry) = Metrics::new(&args.model_name);
    let server = Server::new(
        args.model_name.clone(),
        args.model_version.clone(),
        metrics.clone(),
        Duration::from_millis(args.request_timeout_ms),
        args.max_request_bytes,
    );
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
    let rest = axum::serve(http, mizzen_serve::rest::router(server.clone(), registry))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let grpc_service = GrpcInferenceServiceServer::new(Service { server: server.clone() })
        .max_decoding_message_size(args.max_request_bytes)
        .max_encoding_message_size(usize::MAX);
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(grpc_service)
        .serve_with_incoming_shutdown(tokio_stream_from(grpc), shutdown.clone().cancelled_owned());

    let loading = {
        let (server, shutdown, health) = (server.clone(), shutdown.clone(), health.clone());
        async move {
            match load(&args, metrics).await {
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
    let (rest, grpc, loaded) = tokio::join!(rest, grpc, loading);
    loaded?;
    rest?;
    grpc?;
    tracing::info!("stopped");
    Ok(())
}

/// Fetches the model, builds the sessions, warms them up with a real inference, and starts the workers.
async fn load(args: &Args, metrics: Metrics) -> anyhow::Result<Loaded> {
    let start = Instant::now();
    let bytes = storage::read(&args.model_uri).await?;
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
    let (info, runners) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let (info, mut runners) = model::load(&env, &bytes, &cfg, workers, &name, &version)?;
        for runner in &mut runners {
            runner
                .run(&info, model::warmup_inputs(&info))
                .map_err(|e| anyhow::anyhow!("the warm-up inference failed: {e}"))?;
        }
        Ok((info, runners))
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
        load_ms = load_time.as_millis() as u64,
        "model loaded and warmed up"
    );
    let batcher = Batcher::start(info.clone(), runners, config, metrics);
    Ok(Loaded { info, batcher })
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((next, l))
    })
}
