//! `mizzen-bench`: one load generator for every server in `make bench` (so the generator's own cost is the
//! same for all), and the in-process ONNX Runtime reference the server's overhead is measured against.
//! Prints one JSON object per run.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mizzen_serve::grpc::pb;
use mizzen_serve::tensor::{Data, DataType, Tensor};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "mizzen-bench", about = "Load generator for make bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Load {
    /// Requests in flight at once (one connection each).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds of measurement, after one second of warm-up.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// An Open Inference Protocol JSON infer request.
    #[arg(long)]
    body: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// POST the body to an OIP REST infer URL (or GET the URL with --get, to measure the HTTP floor).
    Http {
        #[arg(long)]
        url: String,
        #[arg(long)]
        get: bool,
        /// Send the body's inputs through the binary tensor data extension, and ask for binary outputs.
        #[arg(long)]
        binary: bool,
        #[command(flatten)]
        load: Load,
    },
    /// Send the body's inputs as raw contents to an OIP gRPC server.
    Grpc {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        model: String,
        /// HTTP/2 connections the concurrent streams share (a gRPC client's channel is one connection);
        /// 0: one per stream, like the HTTP/1.1 load.
        #[arg(long, default_value_t = 1)]
        connections: usize,
        #[command(flatten)]
        load: Load,
    },
    /// This machine's memcpy bandwidth for buffers of the given size (what moving a tensor is measured
    /// against).
    Memcpy {
        #[arg(long, default_value_t = 4 << 20)]
        bytes: usize,
    },
    /// Run the body's inputs through ONNX Runtime in this process (the floor a server adds to).
    Inproc {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        ort_dylib_path: PathBuf,
        #[arg(long, default_value_t = 20000)]
        iterations: usize,
        #[arg(long)]
        body: PathBuf,
    },
}

fn inputs_of(body: &[u8]) -> anyhow::Result<Vec<Tensor>> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    let mut out = Vec::new();
    for i in v["inputs"].as_array().context("inputs")? {
        let shape: Vec<i64> = serde_json::from_value(i["shape"].clone())?;
        let dt = DataType::parse(i["datatype"].as_str().context("datatype")?)?;
        let n = mizzen_serve::tensor::element_count(&shape)?;
        let data = Data::from_json(dt, &i["data"].to_string(), n)?;
        out.push(Tensor { name: i["name"].as_str().context("name")?.to_string(), shape, data });
    }
    Ok(out)
}

/// The body's inputs in the binary tensor data extension: a JSON header naming each input's
/// `binary_data_size`, asking for binary outputs, then the raw bytes. Returns the body and the header's
/// length.
fn binary_body(json: &[u8]) -> anyhow::Result<(Bytes, Option<String>)> {
    let tensors = inputs_of(json)?;
    let inputs: Vec<serde_json::Value> = tensors
        .iter()
        .map(|t| {
            serde_json::json!({"name": t.name, "shape": t.shape, "datatype": t.datatype().name(),
                "parameters": {"binary_data_size": t.data.raw_len()}})
        })
        .collect();
    let header = serde_json::to_vec(
        &serde_json::json!({"inputs": inputs, "parameters": {"binary_data_output": true}}),
    )?;
    let mut body = header.clone();
    for t in &tensors {
        body.extend_from_slice(&t.data.to_raw());
    }
    Ok((Bytes::from(body), Some(header.len().to_string())))
}

