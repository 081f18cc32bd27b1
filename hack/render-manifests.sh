#!/usr/bin/env bash
# Renders the plain manifests from the Helm chart with its default values, so `kubectl apply` users get
# the same install as `helm install`:
#   manifests/install.yaml    the namespace mizzen-system, the operator and the registry
#   manifests/operator.yaml   the same without the registry (registry.enabled=false)
# `make manifests` runs it; the e2e test `the_plain_manifests_are_the_chart_rendered` checks they are current.
#   render-manifests.sh [--check]     --check: exit 1 (with a diff) when a committed file differs
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HELM=${HELM:-}
if [[ -z $HELM ]]; then
  for d in $("$ROOT/hack/cluster/build.sh" --print-bin-dirs | tr : ' '); do
    [[ -x $d/helm ]] && HELM=$d/helm && break
  done
fi
[[ -n $HELM ]] || { echo "render-manifests: no helm (make cluster-binaries builds it, or set HELM)" >&2; exit 2; }

render() { # FILE WHAT [helm args...]
  local file=$1 what=$2
  shift 2
  {
    echo "# $what"
    echo "# Rendered from charts/mizzen by hack/render-manifests.sh (make manifests); do not edit."
    echo "#   kubectl apply --server-side -f crds/ && kubectl apply -f manifests/$(basename "$file")"
    echo "apiVersion: v1"
    echo "kind: Namespace"
    echo "metadata:"
    echo "  name: mizzen-system"
    echo "  labels:"
    echo "    app.kubernetes.io/part-of: mizzen"
    echo "    pod-security.kubernetes.io/enforce: restricted"
    "$HELM" template mizzen "$ROOT/charts/mizzen" --namespace mizzen-system "$@"
  }
}

check=0
[[ ${1:-} == --check ]] && check=1
status=0
for spec in "install.yaml|Mizzen: the operator and the model registry (its volume needs a StorageClass)." \
            "operator.yaml|Mizzen's operator alone (no registry); kustomize overlays start from here (kubectl apply -k manifests/)."; do
  file=$ROOT/manifests/${spec%%|*}
  args=()
  [[ $file == */operator.yaml ]] && args=(--set registry.enabled=false)
  new=$(render "$file" "${spec#*|}" "${args[@]}")
  if ((check)); then
    if ! diff -u "$file" <(printf '%s\n' "$new"); then
      echo "render-manifests: $file is stale: run make manifests" >&2
      status=1
    fi
  else
    printf '%s\n' "$new" >"$file"
  fi
done
exit $status
