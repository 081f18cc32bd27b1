//! The e2e harness: a real cluster (the local one from `make cluster-up`, or kind), the real `kubectl`,
//! the operator as a real process, one namespace per test, bounded waits, and a recorder that samples
//! Service selectors and ReplicaSet readiness over time for rollout invariants.
//!
//! Tests read Given / When / Then: given objects, when something is applied or changed, then what
//! `kubectl` would show. Mizzen's statuses are read typed ([`Namespace::status`], [`Namespace::wait_for`]),
//! so a renamed status field is a compile error in the suite, not a jsonpath that quietly reads nothing.

pub mod history;
pub mod recorder;
pub mod runner;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::NamespaceResourceScope;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::object::HasStatus;
use kube::{Api, Client, Resource};
use mizzen_api::v1alpha1::common::Condition;
use mizzen_api::v1alpha1::{
    FeatureSet, FeatureSetStatus, ModelDeployment, ModelDeploymentStatus, TrainingJob, TrainingJobStatus,
};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use mizzen_common::testing::repo_root;

/// A connection to the test cluster.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub kubeconfig: PathBuf,
}

impl Cluster {
    /// Connects with `$MIZZEN_KUBECONFIG`, else the local cluster's `.cluster/kubeconfig`.
    pub async fn connect() -> Result<Self> {
        mizzen_common::tls::install_crypto_provider();
        let kubeconfig = std::env::var_os("MIZZEN_KUBECONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".cluster/kubeconfig"));
        if !kubeconfig.exists() {
            bail!("no kubeconfig at {}: start a cluster with `make cluster-up`", kubeconfig.display());
        }
        let config = Kubeconfig::read_from(&kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await?;
        let client = Client::try_from(config)?;
        client.apiserver_version().await.context("the cluster does not answer")?;
        Ok(Self { client, kubeconfig })
    }

    /// Runs `kubectl` against the cluster.
    pub fn kubectl(&self, args: &[&str]) -> Kubectl {
        self.kubectl_with_input(args, None)
    }

    /// Runs `kubectl` with `input` on its standard input.
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> Kubectl {
        self.run("kubectl", args, input)
    }

    /// Runs `helm` against the cluster.
    pub fn helm(&self, args: &[&str]) -> Kubectl {
        self.run("helm", args, None)
    }

    /// Runs the cluster tool `program` (see [`tool_bin`]) with `args`, and `input` on its standard input.
    fn run(&self, program: &str, args: &[&str], input: Option<&str>) -> Kubectl {
        let mut cmd = Command::new(tool_bin(program));
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd.spawn().and_then(|mut child| {
            if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
                stdin.write_all(text.as_bytes())?;
            }
            child.wait_with_output()
        });
        let args = format!("{program} {}", args.join(" "));
        match out {
            Ok(o) => Kubectl {
                args,
                success: o.status.success(),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            },
            Err(e) => Kubectl {
                args,
                success: false,
                stdout: String::new(),
                stderr: format!("cannot run {program}: {e}"),
            },
        }
    }

    /// A fresh namespace for one test, deleted when dropped.
    pub fn namespace(&self, test: &str) -> Result<Namespace> {
        let suffix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos() % 1_000_000;
        let name = format!("e2e-{}-{suffix}", test.replace('_', "-").chars().take(40).collect::<String>());
        self.kubectl(&["create", "namespace", &name]).ok()?;
        Ok(Namespace { name, cluster: self.clone() })
    }
}

/// The cluster tool `program` (`kubectl`, `helm`): from `$KUBECTL`/`$HELM`, else the one `make cluster-up`
/// built, else the one on PATH.
pub fn tool_bin(program: &str) -> PathBuf {
    if let Some(k) = std::env::var_os(program.to_uppercase()) {
        return PathBuf::from(k);
    }
    let out = Command::new(repo_root().join("hack/cluster/build.sh")).arg("--print-bin-dirs").output();
    if let Ok(out) = out {
        for dir in String::from_utf8_lossy(&out.stdout).trim().split(':') {
            let candidate = Path::new(dir).join(program);
            if candidate.exists() {
                return candidate;
            }
        }
    }
    PathBuf::from(program)
}

/// What one `kubectl` (or `helm`) run did.
#[derive(Debug, Clone)]
pub struct Kubectl {
    pub args: String,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    /// Its standard output if it succeeded, else an error with what it printed.
    pub fn ok(self) -> Result<String> {
        if self.success {
            Ok(self.stdout)
        } else {
            bail!("{} failed: {}{}", self.args, self.stderr, self.stdout)
        }
    }

