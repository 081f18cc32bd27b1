//! `helm install mizzen`: the chart as users install it. Lint and the values schema; the rendered manifests
//! judged by the API server (server-side dry run); then, on the real node, install (the operator and the
//! registry as pods), a ModelDeployment reconciled by the operator pod, an upgrade to changed values that
//! leaves the ModelDeployment's pods alone, and an uninstall that keeps the CRDs and the users' objects.

use super::real_pods::{
    NODE, ON_THE_REAL_NODE, cluster_ip, given_models_on_a_volume, healthy, predicted, real_mdep,
};
use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use mizzen_e2e::{Cluster, http, repo_root, wait_until};
use std::time::Duration;

const SETOSA: &str =
    r#"{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;

/// Uninstalls the release when the test ends, whatever happened.
struct Release {
    cluster: Cluster,
    namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ =
            self.cluster.helm(&["uninstall", "mizzen", "-n", &self.namespace, "--wait", "--timeout", "60s"]);
    }
}

/// The names of the pods in `ns` with `selector` and their uids, sorted.
fn pods(ns: &mizzen_e2e::Namespace, selector: &str) -> Result<String> {
    let out = ns
        .kubectl(&["get", "pods", "-l", selector, "-o", "jsonpath={range .items[*]}{.metadata.uid} {end}"])
        .ok()?;
    let mut uids: Vec<&str> = out.split_whitespace().collect();
    uids.sort();
    Ok(uids.join(" "))
}

