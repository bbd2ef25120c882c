#!/usr/bin/env bash
# A throwaway Kubernetes cluster on 127.0.0.1 for end-to-end tests: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler (all built from the Go module proxy by
# test/e2e/toolchain/build.sh) and kwok, which plays the kubelet of one fake node: pods are
# scheduled onto it and become Ready through kwok's stages, and a Service of type LoadBalancer gets
# an address through a stage of our own (nothing is ever listening there; no traffic is sent to it).
# kwokctl (binary runtime) wires the processes together and generates the PKI, including the
# service-account signing key; it is only ever given local binary paths, so it downloads nothing.
#
#   test/e2e/cluster.sh up DIR       start (DIR is created; all state lives in it), wait until ready
#   test/e2e/cluster.sh down DIR     stop every process and delete DIR's state
#   test/e2e/cluster.sh status DIR   exit 0 when the apiserver answers /readyz
#
# After `up`:  export KUBECONFIG=DIR/kubeconfig   (context: kwok-taskfleet-e2e, set as current)
# Component logs: DIR/kwok/clusters/taskfleet-e2e/logs; PKI: .../pki (ca.crt/key, admin.crt/key; the
# admin key also signs and verifies service-account tokens). Two clusters at once need two DIRs and
# two TASKFLEET_E2E_PORT_BASEs. test/e2e/cluster-check.sh DIR checks a running cluster.
#
# Environment:
#   TASKFLEET_TOOLCHAIN_BIN   directory holding etcd, kube-apiserver, kube-controller-manager,
#                             kube-scheduler, kubectl, kwok, kwokctl; default: what
#                             test/e2e/toolchain/build.sh kube etcd kwok prints (builds on first use)
#   TASKFLEET_E2E_PORT_BASE   default 47600: apiserver +43 (47643), etcd +79/+80 (47679/47680),
#                             kwok +47 (47647), controller-manager +57 (47657), scheduler +59 (47659)
#   TASKFLEET_E2E_LB_IP       address written into LoadBalancer Services' status, default 127.0.0.1
#   TASKFLEET_E2E_TIMEOUT     seconds to wait for readiness, default 180
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
name=taskfleet-e2e
context="kwok-$name"
node=kwok-node-0
marker=.taskfleet-e2e-cluster