    /// Its standard error if it failed; an error if it succeeded.
    pub fn refused(self) -> Result<String> {
        if self.success {
            bail!("{} succeeded, expected a refusal: {}", self.args, self.stdout)
        } else {
            Ok(self.stderr)
        }
    }
}

/// A namespace that lives as long as one test.
pub struct Namespace {
    pub name: String,
    cluster: Cluster,
}

impl Namespace {
    /// `kubectl -n NS ARGS`.
    pub fn kubectl(&self, args: &[&str]) -> Kubectl {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        self.cluster.kubectl(&all)
    }

    /// Given: `kubectl apply -f -` of `yaml` in this namespace.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.cluster.kubectl_with_input(&["-n", &self.name, "apply", "-f", "-"], Some(yaml)).ok()
    }

    /// `kubectl apply` that must be refused; returns what kubectl printed.
    pub fn apply_refused(&self, yaml: &str) -> Result<String> {
        self.cluster.kubectl_with_input(&["-n", &self.name, "apply", "-f", "-"], Some(yaml)).refused()
    }

    /// `kubectl get KIND NAME -o jsonpath=PATH`.
    pub fn jsonpath(&self, kind: &str, name: &str, path: &str) -> Result<String> {
        self.kubectl(&["get", kind, name, "-o", &format!("jsonpath={path}")]).ok()
    }

    /// KIND/NAME as the API server has it, typed (any Kubernetes kind).
    pub async fn get<K>(&self, name: &str) -> Result<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    {
        let api: Api<K> = Api::namespaced(self.cluster.client.clone(), &self.name);
        api.get(name).await.with_context(|| format!("get {}/{name}", K::kind(&())))
    }

    /// Every object of a kind in this namespace, typed (any Kubernetes kind).
    pub async fn list<K>(&self) -> Result<Vec<K>>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    {
        let api: Api<K> = Api::namespaced(self.cluster.client.clone(), &self.name);
        Ok(api.list(&Default::default()).await.with_context(|| format!("list {}", K::kind(&())))?.items)
    }

    /// How many times an event with this reason was recorded about the object `name`: events of the same
    /// reason are one Event whose series counts the repeats.
    pub async fn events(&self, name: &str, reason: &str) -> Result<i32> {
        let events = self.list::<k8s_openapi::api::events::v1::Event>().await?;
        let about = |e: &&k8s_openapi::api::events::v1::Event| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        };
        Ok(events.iter().filter(about).map(|e| e.series.as_ref().map_or(1, |s| s.count)).sum())
    }

    /// The status of a Mizzen object (empty while none is written).
    pub async fn status<K: Kind>(&self, name: &str) -> Result<K::Status> {
        Ok(self.get::<K>(name).await?.status().cloned().unwrap_or_default())
    }

    /// Then: polls the status of a Mizzen object until `probe` finds what it looks for, for at most
    /// `timeout`; a read that fails is retried like a probe that finds nothing.
    pub async fn wait_for<K: Kind, T>(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        probe: impl Fn(&K::Status) -> Option<T>,
    ) -> Result<T> {
        let what = format!("{} {name}: {what}", K::kind(&()));
        wait_until(&what, timeout, || async { probe(&self.status::<K>(name).await.ok()?) }).await
    }

    /// Then: waits until condition `type_` of a Mizzen object has `status`, and returns its reason.
    pub async fn wait_for_condition<K: Kind>(&self, name: &str, type_: &str, status: &str) -> Result<String> {
        self.wait_for_condition_within::<K>(name, type_, status, Duration::from_secs(30)).await
    }

    /// [`Namespace::wait_for_condition`] with its own timeout.
    pub async fn wait_for_condition_within<K: Kind>(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        timeout: Duration,
    ) -> Result<String> {
        let what = format!("{type_}={status}");
        self.wait_for::<K, _>(name, &what, timeout, |s| {
            K::condition(s, type_).filter(|c| c.status == status).map(|c| c.reason.clone())
        })
        .await
    }
}

/// A Mizzen kind, as the suite reads it: typed, with a status that holds conditions.
pub trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + HasStatus<Status: Clone + Default>
    + Clone
    + DeserializeOwned
    + Debug
{
    fn conditions(status: &Self::Status) -> &[Condition];

    /// The condition of this type, if the status has one.
    fn condition<'a>(status: &'a Self::Status, type_: &str) -> Option<&'a Condition> {
        Self::conditions(status).iter().find(|c| c.type_ == type_)
    }
}

