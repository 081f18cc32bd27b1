#!/usr/bin/env bash
# `make demo`: the end-to-end tour on real pods, no Docker. Starts the local cluster (with its real node),
# builds the images and installs the operator from manifests/ as a pod. A TrainingJob trains iris in a pod,
# a ModelDeployment serves the model and answers predictions; then a second TrainingJob searches for better
# hyperparameters and deploys its best model itself, rolled out blue-green while two clients keep sending
# predictions through the Service. It prints revisions, timings, accuracy, the request count and failures,
# and fails if one request failed. Everything it starts stops when it ends.
#
# MIZZEN_CLUSTER=kind: the same on a kind cluster (needs Docker): images from the Dockerfile, `kind load`,
# the data on the kind worker's disk and the clients on that node.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${MIZZEN_CACHE:-$HOME/.cache/mizzen}
MODE=${MIZZEN_CLUSTER:-local}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
DEMO=$CACHE/demo
cd "$ROOT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
pids=()
cleanup() {
  local rc=$?
  on_node touch /tmp/mizzen-demo-stop 2>/dev/null || true
  if ((rc != 0)) && [[ -n ${KUBECONFIG:-} ]]; then
    echo "demo: failed; what the cluster shows:" >&2
    kubectl get tjob,mdep,deployments,pods -o wide >&2 || true
    kubectl get events --sort-by=.lastTimestamp >&2 | tail -n 20 || true
    kubectl -n mizzen-system logs deployment/mizzen-operator --tail 20 >&2 || true
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [[ ${MIZZEN_DEMO_KEEP:-0} == 1 ]]; then
    echo "demo: the cluster stays up (MIZZEN_DEMO_KEEP=1): export KUBECONFIG=$ROOT/.cluster/kubeconfig; make cluster-down when done" >&2
  else
    "$ROOT/hack/cluster/down.sh" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
CLUSTER_DIR=$ROOT/.cluster
# shellcheck source=../cluster/procs.sh
source "$ROOT/hack/cluster/procs.sh" # wait_for WHAT SECS CMD...
now() { date +%s%N; }
since() { # the time since $1 (from now), in seconds with one decimal
  local ms=$((($(now) - $1) / 1000000))
  printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100))
}

# Where the pods run: the local cluster's real node (this machine), or kind's worker (a container).
case $MODE in
  local)
    NODE=mizzen-node
    VOLUME=$ROOT/.cluster/volumes/demo
    on_node() { "$@"; }
    to_node() { cp "$1" "$2"; }
    ;;
  kind)
    NODE=mizzen-worker
    VOLUME=/var/lib/mizzen-demo
    on_node() { docker exec "$NODE" "$@"; }
    to_node() { docker cp "$1" "$NODE:$2"; }
    ;;
  *) die "MIZZEN_CLUSTER must be local or kind, not $MODE" ;;
esac

step "Starting the local Kubernetes cluster: its control plane, kwok fake nodes and one real node"
rm -f /tmp/mizzen-demo-stop
"$ROOT/hack/cluster/up.sh"
export KUBECONFIG=$ROOT/.cluster/kubeconfig
PATH="$("$ROOT/hack/cluster/build.sh" --print-bin-dirs):$PATH"
kubectl get node "$NODE" >/dev/null 2>&1 ||
  die "the cluster has no node $NODE (the demo runs real pods: run it as root, without MIZZEN_REAL_NODE=0)"
# Pods ask for the real node by this label (and tolerate its taint, which only the local node has).
kubectl label node "$NODE" mizzen.dev/node=real --overwrite >/dev/null
kubectl get nodes -o wide

step "Building the images of mizzen-serve, mizzen-train and mizzen-operator and loading them into the node"
t=$(now)
if [[ $MODE == local ]]; then
  "$ROOT/hack/images/build.sh"
else
  kind=$CACHE/bin/kind-${KIND_VERSION:-v0.32.0}/kind
  for image in serve train operator; do
    docker build --target "mizzen-$image" -t "ghcr.io/mizzen-dev/mizzen-$image:$VERSION" .
    "$kind" load docker-image --name mizzen "ghcr.io/mizzen-dev/mizzen-$image:$VERSION"
  done
fi
echo "images ready in $(since "$t")"

step "Installing the operator as users do: the CRDs, then manifests/ (an overlay puts it on the real node)"
kubectl apply -f crds/
kubectl wait --for condition=Established crd --all --timeout 60s >/dev/null
if [[ $MODE == local ]]; then kubectl apply -k hack/demo/operator; else kubectl apply -k manifests; fi
kubectl -n mizzen-system rollout status deployment/mizzen-operator --timeout 180s
kubectl -n mizzen-system get pods -o wide

