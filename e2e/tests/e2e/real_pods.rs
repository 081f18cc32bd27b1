//! Real pods on the local cluster's real node (`hack/cluster/node.sh`): mizzen-serve from its image,
//! started by the kubelet, reached through its Service's ClusterIP (kube-proxy), by name (CoreDNS), and with
//! `kubectl logs`, `exec` and `port-forward`. Skipped when the cluster has no real node (MIZZEN_REAL_NODE=0).

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::Api;
use mizzen_api::v1alpha1::model_deployment::{ModelDeploymentPhase, ModelDeploymentStatus};
use mizzen_api::v1alpha1::{ModelDeployment, TrainingJob};
use mizzen_e2e::{Cluster, Namespace, Operator, dns_a, http, http_within, wait_until};
use std::net::SocketAddr;
use std::time::Duration;

/// The real node's name, address (also the pods' DNS server) and the taint its pods tolerate.
pub(crate) const NODE: &str = "mizzen-node";
pub(crate) const NODE_IP: &str = "10.85.0.1";
pub(crate) const ON_THE_REAL_NODE: &str = r#"
    nodeSelector: {mizzen.dev/node: real}
    tolerations: [{key: mizzen.dev/node, operator: Equal, value: real, effect: NoSchedule}]"#;

/// How long the load's clients wait for a connection and for an answer.
const CONNECT: Duration = Duration::from_secs(10);
const ANSWER: Duration = Duration::from_secs(20);

const SETOSA: &str =
    r#"{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;

/// Given the real node: the test's namespace, the models on a volume and the operator; `None` (and the
/// test says it is skipped) when the cluster has no real node.
pub(crate) async fn given_the_real_node(
    cluster: &Cluster,
    test: &str,
) -> Result<Option<(Namespace, Volume, Operator)>> {
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    if nodes.get_opt(NODE).await?.is_none() {
        println!("    skipped: the cluster has no real node (MIZZEN_REAL_NODE=0, or kind)");
        return Ok(None);
    }
    let ns = cluster.namespace(test)?;
    let volume = given_models_on_a_volume(cluster, &ns)?;
    let operator = Operator::start(cluster, &["--namespace", &ns.name])?;
    Ok(Some((ns, volume, operator)))
}

/// A PersistentVolume on the real node's disk holding the test models, and a claim `models` bound to it
/// (read-write: trainers write their models there);
/// the volume goes when the returned guard is dropped (the claim goes with the namespace).
pub(crate) fn given_models_on_a_volume(cluster: &Cluster, ns: &Namespace) -> Result<Volume> {
    let dir = cluster.kubeconfig.parent().context("cluster dir")?.join("volumes").join(&ns.name);
    std::fs::create_dir_all(&dir)?;
    let models =
        mizzen_common::testing::generated("services/inference/models/make_models.py", "models", "inputs.npz");
    std::fs::copy(models.join("iris_logreg.onnx"), dir.join("iris.onnx"))?;
    // A second version for rollouts: the same model under another name is another revision.
    std::fs::copy(models.join("iris_logreg.onnx"), dir.join("iris-v2.onnx"))?;
    // The pods run as uid 65532: they read everything, and trainers write their models here.
    use std::os::unix::fs::PermissionsExt;
    for p in [dir.parent().context("volumes")?, &dir] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    }
    host_volume(cluster, ns, "models", "", "ReadWriteMany", dir)
}

/// A PersistentVolume on the real node's disk at `dir` (owned by the pods' uid), bound ahead to the claim
/// `claim` of the namespace, with `class` as its storage class (empty: none); the claim is made here unless a
/// StatefulSet makes it (`class` not empty). The volume goes when the returned guard is dropped.
pub(crate) fn host_volume(
    cluster: &Cluster,
    ns: &Namespace,
    claim: &str,
    class: &str,
    mode: &str,
    dir: std::path::PathBuf,
) -> Result<Volume> {
    std::os::unix::fs::chown(&dir, Some(65532), Some(65532))?;
    let name = format!("{claim}-{}", ns.name);
    cluster.kubectl_with_input(&["apply", "-f", "-"], Some(&format!(
        r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {name}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [{mode}]
  storageClassName: "{class}"
  claimRef: {{namespace: {ns}, name: {claim}}}
  hostPath: {{path: {dir}, type: Directory}}
  nodeAffinity:
    required:
      nodeSelectorTerms: [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{NODE}]}}]}}]