pub(crate) async fn the_chart_installs_upgrades_and_uninstalls(cluster: Cluster) -> Result<()> {
    let chart = repo_root().join("charts/mizzen").to_string_lossy().to_string();
    let ns = cluster.namespace("chart")?;
    cluster.helm(&["lint", "--strict", &chart]).ok()?;
    // Bad values are refused by values.schema.json before anything is applied.
    for (bad, says) in [
        ("replicaCount=-1", "minimum"),
        ("operator.logFormat=xml", "json"),
        ("watchNamespace=Not_A_Name", "watchNamespace"),
        ("registry.persistence.size=lots", "size"),
    ] {
        let refused = cluster.helm(&["install", "bad", &chart, "-n", &ns.name, "--set", bad]).refused()?;
        ensure!(refused.contains(says), "--set {bad}: {refused}");
    }
    let releases = cluster.helm(&["list", "-n", &ns.name, "-q"]).ok()?;
    ensure!(releases.trim().is_empty(), "a refused install left a release: {releases}");
    // What the chart renders (both RBAC modes, the NetworkPolicies) is what the API server accepts.
    for extra in
        [vec![], vec!["--set", "networkPolicy.enabled=true", "--set", "registry.auth.existingSecret=t"]]
    {
        let watch = format!("watchNamespace={}", ns.name);
        for scope in [vec![], vec!["--set", watch.as_str()]] {
            let mut args = vec!["template", "mizzen", &chart, "-n", &ns.name];
            args.extend(extra.iter().chain(&scope));
            let rendered = cluster.helm(&args).ok()?;
            cluster
                .kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered))
                .ok()
                .with_context(|| format!("helm {}", args.join(" ")))?;
        }
    }

    let nodes: Api<Node> = Api::all(cluster.client.clone());
    if nodes.get_opt(NODE).await?.is_none() {
        println!(
            "    lint, schema and dry run only: the cluster has no real node (MIZZEN_REAL_NODE=0, or kind)"
        );
        return Ok(());
    }
    let _volume = given_models_on_a_volume(&cluster, &ns)?;
    // The local cluster has no volume provisioner: the registry keeps its data in an emptyDir here.
    let values = format!(
        "watchNamespace: {}{}\nregistry:\n  persistence: {{enabled: false}}{}\n",
        ns.name,
        ON_THE_REAL_NODE.replace("\n    ", "\n"),
        ON_THE_REAL_NODE.replace("\n    ", "\n  ")
    );
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), &values)?;
    let values = file.path().to_string_lossy().to_string();
    let _release = Release { cluster: cluster.clone(), namespace: ns.name.clone() };
    let install = ["install", "mizzen", &chart, "-n", &ns.name, "-f", &values, "--wait", "--timeout", "180s"];
    let notes = cluster
        .helm(&install)
        .ok()
        .with_context(|| ns.kubectl(&["get", "deploy,sts,pods", "-o", "wide"]).ok().unwrap_or_default())?;
    ensure!(notes.contains("rollout status deployment/mizzen-operator"), "NOTES.txt: {notes}");
    let placed = ns
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/instance=mizzen",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ])
        .ok()?;
    ensure!(placed.split_whitespace().count() == 2, "the operator and the registry: {placed}");
    ensure!(placed.split_whitespace().all(|n| n == NODE), "on {placed}");
    // The operator runs as its own ServiceAccount with the namespaced Role, and the registry answers.
    let sa = format!("system:serviceaccount:{}:mizzen-operator", ns.name);
    let can = ns.kubectl(&["auth", "can-i", "create", "deployments", "--as", &sa]).ok()?;
    ensure!(can.trim() == "yes", "{can}");
    let secrets = ns.kubectl(&["auth", "can-i", "get", "secrets", "--as", &sa]);
    ensure!(!secrets.success && secrets.stdout.trim() == "no", "the operator may read secrets: {secrets:?}");
    let list = ns.kubectl(&["auth", "can-i", "--list", "--as", &sa]).ok()?;
    ensure!(!list.lines().any(|l| l.starts_with("*.") || l.contains("[*]")), "a wildcard: {list}");
    println!("    kubectl auth can-i --list --as {sa}:\n{list}");
    let elsewhere =
        cluster.kubectl(&["auth", "can-i", "create", "deployments", "-n", "default", "--as", &sa]);
    ensure!(!elsewhere.success, "the operator may act outside its namespace: {}", elsewhere.stdout);
    let registry = cluster_ip(&ns, "mizzen-registry").await?;
    let registry = std::net::SocketAddr::new(registry.ip(), 5000);
    wait_until("the registry's API through its Service", Duration::from_secs(20), || async {
        let (code, _) = http(registry, "GET", "/api/2.0/mlflow/registered-models/search", None).await.ok()?;
        (code == 200).then_some(())
    })
    .await?;

    // A ModelDeployment, reconciled by the operator's pod.
    ns.apply(&real_mdep("pvc://models/iris.onnx", 1, "{scaleDownDelaySeconds: 0}"))?;
    let revision = healthy(&ns, 1).await?;
    let serving = pods(&ns, "mizzen.dev/model-deployment=iris")?;
    ensure!(!serving.is_empty(), "no pods for mdep/iris");
    predicted(cluster_ip(&ns, "iris").await?, SETOSA).await?;

    // An upgrade to changed values: a new operator pod with them; the ModelDeployment's pods stay as they
    // are and keep serving; the new operator goes on reconciling.
    let operator_before = pods(&ns, "app.kubernetes.io/name=mizzen-operator")?;
    let upgrade = [
        "upgrade",
        "mizzen",
        &chart,
        "-n",
        &ns.name,
        "-f",
        &values,
        "--set",
        "operator.concurrency=4",
        "--set",
        "replicaCount=2",
        "--wait",
        "--timeout",
        "180s",
    ];
    cluster.helm(&upgrade).ok()?;
    // Two replicas: leader election on, one holds the Lease, a PodDisruptionBudget keeps one up.
    let operators = ns
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=mizzen-operator",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .ok()?;
    let holder = wait_until("the lease held", Duration::from_secs(60), || async {
        let h = ns
            .kubectl(&["get", "lease", "mizzen-operator", "-o", "jsonpath={.spec.holderIdentity}"])
            .ok()
            .ok()?;
        (!h.is_empty()).then_some(h)
    })
    .await?;
    ensure!(operators.split_whitespace().any(|p| p == holder), "lease held by {holder}, pods {operators}");
    ns.kubectl(&["get", "pdb", "mizzen-operator"]).ok()?;
    let env = ns
        .kubectl(&["get", "deploy/mizzen-operator", "-o", "jsonpath={.spec.template.spec.containers[0].env}"])
        .ok()?;
    ensure!(env.contains(r#""name":"MIZZEN_CONCURRENCY","value":"4""#), "{env}");
    // (the old pod may still be stopping when the rollout is complete)
    let operator_after = wait_until("two operator pods", Duration::from_secs(60), || async {
        let now = pods(&ns, "app.kubernetes.io/name=mizzen-operator").ok()?;
        (now.split_whitespace().count() == 2).then_some(now)
    })
    .await?;
    ensure!(!operator_after.contains(&operator_before), "the operator was not replaced");
    ensure!(
        pods(&ns, "mizzen.dev/model-deployment=iris")? == serving,
        "the upgrade touched the model's pods"
    );
    predicted(cluster_ip(&ns, "iris").await?, SETOSA).await?;
    ns.kubectl(&["scale", "mdep/iris", "--replicas", "2"]).ok()?;
    ensure!(healthy(&ns, 2).await? == revision, "a scale is not a new revision");

    // Uninstall: the operator, its RBAC and the registry go; the CRDs, the ModelDeployment and its
    // children stay (they belong to the ModelDeployment, not to the release) and keep serving.
    cluster.helm(&["uninstall", "mizzen", "-n", &ns.name, "--wait", "--timeout", "60s"]).ok()?;
    let left = ns
        .kubectl(&[
            "get",
            "deploy,sts,role,rolebinding,sa,svc,pdb",
            "-l",
            "app.kubernetes.io/instance=mizzen",
            "-o",
            "name",
        ])
        .ok()?;
    ensure!(left.trim().is_empty(), "left behind by the uninstall: {left}");
    for crd in super::api::crd_names() {
        cluster.kubectl(&["get", "crd", &crd]).ok()?;
    }
    ns.kubectl(&["get", "mdep/iris"]).ok()?;
    ensure!(
        pods(&ns, "mizzen.dev/model-deployment=iris")?.split_whitespace().count() == 2,
        "the model's pods went"
    );
    predicted(cluster_ip(&ns, "iris").await?, SETOSA).await?;
    println!(
        "    installed (operator + registry on {NODE}), served, upgraded without touching the model's pods, uninstalled"
    );
    Ok(())
}

/// `manifests/install.yaml` and `manifests/operator.yaml` are the chart rendered with its defaults
/// (`make manifests`), and the API server accepts them (server-side dry run, moved into the test's namespace:
/// mizzen-system is another test's).
pub(crate) async fn the_plain_manifests_are_the_chart_rendered(cluster: Cluster) -> Result<()> {
    let check = std::process::Command::new(repo_root().join("hack/render-manifests.sh"))
        .arg("--check")
        .env("HELM", mizzen_e2e::tool_bin("helm"))
        .output()?;
    ensure!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let ns = cluster.namespace("manifests")?;
    for file in ["manifests/install.yaml", "manifests/operator.yaml"] {
        let manifest = std::fs::read_to_string(repo_root().join(file))?.replace("mizzen-system", &ns.name);
        let out =
            cluster.kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], Some(&manifest)).ok()?;
        ensure!(out.contains("deployment.apps/mizzen-operator created (server dry run)"), "{file}: {out}");
        let registry = out.contains("statefulset.apps/mizzen-registry created (server dry run)");
        ensure!(registry == file.ends_with("install.yaml"), "{file}: {out}");
    }
    Ok(())
}
