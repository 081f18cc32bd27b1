//! What every pod the operator makes shares: a hardened security context, `pvc://CLAIM/PATH` URIs turned
//! into a mounted claim and a `file://` path, and why a pod does not come up ([`trouble`]).

use crate::api::v1alpha1::common::ContainerSpec;
use k8s_openapi::api::batch::v1::{
    PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
    PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerStateTerminated, EnvVar, HTTPGetAction,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe, SeccompProfile,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// No privilege escalation, a read-only root file system, non-root, no capabilities.
pub fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        ..Default::default()
    }
}

/// Runs as uid/gid 65532 (distroless "nonroot") with the runtime's default seccomp profile.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_user: Some(65532),
        run_as_group: Some(65532),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// The claim of a `pvc://CLAIM/PATH` URI and the `file://` URI of PATH once the claim is mounted at
/// `ROOT/CLAIM`; `None` for other schemes.
pub fn pvc_path(uri: &str, root: &str) -> Option<(String, String)> {
    let (claim, path) = uri.strip_prefix("pvc://")?.split_once('/')?;
    Some((claim.to_string(), format!("file://{root}/{claim}/{path}")))
}

/// The volume `name` holding a claim, and its mount at `ROOT/CLAIM`.
pub fn pvc_volume(name: &str, claim: &str, root: &str, read_only: bool) -> (Volume, VolumeMount) {
    let name = name.to_string();
    (
        Volume {
            name: name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_string(),
                read_only: Some(read_only),
            }),
            ..Default::default()
        },
        VolumeMount {
            name,
            mount_path: format!("{root}/{claim}"),
            read_only: Some(read_only),
            ..Default::default()
        },
    )
}

/// `spec` placed and hardened as the object's container settings ask: node selector, tolerations, service
/// account and pull secrets from `c`, and the shared pod security context.
pub fn placed(c: &ContainerSpec, spec: PodSpec) -> PodSpec {
    PodSpec {
        node_selector: (!c.node_selector.is_empty()).then(|| c.node_selector.clone()),
        tolerations: (!c.tolerations.is_empty()).then(|| c.tolerations.clone()),
        service_account_name: c.service_account_name.clone(),
        image_pull_secrets: (!c.image_pull_secrets.is_empty()).then(|| c.image_pull_secrets.clone()),
        security_context: Some(pod_security()),
        ..spec
    }
}

/// A container named `name` running `c`'s image (else `default_image`) hardened, with `env` then the user's
/// variables (last, so they can add credentials and override a setting on purpose), `c`'s resources, and
/// the last log lines as termination message when it fails.
pub fn container(name: &str, c: &ContainerSpec, default_image: &str, mut env: Vec<EnvVar>) -> Container {
    env.extend(c.env.iter().cloned());
    Container {
        name: name.into(),
        image: Some(c.image.clone().unwrap_or_else(|| default_image.to_string())),
        image_pull_policy: Some(format!("{:?}", c.image_pull_policy)),
        env: Some(env),
        resources: c.resources.clone(),
        security_context: Some(container_security()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

/// A Job's pod failure policy: `action` (`FailIndex`, `FailJob`) at once when `container` exits with
/// `permanent` (a retry cannot help), and evictions and preemptions not counted as failures.
pub fn failure_policy(container: &str, permanent: i32, action: &str) -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: action.into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(container.into()),
                    operator: "In".into(),
                    values: vec![permanent],
                }),
                ..Default::default()
            },
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                }]),
                ..Default::default()
            },
        ],
    }
}

/// A probe of `GET path` on the container's port named `http`.
pub fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

