#!/usr/bin/env bash
# Starts a local Kubernetes control plane from pinned upstream binaries, on loopback, with fake kwok nodes:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, each a plain process whose pid,
# log and state live in $CLUSTER_DIR (default .cluster/, git-ignored). Writes $CLUSTER_DIR/kubeconfig.
# Then one real node (node.sh: containerd, kubelet, kube-proxy, CoreDNS) for pods that ask for it;
# MIZZEN_REAL_NODE=0 leaves it out (it needs root).
#
# MIZZEN_CLUSTER=kind starts a kind cluster from kind-config.yaml instead (needs Docker), and adds the same
# kwok fake nodes to it, so the same e2e suite runs there.
#
# Idempotent: if the cluster is already up and healthy it returns at once. If a start fails or is
# interrupted, everything started so far is stopped again.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-$ROOT/.cluster}
ETCD_PORT=${MIZZEN_ETCD_PORT:-23790}
API_PORT=${MIZZEN_API_PORT:-16443}
KWOK_NODES=${MIZZEN_KWOK_NODES:-2}
MODE=${MIZZEN_CLUSTER:-local}
REAL_NODE=${MIZZEN_REAL_NODE:-1}
[[ $MODE == local ]] || REAL_NODE=0
KIND_VERSION=${KIND_VERSION:-v0.32.0}
SERVICE_CIDR=10.96.0.0/16
# Where the API server listens and what it advertises (the `kubernetes` Service's endpoint): loopback, or
# with the real node the node's address on its bridge (node.sh), which its pods reach and nothing off this
# machine does.
API_HOST=127.0.0.1
[[ $REAL_NODE == 1 ]] && API_HOST=10.85.0.1

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in openssl curl; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install $tool)"
done

