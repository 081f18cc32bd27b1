//! The table of objects the API server must accept or refuse (`api/tests/fixtures/validation-cases.yaml`).
//!
//! One table, two judges: the unit tests run it through kube's client-side CEL engine, and the e2e suite
//! through a real API server, so a rule that only one of them enforces shows up as a failing case.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

const TABLE: &str = include_str!("../tests/fixtures/validation-cases.yaml");

#[derive(Deserialize)]
struct Table {
    base: BTreeMap<String, Value>,
    cases: Vec<RawCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    kind: String,
    patch: Value,
    #[serde(default)]
    refused: Option<String>,
    #[serde(default)]
    server: bool,
    /// A second merge patch: the case is then an update from `base + patch` to `base + patch + update`,
    /// which is how rules on `oldSelf` (transition rules) are judged.
    #[serde(default)]
    update: Option<Value>,
}

/// One case: an object, and what the API server must say about it.
#[derive(Clone, Debug)]
pub struct Case {
    /// Its position in the table, for messages.
    pub index: usize,
    pub kind: String,
    pub patch: Value,
    /// The whole object: the kind's base with the patch applied.
    pub object: Value,
    /// `Some(message)`: must be refused with an error containing it. `None`: must be accepted.
    pub refused: Option<String>,
    /// Only a real API server can judge it (schema bounds, enums, list uniqueness).
    pub server_only: bool,
    /// For an update case: the object before the update (`object` is the object after it).
    pub old: Option<Value>,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "case {} ({} {})", self.index, self.kind, self.patch)
    }
}

/// Every case of the table.
///
/// # Panics
/// If the table does not parse or names a kind without a base: the table is compiled in, so that is a
/// bug that every test run shows at once.
pub fn cases() -> Vec<Case> {
    let table: Table = serde_saphyr::from_str(TABLE).expect("validation-cases.yaml parses");
    table
        .cases
        .into_iter()
        .enumerate()
        .map(|(index, c)| {
            let mut object =
                table.base.get(&c.kind).unwrap_or_else(|| panic!("no base for {}", c.kind)).clone();
            merge_patch(&mut object, &c.patch);
            let old = c.update.as_ref().map(|update| {
                let old = object.clone();
                merge_patch(&mut object, update);
                old
            });
            Case {
                index,
                kind: c.kind,
                patch: c.patch,
                object,
                refused: c.refused,
                server_only: c.server,
                old,
            }
        })
        .collect()
}

/// RFC 7386 JSON merge patch: objects merge, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut v, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(v, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn table_has_accepted_and_refused_cases_of_each_kind() {
        let cases = cases();
        for kind in ["ModelDeployment", "TrainingJob", "FeatureSet"] {
            assert!(cases.iter().any(|c| c.kind == kind && c.refused.is_none()), "{kind}: no accepted case");
            assert!(cases.iter().any(|c| c.kind == kind && c.refused.is_some()), "{kind}: no refused case");
        }
    }
}
