//! Every CEL rule of the three kinds, checked client-side with kube's CEL engine against the generated CRD
//! schemas (defaults applied first, as the API server does), using the shared table of validation cases.
//! The e2e suite runs the same table against a real API server.

use super::{FeatureSet, ModelDeployment, TrainingJob};
use crate::validation_cases::cases;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::cel::{Validator, compile_schema, estimate_rule_cost};
use serde_json::Value;

fn schema(crd: &CustomResourceDefinition) -> Value {
    serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap())
        .unwrap()
}

fn crd_of(kind: &str) -> CustomResourceDefinition {
    match kind {
        "ModelDeployment" => ModelDeployment::crd(),
        "TrainingJob" => TrainingJob::crd(),
        "FeatureSet" => FeatureSet::crd(),
        other => panic!("unknown kind {other}"),
    }
}

/// The messages of the rules `object` breaks, with the failing rule for diagnosis.
fn errors(object: &Value, old: Option<&Value>) -> Vec<String> {
    let crd = crd_of(object["kind"].as_str().unwrap_or_default());
    match Validator::new().validate(&schema(&crd), object, old) {
        Ok(()) => vec![],
        Err(errs) => errs
            .into_vec()
            .into_iter()
            .map(|e| format!("{} [{}: {}]", e.message, e.field_path, e.rule))
            .collect(),
    }
}

#[test]
fn validation_cases_client_side() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases().into_iter().filter(|c| !c.server_only) {
        checked += 1;
        let errs = errors(&case.object, case.old.as_ref());
        match &case.refused {
            None if !errs.is_empty() => failures.push(format!("{case}: expected accepted, got {errs:?}")),
            Some(msg) if !errs.iter().any(|e| e.contains(msg.as_str())) => {
                failures.push(format!("{case}: expected refused with {msg:?}, got {errs:?}"))
            }
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{} of {checked} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert!(checked >= 100, "only {checked} cases");
}

/// Every rule message in the CRDs is the expected refusal of some case, so no rule goes untested.
#[test]
fn every_rule_has_a_refusing_case() {
    let refusals: Vec<String> = cases().into_iter().filter_map(|c| c.refused).collect();
    let mut untested = Vec::new();
    for crd in crate::crd::all() {
        each_rule_node(&schema(&crd), &mut |_, rule| {
            let message = rule["message"].as_str().unwrap_or_default();
            if !refusals.iter().any(|r| message.contains(r.as_str())) {
                untested.push(format!("{}: {message}", crd.spec.names.kind));
            }
        });
    }
    assert!(untested.is_empty(), "rules with no refusing case:\n{}", untested.join("\n"));
}

#[test]
fn examples_in_manifests_are_valid() {
    let dir = mizzen_common::testing::repo_root().join("manifests/examples");
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in text.split("\n---\n") {
            let obj: Value = serde_saphyr::from_str(doc).unwrap();
            let errs = errors(&obj, None);
            assert!(errs.is_empty(), "{} is refused: {errs:?}", path.display());
            let unknown = unknown_fields(&schema(&crd_of(obj["kind"].as_str().unwrap())), &obj, "");
            assert!(
                unknown.is_empty(),
                "{}: unknown fields {unknown:?} (kubectl would refuse them)",
                path.display()
            );
            seen.insert(obj["kind"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(seen.len(), 3, "expected an example of each kind in {}, saw {seen:?}", dir.display());
}

/// Paths of fields in `value` that `schema` does not declare: `kubectl apply` refuses them (strict field
/// validation), and CEL never sees them, so the CEL check alone would miss a misspelt field.
fn unknown_fields(schema: &Value, value: &Value, path: &str) -> Vec<String> {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return vec![];
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|v| v.is_object());
            map.iter()
                .filter(|(k, _)| {
                    !(path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                })
                .flat_map(|(k, v)| {
                    let child = format!("{path}.{k}");
                    match props.and_then(|p| p.get(k)).or(extra) {
                        Some(s) => unknown_fields(s, v, &child),
                        None => vec![child],
                    }
                })
                .collect()
        }
        Value::Array(items) => match schema.get("items") {
            Some(s) => items.iter().flat_map(|v| unknown_fields(s, v, &format!("{path}[]"))).collect(),
            None => vec![],
        },
        _ => vec![],
    }
}

#[test]
fn validation_cases_name_only_declared_fields() {
    for case in cases() {
        let unknown = unknown_fields(&schema(&crd_of(&case.kind)), &case.object, "");
        assert!(unknown.is_empty(), "{case}: unknown fields {unknown:?}");
    }
}

#[test]
fn unknown_fields_are_found() {
    let crd = ModelDeployment::crd();
    let obj = serde_json::json!({"kind": "ModelDeployment", "spec": {"model": {"uri": "x", "url": "y"}, "replica": 2}});
    let mut unknown = unknown_fields(&schema(&crd), &obj, "");
    unknown.sort();
    assert_eq!(unknown, [".spec.model.url", ".spec.replica"]);
}

/// Walks a schema and calls `f` with each node that has CEL rules, and each rule.
fn each_rule_node(node: &Value, f: &mut dyn FnMut(&Value, &Value)) {
    if let Some(rules) = node.get("x-kubernetes-validations").and_then(Value::as_array) {
        for rule in rules {
            f(node, rule);
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
    for crd in crate::crd::all() {
        each_rule_node(&schema(&crd), &mut |node, rule| {
            count += 1;
            let rule = rule["rule"].as_str().unwrap();
            let compiled = compile_schema(node);
            assert!(!compiled.has_errors(), "{rule}: {:?}", compiled.compilation_errors());
            let warnings = estimate_rule_cost(rule, &compiled);
            assert!(warnings.is_empty(), "{rule}: {warnings:?}");
        });
    }
    assert!(count >= 30, "only {count} rules found");
}
