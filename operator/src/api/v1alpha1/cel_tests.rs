//! Every CEL rule of the three kinds, checked client-side with kube's CEL engine against the generated CRD
//! schemas (defaults applied first, as the API server does). The e2e suite repeats these against a real API server.

use super::{FeatureSet, ModelDeployment, TrainingJob};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::cel::{Validator, compile_schema, estimate_rule_cost};
use serde_json::Value;

fn schema(crd: &CustomResourceDefinition) -> Value {
    serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap())
        .unwrap()
}

fn parse(yaml: &str) -> Value {
    serde_saphyr::from_str(yaml).unwrap()
}

/// RFC 7386 merge patch, so each case states only what it changes.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Validates `base` changed by `patch`; returns the messages of the rules that failed.
fn errors(crd: &CustomResourceDefinition, base: &str, patch: Value) -> Vec<String> {
    let mut obj = parse(base);
    if !patch.is_null() {
        merge(&mut obj, &patch);
    }
    match Validator::new().validate(&schema(crd), &obj, None) {
        Ok(()) => vec![],
        Err(errs) => errs
            .into_vec()
            .into_iter()
            .map(|e| format!("{} [{}: {}]", e.message, e.field_path, e.rule))
            .collect(),
    }
}

#[track_caller]
fn assert_valid(crd: &CustomResourceDefinition, base: &str, patch: Value) {
    let errs = errors(crd, base, patch.clone());
    assert!(errs.is_empty(), "expected {patch} to be accepted, got {errs:?}");
}

#[track_caller]
fn assert_refused(crd: &CustomResourceDefinition, base: &str, patch: Value, message: &str) {
    let errs = errors(crd, base, patch.clone());
    assert!(
        errs.iter().any(|e| e.contains(message)),
        "expected {patch} to be refused with {message:?}, got {errs:?}"
    );
}

const MDEP: &str = r#"
apiVersion: mizzen.dev/v1alpha1
kind: ModelDeployment
metadata: {name: iris, namespace: default}
spec:
  model: {uri: "registry://iris@champion"}
"#;

const TJOB: &str = r#"
apiVersion: mizzen.dev/v1alpha1
kind: TrainingJob
metadata: {name: iris, namespace: default}
spec:
  dataset: {uri: "s3://data/iris.csv", label: species}
  algorithm: logisticRegression
"#;

const FSET: &str = r#"
apiVersion: mizzen.dev/v1alpha1
kind: FeatureSet
metadata: {name: customers, namespace: default}
spec:
  entity: {name: customer, joinKey: customer_id}
  features: [{name: age, type: int64}, {name: spend, type: float64}]
  sources: [{name: daily, uri: "s3://data/customers.parquet"}]
"#;

#[test]
fn minimal_objects_are_valid() {
    assert_valid(&ModelDeployment::crd(), MDEP, Value::Null);
    assert_valid(&TrainingJob::crd(), TJOB, Value::Null);
    assert_valid(&FeatureSet::crd(), FSET, Value::Null);
}