macro_rules! kinds {
    ($($kind:ty => $status:ty),*) => {$(
        impl Kind for $kind {
            fn conditions(status: &$status) -> &[Condition] {
                &status.conditions
            }
        }
    )*};
}

kinds!(ModelDeployment => ModelDeploymentStatus, TrainingJob => TrainingJobStatus, FeatureSet => FeatureSetStatus);

impl Drop for Namespace {
    fn drop(&mut self) {
        // Do not wait: deletion finishes in the background, and the next cluster-up starts clean anyway.
        let _ = self.cluster.kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The operator as a real process against the cluster; stopped with SIGTERM when dropped.
pub struct Operator {
    child: std::process::Child,
    pub addr: std::net::SocketAddr,
    log: PathBuf,
}

impl Operator {
    /// Starts `mizzen-operator run` with the cluster's kubeconfig on a free loopback port.
    pub fn start(cluster: &Cluster, extra: &[&str]) -> Result<Self> {
        let bin = operator_bin()?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = std::env::temp_dir().join(format!("mizzen-operator-e2e-{}.log", addr.port()));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(&bin)
            .arg("run")
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(["--listen", &addr.to_string(), "--crd-poll-seconds", "1"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self { child, addr, log })
    }

    /// `GET path` on the operator's HTTP server: status code and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.addr, path).await
    }

    /// What the operator logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its resident memory now, in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
        line.split_whitespace().nth(1).context("an empty VmRSS")?.parse().context("VmRSS")
    }

    /// Kills it with SIGKILL (no chance to clean up) and waits for it to be gone.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                bail!("the operator did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.terminate(Duration::from_secs(5));
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The operator binary: `$MIZZEN_OPERATOR_BIN`, else next to this test binary's target directory.
fn operator_bin() -> Result<PathBuf> {
    built_bin("mizzen-operator", "MIZZEN_OPERATOR_BIN")
}

/// mizzen-train, built next to the operator (`make e2e` builds both).
pub fn trainer_bin() -> Result<PathBuf> {
    built_bin("mizzen-train", "MIZZEN_TRAIN_BIN")
}

/// A workspace binary: `$ENV` if set, else the one in this test's target directory.
fn built_bin(name: &str, env: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    // This test runs from TARGET/debug/deps/; the binaries are in TARGET/debug/.
    let exe = std::env::current_exe()?;
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join(name));
    match bin {
        Some(b) if b.exists() => Ok(b),
        _ => bail!("{name} is not built: run `cargo build -p {name}` (make e2e does)"),
    }
}

/// A minimal HTTP/1.0 GET, enough for health endpoints, without pulling an HTTP client into the tests.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    http(addr, "GET", path, None).await
}

/// A minimal HTTP/1.0 request with an optional JSON body: status code and body.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> Result<(u16, String)> {
    http_with(addr, method, path, json, &[]).await
}

/// [`http`] with extra request headers.
pub async fn http_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<(u16, String)> {
    http_within(addr, (method, path, json, headers), Duration::from_secs(2), Duration::from_secs(5)).await
}

