#!/usr/bin/env bash
# Builds Mizzen's container images without Docker (hack/images/oci.py: an OCI image layout from the release
# binaries, the shared libraries they load and ONNX Runtime's library), caches them by content, and imports
# them into the local cluster's real node when it runs.
#
#   build.sh [serve] [train] [operator] [registry] [features]     (default: the first three)
#
# Names and tags are the operator's defaults (--serve-image, --train-image): ghcr.io/mizzen-dev/NAME:VERSION.
# Users with Docker build the same images from the Dockerfiles (services/*/Dockerfile, operator/Dockerfile).
# An unchanged image is not rebuilt (importing it again only finds its blobs there): its tar in
# $MIZZEN_CACHE/images is named by the hash of everything that goes into it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${MIZZEN_CACHE:-$HOME/.cache/mizzen}
TARGET=${CARGO_TARGET_DIR:-$CACHE/target}
CLUSTER_DIR=${CLUSTER_DIR:-$ROOT/.cluster}
CARGO=${CARGO:-cargo}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
REGISTRY=ghcr.io/mizzen-dev

log() { printf '[images] %s\n' "$*" >&2; }

images=("$@")
((${#images[@]})) || images=(serve train operator)
declare -A package=([serve]=mizzen-serve [train]=mizzen-train [operator]=mizzen-operator [registry]=mizzen-registry [features]=mizzen-features)
packages=()
for i in "${images[@]}"; do
  [[ -n ${package[$i]:-} ]] || { log "unknown image $i (serve, train, operator, registry or features)"; exit 2; }
  packages+=(-p "${package[$i]}")
done

"$CARGO" build --release "${packages[@]}" >&2
venv=$("$ROOT/hack/python-env.sh")
ort=$(ls "$venv"/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1)
ort_in_image=/usr/local/lib/$(basename "$ort")

socket=$CLUSTER_DIR/node/containerd.sock
mkdir -p "$CACHE/images"
for i in "${images[@]}"; do
  name=${package[$i]}
  ref=$REGISTRY/$name:$VERSION
  bin=$TARGET/release/$name
  args=(--name "$ref" --file "$bin:/usr/local/bin/$name" --entrypoint "/usr/local/bin/$name")
  case $i in
    serve | train) args+=(--file "$ort:$ort_in_image" --env "ORT_DYLIB_PATH=$ort_in_image") ;;
  esac
  # By content (the arguments name the files by paths that are the same for every clone).
  key=$({
    printf '%s\n' "${args[@]}"
    cat "$bin" "$HERE/oci.py"
    [[ $i == operator || $i == registry || $i == features ]] || cat "$ort"
  } | sha256sum | cut -c1-16)
  tar=$CACHE/images/$name-$key.tar
  if [[ -f $tar ]]; then
    log "$ref: unchanged ($tar)"
  else
    t0=$(date +%s%N)
    digest=$(python3 "$HERE/oci.py" --out "$tar" "${args[@]}")
    log "$ref: built $digest in $((($(date +%s%N) - t0) / 1000000)) ms, $(du -h "$tar" | cut -f1) ($tar)"
    # Older builds of the same image go.
    find "$CACHE/images" -name "$name-*.tar" ! -name "$(basename "$tar")" -delete
  fi
  if [[ -S $socket ]]; then
    ctr --address "$socket" -n k8s.io images import "$tar" >/dev/null
    log "$ref: imported into the real node"
  fi
done
