//! FeatureSets on the real node: the operator's StatefulSet of mizzen-features (a claim per replica, here a
//! volume on the node's disk), reached through its Service's ClusterIP with Feast's requests, materialized
//! from a CSV file on a claim by a Job, a feature appended (the store rolls and keeps its data), a change
//! that would misread the data refused, and a bad file reported with its row; a TrainingJob that waits for
//! the FeatureSet and trains on a point-in-time join of a labels file with it. Skipped without a real node.

use crate::real_pods::{ON_THE_REAL_NODE, given_the_real_node, host_volume};
use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{Pod, Service};
use mizzen_api::v1alpha1::feature_set::FeatureSetStatus;
use mizzen_api::v1alpha1::{FeatureSet, TrainingJob};
use mizzen_e2e::{Kind as _, Namespace, http, wait_until};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

/// The FeatureSet, with `features` (YAML flow list) and a storage class of the test's own.
fn customers(features: &str, class: &str) -> String {
    format!(
        r#"
apiVersion: mizzen.dev/v1alpha1
kind: FeatureSet
metadata: {{name: customers}}
spec:
  entity: {{name: customer, joinKey: customer_id, type: int64}}
  features: {features}
  ttl: 87600h
  sources: [{{name: daily, uri: "pvc://models/customers.csv", timestampColumn: ts}}]
  online:
    storageClassName: {class}
    storageSize: 1Gi{ON_THE_REAL_NODE}
"#
    )
}

const TWO: &str = "[{name: spend, type: float64}, {name: visits, type: int64}]";
const THREE: &str = "[{name: spend, type: float64}, {name: visits, type: int64}, {name: tier, type: string}]";
const REORDERED: &str =
    "[{name: visits, type: int64}, {name: spend, type: float64}, {name: tier, type: string}]";

/// Rows for 200 customers, three events each (the last one wins), with a column the FeatureSet gets later.
fn csv() -> (String, Vec<(i64, f64, i64, String)>) {
    let mut text = String::from("customer_id,ts,spend,visits,tier\n");
    let mut latest = Vec::new();
    for id in 0..200i64 {
        for day in 1..=3 {
            let (spend, visits, tier) =
                (id as f64 * 1.5 + day as f64, id * 10 + day, format!("t{}", (id + day) % 3));
            text.push_str(&format!("{id},2025-06-0{day}T12:00:00Z,{spend},{visits},{tier}\n"));
            if day == 3 {
                latest.push((id, spend, visits, tier));
            }
        }
    }
    (text, latest)
}

/// A TrainingJob learning `churned` from the FeatureSet's features as of each labelled row's time.
fn churn_training_job() -> String {
    format!(
        r#"
apiVersion: mizzen.dev/v1alpha1
kind: TrainingJob
metadata: {{name: churn}}
spec:
  algorithm: logisticRegression
  dataset:
    featureSet: {{name: customers, labelsUri: "pvc://models/labels.csv", timestampColumn: ts}}
    label: churned
  output: {{uri: "pvc://models/churn/"}}
  trainer:{ON_THE_REAL_NODE}
"#
    )
}

/// Labels at the end of the second day (the third day's rows are its future): the customers above 100
/// churned, which their spend as of that time tells.
fn labels() -> String {
    let mut text = String::from("customer_id,ts,churned\n");
    for id in 0..200 {
        text.push_str(&format!("{id},2025-06-02T18:00:00Z,{}\n", u8::from(id >= 100)));
    }
    text
}

async fn store_addr(ns: &Namespace) -> Result<SocketAddr> {
    let service = ns.get::<Service>("customers").await?;
    let ip = service.spec.and_then(|s| s.cluster_ip).context("the Service has no ClusterIP")?;
    Ok(format!("{ip}:6566").parse()?)
}

/// An online lookup through the Service, as Feast's SDK sends it: `{feature: values}`.
async fn lookup(addr: SocketAddr, ids: &[i64], features: &[&str]) -> Result<Value> {
    let refs: Vec<String> = features.iter().map(|f| format!("customers:{f}")).collect();
    let request = json!({"features": refs, "entities": {"customer_id": ids}}).to_string();
    let (code, body) = wait_until("a lookup through the ClusterIP", Duration::from_secs(30), || async {
        http(addr, "POST", "/get-online-features", Some(&request)).await.ok().filter(|(c, _)| *c == 200)
    })
    .await?;
    ensure!(code == 200, "{body}");
    let body: Value = serde_json::from_str(&body)?;
    let mut out = serde_json::Map::new();
    for (i, f) in features.iter().enumerate() {
        out.insert(f.to_string(), body["results"][i + 1]["values"].clone());
    }
    Ok(Value::Object(out))
}