#[test]
fn examples_in_manifests_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in text.split("\n---\n") {
            let obj = parse(doc);
            let crd = match obj["kind"].as_str() {
                Some("ModelDeployment") => ModelDeployment::crd(),
                Some("TrainingJob") => TrainingJob::crd(),
                Some("FeatureSet") => FeatureSet::crd(),
                _ => continue,
            };
            if let Err(e) = Validator::new().validate(&schema(&crd), &obj, None) {
                panic!("{} is refused: {e:?}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen >= 3, "expected an example of each kind in {}", dir.display());
}

#[test]
fn model_deployment_name_must_fit_child_names() {
    let crd = ModelDeployment::crd();
    let long = "a".repeat(53);
    assert_valid(&crd, MDEP, serde_json::json!({"metadata": {"name": "a".repeat(52)}}));
    assert_refused(&crd, MDEP, serde_json::json!({"metadata": {"name": long}}), "at most 52 characters");
    assert_refused(&crd, MDEP, serde_json::json!({"metadata": {"name": "1iris"}}), "starts with a letter");
}

#[test]
fn model_uri_schemes() {
    let crd = ModelDeployment::crd();
    for ok in [
        "registry://iris@champion",
        "registry://iris/3",
        "s3://bucket/iris.onnx",
        "gs://bucket/iris.onnx",
        "az://container/iris.onnx",
        "https://example.com/iris.onnx",
        "http://models.svc:8080/iris.onnx",
        "file:///models/iris.onnx",
        "pvc://models/iris/model.onnx",
    ] {
        assert_valid(&crd, MDEP, serde_json::json!({"spec": {"model": {"uri": ok}}}));
    }
    let scheme = "uri must start with registry://, s3://";
    for bad in ["ftp://host/iris.onnx", "/models/iris.onnx", "iris.onnx", "s3:/bucket"] {
        assert_refused(&crd, MDEP, serde_json::json!({"spec": {"model": {"uri": bad}}}), scheme);
    }
    let registry = "registry://NAME@ALIAS or registry://NAME/VERSION";
    for bad in [
        "registry://iris",
        "registry://iris/latest",
        "registry://iris/0",
        "registry://Iris@x",
        "registry://iris@",
    ] {
        assert_refused(&crd, MDEP, serde_json::json!({"spec": {"model": {"uri": bad}}}), registry);
    }
    for bad in ["pvc://models", "pvc://models/", "pvc://Models/x.onnx"] {
        assert_refused(&crd, MDEP, serde_json::json!({"spec": {"model": {"uri": bad}}}), "pvc://CLAIM/PATH");
    }
}

#[test]
fn model_name_version_and_digest() {
    let crd = ModelDeployment::crd();
    assert_valid(
        &crd,
        MDEP,
        serde_json::json!({"spec": {"model": {"name": "iris_v2.onnx", "version": "3"}}}),
    );
    assert_refused(
        &crd,
        MDEP,
        serde_json::json!({"spec": {"model": {"name": "iris/x"}}}),
        "model.name may hold",
    );
    assert_refused(
        &crd,
        MDEP,
        serde_json::json!({"spec": {"model": {"version": "-1"}}}),
        "model.version may hold",
    );
    assert_valid(&crd, MDEP, serde_json::json!({"spec": {"model": {"sha256": "a".repeat(64)}}}));
    assert_refused(
        &crd,
        MDEP,
        serde_json::json!({"spec": {"model": {"sha256": "A".repeat(64)}}}),
        "64 lowercase hex",
    );
}

#[test]
fn autoscaling_bounds() {
    let crd = ModelDeployment::crd();
    assert_valid(
        &crd,
        MDEP,
        serde_json::json!({"spec": {"autoscaling": {"minReplicas": 2, "maxReplicas": 2}}}),
    );
    assert_valid(&crd, MDEP, serde_json::json!({"spec": {"autoscaling": {"maxReplicas": 5}}}));
    assert_refused(
        &crd,
        MDEP,
        serde_json::json!({"spec": {"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}}),
        "minReplicas must not exceed autoscaling.maxReplicas",
    );
    // minReplicas defaults to 1, so a lone maxReplicas below it is refused too.
    assert_refused(
        &crd,
        MDEP,
        serde_json::json!({"spec": {"autoscaling": {"minReplicas": 4, "maxReplicas": 1}}}),
        "must not exceed",
    );
}

#[test]
fn blue_green_rules() {
    let crd = ModelDeployment::crd();
    let bg = |v: Value| serde_json::json!({"spec": {"strategy": {"blueGreen": v}}});
    assert_valid(&crd, MDEP, bg(serde_json::json!({"autoPromotion": true, "autoPromotionSeconds": 60})));
    assert_refused(
        &crd,
        MDEP,
        bg(serde_json::json!({"autoPromotion": false, "autoPromotionSeconds": 60})),
        "autoPromotionSeconds needs autoPromotion: true",
    );
    assert_valid(&crd, MDEP, bg(serde_json::json!({"autoPromotion": false})));
    assert_refused(
        &crd,
        MDEP,
        bg(serde_json::json!({"minReadySeconds": 600, "progressDeadlineSeconds": 600})),
        "progressDeadlineSeconds must be greater than minReadySeconds",
    );
    // The default deadline (600) applies before the rule runs.
    assert_refused(
        &crd,
        MDEP,
        bg(serde_json::json!({"minReadySeconds": 900})),
        "progressDeadlineSeconds must be greater",
    );
}

#[test]
fn smoke_test_shape() {
    let crd = ModelDeployment::crd();
    let smoke = |v: Value| serde_json::json!({"spec": {"strategy": {"blueGreen": {"smokeTest": v}}}});
    let request = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
    assert_valid(
        &crd,
        MDEP,
        smoke(serde_json::json!({"request": request, "expectedOutput": {"name": "label", "data": "[0]"}})),
    );
    assert_refused(&crd, MDEP, smoke(serde_json::json!({"request": "[1,2]"})), "JSON object with \"inputs\"");
    assert_refused(
        &crd,
        MDEP,
        smoke(serde_json::json!({"request": request, "expectedOutput": {"name": "label", "data": "0"}})),
        "must be a JSON array",
    );
}

#[test]
fn dataset_needs_exactly_one_source() {
    let crd = TrainingJob::crd();
    let fs = serde_json::json!({"name": "customers", "labelsUri": "s3://data/labels.csv"});
    assert_valid(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"dataset": {"uri": null, "featureSet": fs.clone()}}}),
    );
    assert_refused(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"dataset": {"featureSet": fs}}}),
        "exactly one of dataset.uri and dataset.featureSet",
    );
    assert_refused(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"dataset": {"uri": null}}}),
        "exactly one of dataset.uri and dataset.featureSet",
    );
}

