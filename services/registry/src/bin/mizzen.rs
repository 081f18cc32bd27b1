//! `mizzen`: the model registry for people. Publish an ONNX file trained anywhere (scikit-learn's skl2onnx
//! output, say), list models and versions, move an alias (which rolls out every ModelDeployment of
//! `registry://NAME@ALIAS`), and show a version with its lineage.
//!
//! ```text
//! mizzen push model.onnx --name iris --alias champion
//! mizzen models
//! mizzen versions iris
//! mizzen alias iris champion 2
//! mizzen show iris@champion
//! ```

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use mizzen_common::registry::{self, Client};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "mizzen", version, about = "Publish, list and promote models in Mizzen's model registry")]
struct Cli {
    /// The registry (mizzen-registry, or an MLflow tracking server with the artifact proxy).
    #[arg(long, global = true, env = "MIZZEN_REGISTRY_URL", default_value = "http://127.0.0.1:5000")]
    registry_url: String,
    /// Bearer token for writes, when the registry asks for one.
    #[arg(long, global = true, env = "MIZZEN_REGISTRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish an ONNX file as the next version of a model (logged as a run, then registered).
    Push {
        /// The ONNX file.
        file: PathBuf,
        /// The registered model's name (created when new).
        #[arg(long)]
        name: String,
        /// Move this alias to the new version (promotion: ModelDeployments of NAME@ALIAS roll it out).
        #[arg(long)]
        alias: Option<String>,
        /// The experiment the run is logged under.
        #[arg(long, default_value = "mizzen-push")]
        experiment: String,
        /// A tag on the version, KEY=VALUE (repeatable): where the model came from, who made it.
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// The version's description.
        #[arg(long)]
        description: Option<String>,
    },
    /// List the registered models, their newest version and their aliases.
    Models,
    /// List a model's versions, with their aliases, sha256 and the run that made them.
    Versions { name: String },
    /// Point ALIAS of NAME at VERSION (a move, when it pointed elsewhere).
    Alias { name: String, alias: String, version: u64 },
    /// Show one version (NAME@ALIAS or NAME/VERSION): its file, digest, aliases, tags and lineage, and the
    /// run's params and metrics.
    Show {
        reference: String,
        /// Print the registry's JSON instead.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    mizzen_common::tls::install_crypto_provider();
    let cli = Cli::parse();
    let client = Client::new(&cli.registry_url, cli.token.clone());
    match run(&client, cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mizzen: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(client: &Client, command: Command) -> Result<()> {
    match command {
        Command::Push { file, name, alias, experiment, tags, description } => {
            push(client, &file, &name, alias.as_deref(), &experiment, &tags, description).await
        }
        Command::Models => models(client).await,
        Command::Versions { name } => versions(client, &name).await,
        Command::Alias { name, alias, version } => {
            let before = client.get("registered-models/alias", &[("name", &name), ("alias", &alias)]).await;
            let body = json!({"name": name, "alias": alias, "version": version.to_string()});
            client.post("registered-models/alias", body).await?;
            match before.ok().and_then(|b| b["model_version"]["version"].as_str().map(str::to_string)) {
                Some(old) if old != version.to_string() => println!("{name}@{alias}: {old} -> {version}"),
                _ => println!("{name}@{alias}: {version}"),
            }
            Ok(())
        }
        Command::Show { reference, json } => show(client, &reference, json).await,
    }
}

/// The file as an ONNX model: non-empty and a protobuf ModelProto (its first field, `ir_version`, is a varint
/// with tag 1), so a wrong file is refused before anything is written.
fn read_onnx(file: &PathBuf) -> Result<Bytes> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    if bytes.first() != Some(&0x08) {
        bail!(
            "{} is not an ONNX model (an ONNX file is a protobuf ModelProto that starts with its ir_version)",
            file.display()
        );
    }
    Ok(Bytes::from(bytes))
}

async fn push(
    client: &Client,
    file: &PathBuf,
    name: &str,
    alias: Option<&str>,
    experiment: &str,
    tags: &[String],
    description: Option<String>,
) -> Result<()> {
    let mut version_tags = Vec::new();
    for kv in tags {
        let (k, v) = kv.split_once('=').with_context(|| format!("--tag {kv}: expected KEY=VALUE"))?;
        version_tags.push((k.trim().to_string(), v.to_string()));
    }
    let bytes = read_onnx(file)?;
    let sha = mizzen_common::sha256_hex(&bytes);
    let file_name = file.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
    version_tags.push(("mizzen.pushed.file".into(), file_name.clone()));
    let experiment_id = client.experiment(experiment).await?;
    let run = client
        .create_run(&experiment_id, &file_name, &[("mlflow.runName".into(), file_name.clone())])
        .await?;
    client.upload(&run.artifact_uri, "model/model.onnx", bytes).await?;
    client.end_run(&run.id, "FINISHED").await?;
    let source = format!("{}/model", run.artifact_uri);
    let version = client.register(name, &source, &run.id, &version_tags, alias).await?;
    if let Some(d) = description {
        let body = json!({"name": name, "version": version, "description": d});
        client.patch("model-versions/update", body).await?;
    }
    println!("registry://{name}/{version} sha256:{sha}");
    if let Some(alias) = alias {
        println!("{name}@{alias}: {version}");
    }
    Ok(())
}

/// Every page of a search: the items under `key`.
async fn search_all(client: &Client, op: &str, key: &str, filter: Option<&str>) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let mut query = vec![("max_results", "100")];
        if let Some(f) = filter {
            query.push(("filter", f));
        }
        if !token.is_empty() {
            query.push(("page_token", &token));
        }
        let page = client.get(op, &query).await?;
        items.extend(page[key].as_array().cloned().unwrap_or_default());
        match page["next_page_token"].as_str().filter(|t| !t.is_empty()) {
            Some(next) => token = next.to_string(),
            None => return Ok(items),
        }
    }
}