"#,
        ns = ns.name,
        dir = dir.display()
    )))
    .ok()?;
    if class.is_empty() {
        ns.apply(&format!(
            r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {claim}}}
spec:
  accessModes: [{mode}]
  storageClassName: ""
  resources: {{requests: {{storage: 1Gi}}}}
"#
        ))?;
    }
    Ok(Volume { cluster: cluster.clone(), name, dir })
}

/// A cluster-scoped PersistentVolume on the real node's disk at `dir`, deleted on drop.
pub(crate) struct Volume {
    cluster: Cluster,
    name: String,
    pub(crate) dir: std::path::PathBuf,
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ =
            self.cluster.kubectl(&["delete", "pv", &self.name, "--wait=false", "--ignore-not-found"]).ok();
    }
}

/// A ModelDeployment on the real node serves predictions from real mizzen-serve pods: through its
/// Service's ClusterIP, through `kubectl port-forward`, with `kubectl logs` and `kubectl exec` working on
/// its pod and its Service's name resolving through the cluster's DNS.
pub(crate) async fn model_deployment_serves_from_real_pods(cluster: Cluster) -> Result<()> {
    let Some((ns, _volume, _operator)) = given_the_real_node(&cluster, "real-serve").await? else {
        return Ok(());
    };
    ns.apply(&real_mdep("pvc://models/iris.onnx", 1, "{}"))?;
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
    let addr = cluster_ip(&ns, "iris").await?;
    let cluster_ip = addr.ip().to_string();
    let body = predicted(addr, SETOSA).await?;
    ensure!(body.contains("\"outputs\""), "{body}");

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

/// Readiness is gated on the model being loaded: while its download is held (an HTTP server on the node's
/// address that answers only when the test lets it), the pod runs but stays unready and the ModelDeployment
/// waits (no replica available, nothing reported failing); once the model arrives the pod becomes Ready and
/// serves.
pub(crate) async fn a_slow_model_holds_the_pod_unready_until_it_is_loaded(cluster: Cluster) -> Result<()> {
    let Some((ns, volume, _operator)) = given_the_real_node(&cluster, "real-slow").await? else {
        return Ok(());
    };
    let server = HeldModel::start(std::fs::read(volume.dir.join("iris.onnx"))?).await?;
    ns.apply(&real_mdep(&format!("http://{}/iris.onnx", server.addr), 1, "{}"))?;
    wait_until("mizzen-serve to ask for the model", Duration::from_secs(60), || async {
        (*server.requests.borrow() > 0).then_some(())
    })
    .await
    .with_context(|| what_the_cluster_shows(&ns))?;
    // The kubelet reports the container running (its status lags what the container does)...
    let pod = wait_until("the pod reported running", Duration::from_secs(30), || async {
        let pods = ns.list::<Pod>().await.ok()?;
        let [pod] = pods.as_slice() else { return None };
        let statuses = pod.status.as_ref()?.container_statuses.clone()?;
        statuses.iter().any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some())).then(|| pod.clone())
    })
    .await?;
    let name = pod.metadata.name.context("pod name")?;
    // ... and while the model is held, several readiness probes come and go and it stays unready.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pod = ns.get::<Pod>(&name).await?;
        let status = pod.status.clone().unwrap_or_default();
        let ready =
            status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True");
        ensure!(!ready, "the pod is Ready while its model is still loading: {:?}", pod.status);
        let md = ns.status::<ModelDeployment>("iris").await?;
        let degraded = md.conditions.iter().any(|c| c.type_ == "Degraded" && c.status == "True");
        ensure!(md.available_replicas == 0 && !degraded, "{md:?}");
    }
    server.release();
    healthy(&ns, 1).await?;
    predicted(cluster_ip(&ns, "iris").await?, SETOSA).await?;
    Ok(())
}