#[test]
fn dataset_uris_and_features() {
    let crd = TrainingJob::crd();
    assert_refused(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"dataset": {"uri": "registry://iris@x"}}}),
        "uri must start with s3://",
    );
    assert_refused(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"dataset": {"featureSet": {"name": "c", "labelsUri": "ftp://x"}, "uri": null}}}),
        "uri must start with s3://",
    );
    assert_valid(&crd, TJOB, serde_json::json!({"spec": {"dataset": {"features": ["a", "b"]}}}));
    assert_refused(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"dataset": {"features": ["a", "species"]}}}),
        "dataset.label must not also be one of dataset.features",
    );
}

#[test]
fn hyperparameters_fit_the_algorithm() {
    let crd = TrainingJob::crd();
    assert_valid(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"algorithm": "mlp", "hyperparameters": {"hiddenLayers": [64, 32], "learningRate": 0.01}}}),
    );
    assert_refused(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"hyperparameters": {"hiddenLayers": [64]}}}),
        "hiddenLayers applies only to algorithm mlp",
    );
    assert_refused(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"algorithm": "mlp", "hyperparameters": {"hiddenLayers": [0]}}}),
        "each hidden layer has 1 to 4096 units",
    );
    assert_refused(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"algorithm": "mlp", "hyperparameters": {"learningRate": 0.0}}}),
        "learningRate must be in (0, 1]",
    );
    assert_refused(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"hyperparameters": {"tolerance": 0.0}}}),
        "tolerance must be positive",
    );
}

fn search(v: Value) -> Value {
    serde_json::json!({"spec": {"search": v}})
}

#[test]
fn search_parameters() {
    let crd = TrainingJob::crd();
    let objective = serde_json::json!({"metric": "accuracy"});
    let with = |params: Value| search(serde_json::json!({"parameters": params, "objective": objective}));
    assert_valid(
        &crd,
        TJOB,
        with(serde_json::json!([{"name": "l2", "logUniform": {"min": 0.001, "max": 10.0}}])),
    );
    assert_refused(
        &crd,
        TJOB,
        with(serde_json::json!([{"name": "l2", "uniform": {"min": 0.0, "max": 1.0}, "categorical": ["1"]}])),
        "exactly one of uniform, logUniform and categorical",
    );
    assert_refused(&crd, TJOB, with(serde_json::json!([{"name": "l2"}])), "exactly one of uniform");
    assert_refused(
        &crd,
        TJOB,
        with(serde_json::json!([{"name": "momentum", "uniform": {"min": 0.0, "max": 1.0}}])),
        "search parameter name must be one of",
    );
    assert_refused(
        &crd,
        TJOB,
        with(serde_json::json!([{"name": "l2", "uniform": {"min": 2.0, "max": 1.0}}])),
        "min must be less than max",
    );
    assert_refused(
        &crd,
        TJOB,
        with(serde_json::json!([{"name": "l2", "logUniform": {"min": 0.0, "max": 1.0}}])),
        "logUniform.min must be positive",
    );
    assert_refused(
        &crd,
        TJOB,
        with(serde_json::json!([
            {"name": "l2", "logUniform": {"min": 0.1, "max": 1.0}},
            {"name": "l2", "uniform": {"min": 0.1, "max": 1.0}}
        ])),
        "must not name a parameter twice",
    );
    assert_refused(
        &crd,
        TJOB,
        with(serde_json::json!([{"name": "l2", "categorical": ["1"], "steps": 3}])),
        "steps applies to uniform and logUniform parameters only",
    );
    assert_refused(
        &crd,
        TJOB,
        with(serde_json::json!([{"name": "maxIterations", "categorical": ["10", "1.5"]}])),
        "integer parameters take integer categorical values",
    );
    assert_refused(
        &crd,
        TJOB,
        with(serde_json::json!([{"name": "learningRate", "uniform": {"min": 0.001, "max": 0.1}}])),
        "apply only to algorithm mlp",
    );
    let mlp = |params: Value| {
        let mut p = with(params);
        merge(&mut p, &serde_json::json!({"spec": {"algorithm": "mlp"}}));
        p
    };
    assert_valid(
        &crd,
        TJOB,
        mlp(serde_json::json!([{"name": "hiddenLayers", "categorical": ["64", "64,32"]}])),
    );
    assert_refused(
        &crd,
        TJOB,
        mlp(serde_json::json!([{"name": "hiddenLayers", "uniform": {"min": 1.0, "max": 64.0}}])),
        "hiddenLayers is searched with categorical values",
    );
}