usage() { echo "usage: $0 up|down|status DIR" >&2; exit 2; }
(($# == 2)) || usage
cmd=$1
dir=$2
[ -n "$dir" ] || usage
if [ "$cmd" = up ]; then
  mkdir -p "$dir"
elif [ ! -d "$dir" ]; then
  [ "$cmd" = down ] && exit 0
  exit 1
fi
dir="$(cd "$dir" && pwd)"
[ "$dir" != / ] || { echo "cluster.sh: refusing DIR=/" >&2; exit 2; }

# kwokctl keeps its clusters under KWOK_WORKDIR; keep them inside DIR, never in ~/.kwok.
export KWOK_WORKDIR="$dir/kwok"
workdir="$KWOK_WORKDIR/clusters/$name"
kubeconfig="$dir/kubeconfig"

base=${TASKFLEET_E2E_PORT_BASE:-47600}
apiserver_port=$((base + 43))
etcd_port=$((base + 79))
etcd_peer_port=$((base + 80))
kwok_port=$((base + 47))
kcm_port=$((base + 57))
scheduler_port=$((base + 59))
lb_ip=${TASKFLEET_E2E_LB_IP:-127.0.0.1}
timeout=${TASKFLEET_E2E_TIMEOUT:-180}

toolchain_bin() {
  if [ -n "${TASKFLEET_TOOLCHAIN_BIN:-}" ]; then
    echo "$TASKFLEET_TOOLCHAIN_BIN"
  else
    "$here/toolchain/build.sh" kube etcd kwok | tail -n1
  fi
}

# kwokctl runs `kubectl` from PATH (and would download one if there were none): give it ours, with
# its discovery/http cache inside DIR instead of ~/.kube/cache.
kwokctl() { PATH="$bin:$PATH" KUBECACHEDIR="$dir/kube-cache" "$bin/kwokctl" "$@"; }

kc() { "$bin/kubectl" --kubeconfig "$kubeconfig" --context "$context" --cache-dir "$dir/kube-cache" "$@"; }

# Waits until "$@" succeeds, or fails after the deadline naming what it waited for.
wait_for() {
  local what=$1; shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "cluster.sh: timed out after ${timeout}s waiting for $what" >&2
      return 1
    fi
    sleep 0.5
  done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() { # a process that exists and is not a zombie
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

stop_processes() {
  local f pid pids=()
  for f in "$workdir"/pids/*.pid; do
    [ -f "$f" ] && pid=$(cat "$f") && [ -n "$pid" ] && pids+=("$pid")
  done
  # kwokctl stops what it started; the pids read above are the fallback for a half-created cluster.
  if [ -x "$bin/kwokctl" ] && [ -d "$workdir" ]; then
    kwokctl --name "$name" delete cluster --kubeconfig "$kubeconfig" >/dev/null 2>&1 || true
  fi
  for pid in "${pids[@]}"; do
    alive "$pid" && kill "$pid" 2>/dev/null
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -9 "$pid" 2>/dev/null
  done
  # Wait until the ports are free again, so that an `up` right after a `down` can bind them.
  for p in $apiserver_port $etcd_port $etcd_peer_port $kwok_port $kcm_port $scheduler_port; do
    for _ in $(seq 100); do port_free "$p" && break; sleep 0.1; done
  done
}

up() {
  start=$SECONDS
  if [ -f "$dir/$marker" ]; then
    echo "cluster.sh: $dir already holds a cluster; run: $0 down $dir" >&2
    exit 1
  fi
  for p in $apiserver_port $etcd_port $etcd_peer_port $kwok_port $kcm_port $scheduler_port; do
    port_free "$p" || { echo "cluster.sh: port $p on 127.0.0.1 is in use (set TASKFLEET_E2E_PORT_BASE)" >&2; exit 1; }
  done
  bin="$(toolchain_bin)"
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kwokctl; do
    [ -x "$bin/$b" ] || { echo "cluster.sh: missing $bin/$b" >&2; exit 1; }
  done
  built=$SECONDS
  echo "$bin" >"$dir/$marker" # the marker also records which binaries this cluster runs

  # kwokctl's own configuration: bind every component to 127.0.0.1 and fix the etcd peer port
  # (there is no flag for it). Giving a --config also keeps kwokctl away from ~/.kwok/kwok.yaml.
  cat >"$dir/kwokctl.yaml" <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  bindAddress: 127.0.0.1
  etcdPeerPort: $etcd_peer_port
  kubectlBinary: $bin/kubectl
EOF

  # Extra stage, loaded by the kwok controller next to kwokctl's default node and pod stages
  # (a second --config): a LoadBalancer Service without an address gets one.
  cat >"$dir/stages.yaml" <<EOF
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: service-load-balancer
spec:
  resourceRef:
    apiGroup: v1
    kind: Service
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.spec.type'
      operator: 'In'
      values:
      - 'LoadBalancer'
    - key: '.status.loadBalancer.ingress'
      operator: 'DoesNotExist'
  next:
    statusTemplate: |
      loadBalancer:
        ingress:
        - ip: "$lb_ip"
          ipMode: VIP
EOF

  # The fake node. No taint, so workloads need no toleration; kwok manages it by annotation.
  cat >"$dir/node.yaml" <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $node
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: $node
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
status:
  allocatable:
    cpu: "32"
    memory: 128Gi
    pods: "110"
  capacity:
    cpu: "32"
    memory: 128Gi
    pods: "110"
EOF

  echo "cluster.sh: starting $name in $dir (apiserver https://127.0.0.1:$apiserver_port)" >&2
  if ! kwokctl --name "$name" --config "$dir/kwokctl.yaml" create cluster \
    --runtime binary \
    --etcd-binary "$bin/etcd" \
    --kube-apiserver-binary "$bin/kube-apiserver" \
    --kube-controller-manager-binary "$bin/kube-controller-manager" \
    --kube-scheduler-binary "$bin/kube-scheduler" \
    --kwok-controller-binary "$bin/kwok" \
    --kube-apiserver-port "$apiserver_port" \
    --etcd-port "$etcd_port" \
    --controller-port "$kwok_port" \
    --kube-controller-manager-port "$kcm_port" \
    --kube-scheduler-port "$scheduler_port" \
    --extra-args "kwok-controller=config=$dir/stages.yaml" \
    --kubeconfig "$kubeconfig" \
    --timeout "${timeout}s" \
    --wait "${timeout}s" >"$dir/kwokctl-create.log" 2>&1; then
    cat "$dir/kwokctl-create.log" >&2
    echo "cluster.sh: kwokctl create cluster failed; logs in $workdir/logs" >&2
    stop_processes
    exit 1
  fi

  deadline=$((SECONDS + timeout))
  if [ -e "$KWOK_WORKDIR/cache" ]; then
    echo "cluster.sh: kwokctl downloaded something into $KWOK_WORKDIR/cache; it must only use local binaries" >&2
    exit 1
  fi
  wait_for "apiserver /readyz" kc get --raw /readyz
  kc apply -f "$dir/node.yaml" >/dev/null
  wait_for "node $node Ready" kc wait --for=condition=Ready "node/$node" --timeout=5s
  # The controller-manager's service-account controller makes the namespace's default account,
  # which pods need before they can be created.
  wait_for "serviceaccount default/default" kc -n default get serviceaccount default
  echo "cluster.sh: ready in $((SECONDS - start))s (cluster start $((SECONDS - built))s)" >&2
  echo "cluster.sh: export KUBECONFIG=$kubeconfig  # context $context" >&2
  echo "$kubeconfig"
}

down() {
  if [ ! -f "$dir/$marker" ]; then
    echo "cluster.sh: $dir holds no cluster of ours (no $marker); nothing removed" >&2
    return 0
  fi
  bin="${TASKFLEET_TOOLCHAIN_BIN:-}"
  if [ -z "$bin" ]; then
    # Do not build just to stop: use the binaries the cluster was started with.
    bin="$(cat "$dir/$marker")"
  fi
  stop_processes
  rm -rf "$KWOK_WORKDIR" "$kubeconfig" "$dir/kwokctl.yaml" "$dir/stages.yaml" "$dir/node.yaml" \
    "$dir/kwokctl-create.log" "$dir/kube-cache" "${dir:?}/$marker"
  rmdir "$dir" 2>/dev/null || true
  echo "cluster.sh: $name stopped and its state removed" >&2
}

status() {
  [ -f "$dir/$marker" ] || return 1
  bin="$(cat "$dir/$marker")"
  kc get --raw /readyz >/dev/null 2>&1
}

case "$cmd" in
up) up ;;
down) down ;;
status) status ;;
*) usage ;;
esac