/// An HTTP server on the node's address (which pods reach) that serves one model file, holding every GET
/// until [`HeldModel::release`]; it counts the requests it got.
struct HeldModel {
    addr: SocketAddr,
    requests: tokio::sync::watch::Receiver<usize>,
    release: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl HeldModel {
    async fn start(model: Vec<u8>) -> Result<Self> {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind((NODE_IP, 0)).await?;
        let addr = listener.local_addr()?;
        let (count, requests) = tokio::sync::watch::channel(0usize);
        let (release, released) = tokio::sync::watch::channel(false);
        let model = std::sync::Arc::new(model);
        let server = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (model, mut released) = (model.clone(), released.clone());
                count.send_modify(|n| *n += 1);
                tokio::spawn(async move {
                    let Some(head) = mizzen_common::testing::read_request_head(&mut conn).await else {
                        return;
                    };
                    if released.wait_for(|r| *r).await.is_err() {
                        return;
                    }
                    let headers = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
                         Last-Modified: Tue, 01 Dec 2026 00:00:00 GMT\r\nETag: \"iris\"\r\nConnection: close\r\n\r\n",
                        model.len()
                    );
                    let _ = conn.write_all(headers.as_bytes()).await;
                    if !head.starts_with(b"HEAD") {
                        let _ = conn.write_all(&model).await;
                    }
                    let _ = conn.shutdown().await;
                });
            }
        });
        Ok(Self { addr, requests, release, server })
    }

    fn release(&self) {
        let _ = self.release.send(true);
    }
}

impl Drop for HeldModel {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A model that cannot be loaded holds its pod unready, and the ModelDeployment says why at once (Degraded,
/// `PodsFailing`, with the error mizzen-serve ended with), long before the progress deadline.
pub(crate) async fn a_model_that_cannot_load_is_reported_with_its_reason(cluster: Cluster) -> Result<()> {
    let Some((ns, _volume, _operator)) = given_the_real_node(&cluster, "real-missing").await? else {
        return Ok(());
    };
    ns.apply(&real_mdep("pvc://models/missing.onnx", 2, "{}"))?;
    let message = ns
        .wait_for::<ModelDeployment, _>("iris", "Degraded with the reason", Duration::from_secs(90), |s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "PodsFailing")
                .map(|c| c.message.clone())
        })
        .await
        .with_context(|| what_the_cluster_shows(&ns))?;
    ensure!(message.contains("exited with code") && message.contains("missing.onnx"), "{message}");
    println!("    Degraded/PodsFailing: {message}");
    let status = ns.status::<ModelDeployment>("iris").await?;
    ensure!(status.available_replicas == 0, "{status:?}");
    ensure!(ns.events("iris", "PodsFailing").await? >= 1, "no PodsFailing event");
    Ok(())
}

/// A ModelDeployment of model `uri` on the real node, with `replicas` and `blue_green` settings.
pub(crate) fn real_mdep(uri: &str, replicas: i32, blue_green: &str) -> String {
    format!(
        r#"
apiVersion: mizzen.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: iris}}
spec:
  model: {{uri: "{uri}"}}
  replicas: {replicas}
  strategy: {{blueGreen: {blue_green}}}
  server:{ON_THE_REAL_NODE}
"#
    )
}

