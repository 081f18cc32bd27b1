#!/usr/bin/env bash
# Runs bench/run.py (serving) and bench/training.py (training) with the release binaries, the test models, ONNX Runtime's library and the peers'
# Python environment; results land in $MIZZEN_CACHE/bench/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${MIZZEN_CACHE:-$HOME/.cache/mizzen}
TARGET=${CARGO_TARGET_DIR:-$CACHE/target}
VENV=$("$ROOT/hack/python-env.sh")
BENCH_VENV=$("$ROOT/hack/python-env.sh" "$ROOT/hack/python-bench-requirements.txt")
MODELS=$CACHE/bench/models
"$VENV/bin/python" "$ROOT/services/inference/models/make_models.py" "$MODELS"
DYLIB=$(ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n 1)
"$BENCH_VENV/bin/python" "$ROOT/bench/run.py" --serve "$TARGET/release/mizzen-serve" --loadgen "$TARGET/release/mizzen-bench" \
  --models "$MODELS" --ort-dylib "$DYLIB" --bench-venv "$BENCH_VENV" --out "$CACHE/bench" "$@"

# Training: mizzen-train against scikit-learn on the same data and split.
TRAIN_DATA=$CACHE/bench/train-data
[[ -f $TRAIN_DATA/done ]] || "$VENV/bin/python" "$ROOT/services/training/tests/python/datasets.py" "$TRAIN_DATA"
[[ -f $TRAIN_DATA/high_cardinality.csv ]] ||
  "$VENV/bin/python" "$ROOT/services/training/tests/python/high_cardinality.py" "$TRAIN_DATA"
"$VENV/bin/python" "$ROOT/bench/training.py" --train "$TARGET/release/mizzen-train" --data "$TRAIN_DATA" \
  --out "$CACHE/bench/training.md"

# The registry: artifact throughput against a disk copy, metadata latency, and the MLflow client flow against
# the real `mlflow server`.
REGISTRY_VENV=$("$ROOT/hack/python-env.sh" "$ROOT/hack/python-registry-bench-requirements.txt")
python3 "$ROOT/bench/registry.py" --registry "$TARGET/release/mizzen-registry" --mlflow-venv "$REGISTRY_VENV" \
  --model "$MODELS/iris_logreg.onnx" --out "$CACHE/bench/registry.md"

# The feature store: mizzen-features against Feast's own `feast serve` (SQLite online store), same data and
# load generator.
FEATURES_VENV=$("$ROOT/hack/python-env.sh" "$ROOT/hack/python-features-requirements.txt")
"$FEATURES_VENV/bin/python" "$ROOT/bench/features.py" --features "$TARGET/release/mizzen-features" \
  --loadgen "$TARGET/release/mizzen-bench" --out "$CACHE/bench/features.md"

# The operator at scale, on a fresh local cluster that is torn down afterwards.
"$ROOT/hack/cluster/down.sh"
trap '"$ROOT/hack/cluster/down.sh"' EXIT
# Without the real node: its kube-proxy and CoreDNS would follow the 500 Services of fake pods and take CPU
# from what is measured.
MIZZEN_REAL_NODE=0 "$ROOT/hack/cluster/up.sh"
python3 "$ROOT/bench/operator_scale.py" --operator "$TARGET/release/mizzen-operator" \
  --kubectl "$(ls -d "$CACHE"/bin/kubernetes-*/kubectl | head -n 1)" --kubeconfig "$ROOT/.cluster/kubeconfig" \
  --count "${MIZZEN_SCALE_COUNT:-500}" --out "$CACHE/bench/operator-scale.md"