fn report(kind: &str, concurrency: usize, elapsed: f64, mut latencies: Vec<u64>, errors: usize) {
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{}",
        serde_json::json!({
            "kind": kind, "concurrency": concurrency, "requests": latencies.len(), "errors": errors,
            "rps": latencies.len() as f64 / elapsed, "p50_us": pct(0.50), "p99_us": pct(0.99),
        })
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Http { url, get, binary, load } => {
            let json = std::fs::read(&load.body)?;
            let (body, header_length) = if binary { binary_body(&json)? } else { (Bytes::from(json), None) };
            let uri: hyper::Uri = url.parse()?;
            let authority = uri.authority().context("url without host")?.to_string();
            // Origin-form request target: some servers (uvicorn) refuse the absolute form.
            let uri: hyper::Uri = uri.path_and_query().context("url without path")?.as_str().parse()?;
            run(load.clone(), "http", move || {
                let (body, uri, authority, header_length) =
                    (body.clone(), uri.clone(), authority.clone(), header_length.clone());
                async move {
                    let stream = tokio::net::TcpStream::connect(&authority).await?;
                    stream.set_nodelay(true)?;
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                    tokio::spawn(conn);
                    Ok(move || {
                        let builder = if get {
                            hyper::Request::get(uri.clone())
                        } else {
                            hyper::Request::post(uri.clone())
                        };
                        let builder = match &header_length {
                            Some(n) => builder
                                .header("content-type", "application/octet-stream")
                                .header("inference-header-content-length", n.as_str()),
                            None => builder.header("content-type", "application/json"),
                        };
                        let req = builder.header("host", authority.as_str()).body(Full::new(if get {
                            Bytes::new()
                        } else {
                            body.clone()
                        }));
                        let fut = req.map(|r| sender.send_request(r));
                        async move {
                            let resp = fut?.await?;
                            let ok = resp.status().is_success();
                            resp.into_body().collect().await?;
                            if !ok {
                                bail!("status not 2xx");
                            }
                            Ok(())
                        }
                    })
                }
            })
            .await
        }
        Command::Grpc { addr, model, connections, load } => {
            let tensors = inputs_of(&std::fs::read(&load.body)?)?;
            let request = pb::ModelInferRequest {
                model_name: model,
                inputs: tensors
                    .iter()
                    .map(|t| pb::model_infer_request::InferInputTensor {
                        name: t.name.clone(),
                        datatype: t.datatype().name().into(),
                        shape: t.shape.clone(),
                        parameters: Default::default(),
                        contents: None,
                    })
                    .collect(),
                raw_input_contents: tensors.iter().map(|t| Bytes::from(t.data.to_raw())).collect(),
                ..Default::default()
            };
            // Encoded once, like the REST body: the load generator's cost per request is the same small
            // one for both protocols (a bare HTTP/2 stream here, a bare HTTP/1.1 request there), so what
            // differs is the server's.
            let mut framed = vec![0u8; 5];
            prost::Message::encode(&request, &mut framed)?;
            let len = u32::try_from(framed.len() - 5)?;
            framed[1..5].copy_from_slice(&len.to_be_bytes());
            let framed = Bytes::from(framed);
            let uri: hyper::Uri =
                format!("http://{addr}/inference.GRPCInferenceService/ModelInfer").parse()?;
            let connect = move || {
                let addr = addr.clone();
                async move {
                    let stream = tokio::net::TcpStream::connect(&addr).await?;
                    stream.set_nodelay(true)?;
                    let (sender, conn) =
                        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                            .await?;
                    tokio::spawn(conn);
                    anyhow::Ok(sender)
                }
            };
            let shared = if connections == 0 {
                vec![]
            } else {
                let mut senders = vec![];
                for _ in 0..connections {
                    senders.push(connect().await?);
                }
                senders
            };
            let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            run(load.clone(), "grpc", move || {
                let (framed, uri, connect, shared, next) =
                    (framed.clone(), uri.clone(), connect.clone(), shared.clone(), next.clone());
                async move {
                    let sender = match shared.len() {
                        0 => connect().await?,
                        n => shared[next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n].clone(),
                    };
                    Ok(move || {
                        let mut sender = sender.clone();
                        let req = hyper::Request::post(uri.clone())
                            .header("content-type", "application/grpc")
                            .header("te", "trailers")
                            .body(Full::new(framed.clone()));
                        async move {
                            let resp = sender.send_request(req?).await?;
                            if !resp.status().is_success() {
                                bail!("HTTP status {}", resp.status());
                            }
                            let body = resp.into_body().collect().await?;
                            let status = body.trailers().and_then(|t| t.get("grpc-status")).cloned();
                            if status.as_ref().map(|s| s.as_bytes()) != Some(b"0") {
                                bail!("grpc-status {status:?}");
                            }
                            if body.to_bytes().len() < 5 {
                                bail!("no message");
                            }
                            Ok(())
                        }
                    })
                }
            })
            .await
        }
        Command::Memcpy { bytes } => {
            // Each copy moves another block of 256 MiB buffers, so it reads and writes memory, not the
            // caches (a request's buffers are new too).
            let blocks = ((256usize << 20) / bytes.max(1)).max(2);
            let src: Vec<u8> = (0..bytes * blocks).map(|i| i as u8).collect();
            let mut dst = vec![1u8; bytes * blocks];
            let mut runs = Vec::new();
            for i in 0..blocks * 4 {
                let b = (i * 7) % blocks;
                let range = b * bytes..(b + 1) * bytes;
                let t = Instant::now();
                dst[range.clone()].copy_from_slice(std::hint::black_box(&src[range]));
                std::hint::black_box(&mut dst);
                runs.push(t.elapsed().as_secs_f64());
            }
            runs.sort_by(f64::total_cmp);
            let median = runs[runs.len() / 2];
            println!(
                "{}",
                serde_json::json!({"kind": "memcpy", "bytes": bytes, "gb_per_s": bytes as f64 / median / 1e9})
            );
            Ok(())
        }
        Command::Inproc { model, ort_dylib_path, iterations, body } => {
            let tensors = inputs_of(&std::fs::read(&body)?)?;
            let env = mizzen_serve::model::init_runtime(Some(&ort_dylib_path))?;
            let bytes = std::fs::read(&model)?;
            let cfg = mizzen_serve::model::SessionConfig {
                intra_op_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                inter_op_threads: 1,
                spinning: false,
            };
            let (info, mut runners) = mizzen_serve::model::load(&env, &bytes, &cfg, 1, "m", "1")?;
            let runner = &mut runners[0];
            for _ in 0..200 {
                runner.run(&info, tensors.clone(), None)?;
            }
            let mut latencies = Vec::with_capacity(iterations);
            let start = Instant::now();
            for _ in 0..iterations {
                let t = Instant::now();
                runner.run(&info, tensors.clone(), None)?;
                latencies.push(t.elapsed().as_micros() as u64);
            }
            report("inproc", 1, start.elapsed().as_secs_f64(), latencies, 0);
            Ok(())
        }
    }
}