/// A blue-green rollout on real pods while clients keep sending predictions through the active Service's
/// ClusterIP, each on a new connection: the operator's smoke test passes against the real preview Service,
/// and not one request fails, across the switch, the old revision's scale-down and a scale-down of the
/// active revision (a pod being deleted leaves the Service's endpoints while it still serves, and gets
/// SIGTERM only after the preStop wait).
pub(crate) async fn blue_green_on_real_pods_loses_no_request(cluster: Cluster) -> Result<()> {
    let Some((ns, _volume, _operator)) = given_the_real_node(&cluster, "real-rollout").await? else {
        return Ok(());
    };
    let bg = format!("{{scaleDownDelaySeconds: 3, smokeTest: {{request: '{SETOSA}'}}}}");
    ns.apply(&real_mdep("pvc://models/iris.onnx", 2, &bg))?;
    let first = healthy(&ns, 2).await?;
    let addr = cluster_ip(&ns, "iris").await?;
    predicted(addr, SETOSA).await?;

    let load = Load::start(addr, 4);
    ns.apply(&real_mdep("pvc://models/iris-v2.onnx", 2, &bg))?;
    let status = switched_from(&ns, &first).await?;
    let second = status.active_revision.clone().context("active")?;
    let smoke = status.smoke_test.context("no smoke test result")?;
    ensure!(smoke.revision == second && smoke.passed, "{smoke:?}");
    // The old revision goes to zero after the delay; its pods stop while the load goes on.
    revision_gone(&ns, &first).await?;
    // Then the active revision itself shrinks: a pod that still has traffic stops.
    ns.kubectl(&["scale", "mdep/iris", "--replicas", "1"]).ok()?;
    let active = format!("mizzen.dev/revision={second}");
    wait_until("one active pod left", Duration::from_secs(60), || async {
        let out = ns.kubectl(&["get", "pods", "-l", &active, "-o", "name"]).ok().ok()?;
        (out.lines().count() == 1).then_some(())
    })
    .await?;
    let seen = load.ok();
    wait_until("requests after the scale-downs", Duration::from_secs(20), || async {
        (load.ok() >= seen + 50).then_some(())
    })
    .await?;
    let slowest = load.slowest();
    let (ok, failures) = load.stop().await;
    ensure!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    ensure!(ok > 100, "only {ok} requests");
    println!(
        "    {ok} predictions, 0 failed (the slowest took {slowest:?}), across the switch {first} -> {second} and \
         two scale-downs"
    );
    Ok(())
}

/// A TrainingJob whose trials run mizzen-train in pods on the real node, reading a `pvc://` table and
/// writing their models to the same claim; the best model passes the gate and is deployed to a
/// ModelDeployment on the real node, which rolls it out and answers predictions with the trained model's
/// own inputs (numbers and a word) through its Service's ClusterIP.
pub(crate) async fn training_job_trains_in_real_pods_and_its_model_is_served(cluster: Cluster) -> Result<()> {
    let Some((ns, volume, _operator)) = given_the_real_node(&cluster, "real-train").await? else {
        return Ok(());
    };
    let data = volume.dir.join("data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("train.csv"), super::training_job::training_csv(600))?;
    ns.apply(&real_mdep("pvc://models/iris.onnx", 1, "{scaleDownDelaySeconds: 0}"))?;
    let first = healthy(&ns, 1).await?;
    ns.apply(&format!(
        r#"
apiVersion: mizzen.dev/v1alpha1
kind: TrainingJob
metadata: {{name: model}}
spec:
  dataset: {{uri: "pvc://models/data/train.csv", label: label}}
  algorithm: logisticRegression
  search:
    algorithm: grid
    parallelism: 2
    objective: {{metric: logLoss}}
    parameters: [{{name: l2, categorical: ["1000", "0.01"]}}]
  output: {{uri: "pvc://models/trained/"}}
  deploy: {{modelDeployment: iris, when: {{metric: accuracy, threshold: 0.7}}}}
  trainer:{ON_THE_REAL_NODE}
"#
    ))?;
    let reason = ns
        .wait_for_condition::<TrainingJob>("model", "Succeeded", "True")
        .await
        .with_context(|| what_the_cluster_shows(&ns))?;
    ensure!(reason == "ModelTrained", "{reason}");
    let s = ns.status::<TrainingJob>("model").await?;
    ensure!(s.trials.as_ref().and_then(|t| t.summary.as_deref()) == Some("2/0/2"), "{s:?}");
    ensure!(s.best_hyperparameters.get("l2").map(String::as_str) == Some("0.01"), "{s:?}");
    let model = s.model.clone().context("no model in the status")?;
    // The model is where the status says, on the claim, as the trainer's pod wrote it.
    let path = model.uri.strip_prefix("pvc://models/").context("not on the claim")?;
    let bytes = std::fs::read(volume.dir.join(path)).with_context(|| format!("reading {}", model.uri))?;
    let sha = sha256_hex(&bytes);
    ensure!(model.sha256.as_deref() == Some(sha.as_str()), "{model:?}: the file's sha256 is {sha}");
    // The trainer pods ran on the real node and said what they did in their logs.
    for pod in ns.list::<Pod>().await? {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if labels.get("mizzen.dev/training-job").map(String::as_str) != Some("model") {
            continue;
        }
        let on = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        ensure!(on.as_deref() == Some(NODE), "a trainer pod ran on {on:?}");
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        ensure!(phase.as_deref() == Some("Succeeded"), "a trainer pod ended {phase:?}");
        let logs = ns.kubectl(&["logs", &pod.metadata.name.clone().unwrap_or_default()]).ok()?;
        ensure!(logs.contains("train.csv"), "the trainer's log does not name its data:\n{logs}");
    }
    // Deployed: the ModelDeployment rolls the trained model out and serves it.
    ns.wait_for_condition::<TrainingJob>("model", "Deployed", "True").await?;
    switched_from(&ns, &first).await?;
    let served = ns.get::<ModelDeployment>("iris").await?.spec.model.uri.0;
    ensure!(served == model.uri, "the ModelDeployment serves {served}, not {}", model.uri);
    let request = r#"{"inputs":[
        {"name":"input","shape":[2,2],"datatype":"FP32","data":[1.8,1.5,-1.9,-1.2]},
        {"name":"categories","shape":[2,1],"datatype":"BYTES","data":["red","blue"]}]}"#;
    let body = predicted(cluster_ip(&ns, "iris").await?, request).await?;
    let answer: serde_json::Value = serde_json::from_str(&body)?;
    let label = answer["outputs"].as_array().and_then(|o| o.iter().find(|o| o["name"] == "label")).cloned();
    let labels = label.as_ref().map(|l| l["data"].clone());
    ensure!(labels == Some(serde_json::json!([1, 0])), "{body}");
    println!("    trained in 2 pods on {NODE} ({}), deployed {} and served: {labels:?}", reason, model.uri);
    Ok(())
}

