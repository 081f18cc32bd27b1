#!/usr/bin/env bash
# Restarts one component of the local cluster in place: the same command line and the same state
# (certificates, etcd's data), so a test can take the control plane away and bring it back as it was.
#   restart.sh NAME          stop NAME if it runs, start it again, wait until it answers
#   restart.sh NAME --stop   only stop it (a later `restart.sh NAME` or `make cluster-up` starts it again)
# NAME is etcd, kube-apiserver, kube-controller-manager, kube-scheduler or kwok.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-$(cd "$HERE/../.." && pwd)/.cluster}
name=${1:?usage: restart.sh NAME [--stop]}
log() { printf '[cluster] %s\n' "$*" >&2; }
[[ -f $CLUSTER_DIR/$name.cmd ]] || { log "no $name in $CLUSTER_DIR (start the cluster with make cluster-up)"; exit 1; }
# shellcheck source=procs.sh
source "$HERE/procs.sh"

stop "$name"
if [[ ${2:-} == --stop ]]; then
  log "$name stopped"
  exit 0
fi
export PATH="$("$HERE/build.sh" --print-bin-dirs):$PATH"
export KUBECONFIG=$CLUSTER_DIR/kubeconfig
setsid bash -c "exec $(cat "$CLUSTER_DIR/$name.cmd")" >>"$CLUSTER_DIR/logs/$name.log" 2>&1 </dev/null &
echo $! >"$CLUSTER_DIR/$name.pid"
deadline=$(($(date +%s) + 60))
answers() {
  case $name in
    kube-apiserver) kubectl get --raw /readyz ;;
    *) kill -0 "$(cat "$CLUSTER_DIR/$name.pid")" ;;
  esac
}
until answers >/dev/null 2>&1; do
  (($(date +%s) < deadline)) || { log "$name did not come back within 60 s"; exit 1; }
  sleep 0.2
done
log "$name restarted in place"