async fn materialized(ns: &Namespace, not_job: Option<&str>) -> Result<FeatureSetStatus> {
    ns.wait_for::<FeatureSet, _>(
        "customers",
        "Materialized=True by a new Job",
        Duration::from_secs(240),
        |s| {
            let done = FeatureSet::condition(s, "Materialized").is_some_and(|c| c.status == "True");
            let job = s.last_materialization.as_ref().and_then(|m| m.job_name.as_deref());
            (done && job.is_some() && job != not_job).then(|| s.clone())
        },
    )
    .await
}

fn store_pod_uid(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .find(|p| p.metadata.name.as_deref() == Some("customers-0"))
        .and_then(|p| p.metadata.uid.clone())
}

pub(crate) async fn feature_set_serves_materializes_and_evolves_on_real_pods(
    cluster: mizzen_e2e::Cluster,
) -> Result<()> {
    let Some((ns, models, _operator)) = given_the_real_node(&cluster, "real-features").await? else {
        return Ok(());
    };
    let (text, latest) = csv();
    std::fs::write(models.dir.join("customers.csv"), &text)?;
    // The store's claim (data-customers-0, made by the StatefulSet) binds to a volume on the node's disk.
    let store_dir = models.dir.with_file_name(format!("{}-store", ns.name));
    std::fs::create_dir_all(&store_dir)?;
    let class = format!("store-{}", ns.name);
    let _store = host_volume(&cluster, &ns, "data-customers-0", &class, "ReadWriteOnce", store_dir)?;

    ns.apply(&customers(TWO, &class))?;
    // A TrainingJob from the FeatureSet, made with it: it waits until the FeatureSet is materialized.
    std::fs::write(models.dir.join("labels.csv"), labels())?;
    ns.apply(&churn_training_job())?;
    let reason = ns.wait_for_condition::<TrainingJob>("churn", "Created", "False").await?;
    ensure!(reason == "WaitingForFeatureSet", "{reason}");
    let status =
        materialized(&ns, None).await.with_context(|| crate::real_pods::what_the_cluster_shows(&ns))?;
    println!("    materialized: {:?}", status.last_materialization);
    let first_job = status.last_materialization.as_ref().and_then(|m| m.job_name.clone()).context("job")?;
    let m = status.last_materialization.as_ref().context("lastMaterialization")?;
    ensure!(m.rows == 600 && status.row_count == Some(200), "{status:?}");
    ensure!(FeatureSet::condition(&status, "Ready").is_some_and(|c| c.status == "True"), "{status:?}");
    ensure!(status.url.as_deref() == Some(&*format!("http://customers.{}.svc:6566", ns.name)), "{status:?}");
    let addr = store_addr(&ns).await?;
    let ids = [0i64, 57, 199];
    let want = |f: fn(&(i64, f64, i64, String)) -> Value| -> Value {
        Value::Array(ids.iter().map(|&i| f(&latest[i as usize])).collect())
    };
    let got = lookup(addr, &ids, &["spend", "visits"]).await?;
    ensure!(got["spend"] == want(|r| json!(r.1)) && got["visits"] == want(|r| json!(r.2)), "{got}");
    // A push through the Service (Feast's /push), which materialization never writes.
    let push = json!({"push_source_name": "daily", "to": "online_and_offline",
                      "df": {"customer_id": [9999], "ts": ["2025-07-01T00:00:00Z"], "spend": [42.5], "visits": [7]}});
    let (code, body) = http(addr, "POST", "/push", Some(&push.to_string())).await?;
    ensure!(code == 200, "{body}");
    // The trainer's pod asked the store for the point-in-time join and trained on it; the model says which
    // FeatureSet and features it needs.
    let reason = ns
        .wait_for_condition_within::<TrainingJob>("churn", "Succeeded", "True", Duration::from_secs(180))
        .await
        .with_context(|| crate::real_pods::what_the_cluster_shows(&ns))?;
    ensure!(reason == "ModelTrained", "{reason}");
    println!("    trained from the FeatureSet");
    let trained = ns.status::<TrainingJob>("churn").await?;
    let accuracy = trained.metrics.get("accuracy").copied().unwrap_or_default();
    ensure!(accuracy >= 0.9, "accuracy {accuracy} from the joined features: {trained:?}");
    let model = trained.model.as_ref().context("no model")?;
    let path = model.uri.strip_prefix("pvc://models/").context("not on the claim")?;
    let onnx = String::from_utf8_lossy(&std::fs::read(models.dir.join(path))?).into_owned();
    let recorded = format!("{}/customers", ns.name);
    ensure!(
        onnx.contains("mizzen.featureset") && onnx.contains(&recorded),
        "the model does not name its FeatureSet"
    );
    ensure!(onnx.contains("spend,visits"), "the model does not list its features");
    let table = ns.kubectl(&["get", "fset", "customers"]).ok()?;
    ensure!(table.contains("True") && table.contains("200"), "{table}");

    // A feature appended: the store rolls (a new pod, the same claim), keeps what it had, and the new spec
    // is materialized by a new Job.
    let pod_before = store_pod_uid(&ns.list::<Pod>().await?);
    ns.apply(&customers(THREE, &class))?;
    let status = materialized(&ns, Some(&first_job))
        .await
        .with_context(|| crate::real_pods::what_the_cluster_shows(&ns))?;
    let second_job = status.last_materialization.as_ref().and_then(|m| m.job_name.clone()).context("job")?;
    ensure!(store_pod_uid(&ns.list::<Pod>().await?) != pod_before, "the store's pod was not replaced");
    let got = lookup(addr, &ids, &["spend", "tier"]).await?;
    ensure!(got["spend"] == want(|r| json!(r.1)) && got["tier"] == want(|r| json!(r.3)), "{got}");
    let pushed = lookup(addr, &[9999], &["spend", "visits"]).await?;
    ensure!(
        pushed == json!({"spend": [42.5], "visits": [7]}),
        "the pushed row was lost in the roll: {pushed}"
    );
    wait_until("the earlier Job deleted", Duration::from_secs(30), || async {
        ns.kubectl(&["get", "job", &first_job]).ok().is_err().then_some(())
    })
    .await?;

    // Features reordered would misread the stored rows: refused in the status, the store left serving.
    let pod_before = store_pod_uid(&ns.list::<Pod>().await?);
    ns.apply(&customers(REORDERED, &class))?;
    let reason = ns.wait_for_condition::<FeatureSet>("customers", "Degraded", "True").await?;
    ensure!(reason == "IncompatibleSchemaChange", "{reason}");
    ensure!(ns.events("customers", "IncompatibleSchemaChange").await? >= 1);
    ensure!(store_pod_uid(&ns.list::<Pod>().await?) == pod_before, "the store was rolled");
    ensure!(lookup(addr, &[9999], &["spend"]).await?["spend"] == json!([42.5]));
    ns.apply(&customers(THREE, &class))?;
    ns.wait_for_condition::<FeatureSet>("customers", "Degraded", "False").await?;

    // A bad row, materialized on demand (the trigger annotation): refused whole, with its row and line.
    std::fs::write(models.dir.join("customers.csv"), format!("{text}5,2025-08-01T00:00:00Z,lots,1,t1\n"))?;
    ns.kubectl(&["annotate", "fset", "customers", "mizzen.dev/materialize=1"]).ok()?;
    let status = ns
        .wait_for::<FeatureSet, _>("customers", "MaterializationFailed", Duration::from_secs(120), |s| {
            FeatureSet::condition(s, "Materialized")
                .filter(|c| c.reason == "MaterializationFailed")
                .map(|c| c.message.clone())
        })
        .await?;
    ensure!(status.contains("row 601 (line 602)") && status.contains("\"spend\""), "{status}");
    ensure!(ns.events("customers", "MaterializationFailed").await? >= 1);
    let got = lookup(addr, &[5], &["spend"]).await?;
    ensure!(got["spend"] == json!([latest[5].1]), "a refused file wrote something: {got}");
    let status = ns.status::<FeatureSet>("customers").await?;
    ensure!(
        status.last_materialization.as_ref().and_then(|m| m.job_name.as_deref()) == Some(&*second_job),
        "the last good materialization is kept: {status:?}"
    );
    println!(
        "    materialized 600 rows in {:?} s",
        status.last_materialization.and_then(|m| m.duration_seconds)
    );
    Ok(())
}