/// The operator itself runs in the cluster from its image, installed with `manifests/operator.yaml` and
/// customized the way users do (kustomize: on the real node, watching the test's namespace): it is Ready,
/// reconciles a ModelDeployment on the real node, and rolls it out blue-green, its smoke test reaching the
/// preview Service from inside the cluster.
pub(crate) async fn the_operator_runs_in_the_cluster_from_its_image(cluster: Cluster) -> Result<()> {
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    if nodes.get_opt(NODE).await?.is_none() {
        println!("    skipped: the cluster has no real node (MIZZEN_REAL_NODE=0, or kind)");
        return Ok(());
    }
    let ns = cluster.namespace("real-operator")?;
    let volume = given_models_on_a_volume(&cluster, &ns)?;
    let kustomization = tempfile::tempdir()?;
    let manifest = mizzen_common::testing::repo_root().join("manifests/operator.yaml");
    std::fs::copy(&manifest, kustomization.path().join("operator.yaml"))?;
    std::fs::write(
        kustomization.path().join("kustomization.yaml"),
        format!(
            r#"
resources: [operator.yaml]
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {{name: mizzen-operator, namespace: mizzen-system}}
      spec:
        template:
          spec:{}
            containers:
              - name: operator
                env: [{{name: MIZZEN_NAMESPACE, value: {}}}]
"#,
            ON_THE_REAL_NODE.replace("\n    ", "\n            "),
            ns.name
        ),
    )?;
    let dir = kustomization.path().to_string_lossy().to_string();
    let _installed = Installed { cluster: cluster.clone(), dir: kustomization };
    cluster.kubectl(&["apply", "-k", &dir]).ok()?;
    let system = |args: &[&str]| cluster.kubectl(&[&["-n", "mizzen-system"], args].concat());
    system(&["rollout", "status", "deployment/mizzen-operator", "--timeout", "120s"])
        .ok()
        .with_context(|| system(&["get", "deploy,pods", "-o", "wide"]).ok().unwrap_or_default())?;
    let pods = system(&["get", "pods", "-o", "jsonpath={.items[*].spec.nodeName}"]).ok()?;
    ensure!(pods.trim() == NODE, "the operator's pod runs on {pods}");

    let bg = format!("{{scaleDownDelaySeconds: 1, smokeTest: {{request: '{SETOSA}'}}}}");
    ns.apply(&real_mdep("pvc://models/iris.onnx", 1, &bg))?;
    let first = healthy(&ns, 1).await?;
    ns.apply(&real_mdep("pvc://models/iris-v2.onnx", 1, &bg))?;
    let status = switched_from(&ns, &first).await?;
    let smoke = status.smoke_test.context("no smoke test result")?;
    ensure!(smoke.passed && Some(&smoke.revision) == status.active_revision.as_ref(), "{smoke:?}");
    predicted(cluster_ip(&ns, "iris").await?, SETOSA).await?;
    // The old revision is scaled down after its delay (through the Deployment's scale subresource).
    revision_gone(&ns, &first).await.with_context(|| what_the_cluster_shows(&ns))?;
    // A TrainingJob: its Job is made, its pod trains, and the Job is deleted after the ttl.
    std::fs::create_dir_all(volume.dir.join("data"))?;
    std::fs::write(volume.dir.join("data/train.csv"), super::training_job::training_csv(200))?;
    ns.apply(&format!(
        "apiVersion: mizzen.dev/v1alpha1\nkind: TrainingJob\nmetadata: {{name: model}}\nspec:\n  \
         dataset: {{uri: pvc://models/data/train.csv, label: label}}\n  algorithm: logisticRegression\n  \
         output: {{uri: pvc://models/trained/}}\n  ttlSecondsAfterFinished: 1\n  trainer:{ON_THE_REAL_NODE}\n"
    ))?;
    ns.wait_for_condition::<TrainingJob>("model", "Succeeded", "True").await?;
    wait_until("the Job deleted after the ttl", Duration::from_secs(30), || async {
        ns.kubectl(&["get", "job", "model"]).refused().ok()
    })
    .await?;
    // Its log is JSON lines and names what it reconciled; its RBAC let it do everything it tried.
    let log = system(&["logs", "deployment/mizzen-operator"]).ok()?;
    ensure!(log.lines().any(|l| l.starts_with('{') && l.contains("iris")), "the operator's log:\n{log}");
    let refused: Vec<_> = log.lines().filter(|l| l.to_ascii_lowercase().contains("forbidden")).collect();
    ensure!(refused.is_empty(), "the operator was refused:\n{}", refused.join("\n"));
    Ok(())
}