"$HERE/build.sh"
export PATH="$("$HERE/build.sh" --print-bin-dirs):$PATH"
KWOK_VERSION=$(basename "$(dirname "$(command -v kwok)")")
KWOK_VERSION=${KWOK_VERSION#kwok-}
KWOK_MOD=${GOMODCACHE:-${MIZZEN_CACHE:-$HOME/.cache/mizzen}/go/mod}/sigs.k8s.io/kwok@$KWOK_VERSION
KUBECONFIG_FILE=$CLUSTER_DIR/kubeconfig
export KUBECONFIG=$KUBECONFIG_FILE

alive() { [[ -f $CLUSTER_DIR/$1.pid ]] && kill -0 "$(cat "$CLUSTER_DIR/$1.pid")" 2>/dev/null; }

components() {
  if [[ $MODE == kind ]]; then echo kwok; else echo etcd kube-apiserver kube-controller-manager kube-scheduler kwok; fi
  if [[ $REAL_NODE == 1 ]]; then echo containerd kubelet kube-proxy coredns; fi
}

healthy() {
  local c
  for c in $(components); do alive "$c" || return 1; done
  kubectl get --raw /readyz >/dev/null 2>&1
}

if healthy; then
  log "already up: export KUBECONFIG=$KUBECONFIG_FILE"
  exit 0
fi
# Components that died are started again in place, with their state (certificates, etcd's data): a cluster
# whose API server was killed comes back as it was, not as a fresh one.
if [[ $MODE == local && -f $KUBECONFIG_FILE ]] && ls "$CLUSTER_DIR"/*.cmd >/dev/null 2>&1; then
  for c in $(components); do
    alive "$c" || "$HERE/restart.sh" "$c" || true
  done
  if healthy; then
    log "restarted in place: export KUBECONFIG=$KUBECONFIG_FILE"
    exit 0
  fi
  log "a restart in place did not bring the cluster back; starting afresh"
fi

# Leftovers of a broken earlier run go first.
"$HERE/down.sh" >/dev/null 2>&1 || true
mkdir -p "$CLUSTER_DIR/pki" "$CLUSTER_DIR/logs"
started=0
cleanup_on_failure() {
  local rc=$?
  if ((rc != 0 && started == 0)); then
    log "start failed (exit $rc); last log lines:"
    for f in "$CLUSTER_DIR"/logs/*.log; do
      [[ -f $f ]] || continue
      echo "--- $f" >&2
      tail -n 15 "$f" >&2
    done
    "$HERE/down.sh" --keep-logs >/dev/null 2>&1 || true
  fi
}
trap cleanup_on_failure EXIT
trap 'exit 130' INT TERM

t0=$(date +%s%N)

# shellcheck source=procs.sh
source "$HERE/procs.sh"

start_local_control_plane() {
# --- certificates -----------------------------------------------------------------------------------
pki=$CLUSTER_DIR/pki
gen_cert() { # name subject [san]
  local name=$1 subject=$2 san=${3:-}
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$subject" \
    -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
  local ext="$pki/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $san ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
}
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj "/CN=mizzen-test-ca" -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
gen_cert apiserver "/CN=kube-apiserver" \
  "IP:127.0.0.1,IP:10.85.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
gen_cert admin "/O=system:masters/CN=mizzen-admin"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null

kubectl config set-cluster mizzen --server="https://$API_HOST:$API_PORT" \
  --certificate-authority="$pki/ca.crt" --embed-certs=true >/dev/null
kubectl config set-credentials mizzen-admin --client-certificate="$pki/admin.crt" \
  --client-key="$pki/admin.key" --embed-certs=true >/dev/null
kubectl config set-context mizzen --cluster=mizzen --user=mizzen-admin >/dev/null
kubectl config use-context mizzen >/dev/null

start etcd etcd --name mizzen --data-dir "$CLUSTER_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
  --initial-cluster "mizzen=http://127.0.0.1:$((ETCD_PORT + 1))" \
  --listen-metrics-urls "" --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn
wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

start kube-apiserver kube-apiserver --bind-address "$API_HOST" --advertise-address "$API_HOST" \
  --secure-port "$API_PORT" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC --allow-privileged \
  --kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key" \
  --kubelet-preferred-address-types InternalIP,Hostname \
  --enable-admission-plugins NamespaceLifecycle,ServiceAccount,DefaultStorageClass,ResourceQuota \
  --max-requests-inflight 1000 --max-mutating-requests-inflight 500 --v 1
wait_for kube-apiserver 60 kubectl get --raw /readyz

common=(--kubeconfig "$KUBECONFIG_FILE" --authentication-kubeconfig "$KUBECONFIG_FILE"
  --authorization-kubeconfig "$KUBECONFIG_FILE" --leader-elect=false --bind-address 127.0.0.1)
start kube-controller-manager kube-controller-manager "${common[@]}" --secure-port 0 \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" --use-service-account-credentials=false \
  --kube-api-qps 500 --kube-api-burst 1000 --concurrent-deployment-syncs 20 \
  --concurrent-replicaset-syncs 20 --concurrent-job-syncs 20 --concurrent-gc-syncs 40 --v 1
start kube-scheduler kube-scheduler "${common[@]}" --secure-port 0 --kube-api-qps 500 --kube-api-burst 1000 --v 1

}

start_kind() {
  case $MODE in kind) ;; *) die "MIZZEN_CLUSTER must be local or kind, not $MODE" ;; esac
  command -v docker >/dev/null || die "MIZZEN_CLUSTER=kind needs Docker"
  local kind_bin=${MIZZEN_CACHE:-$HOME/.cache/mizzen}/bin/kind-$KIND_VERSION
  if [[ ! -x $kind_bin/kind ]]; then
    log "building kind $KIND_VERSION"
    GOBIN=$kind_bin go install "sigs.k8s.io/kind@$KIND_VERSION"
  fi
  echo mizzen >"$CLUSTER_DIR/kind-cluster"
  "$kind_bin/kind" create cluster --config "$ROOT/kind-config.yaml" --kubeconfig "$KUBECONFIG_FILE" --wait 180s
}

if [[ $REAL_NODE == 1 ]]; then "$HERE/node.sh" network; fi
if [[ $MODE == local ]]; then start_local_control_plane; else start_kind; fi

# kwok: upstream node stages from the pinned module, and our own pod stages.
stages=$CLUSTER_DIR/kwok-stages.yaml
{
  cat "$KWOK_MOD/kustomize/stage/node/fast/node-initialize.yaml"
  echo "---"
  cat "$KWOK_MOD/kustomize/stage/node/heartbeat/node-heartbeat.yaml"
  echo "---"
  cat "$HERE/pod-stages.yaml"
} >"$stages"
start kwok kwok --kubeconfig "$KUBECONFIG_FILE" --config "$stages" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --cidr 10.244.0.0/16 --node-ip 10.0.0.1 --server-address "" --node-lease-duration-seconds 40

for ((i = 0; i < KWOK_NODES; i++)); do
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "1000"}
  capacity: {cpu: "64", memory: 256Gi, pods: "1000"}
YAML
done
wait_for "fake nodes" 60 kubectl wait --for=condition=Ready node -l type=kwok --timeout=1s
# Pods need the namespace's default ServiceAccount, which the controller manager creates.
wait_for "default ServiceAccount" 60 kubectl -n default get serviceaccount default
if [[ $REAL_NODE == 1 ]]; then "$HERE/node.sh" up; fi

started=1
log "up in $((($(date +%s%N) - t0) / 1000000)) ms: export KUBECONFIG=$KUBECONFIG_FILE"