#[test]
fn search_bounds() {
    let crd = TrainingJob::crd();
    let params = serde_json::json!([{"name": "l2", "logUniform": {"min": 0.001, "max": 10.0}}]);
    let objective = serde_json::json!({"metric": "accuracy"});
    assert_refused(
        &crd,
        TJOB,
        search(
            serde_json::json!({"parameters": params, "objective": objective, "maxTrials": 2, "parallelism": 4}),
        ),
        "parallelism must not exceed search.maxTrials",
    );
    assert_refused(
        &crd,
        TJOB,
        search(serde_json::json!({"algorithm": "grid", "parameters": params, "objective": objective})),
        "a grid search needs steps",
    );
    let mut with_steps = params.clone();
    with_steps[0]["steps"] = 5.into();
    assert_valid(
        &crd,
        TJOB,
        search(serde_json::json!({"algorithm": "grid", "parameters": with_steps, "objective": objective})),
    );
}

#[test]
fn metrics_suit_the_algorithm() {
    let crd = TrainingJob::crd();
    let params = serde_json::json!([{"name": "l2", "logUniform": {"min": 0.001, "max": 10.0}}]);
    assert_refused(
        &crd,
        TJOB,
        search(serde_json::json!({"parameters": params, "objective": {"metric": "rmse"}})),
        "search.objective.metric must suit the algorithm",
    );
    let mut regression = search(serde_json::json!({"parameters": params, "objective": {"metric": "rmse"}}));
    merge(
        &mut regression,
        &serde_json::json!({"spec": {"algorithm": "linearRegression", "dataset": {"label": "y"}}}),
    );
    assert_valid(&crd, TJOB, regression);
    let deploy = |metric: &str| serde_json::json!({"spec": {"deploy": {"modelDeployment": "iris", "when": {"metric": metric, "threshold": 0.9}}}});
    assert_valid(&crd, TJOB, deploy("accuracy"));
    assert_refused(&crd, TJOB, deploy("r2"), "deploy.when.metric must suit the algorithm");
}

#[test]
fn validation_and_output() {
    let crd = TrainingJob::crd();
    assert_refused(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"validation": {"holdoutFraction": 0.95}}}),
        "holdoutFraction must be in (0, 0.9]",
    );
    assert_refused(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"validation": {"holdoutFraction": 0.0}}}),
        "holdoutFraction must be in (0, 0.9]",
    );
    for ok in ["registry://iris", "registry://iris@candidate", "s3://models/iris/"] {
        assert_valid(&crd, TJOB, serde_json::json!({"spec": {"output": {"uri": ok}}}));
    }
    assert_refused(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"output": {"uri": "registry://iris/3"}}}),
        "the registry assigns the version",
    );
    assert_refused(
        &crd,
        TJOB,
        serde_json::json!({"spec": {"output": {"uri": "https://example.com/x"}}}),
        "uri must start with registry://",
    );
}