step "The API server refuses a bad TrainingJob with the rules' messages"
kubectl apply -f - <<'YAML' || true
apiVersion: mizzen.dev/v1alpha1
kind: TrainingJob
metadata: {name: iris}
spec:
  dataset: {uri: "pvc://data", label: species, features: [petal_length, species]}
  algorithm: logisticRegression
  hyperparameters: {hiddenLayers: [64]}
YAML

step "The data: iris as a CSV on a volume the pods mount (PersistentVolumeClaim models)"
VENV=$("$ROOT/hack/python-env.sh")
mkdir -p "$DEMO"
"$VENV/bin/python" - "$DEMO/iris.csv" <<'PY'
import sys
from sklearn.datasets import load_iris
d = load_iris()
with open(sys.argv[1], "w") as f:
    f.write("sepal_length,sepal_width,petal_length,petal_width,species\n")
    for row, t in zip(d.data, d.target):
        f.write(",".join(map(str, row)) + "," + d.target_names[t] + "\n")
PY
on_node rm -rf "$VOLUME"
on_node mkdir -p "$VOLUME/data"
to_node "$DEMO/iris.csv" "$VOLUME/data/iris.csv"
# The pods run as uid 65532; the trainers write their models next to the data.
on_node chown -R 65532:65532 "$VOLUME"
kubectl apply -f - <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: mizzen-demo}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteMany]
  storageClassName: ""
  claimRef: {namespace: default, name: models}
  hostPath: {path: $VOLUME, type: Directory}
  nodeAffinity:
    required:
      nodeSelectorTerms: [{matchExpressions: [{key: mizzen.dev/node, operator: In, values: [real]}]}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: models, namespace: default}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  resources: {requests: {storage: 1Gi}}
YAML

ON_THE_REAL_NODE='
    nodeSelector: {mizzen.dev/node: real}
    tolerations: [{key: mizzen.dev/node, operator: Equal, value: real, effect: NoSchedule}]'
tjob_is() { [[ $(kubectl get tjob "$1" -o 'jsonpath={.status.phase}') == "$2" ]]; }
tjob_field() { kubectl get tjob "$1" -o "jsonpath={.status.$2}"; }
md_field() { kubectl get mdep iris -o "jsonpath={.status.$1}"; }