/// A request (method, path, JSON body, headers) that fails when the connection is not made within
/// `connect` or the whole answer has not come within `answer` after it was sent; the error says which.
pub async fn http_within(
    addr: std::net::SocketAddr,
    (method, path, json, headers): (&str, &str, Option<&str>, &[(&str, &str)]),
    connect: Duration,
    answer: Duration,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(connect, tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("no connection to {addr} in {connect:?}"))??;
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    if let Some(body) = json {
        request += &format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    } else {
        request += "\r\n";
    }
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(answer, stream.read_to_end(&mut buf))
        .await
        .with_context(|| format!("no complete answer from {addr} in {answer:?}"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code =
        head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("malformed HTTP response")?;
    Ok((code, body.to_string()))
}

/// The IPv4 addresses a DNS server gives for `name` (one UDP query for its A records), to check what pods
/// resolve through the cluster's DNS.
pub async fn dns_a(server: std::net::SocketAddr, name: &str) -> Result<Vec<std::net::Ipv4Addr>> {
    let mut query = vec![0x4d, 0x5a, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        ensure!(!label.is_empty() && label.len() < 64, "bad DNS name {name:?}");
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
    socket.send_to(&query, server).await?;
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await??;
    let msg = &buf[..n];
    let at = |i: usize| msg.get(i).copied().context("short DNS answer");
    let u16_at = |i: usize| -> Result<usize> { Ok(((at(i)? as usize) << 8) | at(i + 1)? as usize) };
    ensure!(u16_at(0)? == 0x4d5a && at(3)? & 0x0f == 0, "DNS error for {name}: rcode {}", at(3)? & 0x0f);
    let skip_name = |mut i: usize| -> Result<usize> {
        loop {
            match at(i)? {
                0 => return Ok(i + 1),
                l if l & 0xc0 == 0xc0 => return Ok(i + 2),
                l => i += 1 + l as usize,
            }
        }
    };
    let answers = u16_at(6)?;
    let mut i = skip_name(12)? + 4;
    let mut addrs = vec![];
    for _ in 0..answers {
        i = skip_name(i)?;
        let (kind, len) = (u16_at(i)?, u16_at(i + 8)?);
        if kind == 1 && len == 4 {
            addrs.push(std::net::Ipv4Addr::new(at(i + 10)?, at(i + 11)?, at(i + 12)?, at(i + 13)?));
        }
        i += 10 + len;
    }
    Ok(addrs)
}

/// mizzen-registry served from this process on `ip` (a free port), its data in a temporary directory; it
/// stops when dropped.
pub struct Registry {
    pub addr: std::net::SocketAddr,
    /// The bearer token writes need, if any (this helper's own writes send it).
    token: Option<String>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub async fn start(ip: &str) -> Result<Self> {
        Self::start_with_token(ip, None).await
    }

    /// A registry on `ip` whose writes need `token` (when one is given).
    pub async fn start_with_token(ip: &str, token: Option<&str>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let token = token.map(str::to_string);
        let app = mizzen_registry::App::open(dir.path().join("data"), 1 << 30, token.clone())
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let listener = tokio::net::TcpListener::bind(format!("{ip}:0")).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, mizzen_registry::router(app)).await;
        });
        Ok(Self { addr, token, task, _dir: dir })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET /api/2.0/mlflow/{op}?{query}`, which must answer 200.
    pub async fn get(&self, op: &str, query: &str) -> Result<serde_json::Value> {
        let (code, body) = http(self.addr, "GET", &format!("/api/2.0/mlflow/{op}?{query}"), None).await?;
        ensure!(code == 200, "GET {op}?{query}: {code} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// `POST /api/2.0/mlflow/{op}` with `body`, which must answer 200.
    pub async fn post(&self, op: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        let (code, answer) = self.write(&format!("/api/2.0/mlflow/{op}"), &body.to_string()).await?;
        ensure!(code == 200, "POST {op} {body}: {code} {answer}");
        Ok(serde_json::from_str(&answer)?)
    }

    /// `POST path` with a JSON body, carrying the token when there is one.
    async fn write(&self, path: &str, body: &str) -> Result<(u16, String)> {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
        http_with(self.addr, "POST", path, Some(body), &headers).await
    }

    /// Registers `source` as the next version of `name` and points `alias` at it; the version.
    pub async fn register(&self, name: &str, source: &str, alias: &str) -> Result<String> {
        let created = self
            .write("/api/2.0/mlflow/registered-models/create", &serde_json::json!({"name": name}).to_string())
            .await?;
        ensure!(created.0 == 200 || created.1.contains("RESOURCE_ALREADY_EXISTS"), "{created:?}");
        let v =
            self.post("model-versions/create", serde_json::json!({"name": name, "source": source})).await?;
        let version = v["model_version"]["version"].as_str().context("no version")?.to_string();
        let alias = serde_json::json!({"name": name, "alias": alias, "version": version});
        self.post("registered-models/alias", alias).await?;
        Ok(version)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A small random generator (splitmix64) for tests that pick moments and operations at random. Its seed
/// comes from `$MIZZEN_CHAOS_SEED` or the clock and is printed, so a failing run's choices can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(test: &str) -> Self {
        let seed =
            std::env::var("MIZZEN_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("    {test}: MIZZEN_CHAOS_SEED={seed}");
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A duration between `min` and `max` milliseconds.
    pub fn millis(&mut self, min: u64, max: u64) -> Duration {
        Duration::from_millis(min + self.below(max - min + 1))
    }
}
