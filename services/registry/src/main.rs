//! mizzen-registry: the model registry, spoken in MLflow's REST API.
//!
//! mizzen-registry --data-dir /var/lib/mizzen-registry --listen 0.0.0.0:5000

use clap::Parser;
use mizzen_common::telemetry;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Mizzen's model registry: MLflow's REST API over an embedded store")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MIZZEN_REGISTRY_LISTEN", default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// Where the metadata (registry.redb) and the artifacts (blobs/) live.
    #[arg(long, env = "MIZZEN_REGISTRY_DATA_DIR", default_value = "./mizzen-registry-data")]
    data_dir: PathBuf,
    /// The largest artifact accepted, in bytes.
    #[arg(long, env = "MIZZEN_REGISTRY_MAX_ARTIFACT_BYTES", default_value_t = 16 << 30)]
    max_artifact_bytes: u64,
    /// When set, requests other than reads need `Authorization: Bearer TOKEN`.
    #[arg(long, env = "MIZZEN_REGISTRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Seconds an upload's body may send nothing before it is refused with a 400.
    #[arg(long, env = "MIZZEN_REGISTRY_UPLOAD_STALL_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    upload_stall_seconds: u64,
    #[command(flatten)]
    log: telemetry::LogArgs,
    #[command(flatten)]
    limits: mizzen_common::http::LimitArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init().map_err(anyhow::Error::msg)?;
    let stall = std::time::Duration::from_secs(args.upload_stall_seconds);
    let app =
        mizzen_registry::App::open_with(args.data_dir.clone(), args.max_artifact_bytes, args.token, stall)
            .map_err(|e| anyhow::anyhow!(e.message))?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, data_dir = %args.data_dir.display(), "mizzen-registry ready");
    let stop = mizzen_common::shutdown::on_signal();
    mizzen_common::http::serve(listener, mizzen_registry::router(app), stop, args.limits.limits()).await;
    tracing::info!("stopped");
    Ok(())
}
