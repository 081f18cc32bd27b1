//! Real pods on the local cluster's real node (`hack/cluster/node.sh`): mizzen-serve from its image,
//! started by the kubelet, reached through its Service's ClusterIP (kube-proxy), by name (CoreDNS), and with
//! `kubectl logs`, `exec` and `port-forward`. Skipped when the cluster has no real node (MIZZEN_REAL_NODE=0).

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::Api;
use mizzen_api::v1alpha1::ModelDeployment;
use mizzen_e2e::{Cluster, Namespace, Operator, dns_a, http, wait_until};
use std::net::SocketAddr;
use std::time::Duration;

/// The real node's name, address (also the pods' DNS server) and the taint its pods tolerate.
const NODE: &str = "mizzen-node";
const NODE_IP: &str = "10.85.0.1";
const ON_THE_REAL_NODE: &str = r#"
    nodeSelector: {mizzen.dev/node: real}
    tolerations: [{key: mizzen.dev/node, operator: Equal, value: real, effect: NoSchedule}]"#;

const SETOSA: &str =
    r#"{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;

/// Whether the cluster has the real node; if not, the test says it is skipped.
async fn real_node(cluster: &Cluster) -> Result<bool> {
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    if nodes.get_opt(NODE).await?.is_none() {
        println!("    skipped: the cluster has no real node (MIZZEN_REAL_NODE=0, or kind)");
        return Ok(false);
    }
    Ok(true)
}

/// A PersistentVolume on the real node's disk holding the test models, and a claim `models` bound to it.
fn given_models_on_a_volume(cluster: &Cluster, ns: &Namespace) -> Result<()> {
    let dir = cluster.kubeconfig.parent().context("cluster dir")?.join("volumes").join(&ns.name);
    std::fs::create_dir_all(&dir)?;
    let models =
        mizzen_common::testing::generated("services/inference/models/make_models.py", "models", "inputs.npz");
    std::fs::copy(models.join("iris_logreg.onnx"), dir.join("iris.onnx"))?;
    // The pods run as uid 65532.
    use std::os::unix::fs::PermissionsExt;
    for p in [dir.parent().context("volumes")?, &dir] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    }
    cluster.kubectl_with_input(&["apply", "-f", "-"], Some(&format!(
        r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{name: models-{ns}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  claimRef: {{namespace: {ns}, name: models}}
  hostPath: {{path: {dir}, type: Directory}}
  nodeAffinity:
    required:
      nodeSelectorTerms: [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{NODE}]}}]}}]
"#,
        ns = ns.name,
        dir = dir.display()
    )))
    .ok()?;
    ns.apply(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: models}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  resources: {requests: {storage: 1Gi}}
"#,
    )?;
    Ok(())
}

/// A ModelDeployment on the real node serves predictions from real mizzen-serve pods: through its
/// Service's ClusterIP, through `kubectl port-forward`, with `kubectl logs` and `kubectl exec` working on
/// its pod and its Service's name resolving through the cluster's DNS.
pub(crate) async fn model_deployment_serves_from_real_pods(cluster: Cluster) -> Result<()> {
    if !real_node(&cluster).await? {
        return Ok(());
    }
    let ns = cluster.namespace("real-serve")?;
    given_models_on_a_volume(&cluster, &ns)?;
    let _operator = Operator::start(&cluster, &["--namespace", &ns.name])?;
    ns.apply(&format!(
        r#"
apiVersion: mizzen.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: iris}}
spec:
  model: {{uri: "pvc://models/iris.onnx"}}
  replicas: 1
  server:{ON_THE_REAL_NODE}
"#
    ))?;
    ns.wait_for::<ModelDeployment, _>("iris", "Ready=True on the real node", Duration::from_secs(120), |s| {
        (s.available_replicas == 1 && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            .then_some(())
    })
    .await?;
    let pods = ns.list::<Pod>().await?;
    let pod = pods.first().context("no pod")?;
    let pod_name = pod.metadata.name.clone().context("pod name")?;
    let on = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    ensure!(on.as_deref() == Some(NODE), "the pod runs on {on:?}");

    // Through the Service's ClusterIP (kube-proxy's rules), from this machine.
    let service = ns.get::<Service>("iris").await?;
    let cluster_ip = service.spec.and_then(|s| s.cluster_ip).context("the Service has no ClusterIP")?;
    let addr: SocketAddr = format!("{cluster_ip}:8080").parse()?;
    // kube-proxy programs the Service's rules shortly after its endpoints are ready.
    let (code, body) = wait_until("the ClusterIP to answer", Duration::from_secs(20), || async {
        http(addr, "POST", "/v2/models/iris/infer", Some(SETOSA)).await.ok()
    })
    .await?;
    ensure!(code == 200 && body.contains("\"outputs\""), "{code} {body}");

    // By name, through the cluster's DNS (the server every pod's resolv.conf names).
    let dns: SocketAddr = format!("{NODE_IP}:53").parse()?;
    let name = format!("iris.{}.svc.cluster.local", ns.name);
    let addrs = dns_a(dns, &name).await?;
    ensure!(
        addrs.iter().any(|a| a.to_string() == cluster_ip),
        "{name} resolves to {addrs:?}, not {cluster_ip}"
    );

    // kubectl logs and exec reach the kubelet.
    let logs = ns.kubectl(&["logs", &pod_name]).ok()?;
    ensure!(logs.contains("iris"), "the pod's log does not mention the model:\n{logs}");
    let version = ns.kubectl(&["exec", &pod_name, "--", "/usr/local/bin/mizzen-serve", "--version"]).ok()?;
    ensure!(version.contains("mizzen-serve"), "{version}");

    // kubectl port-forward to the Service.
    let forward = PortForward::start(&cluster, &ns, "svc/iris", 8080).await?;
    let (code, body) = http(forward.addr, "POST", "/v2/models/iris/infer", Some(SETOSA)).await?;
    ensure!(code == 200 && body.contains("\"outputs\""), "through port-forward: {code} {body}");
    Ok(())
}

/// `kubectl port-forward TARGET :PORT`, stopped when dropped.
struct PortForward {
    child: std::process::Child,
    addr: SocketAddr,
}

impl PortForward {
    async fn start(cluster: &Cluster, ns: &Namespace, target: &str, port: u16) -> Result<Self> {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(mizzen_e2e::kubectl_bin())
            .env("KUBECONFIG", &cluster.kubeconfig)
            .args(["-n", &ns.name, "port-forward", target, &format!(":{port}"), "--address", "127.0.0.1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("port-forward's output")?;
        // Its first line says where it listens ("Forwarding from 127.0.0.1:PORT -> 8080"); the rest is read
        // and dropped until it ends, so it never writes to a closed pipe.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            lines.for_each(drop);
        });
        let line = tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .context("port-forward said nothing in 20 s")??
            .context("port-forward ended")??;
        let addr = line
            .split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:"))
            .with_context(|| format!("unexpected port-forward output: {line}"))?
            .parse()?;
        let forward = Self { child, addr };
        wait_until("port-forward to listen", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(forward.addr).await.ok().map(drop)
        })
        .await?;
        Ok(forward)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
