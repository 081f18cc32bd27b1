#!/usr/bin/env bash
# Creates (once) the Python virtual environment the tests and benchmarks use, in the cache outside the
# clone, keyed by the requirements file's hash; prints its path. ONNX Runtime's shared library comes from
# here: $VENV/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.*
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REQ=${1:-$HERE/python-requirements.txt}
CACHE=${MIZZEN_CACHE:-$HOME/.cache/mizzen}
key=$(sha256sum "$REQ" | cut -c1-12)
VENV=$CACHE/venv-$(basename "$REQ" .txt)-$key
if [[ ! -f $VENV/.complete ]]; then
  command -v python3 >/dev/null || { echo "python-env: python3 is missing" >&2; exit 1; }
  echo "[python] creating $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >&2
  touch "$VENV/.complete"
fi
echo "$VENV"