#[test]
fn feature_set_rules() {
    let crd = FeatureSet::crd();
    assert_refused(
        &crd,
        FSET,
        serde_json::json!({"spec": {"features": [{"name": "customer_id", "type": "int64"}]}}),
        "must not have the entity's joinKey as its name",
    );
    assert_refused(
        &crd,
        FSET,
        serde_json::json!({"spec": {"features": [{"name": "1age", "type": "int64"}]}}),
        "feature name must be an identifier",
    );
    assert_refused(
        &crd,
        FSET,
        serde_json::json!({"spec": {"entity": {"name": "customer", "joinKey": "customer-id"}}}),
        "entity.joinKey must be an identifier",
    );
    for ok in ["30s", "90m", "24h", "1h30m", "1.5h"] {
        assert_valid(&crd, FSET, serde_json::json!({"spec": {"ttl": ok}}));
    }
    for bad in ["1d", "0s", "-1h", "24"] {
        assert_refused(
            &crd,
            FSET,
            serde_json::json!({"spec": {"ttl": bad}}),
            "ttl must be a positive duration",
        );
    }
    for ok in ["@hourly", "0 * * * *", "*/5 2 * * 1-5"] {
        assert_valid(&crd, FSET, serde_json::json!({"spec": {"schedule": ok}}));
    }
    for bad in ["hourly", "* * *", "@every 5m"] {
        assert_refused(
            &crd,
            FSET,
            serde_json::json!({"spec": {"schedule": bad}}),
            "schedule must be a cron expression",
        );
    }
    assert_refused(
        &crd,
        FSET,
        serde_json::json!({"spec": {"sources": [{"name": "a", "uri": "s3://x/a.csv"}, {"name": "a", "uri": "s3://x/b.csv"}]}}),
        "sources must not repeat a name",
    );
    assert_refused(
        &crd,
        FSET,
        serde_json::json!({"spec": {"sources": [{"name": "Daily", "uri": "s3://x/a.csv"}]}}),
        "source name must be a DNS label",
    );
    assert_valid(
        &crd,
        FSET,
        serde_json::json!({"spec": {"online": {"storageSize": "10Gi", "cacheSize": "128Mi"}}}),
    );
    assert_refused(
        &crd,
        FSET,
        serde_json::json!({"spec": {"online": {"storageSize": "lots"}}}),
        "online.storageSize must be a positive quantity",
    );
    assert_refused(
        &crd,
        FSET,
        serde_json::json!({"spec": {"online": {"storageSize": "0"}}}),
        "online.storageSize must be a positive quantity",
    );
    assert_refused(
        &crd,
        FSET,
        serde_json::json!({"spec": {"online": {"cacheSize": "big"}}}),
        "online.cacheSize must be a quantity",
    );
}

/// Walks a schema and calls `f` with each node that has CEL rules.
fn each_rule_node(node: &Value, f: &mut dyn FnMut(&Value, &str)) {
    if let Some(rules) = node.get("x-kubernetes-validations").and_then(Value::as_array) {
        for rule in rules {
            f(node, rule["rule"].as_str().unwrap());
        }
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        props.values().for_each(|p| each_rule_node(p, f));
    }
    if let Some(items) = node.get("items") {
        each_rule_node(items, f);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        each_rule_node(extra, f);
    }
}

/// The API server refuses a CRD whose rules may cost too much; bound every list and string a rule touches.
#[test]
fn every_rule_compiles_within_the_cost_budget() {
    let mut count = 0;
    for crd in crate::api::crd::all() {
        each_rule_node(&schema(&crd), &mut |node, rule| {
            count += 1;
            let compiled = compile_schema(node);
            assert!(!compiled.has_errors(), "{rule}: {:?}", compiled.compilation_errors());
            let warnings = estimate_rule_cost(rule, &compiled);
            assert!(warnings.is_empty(), "{rule}: {warnings:?}");
        });
    }
    assert!(count >= 30, "only {count} rules found");
}

#[test]
fn every_kind_refuses_names_that_cannot_name_children() {
    for (crd, base, children) in [
        (TrainingJob::crd(), TJOB, "it names the Job and its pods"),
        (FeatureSet::crd(), FSET, "it names the StatefulSet, its Service and its Jobs"),
        (ModelDeployment::crd(), MDEP, "it names the Services NAME and NAME-preview"),
    ] {
        assert_valid(&crd, base, serde_json::json!({"metadata": {"name": "a".repeat(52)}}));
        for bad in ["a".repeat(53), "9lives".into(), "under_score".into(), "trailing-".into()] {
            assert_refused(&crd, base, serde_json::json!({"metadata": {"name": bad}}), children);
        }
    }
}

#[test]
fn data_uris_take_pvc_only_with_a_path() {
    let pvc = "a pvc URI is pvc://CLAIM/PATH";
    let tjob = TrainingJob::crd();
    assert_valid(&tjob, TJOB, serde_json::json!({"spec": {"dataset": {"uri": "pvc://data/iris.csv"}}}));
    assert_refused(&tjob, TJOB, serde_json::json!({"spec": {"dataset": {"uri": "pvc://data"}}}), pvc);
    assert_refused(
        &tjob,
        TJOB,
        serde_json::json!({"spec": {"dataset": {"uri": null, "featureSet": {"name": "c", "labelsUri": "pvc://x"}}}}),
        pvc,
    );
    assert_valid(&tjob, TJOB, serde_json::json!({"spec": {"output": {"uri": "pvc://models/iris/"}}}));
    assert_refused(&tjob, TJOB, serde_json::json!({"spec": {"output": {"uri": "pvc://models"}}}), pvc);
    let fset = FeatureSet::crd();
    assert_refused(
        &fset,
        FSET,
        serde_json::json!({"spec": {"sources": [{"name": "daily", "uri": "pvc://features"}]}}),
        pvc,
    );
}
