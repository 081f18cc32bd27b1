#!/usr/bin/env bash
# The local cluster's real node: pods on it are real processes (containerd + runc), on a bridge of their own,
# reachable through their Services (kube-proxy, iptables) and by name (CoreDNS).
#
#   node.sh up     start it (after up.sh has the control plane running); idempotent
#   node.sh down   stop it and undo what it did to this machine (mounts, cgroups, bridge, iptables rules)
#
# Pieces, all on this machine, each a plain process like the rest of the cluster:
#   containerd 1.6 + runc 1.1 + CNI plugins   Debian's packages (installed here if missing): they run
#                                             on this machine's cgroup v1 with kubelet 1.34 (see README)
#   kubelet, kube-proxy                        the same Kubernetes 1.34 build as the control plane
#   CoreDNS                                    from the Go module proxy (build.sh), as a host process
#   the pause image                            built here (hack/images/pause.c), no registry needed
#
# The node is `mizzen-node`, labelled mizzen.dev/node=real and tainted mizzen.dev/node=real:NoSchedule:
# only pods that tolerate the taint land on it, so everything else (the scale bench's 500 ModelDeployments)
# stays on the kwok fake nodes. Pods get 10.85.0.0/24 on the bridge mizzen0 (the host is 10.85.0.1, which
# is also the node's address and the pods' DNS server).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-$ROOT/.cluster}
NODE_DIR=$CLUSTER_DIR/node
NODE_NAME=mizzen-node
BRIDGE=mizzen0
POD_SUBNET=10.85.0.0/24
SERVICE_CIDR=10.96.0.0/16        # up.sh's
FAKE_CIDRS="10.244.0.0/16 10.0.0.1/32"  # kwok's pod addresses and its fake nodes' address (up.sh)
NODE_IP=10.85.0.1
SOCK=$NODE_DIR/containerd.sock
PAUSE_IMAGE=localhost/mizzen/pause:3.10
CACHE=${MIZZEN_CACHE:-$HOME/.cache/mizzen}

log() { printf '[node] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=procs.sh
source "$HERE/procs.sh"

ctr_() { ctr --address "$SOCK" -n k8s.io "$@"; }

# Debian's containerd, runc, CNI plugins, iptables and conntrack (kube-proxy's), if missing.
install_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || die "the real node needs ${missing[*]} (Debian packages)"
  log "installing ${missing[*]} (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The sandbox image: a static pause(2) loop, cached by the source's hash.
pause_image() {
  local src=$ROOT/hack/images/pause.c key out
  # By content only (not the clone's path), so every clone shares one cached image.
  key=$(cat "$src" "$ROOT/hack/images/oci.py" | sha256sum | cut -c1-16)
  out=$CACHE/images/pause-$key.tar
  if [[ ! -f $out ]]; then
    mkdir -p "$CACHE/images"
    gcc -static -O2 -o "$NODE_DIR/pause" "$src"
    python3 "$ROOT/hack/images/oci.py" --name "$PAUSE_IMAGE" --out "$out" --file "$NODE_DIR/pause:/pause" \
      --entrypoint /pause --static --no-ca --user 65535:65535 >/dev/null
    find "$CACHE/images" -name 'pause-*.tar' ! -name "$(basename "$out")" -delete
  fi
  ctr_ images import "$out" >/dev/null
}

write_configs() {
  mkdir -p "$NODE_DIR/cni" "$NODE_DIR/kubelet" "$NODE_DIR/containerd"
  cat >"$NODE_DIR/containerd.toml" <<EOF
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This VM withholds CAP_SYS_RESOURCE: nothing may lower an oom_score_adj below 0, and runc fails when the
  # kubelet asks -998 for a sandbox. Clamp to what the process may set.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni"
EOF
  cat >"$NODE_DIR/cni/10-mizzen.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "mizzen",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$NODE_DIR/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
  cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $CLUSTER_DIR/pki/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: $NODE_DIR/resolv.conf
registerWithTaints:
- {key: mizzen.dev/node, value: real, effect: NoSchedule}
# The disk may be fuller than the defaults allow (15% free for images); this node must not evict for it.
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
serializeImagePulls: false
maxPods: 50
EOF
  # Pods with dnsPolicy Default get no upstream: nothing outside the cluster is reachable anyway.
  echo "nameserver $NODE_IP" >"$NODE_DIR/resolv.conf"
  cat >"$NODE_DIR/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:18181
    ready 127.0.0.1:18182
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $CLUSTER_DIR/kubeconfig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
    loadbalance
}
EOF
}

