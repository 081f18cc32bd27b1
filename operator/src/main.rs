//! `mizzen-operator`: prints the CRDs, or runs the controllers.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::config::{KubeConfigOptions, Kubeconfig};
use mizzen_common::{shutdown, telemetry};
use mizzen_operator::{api::crd, controller, leader, metrics::Metrics, server};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The Mizzen operator: trains, serves, scales and rolls out ML models on Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "mizzen-operator", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CustomResourceDefinitions of ModelDeployment, TrainingJob and FeatureSet as YAML
    /// (pipe into `kubectl apply -f -`), or write one file per CRD with --out-dir.
    Crd {
        /// Write PLURAL.GROUP.yaml files into this directory instead of printing one stream.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Run the controllers against a cluster.
    Run(Box<RunArgs>),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Kubeconfig file to use. Default: $KUBECONFIG, then ~/.kube/config, then the in-cluster service account.
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use. Default: the file's current context.
    #[arg(long, env = "MIZZEN_CONTEXT", value_name = "NAME")]
    context: Option<String>,
    /// Watch only this namespace. Default: every namespace.
    #[arg(long, env = "MIZZEN_NAMESPACE", value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Address of the HTTP server for /metrics, /health and /ready.
    #[arg(long, env = "MIZZEN_LISTEN", default_value = "0.0.0.0:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// Log format.
    #[arg(long, env = "MIZZEN_LOG_FORMAT", value_enum, default_value_t = telemetry::LogFormat::Text)]
    log_format: telemetry::LogFormat,
    /// Log filter in RUST_LOG syntax, e.g. `info,kube=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info", value_name = "FILTER")]
    log_filter: String,
    /// Reconciles running at once per kind (0 means no limit).
    #[arg(long, env = "MIZZEN_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Image of the inference server for ModelDeployments that name none.
    #[arg(long, env = "MIZZEN_SERVE_IMAGE", default_value = concat!("ghcr.io/mizzen-dev/mizzen-serve:", env!("CARGO_PKG_VERSION")))]
    serve_image: String,
    /// The mizzen-train image for TrainingJobs that do not name one.
    #[arg(long, env = "MIZZEN_TRAIN_IMAGE", default_value = concat!("ghcr.io/mizzen-dev/mizzen-train:", env!("CARGO_PKG_VERSION")))]
    train_image: String,
    /// The mizzen-features image for FeatureSets that do not name one (their stores and materializations).
    #[arg(long, env = "MIZZEN_FEATURES_IMAGE", default_value = concat!("ghcr.io/mizzen-dev/mizzen-features:", env!("CARGO_PKG_VERSION")))]
    features_image: String,
    /// The model registry (mizzen-registry, http://HOST:PORT) as the operator and the pods reach it: registry://
    /// model URIs resolve through it and registry:// training outputs go to it.
    #[arg(long, env = "MIZZEN_REGISTRY_URL", value_name = "URL")]
    registry_url: Option<String>,
    /// The registry's bearer token for writes, when it asks for one (the operator registers a search's best
    /// trial).
    #[arg(long, env = "MIZZEN_REGISTRY_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    registry_token: Option<String>,
    /// A Secret that trainer pods writing to the registry take their bearer token from, looked up in each
    /// TrainingJob's own namespace (create it there when the registry asks for a token; a pod whose
    /// namespace has none sends no token).
    #[arg(long, env = "MIZZEN_REGISTRY_TOKEN_SECRET", value_name = "NAME")]
    registry_token_secret: Option<String>,
    /// The key of --registry-token-secret holding the token.
    #[arg(long, env = "MIZZEN_REGISTRY_TOKEN_SECRET_KEY", default_value = "token", value_name = "KEY")]
    registry_token_secret_key: String,
    /// Seconds between lookups of a registry://NAME@ALIAS model, so a moved alias rolls out (annotate the
    /// ModelDeployment with mizzen.dev/resolve to look at once).
    #[arg(long, env = "MIZZEN_REGISTRY_POLL_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    registry_poll_seconds: u64,
    /// Seconds between checks for the CRDs while they are missing.
    #[arg(long, env = "MIZZEN_CRD_POLL_SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=300))]
    crd_poll_seconds: u64,
    /// Run the controllers only while holding a coordination.k8s.io Lease, so several replicas can run with
    /// one acting and the others standing by.
    #[arg(long, env = "MIZZEN_LEADER_ELECTION")]
    leader_election: bool,
    /// The Lease's name.
    #[arg(long, env = "MIZZEN_LEASE_NAME", default_value = "mizzen-operator")]
    lease_name: String,
    /// The Lease's namespace (default: the pod's namespace, POD_NAMESPACE, else `default`).
    #[arg(long, env = "MIZZEN_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long the Lease lasts without a renewal: the longest a standby waits after the leader dies.
    #[arg(long, env = "MIZZEN_LEASE_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    lease_seconds: u64,
}

