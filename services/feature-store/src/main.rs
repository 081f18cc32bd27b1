//! mizzen-features: one FeatureSet's feature store, spoken in Feast's feature-server REST API.
//!
//! mizzen-features --feature-set-file customers.yaml --data-dir /var/lib/mizzen-features --listen 0.0.0.0:6566
//! mizzen-features materialize --url http://customers-0.customers-pods:6566 --source daily

use clap::{Parser, Subcommand};
use mizzen_common::telemetry;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Mizzen's feature store: one FeatureSet online and offline, in Feast's REST API")]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
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
    #[command(flatten)]
    limits: mizzen_common::http::LimitArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Ask running feature stores to ingest their FeatureSet's sources (what a materialization Job runs).
    /// Exits 2 when a store refuses (a bad row, a missing file), 1 when one cannot be reached in time.
    Materialize {
        /// Base URL of a replica (repeat for each).
        #[arg(long = "url", required = true)]
        urls: Vec<String>,
        /// A source of the FeatureSet to ingest (repeat for each, in order).
        #[arg(long = "source", required = true)]
        sources: Vec<String>,
        /// Where rows go: online, offline or online_and_offline.
        #[arg(long, default_value = "online_and_offline")]
        to: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        deadline_seconds: u64,
        /// Where the JSON report is written as well as stdout (the kubelet reads /dev/termination-log).
        #[arg(long)]
        report_file: Option<PathBuf>,
        #[command(flatten)]
        log: telemetry::LogArgs,
    },
}

/// Exit code of a materialization a retry cannot fix (the materialization Job fails at once on it).
const PERMANENT_EXIT_CODE: i32 = 2;

async fn materialize(plan: mizzen_features::materialize::Plan, report_file: Option<PathBuf>) -> i32 {
    use mizzen_features::materialize::{Failure, run};
    let (text, code) = match run(&plan).await {
        Ok(report) => (serde_json::to_string(&report).unwrap_or_default(), 0),
        Err(failure) => {
            let code = if matches!(failure, Failure::Permanent(_)) { PERMANENT_EXIT_CODE } else { 1 };
            (format!("Error: {failure}"), code)
        }
    };
    println!("{text}");
    if let Some(path) = report_file
        && let Err(e) = std::fs::write(&path, mizzen_common::shortened(&text, 4000))
    {
        eprintln!("cannot write the report to {}: {e}", path.display());
    }
    code
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Materialize { urls, sources, to, deadline_seconds, report_file, log }) = args.command
    {
        log.init().map_err(anyhow::Error::msg)?;
        let deadline = std::time::Duration::from_secs(deadline_seconds);
        let plan = mizzen_features::materialize::Plan { urls, sources, to, deadline };
        std::process::exit(materialize(plan, report_file).await);
    }
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
    mizzen_common::http::serve(listener, mizzen_features::router(app), stop, args.limits.limits()).await;
    tracing::info!("stopped");
    Ok(())
}
