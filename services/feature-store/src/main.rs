//! mizzen-features: one FeatureSet's feature store, spoken in Feast's feature-server REST API.
//!
//! mizzen-features --feature-set customers.yaml --data-dir /var/lib/mizzen-features --listen 0.0.0.0:6566

use clap::Parser;
use mizzen_common::telemetry;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Mizzen's feature store: one FeatureSet online and offline, in Feast's REST API")]
struct Args {
    /// Address to listen on (Feast's feature server uses 6566).
    #[arg(long, env = "MIZZEN_FEATURES_LISTEN", default_value = "127.0.0.1:6566")]
    listen: SocketAddr,
    /// The FeatureSet to serve: a file holding it (YAML or JSON, as `kubectl get fset NAME -o yaml` prints it).
    #[arg(long, env = "MIZZEN_FEATURE_SET_FILE", conflicts_with = "feature_set")]
    feature_set_file: Option<PathBuf>,
    /// The FeatureSet to serve, inline (JSON or YAML).
    #[arg(long, env = "MIZZEN_FEATURE_SET")]
    feature_set: Option<String>,
    /// Where the online store (online.redb) and the offline log (offline.log) live.
    #[arg(long, env = "MIZZEN_FEATURES_DATA_DIR", default_value = "./mizzen-features-data")]
    data_dir: PathBuf,
    /// Bytes of hot rows kept in memory in front of the online store.
    #[arg(long, env = "MIZZEN_FEATURES_CACHE_BYTES", default_value_t = 64 << 20)]
    cache_bytes: u64,
    #[command(flatten)]
    log: telemetry::LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init().map_err(anyhow::Error::msg)?;
    let text = match (&args.feature_set_file, &args.feature_set) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the FeatureSet {}: {e}", path.display()))?,
        (None, Some(text)) => text.clone(),
        (None, None) => {
            anyhow::bail!("name the FeatureSet to serve: --feature-set-file FILE or --feature-set TEXT")
        }
    };
    let (name, spec) = mizzen_features::read_feature_set(&text).map_err(anyhow::Error::msg)?;
    let app = mizzen_features::App::open(&args.data_dir, &name, &spec, args.cache_bytes)
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, feature_set = %name, data_dir = %args.data_dir.display(), "mizzen-features ready");
    let stop = mizzen_common::shutdown::on_signal();
    axum::serve(listener, mizzen_features::router(app))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await?;
    tracing::info!("stopped");
    Ok(())
}
