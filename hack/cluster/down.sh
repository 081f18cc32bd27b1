#!/usr/bin/env bash
# Stops the local cluster that up.sh started and removes its state. Safe to run when nothing is running.
#   --keep-logs  keep $CLUSTER_DIR/logs for a post-mortem
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-$(cd "$HERE/../.." && pwd)/.cluster}
[[ -d $CLUSTER_DIR ]] || exit 0

# shellcheck source=procs.sh
source "$HERE/procs.sh"

# Reverse start order: the real node first (its pods, mounts, bridge and rules), etcd last.
if [[ -f $CLUSTER_DIR/containerd.pid || -d $CLUSTER_DIR/node ]]; then "$HERE/node.sh" down; fi
for c in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done
if [[ -f $CLUSTER_DIR/kind-cluster ]]; then
  kind_bin=${MIZZEN_CACHE:-$HOME/.cache/mizzen}/bin/kind-${KIND_VERSION:-v0.32.0}/kind
  "$kind_bin" delete cluster --name "$(cat "$CLUSTER_DIR/kind-cluster")" || true
fi
if [[ ${1:-} == --keep-logs ]]; then
  find "$CLUSTER_DIR" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
else
  rm -rf "$CLUSTER_DIR"
fi
echo "[cluster] down" >&2