fn aliases_of(model: &Value, version: Option<&str>) -> String {
    let aliases = model["aliases"].as_array().cloned().unwrap_or_default();
    let names: Vec<String> = aliases
        .iter()
        .filter(|a| version.is_none_or(|v| a["version"] == v))
        .map(|a| match version {
            Some(_) => a["alias"].as_str().unwrap_or_default().to_string(),
            None => format!(
                "{}={}",
                a["alias"].as_str().unwrap_or_default(),
                a["version"].as_str().unwrap_or_default()
            ),
        })
        .collect();
    if names.is_empty() { "-".into() } else { names.join(",") }
}

fn tag<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v["tags"].as_array()?.iter().find(|t| t["key"] == key)?["value"].as_str()
}

async fn models(client: &Client) -> Result<()> {
    let models = search_all(client, "registered-models/search", "registered_models", None).await?;
    println!("{:<32} {:>7} ALIASES", "NAME", "LATEST");
    for m in models {
        let latest = m["latest_versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["version"].as_str()?.parse::<u64>().ok())
            .max()
            .map_or("-".to_string(), |v| v.to_string());
        println!("{:<32} {:>7} {}", m["name"].as_str().unwrap_or_default(), latest, aliases_of(&m, None));
    }
    Ok(())
}

async fn versions(client: &Client, name: &str) -> Result<()> {
    let model = client.get("registered-models/get", &[("name", name)]).await?;
    let model = &model["registered_model"];
    let filter = format!("name = '{}'", name.replace('\'', ""));
    let mut versions = search_all(client, "model-versions/search", "model_versions", Some(&filter)).await?;
    versions.sort_by_key(|v| v["version"].as_str().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0));
    println!("{:>7} {:<20} {:<12} {:>10} {:<24} RUN", "VERSION", "ALIASES", "SHA256", "SIZE", "CREATED");
    for v in versions {
        let version = v["version"].as_str().unwrap_or_default();
        let sha = tag(&v, "mizzen.artifact.sha256").map_or("-".to_string(), |s| s.chars().take(12).collect());
        let created = v["creation_timestamp"].as_i64().and_then(utc).unwrap_or_else(|| "-".into());
        println!(
            "{:>7} {:<20} {:<12} {:>10} {:<24} {}",
            version,
            aliases_of(model, Some(version)),
            sha,
            tag(&v, "mizzen.artifact.size").unwrap_or("-"),
            created,
            v["run_id"].as_str().filter(|r| !r.is_empty()).unwrap_or("-"),
        );
    }
    Ok(())
}