/// Runs `concurrency` loops, each with its own connection from `connect`, for the measured time.
async fn run<C, CF, S, SF>(load: Load, kind: &str, connect: C) -> anyhow::Result<()>
where
    C: Fn() -> CF + Clone + Send + 'static,
    CF: std::future::Future<Output = anyhow::Result<S>> + Send,
    S: FnMut() -> SF + Send + 'static,
    SF: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let warmup = Duration::from_secs(1);
    let measure = Duration::from_secs_f64(load.seconds);
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = Vec::new();
    for _ in 0..load.concurrency {
        let mut send = connect().await?;
        let connect = connect.clone();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            // A server may close a kept-alive connection between requests (a worker recycled after so many
            // requests, as gunicorn does): like any pooled client, connect again and resend. A request that
            // fails on a fresh connection is an error.
            let mut fresh = true;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let result = send().await;
                match result {
                    Ok(()) if t >= start => latencies.push(t.elapsed().as_micros() as u64),
                    Ok(()) => {}
                    Err(_) if !fresh => match connect().await {
                        Ok(s) => {
                            send = s;
                            fresh = true;
                            continue;
                        }
                        Err(_) => errors += 1,
                    },
                    Err(_) if t >= start => errors += 1,
                    Err(_) => {}
                }
                fresh = false;
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    report(kind, load.concurrency, measure.as_secs_f64(), all, errors);
    Ok(())
}