# A TrainingJob NAME of logistic regression on the iris table, trained on the real node, with more SPEC.
tjob() { # NAME SPEC
  kubectl apply -f - <<YAML
apiVersion: mizzen.dev/v1alpha1
kind: TrainingJob
metadata: {name: $1}
spec:
  dataset: {uri: pvc://models/data/iris.csv, label: species}
  algorithm: logisticRegression
  output: {uri: pvc://models/$1/}
  trainer:$ON_THE_REAL_NODE
$2
YAML
}

step "TrainingJob iris-v1: mizzen-train in a pod on the real node, with a strong penalty (l2=1000)"
t=$(now)
tjob iris-v1 "  hyperparameters: {l2: 1000}"
wait_for "iris-v1 to train" 180 tjob_is iris-v1 Succeeded
TRAIN_V1=$(since "$t")
kubectl get tjob iris-v1 -o wide
kubectl get pods -l mizzen.dev/training-job=iris-v1 -o wide
V1_MODEL=$(tjob_field iris-v1 model.uri)
V1_ACCURACY=$(tjob_field iris-v1 'metrics.accuracy')

step "ModelDeployment iris serves it: two mizzen-serve pods, blue-green with a smoke test"
SETOSA='{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
t=$(now)
kubectl apply -f - <<YAML
apiVersion: mizzen.dev/v1alpha1
kind: ModelDeployment
metadata: {name: iris}
spec:
  model: {uri: "$V1_MODEL"}
  replicas: 2
  strategy:
    blueGreen:
      scaleDownDelaySeconds: 5
      smokeTest: {request: '$SETOSA'}
  server:$ON_THE_REAL_NODE
YAML
md_healthy() { [[ $(md_field phase) == Healthy && $(md_field availableReplicas) == 2 ]]; }
wait_for "iris to serve" 180 md_healthy
SERVE_READY=$(since "$t")
kubectl get mdep,deployments,services,pods -o wide

step "Predictions through kubectl port-forward (raw measurements in, species names out)"
kubectl port-forward svc/iris :8080 --address 127.0.0.1 >"$DEMO/port-forward.log" 2>&1 &
pids+=($!)
forwarded() { grep -q 'Forwarding from 127.0.0.1:' "$DEMO/port-forward.log"; }
wait_for "port-forward" 20 forwarded
PORT=$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$DEMO/port-forward.log" | head -1)
echo "POST /v2/models/iris/infer (a setosa and a virginica):"
curl -sS "http://127.0.0.1:$PORT/v2/models/iris/infer" -H 'content-type: application/json' \
  -d '{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[[5.1,3.5,1.4,0.2],[6.7,3.0,5.2,2.3]]}],"outputs":[{"name":"label"}]}'
echo
echo "A malformed request gets a 400 with a reason:"
curl -sS "http://127.0.0.1:$PORT/v2/models/iris/infer" -d '{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}'
echo

step "TrainingJob iris-v2: a grid search over l2 (three trainer pods at once), deploying its best model when accuracy >= 0.9, while two clients send predictions through the Service"
IP=$(kubectl get service iris -o 'jsonpath={.spec.clusterIP}')
# kube-proxy writes the Service's rules on its node about a second after its endpoints are ready.
answers() { on_node curl -fsS -m 2 "http://$IP:8080/v2/health/ready"; }
wait_for "the Service's ClusterIP to answer" 30 answers
to_node "$ROOT/hack/demo/load.sh" /tmp/mizzen-demo-load.sh
on_node rm -f /tmp/mizzen-demo-stop /tmp/mizzen-demo-load-1 /tmp/mizzen-demo-load-2
for i in 1 2; do
  if [[ $MODE == local ]]; then
    bash /tmp/mizzen-demo-load.sh "http://$IP:8080/v2/models/iris/infer" "$SETOSA" /tmp/mizzen-demo-stop \
      "/tmp/mizzen-demo-load-$i" &
    pids+=($!)
  else
    docker exec -d "$NODE" bash /tmp/mizzen-demo-load.sh "http://$IP:8080/v2/models/iris/infer" "$SETOSA" \
      /tmp/mizzen-demo-stop "/tmp/mizzen-demo-load-$i"
  fi
done
echo "clients sending to http://$IP:8080 (the active Service's ClusterIP), each request on a new connection"
BEFORE=$(md_field activeRevision)
t=$(now)
tjob iris-v2 '  search:
    algorithm: grid
    parallelism: 3
    objective: {metric: logLoss}
    parameters: [{name: l2, categorical: ["1000", "1", "0.01"]}]
  deploy: {modelDeployment: iris, when: {metric: accuracy, threshold: 0.9}}'
wait_for "iris-v2 to train" 240 tjob_is iris-v2 Succeeded
TRAIN_V2=$(since "$t")
kubectl get tjob iris-v2 -o wide
switched() { [[ $(md_field phase) == Healthy && $(md_field activeRevision) != "$BEFORE" ]]; }
wait_for "the switch to the new revision" 180 switched
SWITCH=$(since "$t")
AFTER=$(md_field activeRevision)
old_pods_gone() { [[ -z $(kubectl get pods -l "mizzen.dev/revision=$BEFORE" -o name) ]]; }
wait_for "the old revision's pods to go" 120 old_pods_gone
sleep 2
on_node touch /tmp/mizzen-demo-stop
loads_done() { on_node test -s /tmp/mizzen-demo-load-1 && on_node test -s /tmp/mizzen-demo-load-2; }
wait_for "the clients to stop" 30 loads_done
OK=0 FAILED=0
for i in 1 2; do
  read -r ok failed < <(on_node head -n 1 "/tmp/mizzen-demo-load-$i")
  OK=$((OK + ok)) FAILED=$((FAILED + failed))
  on_node tail -n +2 "/tmp/mizzen-demo-load-$i"
done
kubectl get mdep,deployments,pods -o wide
kubectl get events --field-selector involvedObject.name=iris -o custom-columns=KIND:.involvedObject.kind,REASON:.reason,MESSAGE:.message | tail -n 8

step "Summary"
cat <<EOF
iris-v1 trained in a pod in $TRAIN_V1: accuracy $V1_ACCURACY, model $V1_MODEL
iris served by 2 pods, Ready in $SERVE_READY after the ModelDeployment was created
iris-v2 searched 3 trials in $TRAIN_V2: accuracy $(tjob_field iris-v2 'metrics.accuracy') (l2=$(tjob_field iris-v2 'bestHyperparameters.l2')), model $(tjob_field iris-v2 model.uri)
revision $BEFORE -> $AFTER, traffic switched $SWITCH after iris-v2 was created (smoke test passed: $(md_field smokeTest.passed))
predictions during the search, the rollout and the old revision's scale-down: $OK answered, $FAILED failed
EOF
((FAILED == 0)) || die "$FAILED requests failed"
((OK > 0)) || die "no request was answered"

step "Done: everything started by the demo is stopped now"