/// Milliseconds since the epoch as RFC 3339 (UTC, seconds).
fn utc(ms: i64) -> Option<String> {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    Some(format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60))
}

async fn show(client: &Client, reference: &str, as_json: bool) -> Result<()> {
    let uri = if reference.starts_with("registry://") {
        reference.to_string()
    } else {
        format!("registry://{reference}")
    };
    let (name, r) = registry::parse(&uri)?;
    let answer = match r {
        registry::Ref::Alias(alias) => {
            client.get("registered-models/alias", &[("name", &name), ("alias", &alias)]).await?
        }
        registry::Ref::Version(v) => {
            client.get("model-versions/get", &[("name", &name), ("version", &v.to_string())]).await?
        }
    };
    let v = &answer["model_version"];
    let version = v["version"].as_str().unwrap_or_default();
    let run_id = v["run_id"].as_str().filter(|r| !r.is_empty());
    let run = match run_id {
        Some(id) => client.get("runs/get", &[("run_id", id)]).await.ok(),
        None => None,
    };
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"model_version": v, "run": run.map(|r| r["run"].clone())}))?
        );
        return Ok(());
    }
    let model = client.get("registered-models/get", &[("name", &name)]).await?;
    let resolved = client.resolve(&format!("registry://{name}/{version}")).await?;
    println!("registry://{name}/{version}");
    println!("  aliases:     {}", aliases_of(&model["registered_model"], Some(version)));
    println!("  status:      {}", v["status"].as_str().unwrap_or_default());
    println!("  source:      {}", v["source"].as_str().unwrap_or_default());
    println!("  file:        {}", resolved.file);
    println!("  sha256:      {}", resolved.sha256.as_deref().unwrap_or("-"));
    println!("  size:        {}", tag(v, "mizzen.artifact.size").unwrap_or("-"));
    if let Some(d) = v["description"].as_str().filter(|d| !d.is_empty()) {
        println!("  description: {d}");
    }
    if let Some(sig) = tag(v, "mizzen.onnx.signature").and_then(|t| serde_json::from_str::<Value>(t).ok()) {
        for side in ["inputs", "outputs"] {
            println!("  {side}:");
            for t in sig[side].as_array().into_iter().flatten() {
                let shape: Vec<String> =
                    t["shape"].as_array().into_iter().flatten().map(|d| d.to_string()).collect();
                let (name, datatype) =
                    (t["name"].as_str().unwrap_or_default(), t["datatype"].as_str().unwrap_or_default());
                println!("    {name:<14} {datatype} [{}]", shape.join(", "));
            }
        }
    }
    println!("  lineage:");
    for (key, label) in [
        ("mizzen.trainingjob", "trainingJob"),
        ("mizzen.dataset.uri", "dataset"),
        ("mizzen.dataset.sha256", "datasetSha256"),
        ("mizzen.pushed.file", "pushedFile"),
    ] {
        if let Some(value) = tag(v, key) {
            println!("    {label:<14} {value}");
        }
    }
    if let Some(id) = run_id {
        println!("    {:<14} {id}", "run");
    }
    let others: Vec<&Value> = v["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| !t["key"].as_str().unwrap_or("").starts_with("mizzen."))
        .collect();
    if !others.is_empty() {
        println!("  tags:");
        for t in others {
            println!(
                "    {} = {}",
                t["key"].as_str().unwrap_or_default(),
                t["value"].as_str().unwrap_or_default()
            );
        }
    }
    if let Some(run) = run {
        for (kind, label) in [("params", "params"), ("metrics", "metrics")] {
            let items = run["run"]["data"][kind].as_array().cloned().unwrap_or_default();
            if !items.is_empty() {
                println!("  {label}:");
                for p in items {
                    let value = p["value"].as_str().map_or_else(|| p["value"].to_string(), str::to_string);
                    println!("    {} = {value}", p["key"].as_str().unwrap_or_default());
                }
            }
        }
    }
    Ok(())
}
