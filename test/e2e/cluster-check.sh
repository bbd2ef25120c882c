#!/usr/bin/env bash
# Checks that a cluster started by test/e2e/cluster.sh can carry what taskfleet deploys: a Ready
# fake node, a Deployment that becomes Available, a LoadBalancer Service that gets an address,
# Pod Security `restricted` enforcement, an autoscaling/v2 HPA, a policy/v1 PDB, Secrets and
# service-account tokens. Works in namespace taskfleet-e2e-check and deletes it at the end.
#
#   test/e2e/cluster-check.sh DIR      (DIR as given to cluster.sh up)
# Prints "N passed, N failed" last; exits non-zero when a check failed.
set -uo pipefail

dir="$(cd "${1:?usage: $0 DIR}" && pwd)"
bin="$(cat "$dir/.taskfleet-e2e-cluster")" || exit 1
kc() { "$bin/kubectl" --kubeconfig "$dir/kubeconfig" --context kwok-taskfleet-e2e --cache-dir "$dir/kube-cache" "$@"; }
ns=taskfleet-e2e-check
image=registry.invalid/taskfleet/app:e2e # never pulled: kwok runs no containers
passed=0 failed=0

check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then
    echo "ok   $what"
    passed=$((passed + 1))
  else
    echo "FAIL $what"
    sed 's/^/     /' <<<"$out"
    failed=$((failed + 1))
  fi
}
retry() { for _ in $(seq 60); do "$@" && return 0; sleep 0.5; done; return 1; }

# A pod spec that satisfies Pod Security "restricted", indented by $1 spaces.
restricted_spec() {
  sed "s/^/$(printf "%${1}s")/" <<EOF
automountServiceAccountToken: false
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  seccompProfile: {type: RuntimeDefault}
containers:
- name: app
  image: $image
  ports: [{containerPort: 8080}]
  securityContext:
    allowPrivilegeEscalation: false
    capabilities: {drop: [ALL]}
EOF
}

server_version() { kc version -o json | grep '"gitVersion"' | grep -q '"v1.37.2"'; }

restricted_namespace() {
  kc apply -f - <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $ns
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
EOF
}

privileged_rejected() {
  local out
  out=$(kc -n "$ns" apply -f - 2>&1 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: privileged}
spec:
  containers:
  - name: app
    image: $image
    securityContext: {privileged: true}
EOF
  )
  echo "$out"
  grep -q 'violates PodSecurity "restricted' <<<"$out"
}

compliant_pod() {
  kc -n "$ns" apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: compliant}
spec:
$(restricted_spec 2)
EOF
}

deployment() {
  kc -n "$ns" apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
$(restricted_spec 6)
EOF
}

scheduled() {
  [ "$(kc -n "$ns" get pods -l app=web -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | grep -c .)" = 2 ]
}

load_balancer() {
  kc -n "$ns" apply -f - <<EOF
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
EOF
}

ready_endpoints() {
  [ "$(kc -n "$ns" get endpointslices -l kubernetes.io/service-name=web \
    -o jsonpath='{range .items[*].endpoints[*]}{.conditions.ready}{"\n"}{end}' | grep -c true)" = 2 ]
}

hpa() {
  kc -n "$ns" apply -f - <<EOF
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 2
  maxReplicas: 4
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}
EOF
}

pdb() {
  kc -n "$ns" apply -f - <<EOF
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
EOF
}

kc delete namespace "$ns" --ignore-not-found --wait=true >/dev/null 2>&1

check "server version is v1.37.2" server_version
check "a node is Ready" kc wait --for=condition=Ready node --all --timeout=30s
check "restricted namespace is created" restricted_namespace
check "namespace default serviceaccount appears" retry kc -n "$ns" get serviceaccount default
check "privileged pod is rejected by Pod Security restricted" privileged_rejected
check "compliant pod is accepted" compliant_pod
check "compliant pod becomes Ready" kc -n "$ns" wait --for=condition=Ready pod/compliant --timeout=60s
check "deployment is accepted" deployment
check "deployment becomes Available" kc -n "$ns" rollout status deployment/web --timeout=90s
check "deployment pods are scheduled on a node" scheduled
check "LoadBalancer service is accepted" load_balancer
check "LoadBalancer service gets an ingress address" \
  kc -n "$ns" wait --for=jsonpath='{.status.loadBalancer.ingress[0].ip}' service/web --timeout=60s
check "service endpoints list the ready pods" retry ready_endpoints
check "autoscaling/v2 HPA is accepted" hpa
check "policy/v1 PDB is accepted" pdb
check "secret is accepted" kc -n "$ns" create secret generic tokens --from-literal=token=e2e
check "service-account token is issued" kc -n "$ns" create token default --duration=10m

kc delete namespace "$ns" --wait=false >/dev/null 2>&1
echo "$passed passed, $failed failed"
((failed == 0))
