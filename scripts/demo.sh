#!/usr/bin/env bash
# `make demo`: from nothing to a Ready KumikoApp on the local cluster (e2e/kube-sim), with the
# operator installed as users install it.
#
# Builds kube-sim, kumiko-app and kumiko-operator; starts kube-sim with a throwaway Postgres per
# CNPG Cluster and the images mapped to the local binaries (`kumiko-app:dev` ->
# target/debug/kumiko-app, `kumiko-operator:*` -> target/debug/kumiko-operator); installs the
# operator with `helm install --wait` of charts/kumiko-operator (its CRD, ServiceAccount, RBAC and
# Deployment: the operator runs as a pod under the chart's RBAC, with kube-rs's in-cluster
# configuration); applies examples/minimal.yaml; prints progress until the app is Ready; then keeps
# everything running for exploring with `kubectl --kubeconfig target/demo/kubeconfig`. Ctrl-C
# tears everything down.
#
# Environment: DEMO_EXAMPLE (default examples/minimal.yaml), DEMO_READY_TIMEOUT (seconds, default
# 300), DEMO_EXIT_WHEN_READY=1 (tear down once Ready instead of waiting for Ctrl-C).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

demo_dir="$root/target/demo"
kubeconfig="$demo_dir/kubeconfig"
example="${DEMO_EXAMPLE:-examples/minimal.yaml}"
ready_timeout="${DEMO_READY_TIMEOUT:-300}"
sim_pid=""
operator_namespace=kumiko-system

say() { printf 'demo: %s\n' "$*"; }
fail() {
  printf 'demo: FAIL: %s\n' "$*" >&2
  exit 1
}

# Stops a process group (started with setsid): SIGTERM, then SIGKILL after 15s.
stop_group() {
  local pid=$1 name=$2
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  say "stopping $name"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
}

cleanup() {
  trap - EXIT INT TERM
  # kube-sim stops its pods (the operator's too) and removes its throwaway Postgres servers on
  # SIGTERM.
  stop_group "$sim_pid" "kube-sim"
  say "torn down (logs stay in target/demo/)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kubectl_demo() { kubectl --kubeconfig "$kubeconfig" "$@"; }

[ -f "$example" ] || fail "$example is missing"
command -v kubectl >/dev/null || fail "kubectl is not installed: run \`make deps\`"
command -v helm >/dev/null || fail "helm is not installed: run \`make deps\`"

say "building kube-sim, kumiko-app and kumiko-operator"
cargo build --quiet -p kube-sim --bin kube-sim -p kumiko-runtime --bin kumiko-app \
  -p kumiko-operator --bin kumiko-operator

mkdir -p "$demo_dir"
rm -f "$kubeconfig"
say "starting kube-sim (throwaway Postgres per CNPG Cluster; kumiko-app:dev and kumiko-operator mapped to target/debug)"
setsid target/debug/kube-sim --kubeconfig "$kubeconfig" --start-postgres \
  --image "kumiko-app:dev=$root/target/debug/kumiko-app" \
  --image "kumiko-operator=$root/target/debug/kumiko-operator" >"$demo_dir/kube-sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 300); do
  grep -q "kube-sim ready" "$demo_dir/kube-sim.log" 2>/dev/null && break
  kill -0 "$sim_pid" 2>/dev/null || fail "kube-sim exited: $(tail -n 20 "$demo_dir/kube-sim.log")"
  sleep 0.1
done
grep -q "kube-sim ready" "$demo_dir/kube-sim.log" || fail "kube-sim did not start within 30s"
say "$(grep "kube-sim ready" "$demo_dir/kube-sim.log")"

# One replica on a laptop; kube-sim's pods share the host's network, so the operator listens on
# its own loopback PORT.
cat >"$demo_dir/values.yaml" <<'VALUES'
replicaCount: 1
image:
  repository: kumiko-operator
  tag: dev
httpListenAddress: "127.0.0.1:$(PORT)"
VALUES
say "installing the operator: helm install --wait kumiko-operator charts/kumiko-operator (namespace $operator_namespace)"
if ! helm --kubeconfig "$kubeconfig" install kumiko-operator charts/kumiko-operator \
  --namespace "$operator_namespace" --create-namespace --values "$demo_dir/values.yaml" \
  --wait --timeout 120s >"$demo_dir/helm-install.log" 2>&1; then
  fail "helm install: $(tail -n 20 "$demo_dir/helm-install.log")"
fi
operator_logs() {
  kubectl_demo -n "$operator_namespace" logs deployment/kumiko-operator --tail=20 2>&1 || true
}

namespaces=$(sed -n 's/^  namespace:[[:space:]]*\([a-z0-9-]*\).*/\1/p' "$example" | sort -u)
for namespace in $namespaces; do
  kubectl_demo create namespace "$namespace" >/dev/null
done
say "applying $example"
kubectl_demo apply --server-side -f "$example"

say "waiting up to ${ready_timeout}s for the app to be Ready (operator log: kubectl --kubeconfig target/demo/kubeconfig -n $operator_namespace logs deploy/kumiko-operator)"
deadline=$((SECONDS + ready_timeout))
last=""
while :; do
  status=$(kubectl_demo get -f "$example" --no-headers -o custom-columns='NAME:.metadata.name,READY:.status.conditions[?(@.type=="Ready")].status,REASON:.status.conditions[?(@.type=="Ready")].reason,API:.status.api.summary,WORKER:.status.worker.summary' 2>/dev/null | tr -s ' ' || true)
  pods=$(kubectl_demo get pods -A --no-headers 2>/dev/null | awk '{print $2" "$4}' | tr '\n' ' ' || true)
  status="$status | pods: ${pods:-none}"
  if [ "$status" != "$last" ]; then
    say "$status"
    last=$status
  fi
  ready=false
  if kubectl_demo wait --for=condition=Ready -f "$example" --timeout=1s >/dev/null 2>&1; then
    ready=true
  fi
  $ready && break
  [ "$SECONDS" -lt "$deadline" ] || fail "not Ready after ${ready_timeout}s; the operator's log: $(operator_logs)"
  sleep 2
done

say "Ready:"
kubectl_demo get -f "$example" -o wide
kubectl_demo get pods -A
if [ "${DEMO_EXIT_WHEN_READY:-0}" = "1" ]; then
  exit 0
fi
say "explore with: kubectl --kubeconfig target/demo/kubeconfig get all -A"
say "Ctrl-C tears everything down"
wait "$sim_pid"
