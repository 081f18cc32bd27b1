#!/usr/bin/env bash
# Runs the e2e suite on a fresh cluster and tears the cluster down afterwards, whether the tests pass,
# fail or are interrupted. Logs of the cluster are kept in .cluster/logs when something fails.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CARGO=${CARGO:-cargo}

status=1
finish() {
  if ((status == 0)); then "$HERE/cluster/down.sh"; else "$HERE/cluster/down.sh" --keep-logs; fi
  exit "$status"
}
trap finish EXIT
trap 'status=130; exit' INT TERM

"$HERE/cluster/down.sh"
t0=$(date +%s)
"$HERE/cluster/up.sh" || exit
# The real node's pods run the images built here (not pulled).
if [[ -S ${CLUSTER_DIR:-$HERE/../.cluster}/node/containerd.sock ]]; then "$HERE/images/build.sh" serve train operator registry features || exit; fi
"$CARGO" build -p mizzen-operator -p mizzen-train || exit
"$CARGO" test -p mizzen-e2e --test e2e -- "$@"
status=$?
echo "[e2e] cluster and suite took $(($(date +%s) - t0)) s" >&2