impl RunArgs {
    /// The leader election asked for, if any: this replica's identity is its pod's name (POD_NAME), else
    /// the host's name and the process id.
    fn election(&self) -> Option<leader::Election> {
        self.leader_election.then(|| leader::Election {
            lease: self.lease_name.clone(),
            namespace: self
                .lease_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "default".into()),
            identity: std::env::var("POD_NAME").unwrap_or_else(|_| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            }),
            duration_seconds: self.lease_seconds,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mizzen_common::tls::install_crypto_provider();
    match Cli::parse().command {
        Command::Crd { out_dir: None } => print!("{}", crd::all_yaml()?),
        Command::Crd { out_dir: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for c in crd::all() {
                let path = dir.join(crd::file_name(&c));
                std::fs::write(&path, crd::to_yaml(&c)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Run(args) => run(*args).await?,
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_filter).map_err(anyhow::Error::msg)?;
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            let options = KubeConfigOptions { context: args.context.clone(), ..Default::default() };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None => kube::Config::infer().await.context("no kubeconfig and not in a cluster")?,
    };
    let client = kube::Client::try_from(config)?;

    let mut registry = Registry::with_prefix("mizzen_operator");
    let metrics = Metrics::default().register(&mut registry);
    let state = server::State::new(registry);

    let shutdown = shutdown::on_signal();

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /health and /ready");
    let web = axum::serve(listener, server::router(state.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());

    let election = args.election();
    let settings = controller::Settings {
        scope: controller::Scope { namespace: args.namespace },
        defaults: controller::Defaults {
            serve_image: args.serve_image,
            train_image: args.train_image,
            features_image: args.features_image,
            registry_url: args.registry_url,
            registry_token_secret: args
                .registry_token_secret
                .filter(|name| !name.is_empty())
                .map(|name| (name, args.registry_token_secret_key)),
        },
        concurrency: args.concurrency,
        crd_poll_interval: Duration::from_secs(args.crd_poll_seconds),
        registry_token: args.registry_token,
        registry_poll: Duration::from_secs(args.registry_poll_seconds),
    };
    let controllers = async {
        let result = lead(client, state, metrics, settings, election, &shutdown).await;
        // If the controllers stop for any reason, stop the web server too.
        shutdown.cancel();
        result
    };
    let (web, controllers) = tokio::join!(web, controllers);
    web?;
    controllers?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs the controllers until `shutdown`; with an election, only while this replica holds the lease, which
/// it releases when it stops. Losing the lease is an error: the process exits rather than act alongside the
/// new leader, and comes back as a standby.
async fn lead(
    client: kube::Client,
    state: server::State,
    metrics: Metrics,
    settings: controller::Settings,
    election: Option<leader::Election>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let Some(election) = election else {
        controller::run(client, state, metrics, settings, shutdown.clone()).await;
        return Ok(());
    };
    state.set_standby(true);
    tracing::info!(lease = %election.lease, namespace = %election.namespace, identity = %election.identity, "waiting for the lease");
    let Some(mut leadership) = leader::acquire(client.clone(), &election, shutdown)
        .await
        .with_context(|| format!("leader election on lease {}/{}", election.namespace, election.lease))?
    else {
        return Ok(());
    };
    tracing::info!(identity = %election.identity, "holding the lease: running the controllers");
    state.set_standby(false);
    let lost = tokio::select! {
        () = controller::run(client, state, metrics, settings, shutdown.clone()) => false,
        () = leadership.lost() => true,
    };
    if lost {
        anyhow::bail!("lost the lease {}/{} to another replica", election.namespace, election.lease);
    }
    leadership.release().await;
    Ok(())
}
