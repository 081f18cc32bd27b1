#!/usr/bin/env bash
# `make demo`: the end-to-end tour on this machine, no Docker. Serves a real model with mizzen-serve and
# sends it predictions, then rolls ModelDeployments out blue-green on the local cluster's fake nodes:
# create, update, manual promotion, abort, scale. Everything it starts stops when it ends.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${MIZZEN_CACHE:-$HOME/.cache/mizzen}
TARGET=${CARGO_TARGET_DIR:-$CACHE/target}
cd "$ROOT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$ROOT/hack/cluster/down.sh" >/dev/null 2>&1 || true
}
trap cleanup EXIT
wait_for() { # seconds description command...
  local secs=$1 what=$2
  shift 2
  local deadline=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) < deadline)) || { echo "demo: timed out waiting for $what" >&2; exit 1; }
    sleep 0.3
  done
}

step "Building mizzen-serve and mizzen-operator"
cargo build -q -p mizzen-serve -p mizzen-operator
VENV=$("$ROOT/hack/python-env.sh")
MODELS=$CACHE/demo/models
"$VENV/bin/python" services/inference/models/make_models.py "$MODELS"
DYLIB=$(ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n 1)

step "Serving a scikit-learn iris classifier with mizzen-serve (ONNX Runtime, Open Inference Protocol v2)"
"$TARGET/debug/mizzen-serve" --model-uri "file://$MODELS/iris_logreg.onnx" --model-name iris \
  --http-addr 127.0.0.1:18480 --grpc-addr 127.0.0.1:18481 --ort-dylib-path "$DYLIB" --log-filter warn &
pids+=($!)
wait_for 30 "mizzen-serve" curl -fsS http://127.0.0.1:18480/v2/health/ready
curl -s http://127.0.0.1:18480/v2/models/iris; echo
echo "POST /v2/models/iris/infer (a setosa and a virginica):"
curl -s http://127.0.0.1:18480/v2/models/iris/infer -H 'content-type: application/json' \
  -d '{"inputs":[{"name":"float_input","shape":[2,4],"datatype":"FP32","data":[[5.1,3.5,1.4,0.2],[6.7,3.0,5.2,2.3]]}],"outputs":[{"name":"label"}]}'
echo
echo "A malformed request gets a 400 with a reason:"
curl -s http://127.0.0.1:18480/v2/models/iris/infer -d '{"inputs":[{"name":"float_input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}'
echo

step "Starting a local Kubernetes cluster (upstream binaries, fake kwok nodes) and the operator"
"$ROOT/hack/cluster/up.sh"
export KUBECONFIG=$ROOT/.cluster/kubeconfig
PATH="$("$ROOT/hack/cluster/build.sh" --print-bin-dirs):$PATH"
kubectl apply -f crds/
"$TARGET/debug/mizzen-operator" run --listen 127.0.0.1:18490 --log-filter warn >"$ROOT/.cluster/logs/operator.log" 2>&1 &
pids+=($!)
wait_for 60 "the operator" curl -fsS http://127.0.0.1:18490/ready

step "The API server refuses a bad ModelDeployment with the rule's message"
kubectl apply -f - <<'YAML' || true
apiVersion: mizzen.dev/v1alpha1
kind: ModelDeployment
metadata: {name: iris}
spec:
  model: {uri: "ftp://models/iris.onnx"}
  autoscaling: {minReplicas: 5, maxReplicas: 2}
YAML

mdep() {
  kubectl apply -f - <<YAML
apiVersion: mizzen.dev/v1alpha1
kind: ModelDeployment
metadata: {name: iris}
spec:
  model: {uri: "$1"}
  replicas: 2
  strategy: {blueGreen: {autoPromotion: false, scaleDownDelaySeconds: 5}}
YAML
}
phase() { kubectl get mdep iris -o "jsonpath={.status.phase}"; }
field() { kubectl get mdep iris -o "jsonpath={.status.$1}"; }
# Each check runs again on every try.
is_phase() { [[ $(phase) == "$1" ]]; }
switched() { [[ -n $(field previewRevision) && $(field activeRevision) == "$(field previewRevision)" ]]; }
available_is() { [[ $(field availableReplicas) == "$1" ]]; }

step "Create: the first revision goes straight to active"
mdep s3://models/iris-v1.onnx
wait_for 60 "Healthy" is_phase Healthy
kubectl get mdep,deployments,services

step "Update the model: a new revision starts on the preview Service and waits for promotion"
mdep s3://models/iris-v2.onnx
wait_for 60 "Paused" is_phase Paused
kubectl get mdep
kubectl get mdep iris -o 'jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}){"\n"}{end}'

step "Promote it with kubectl annotate (naming the revision, so a stale command never acts on a later one)"
kubectl annotate mdep iris "mizzen.dev/promote=$(field previewRevision)" --overwrite
wait_for 60 "the switch" switched
kubectl get mdep,deployments

step "Another update, aborted: traffic stays on the stable revision"
mdep s3://models/iris-v3.onnx
wait_for 60 "Paused" is_phase Paused
kubectl annotate mdep iris "mizzen.dev/abort=$(field previewRevision)" --overwrite
wait_for 60 "Degraded" is_phase Degraded
kubectl get mdep
kubectl get events --field-selector involvedObject.kind=ModelDeployment -o custom-columns=REASON:.reason,MESSAGE:.message | tail -n 8

step "Scale through the scale subresource"
mdep s3://models/iris-v2.onnx
wait_for 60 "Healthy" is_phase Healthy
kubectl scale mdep iris --replicas 4
wait_for 60 "4 available" available_is 4
kubectl get mdep,deployments

step "Done: everything started by the demo is stopped now"
