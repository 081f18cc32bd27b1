//! What every pod the operator makes shares: a hardened security context, and `pvc://CLAIM/PATH` URIs
//! turned into a mounted claim and a `file://` path.

use k8s_openapi::api::core::v1::{
    Capabilities, PersistentVolumeClaimVolumeSource, PodSecurityContext, SeccompProfile, SecurityContext,
    Volume, VolumeMount,
};

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