/// Why a pod does not come up, when something is wrong rather than slow: it cannot be scheduled, its image
/// cannot be pulled or run, or its container exited with an error (the message is the kubelet's
/// termination message: the container's last log lines with `FallbackToLogsOnError`, cut to the error).
pub fn trouble(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(c) = unschedulable {
        return Some(format!("cannot be scheduled: {}", c.message.as_deref().unwrap_or("no node fits")));
    }
    for c in status.container_statuses.iter().flatten() {
        let exited = |t: &ContainerStateTerminated| {
            let why = t.message.as_deref().map(error_of_log).filter(|m| !m.is_empty());
            let why = why.or_else(|| t.reason.clone()).unwrap_or_default();
            format!("container {} exited with code {}: {why}", c.name, t.exit_code)
        };
        let failed_before =
            c.last_state.as_ref().and_then(|s| s.terminated.as_ref()).filter(|t| t.exit_code != 0);
        let state = c.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.as_deref().unwrap_or_default();
            match (reason, failed_before) {
                ("CrashLoopBackOff", Some(t)) => return Some(format!("{} (restarting)", exited(t))),
                (r, _) if FAILING.contains(&r) => {
                    return Some(format!(
                        "container {}: {r}: {}",
                        c.name,
                        w.message.as_deref().unwrap_or("")
                    ));
                }
                _ => {}
            }
        }
        if let Some(t) = state.and_then(|s| s.terminated.as_ref()).filter(|t| t.exit_code != 0) {
            return Some(exited(t));
        }
        if let Some(t) = failed_before.filter(|_| !c.ready) {
            return Some(exited(t));
        }
    }
    None
}

/// Waiting reasons that do not end by waiting longer.
const FAILING: &[&str] = &[
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// From a container's last log lines, the error it ended with: from the last `Error: ` (how Mizzen's binaries
/// end on an error) with its `Caused by:` chain on one line, or else the last line; cut at 400 characters.
fn error_of_log(log: &str) -> String {
    let tail =
        log.rfind("Error: ").map_or_else(|| log.trim_end().rsplit('\n').next().unwrap_or(""), |i| &log[i..]);
    let mut parts: Vec<&str> = vec![];
    for line in tail.lines().map(str::trim) {
        if line.starts_with("Stack backtrace:") {
            break;
        }
        if line.is_empty() || line == "Caused by:" {
            continue;
        }
        // "0: cause" in anyhow's chain.
        let line =
            line.split_once(": ").filter(|(n, _)| n.parse::<u32>().is_ok()).map_or(line, |(_, rest)| rest);
        // Errors that print their cause repeat it: say it once.
        if !parts.last().is_some_and(|p| p.contains(line)) {
            parts.push(line);
        }
    }
    mizzen_common::shortened(&parts.join(": "), 400)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn a_crash_loop_says_the_error_the_container_logged() {
        let log = "\x1b[2m2026\x1b[0m INFO loading\nError: loading pvc://models/missing.onnx\n\nCaused by:\n    0: open /models/missing.onnx\n    1: No such file or directory (os error 2)\n";
        let p = pod(serde_json::json!({"containerStatuses": [{
            "name": "mizzen-serve", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": log}},
        }]}));
        assert_eq!(
            trouble(&p).unwrap(),
            "container mizzen-serve exited with code 1: Error: loading pvc://models/missing.onnx: open \
             /models/missing.onnx: No such file or directory (os error 2) (restarting)"
        );
    }

    #[test]
    fn images_scheduling_and_plain_waiting_are_told_apart() {
        let waiting = |reason: &str| {
            pod(serde_json::json!({"containerStatuses": [{
                "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": "m"}},
            }]}))
        };
        assert_eq!(trouble(&waiting("ErrImageNeverPull")).unwrap(), "container c: ErrImageNeverPull: m");
        assert_eq!(trouble(&waiting("ContainerCreating")), None, "slow is not wrong");
        let unschedulable = pod(serde_json::json!({"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."}]}));
        assert!(trouble(&unschedulable).unwrap().starts_with("cannot be scheduled: 0/3 nodes"));
        let running = pod(serde_json::json!({"containerStatuses": [{
            "name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 1,
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
        }]}));
        assert_eq!(trouble(&running), None, "it failed once and runs ready now");
        let long = "Error: ".to_string() + &"x".repeat(1000);
        assert!(error_of_log(&long).ends_with("xxx ... (607 more characters)"), "{}", error_of_log(&long));
        assert_eq!(error_of_log("one\ntwo\n"), "two");
        let repeated = "Error: reading f: not found: os error 2\n\nCaused by:\n    0: not found: os error 2\n    1: os error 2\n";
        assert_eq!(error_of_log(repeated), "Error: reading f: not found: os error 2");
    }
}