/// Waits until no pod of revision `revision` is left.
async fn revision_gone(ns: &Namespace, revision: &str) -> Result<()> {
    let selector = format!("mizzen.dev/revision={revision}");
    wait_until("the old revision's pods gone", Duration::from_secs(90), || async {
        let out = ns.kubectl(&["get", "pods", "-l", &selector, "-o", "name"]).ok().ok()?;
        out.trim().is_empty().then_some(())
    })
    .await
}

/// What `kubectl apply -k DIR` installed, deleted on drop (the operator must not outlive its test).
struct Installed {
    cluster: Cluster,
    dir: tempfile::TempDir,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let dir = self.dir.path().to_string_lossy().to_string();
        let _ = self.cluster.kubectl(&[
            "delete",
            "-k",
            &dir,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=60s",
        ]);
    }
}

/// Waits until the ModelDeployment `iris` is Healthy with `replicas` available; its active revision.
pub(crate) async fn healthy(ns: &Namespace, replicas: i32) -> Result<String> {
    ns.wait_for::<ModelDeployment, _>("iris", "Healthy", Duration::from_secs(120), |s| {
        (s.phase == ModelDeploymentPhase::Healthy && s.available_replicas == replicas)
            .then(|| s.active_revision.clone())
            .flatten()
    })
    .await
    .with_context(|| what_the_cluster_shows(ns))
}

/// Waits until the ModelDeployment `iris` is Healthy on a revision other than `first`; its status.
pub(crate) async fn switched_from(ns: &Namespace, first: &str) -> Result<ModelDeploymentStatus> {
    ns.wait_for::<ModelDeployment, _>("iris", "a new revision active", Duration::from_secs(120), |s| {
        (s.phase == ModelDeploymentPhase::Healthy && s.active_revision.as_deref() != Some(first))
            .then(|| s.clone())
    })
    .await
    .with_context(|| what_the_cluster_shows(ns))
}

