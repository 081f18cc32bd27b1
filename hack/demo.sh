#!/usr/bin/env bash
# `make demo`: the end-to-end tour on this machine, no Docker. Serves a real model with mizzen-serve and
# sends it predictions, trains one with mizzen-train and serves that, then on the local cluster's fake
# nodes rolls ModelDeployments out blue-green (create, update, manual promotion, abort, scale) and runs a
# TrainingJob search that deploys its best model. Everything it starts stops when it ends.
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

step "Building mizzen-serve, mizzen-train and mizzen-operator"
cargo build -q -p mizzen-serve -p mizzen-train -p mizzen-operator
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

step "Training a model with mizzen-train: iris from a CSV, preprocessing inside the exported ONNX graph"
DEMO=$CACHE/demo
"$VENV/bin/python" - "$DEMO/iris.csv" <<'PY'
import sys
from sklearn.datasets import load_iris
d = load_iris()
with open(sys.argv[1], "w") as f:
    f.write("sepal_length,sepal_width,petal_length,petal_width,species\n")
    for row, t in zip(d.data, d.target):
        f.write(",".join(map(str, row)) + "," + d.target_names[t] + "\n")
PY
"$TARGET/debug/mizzen-train" --data "$DEMO/iris.csv" --label species --algorithm mlp --set hiddenLayers=16 \
  --set learningRate=0.01 --set maxIterations=500 --output "$DEMO/trained" --log-filter warn
echo "model.json says (abridged):"
"$VENV/bin/python" -c 'import json,sys; m=json.load(open(sys.argv[1])); print(json.dumps({k: m[k] for k in ["algorithm","inputs","outputs","classes","metrics"]}, indent=1))' "$DEMO/trained/model.json"

step "Serving the trained model: it takes raw measurements and answers with class names"
"$TARGET/debug/mizzen-serve" --model-uri "file://$DEMO/trained/model.onnx" --model-name trained \
  --http-addr 127.0.0.1:18482 --grpc-addr 127.0.0.1:18483 --ort-dylib-path "$DYLIB" --log-filter warn &
pids+=($!)
wait_for 30 "mizzen-serve" curl -fsS http://127.0.0.1:18482/v2/health/ready
curl -s http://127.0.0.1:18482/v2/models/trained/infer -H 'content-type: application/json' \
  -d '{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[[5.1,3.5,1.4,0.2],[6.7,3.0,5.2,2.3]]}]}'
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

step "A TrainingJob: a grid search over l2 as an Indexed Job (one pod per trial), deploying the best model"
kubectl apply -f - <<'YAML'
apiVersion: mizzen.dev/v1alpha1
kind: TrainingJob
metadata: {name: iris}
spec:
  dataset: {uri: s3://datasets/iris.csv, label: species}
  algorithm: logisticRegression
  search:
    algorithm: grid
    parallelism: 3
    objective: {metric: logLoss}
    parameters: [{name: l2, categorical: ["100", "0.1", "1"]}]
  output: {uri: s3://models/iris/}
  deploy: {modelDeployment: iris, when: {metric: accuracy, threshold: 0.9}}
  suspend: true
YAML
wait_for 30 "the Job" kubectl get job iris
kubectl get job iris -o 'jsonpath=completions={.spec.completions} parallelism={.spec.parallelism} mode={.spec.completionMode} backoffLimitPerIndex={.spec.backoffLimitPerIndex}{"\n"}'
echo "The fake nodes run no containers, so their pods are handed the reports of real mizzen-train runs, one per trial:"
annotations="{}"
for i in 0 1 2; do
  l2=$(kubectl get job iris -o jsonpath='{.spec.template.spec.containers[0].env[0].value}' |
    "$VENV/bin/python" -c "import json,sys; print(json.load(sys.stdin)['trials'][$i]['l2'])")
  "$TARGET/debug/mizzen-train" --data "$DEMO/iris.csv" --label species --algorithm logisticRegression \
    --set "l2=$l2" --output "$DEMO/trial-$i" --termination-log "$DEMO/report-$i.json" --log-filter error >/dev/null
  annotations=$("$VENV/bin/python" -c "import json,sys; a=json.loads(sys.argv[1]); a['mizzen.dev/e2e-termination-message-$i']=open(sys.argv[2]).read(); print(json.dumps(a))" "$annotations" "$DEMO/report-$i.json")
  echo "  trial $i: l2=$l2 -> $(cat "$DEMO/report-$i.json" | cut -c1-100)..."
done
kubectl patch job iris --type merge -p "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":$annotations}}}}" >/dev/null
kubectl patch tjob iris --type merge -p '{"spec":{"suspend":false}}'
tjob_phase() { [[ $(kubectl get tjob iris -o 'jsonpath={.status.phase}') == "$1" ]]; }
wait_for 60 "Succeeded" tjob_phase Succeeded
kubectl get tjob iris -o wide
kubectl get tjob iris -o 'jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}) {.message}{"\n"}{end}'
echo "The ModelDeployment now rolls out the trained model: $(kubectl get mdep iris -o 'jsonpath={.spec.model.uri}')"
kubectl get events --field-selector involvedObject.kind=TrainingJob -o custom-columns=REASON:.reason,MESSAGE:.message

step "Done: everything started by the demo is stopped now"