host_setup() {
  # Volumes mounted into pods propagate (the kubelet needs a shared root mount).
  mount --make-rshared /
  sysctl -qw net.ipv4.ip_forward=1
  if [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
    sysctl -qw net.bridge.bridge-nf-call-iptables=1
  else
    modprobe br_netfilter 2>/dev/null || log "warning: no br_netfilter: a pod reaching its own Service may fail"
  fi
  # The bridge exists before the first pod so the node's address (kubelet, CoreDNS) is there from the start.
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Traffic for the cluster's addresses never leaves this machine: a ClusterIP kube-proxy has no rule for
  # yet stays on the bridge (instead of following the default route out), and the kwok fake pods' and fake
  # nodes' addresses go nowhere.
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE"
  for cidr in $FAKE_CIDRS; do ip route replace blackhole "$cidr"; done
}

up() {
  [[ $(id -u) == 0 ]] || die "the real node needs root (containerd, mounts, iptables); MIZZEN_REAL_NODE=0 skips it"
  [[ -f $CLUSTER_DIR/kubeconfig ]] || die "no cluster in $CLUSTER_DIR (start it with make cluster-up)"
  local t0
  t0=$(date +%s%N)
  export KUBECONFIG=$CLUSTER_DIR/kubeconfig
  export PATH="$("$HERE/build.sh" --print-bin-dirs):$PATH"
  install_packages
  down_quietly keep-network
  mkdir -p "$NODE_DIR" "$CLUSTER_DIR/logs"
  host_setup
  write_configs
  start containerd containerd --config "$NODE_DIR/containerd.toml" --log-level warn
  wait_for containerd 30 ctr --address "$SOCK" version
  pause_image
  start kubelet kubelet --config "$NODE_DIR/kubelet.yaml" --kubeconfig "$CLUSTER_DIR/kubeconfig" \
    --root-dir "$NODE_DIR/kubelet" --cert-dir "$NODE_DIR/kubelet/pki" --hostname-override "$NODE_NAME" \
    --node-ip "$NODE_IP" --node-labels "mizzen.dev/node=real,type=real" --v 1
  wait_for "the real node" 90 kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
  start kube-proxy kube-proxy --kubeconfig "$CLUSTER_DIR/kubeconfig" --hostname-override "$NODE_NAME" \
    --proxy-mode iptables --cluster-cidr "$POD_SUBNET" --bind-address "$NODE_IP" \
    --healthz-bind-address 127.0.0.1:10256 --metrics-bind-address 127.0.0.1:10249 \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0 --v 1
  wait_for kube-proxy 30 curl -fsS http://127.0.0.1:10256/healthz
  start coredns coredns -conf "$NODE_DIR/Corefile"
  wait_for CoreDNS 30 curl -fsS http://127.0.0.1:18182/ready
  log "real node $NODE_NAME Ready in $((($(date +%s%N) - t0) / 1000000)) ms (pods on $POD_SUBNET, DNS $NODE_IP)"
}

# Removes an iptables chain and every rule that jumps to it.
drop_chain() { # iptables|ip6tables table chain
  local ipt=$1 table=$2 chain=$3 rule
  "$ipt" -t "$table" -S "$chain" >/dev/null 2>&1 || return 0
  (("$ipt" -t "$table" -S 2>/dev/null || true) | grep -- "-j $chain\( \|\$\)" || true) | while read -r rule; do
    eval "$ipt -t $table ${rule/#-A/-D}" 2>/dev/null || true
  done
  "$ipt" -t "$table" -F "$chain" 2>/dev/null || true
  "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
}

# Undoes the node: its processes, its containers (by their cgroups, in case the kubelet could not stop
# them), its mounts, the bridge (not with `keep-network`: the API server may listen on it), and the
# iptables rules of kube-proxy and of the CNI plugins.
down_quietly() {
  local keep_network=${1:-}
  local c
  for c in coredns kube-proxy kubelet; do stop "$c"; done
  # Containers whose shim outlived containerd would keep running: kill every process in the pods' cgroups.
  local procs
  for procs in /sys/fs/cgroup/*/kubepods; do
    [[ -d $procs ]] || continue
    find "$procs" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  done
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $SOCK" 2>/dev/null || true
  stop containerd
  for procs in /sys/fs/cgroup/*/kubepods; do
    [[ -d $procs ]] || continue
    find "$procs" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  if [[ -d $NODE_DIR ]]; then
    # Deepest mounts first.
    awk -v d="$NODE_DIR" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
  fi
  if [[ $keep_network != keep-network ]]; then
    ip link del "$BRIDGE" 2>/dev/null || true
    local cidr
    for cidr in $FAKE_CIDRS; do ip route del blackhole "$cidr" 2>/dev/null || true; done
  fi
  if command -v iptables >/dev/null; then
    command -v kube-proxy >/dev/null && kube-proxy --cleanup >/dev/null 2>&1 || true
    local ipt table chain
    # The CNI plugins' per-pod NAT chains (their rules carry the network's name, "mizzen", in a comment)
    # and the kubelet's own chains.
    for chain in $( (iptables -t nat -S 2>/dev/null || true) | awk '/^-A CNI-.*"mizzen/ {print $2}' | sort -u); do
      drop_chain iptables nat "$chain"
    done
    for ipt in iptables ip6tables; do
      command -v "$ipt" >/dev/null || continue
      for table in filter nat mangle; do
        for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do drop_chain "$ipt" "$table" "$chain"; done
      done
    done
  fi
  rm -rf "$NODE_DIR" 2>/dev/null || true
}

case ${1:-} in
  network)
    # Before the control plane: the API server listens on the node's address, so pods reach it.
    [[ $(id -u) == 0 ]] || die "the real node needs root (containerd, mounts, iptables); MIZZEN_REAL_NODE=0 skips it"
    host_setup
    ;;
  up) up ;;
  down)
    export PATH="$("$HERE/build.sh" --print-bin-dirs):$PATH"
    down_quietly
    log "real node down"
    ;;
  *) die "usage: node.sh network|up|down" ;;
esac