/// The body of a 200 answer to `request` from the model `iris` at `addr`, tried until one comes (kube-proxy
/// writes a Service's rules shortly after its endpoints are ready).
pub(crate) async fn predicted(addr: SocketAddr, request: &str) -> Result<String> {
    let (_, body) = wait_until("a prediction through the ClusterIP", Duration::from_secs(20), || async {
        http(addr, "POST", "/v2/models/iris/infer", Some(request)).await.ok().filter(|(c, _)| *c == 200)
    })
    .await?;
    Ok(body)
}

/// The address of a Service's port 8080 on its ClusterIP.
pub(crate) async fn cluster_ip(ns: &Namespace, service: &str) -> Result<SocketAddr> {
    let service = ns.get::<Service>(service).await?;
    let ip = service.spec.and_then(|s| s.cluster_ip).context("the Service has no ClusterIP")?;
    Ok(format!("{ip}:8080").parse()?)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The namespace's Mizzen objects, their children and its events, for a failure's message.
pub(crate) fn what_the_cluster_shows(ns: &Namespace) -> String {
    let get = |args: &[&str]| ns.kubectl(args).ok().unwrap_or_else(|e| e.to_string());
    format!(
        "{}\n{}\n{}",
        get(&["get", "mdep,fset,deploy,rs,sts,pvc,jobs,pods,endpointslices", "-o", "wide"]),
        get(&["get", "mdep,fset", "-o", "jsonpath={.items[*].status}"]),
        get(&["get", "events", "--sort-by=.lastTimestamp"]),
    )
}

/// Clients sending predictions in a loop, each request on a new connection, until stopped.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The slowest request so far, in ms.
    slowest: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let slowest = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers = (0..clients)
            .map(|_| {
                let (stop, ok, slowest) = (stop.clone(), ok.clone(), slowest.clone());
                tokio::spawn(async move {
                    let start = std::time::Instant::now();
                    let mut failures = vec![];
                    while !stop.load(Relaxed) {
                        let sent = start.elapsed().as_secs_f32();
                        let request = ("POST", "/v2/models/iris/infer", Some(SETOSA), &[][..]);
                        let t = std::time::Instant::now();
                        // A client's deadlines, not a benchmark's (tritonclient waits 60 s): a request that
                        // is late on this loaded two-core machine (a dropped SYN is sent again only after
                        // 1 s and 3 s) is not lost; one that is refused, reset or never answered fails.
                        let answer = http_within(addr, request, CONNECT, ANSWER).await;
                        slowest.fetch_max(t.elapsed().as_millis() as usize, Relaxed);
                        match answer {
                            Ok((200, body)) if body.contains("\"outputs\"") => {
                                ok.fetch_add(1, Relaxed);
                            }
                            Ok((code, body)) => failures.push(format!("at {sent:.1} s: {code} {body}")),
                            Err(e) => failures.push(format!("at {sent:.1} s: {e}")),
                        }
                        // A steady load, not a flood: the machine also runs the cluster.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    failures
                })
            })
            .collect();
        Self { stop, ok, slowest, workers }
    }

    fn ok(&self) -> usize {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn slowest(&self) -> Duration {
        Duration::from_millis(self.slowest.load(std::sync::atomic::Ordering::Relaxed) as u64)
    }

    /// Stops the clients: the successes and every failure.
    async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let ok = self.ok();
        let mut failures = vec![];
        for w in self.workers {
            failures.extend(w.await.unwrap_or_else(|e| vec![e.to_string()]));
        }
        (ok.max(self.ok.load(std::sync::atomic::Ordering::Relaxed)), failures)
    }
}

/// `kubectl port-forward TARGET :PORT`, stopped when dropped.
struct PortForward {
    child: std::process::Child,
    addr: SocketAddr,
}

impl PortForward {
    async fn start(cluster: &Cluster, ns: &Namespace, target: &str, port: u16) -> Result<Self> {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(mizzen_e2e::tool_bin("kubectl"))
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
