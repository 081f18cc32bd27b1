#!/usr/bin/env bash
# Builds the pinned upstream binaries the local test cluster runs, through the Go module proxy, into a cache
# outside the clone keyed by version. Binaries already in the cache are kept, so a warm run does nothing.
#
#   Kubernetes: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy
#   etcd, kwok and kwokctl, helm, CoreDNS (only the plugins the real node uses)
#
# Usage: hack/cluster/build.sh [--print-bin-dirs]
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.0}

CACHE=${MIZZEN_CACHE:-$HOME/.cache/mizzen}
export GOMODCACHE=${GOMODCACHE:-$CACHE/go/mod}
export GOCACHE=${GOCACHE:-$CACHE/go/build}
export GOFLAGS=-mod=mod
export CGO_ENABLED=0
export GOTOOLCHAIN=local

K8S_BIN=$CACHE/bin/kubernetes-$K8S_VERSION
ETCD_BIN=$CACHE/bin/etcd-$ETCD_VERSION
KWOK_BIN=$CACHE/bin/kwok-$KWOK_VERSION
HELM_BIN=$CACHE/bin/helm-$HELM_VERSION
COREDNS_BIN=$CACHE/bin/coredns-$COREDNS_VERSION

if [[ ${1:-} == --print-bin-dirs ]]; then
  echo "$K8S_BIN:$ETCD_BIN:$KWOK_BIN:$HELM_BIN:$COREDNS_BIN"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is not installed; install Go 1.24 or newer" >&2; exit 1; }

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# Builds into a temporary directory and moves the result in place, so an interrupted build leaves no
# half-written binary that a later run would take as cached.
build_k8s() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy) missing=()
  for b in "${want[@]}"; do [[ -x $K8S_BIN/$b ]] || missing+=("$b"); done
  ((${#missing[@]})) || return 0
  log "building Kubernetes $K8S_VERSION: ${missing[*]}"
  local work patch=${K8S_VERSION#v1.} minor
  minor=${patch%%.*}
  patch=${patch#*.}
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  # k8s.io/kubernetes replaces its staging modules with local paths, so `go install` of it fails; a
  # wrapper module pins each staging module to its published v0.MINOR.PATCH instead.
  local staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
    cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api cri-client
    csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
    kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils
    pod-security-admission sample-apiserver)
  {
    echo "module mizzen.dev/k8s-build"
    echo "go 1.24"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    for m in "${staging[@]}"; do echo "replace k8s.io/$m => k8s.io/$m v0.$minor.$patch"; done
  } >"$work/go.mod"
  printf 'package main\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\nfunc main() {}\n' >"$work/main.go"
  (cd "$work" && go mod download k8s.io/kubernetes && go get "k8s.io/kubernetes@$K8S_VERSION" >/dev/null)
  local commit=unknown
  local ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitCommit=$commit -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$work/out"
  for b in "${missing[@]}"; do
    log "  go build $b"
    (cd "$work" && go build -trimpath -ldflags "-s -w $ldflags" -o "out/$b" "k8s.io/kubernetes/cmd/$b")
  done
  mkdir -p "$K8S_BIN"
  for b in "${missing[@]}"; do mv "$work/out/$b" "$K8S_BIN/$b"; done
}

build_etcd() {
  [[ -x $ETCD_BIN/etcd ]] && return 0
  log "building etcd $ETCD_VERSION"
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  printf 'module mizzen.dev/etcd-build\n\ngo 1.24\n' >"$work/go.mod"
  printf 'package main\n\nimport _ "go.etcd.io/etcd/server/v3/embed"\n\nfunc main() {}\n' >"$work/main.go"
  (cd "$work" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null &&
    go build -trimpath -ldflags "-s -w" -o out/etcd go.etcd.io/etcd/server/v3)
  mkdir -p "$ETCD_BIN"
  mv "$work/out/etcd" "$ETCD_BIN/etcd"
}

build_go_install() { # dir, module@version, binaries...
  local dir=$1 modver=$2
  shift 2
  local missing=()
  for b in "$@"; do [[ -x $dir/$b ]] || missing+=("$b"); done
  ((${#missing[@]})) || return 0
  log "building ${missing[*]} ($modver)"
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  for b in "${missing[@]}"; do
    GOBIN=$work go install -trimpath -ldflags "-s -w" "${modver%@*}/cmd/$b@${modver#*@}"
  done
  mkdir -p "$dir"
  for b in "${missing[@]}"; do mv "$work/$b" "$dir/$b"; done
}

# CoreDNS with only the plugins the real node's Corefile uses (node.sh), against the same client-go as the
# Kubernetes build so the Go build cache serves most of it: a custom main, as CoreDNS documents for
# choosing plugins at build time.
build_coredns() {
  [[ -x $COREDNS_BIN/coredns ]] && return 0
  log "building CoreDNS $COREDNS_VERSION"
  local work minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  printf 'module mizzen.dev/coredns-build\n\ngo 1.24\n' >"$work/go.mod"
  cat >"$work/main.go" <<'GO'
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
GO
  if ! (cd "$work" && go get "github.com/coredns/coredns@$COREDNS_VERSION" \
    "k8s.io/client-go@v0.$minor.${K8S_VERSION##*.}" "k8s.io/api@v0.$minor.${K8S_VERSION##*.}" \
    "k8s.io/apimachinery@v0.$minor.${K8S_VERSION##*.}" >/dev/null 2>"$work/get.log" &&
    go build -trimpath -ldflags "-s -w" -o out/coredns .); then
    cat "$work/get.log" >&2
    return 1
  fi
  mkdir -p "$COREDNS_BIN"
  mv "$work/out/coredns" "$COREDNS_BIN/coredns"
}

start=$(date +%s)
build_etcd
build_k8s
build_go_install "$KWOK_BIN" "sigs.k8s.io/kwok@$KWOK_VERSION" kwok kwokctl
build_go_install "$HELM_BIN" "helm.sh/helm/v3@$HELM_VERSION" helm
build_coredns
log "binaries ready in $(($(date +%s) - start)) s under $CACHE/bin"
