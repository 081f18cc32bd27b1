//! `metav1.Condition` bookkeeping shared by every controller.
//!
//! Status must be deterministic (an idle object causes no writes), so a condition keeps its
//! `lastTransitionTime` unless its status flips, and a status patch is only sent when something changed.

use crate::api::v1alpha1::common::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A condition as a controller wants it, before bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: &'static str,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: &'static str,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Desired { type_, status, reason: reason.into(), message: message.into() }
    }
}

/// Merges `desired` into `current`: conditions of other types are kept, the transition time moves only when
/// the status flips, and every written condition carries `generation`.
pub fn merge(
    current: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> =
        current.iter().filter(|c| !desired.iter().any(|d| d.type_ == c.type_)).cloned().collect();
    for d in desired {
        let previous = current.iter().find(|c| c.type_ == d.type_);
        let last_transition_time = match previous {
            Some(p) if p.status == d.status => p.last_transition_time.clone(),
            _ => now.clone(),
        };
        out.push(Condition {
            type_: d.type_.to_string(),
            status: d.status.to_string(),
            reason: d.reason.to_string(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Whether `current` already says everything `desired` says for this generation, so no write is needed.
pub fn up_to_date(current: &[Condition], desired: &[Desired], generation: Option<i64>) -> bool {
    desired.iter().all(|d| {
        current.iter().any(|c| {
            c.type_ == d.type_
                && c.status == d.status
                && c.reason == d.reason
                && c.message == d.message
                && c.observed_generation == generation
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::common::status::{FALSE, TRUE, UNKNOWN};

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn ready(status: &'static str) -> Desired {
        Desired::new("Ready", status, "Because", "m")
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = merge(&[], &[ready(UNKNOWN)], Some(1), t(10));
        assert_eq!(first[0].last_transition_time, t(10));
        let same = merge(&first, &[ready(UNKNOWN)], Some(2), t(20));
        assert_eq!(same[0].last_transition_time, t(10));
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(&same, &[ready(TRUE)], Some(2), t(30));
        assert_eq!(flipped[0].last_transition_time, t(30));
    }

    #[test]
    fn other_conditions_are_kept_and_sorted() {
        let a = merge(&[], &[Desired::new("Progressing", TRUE, "R", "")], None, t(1));
        let b = merge(&a, &[ready(FALSE)], None, t(2));
        assert_eq!(b.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(), ["Progressing", "Ready"]);
    }

    #[test]
    fn up_to_date_checks_generation_and_content() {
        let c = merge(&[], &[ready(UNKNOWN)], Some(1), t(1));
        assert!(up_to_date(&c, &[ready(UNKNOWN)], Some(1)));
        assert!(!up_to_date(&c, &[ready(UNKNOWN)], Some(2)));
        assert!(!up_to_date(&c, &[ready(TRUE)], Some(1)));
        assert!(!up_to_date(&[], &[ready(UNKNOWN)], Some(1)));
    }
}
