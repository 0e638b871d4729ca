#!/usr/bin/env bash
# `make demo`: from nothing to a Ready KumikoApp on the local cluster (e2e/kube-sim).
#
# Builds kube-sim, kumiko-app and kumiko-operator; starts kube-sim with a throwaway Postgres per
# CNPG Cluster and `kumiko-app:dev` mapped to target/debug/kumiko-app; starts `kumiko-operator run`
# against it (when the operator has that command); applies the KumikoApp CRD and
# examples/minimal.yaml; prints progress until the app is Ready; then keeps everything running
# for exploring with `kubectl --kubeconfig target/demo/kubeconfig`. Ctrl-C tears everything down.
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
operator_pid=""

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
  stop_group "$operator_pid" "kumiko-operator"
  # kube-sim stops its pods and removes its throwaway Postgres servers on SIGTERM.
  stop_group "$sim_pid" "kube-sim"
  say "torn down (logs stay in target/demo/)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kubectl_demo() { kubectl --kubeconfig "$kubeconfig" "$@"; }

[ -f crds/kumikoapp.yaml ] || fail "crds/kumikoapp.yaml is missing: run \`make crds\`"
[ -f "$example" ] || fail "$example is missing"
command -v kubectl >/dev/null || fail "kubectl is not installed: run \`make deps\`"

say "building kube-sim, kumiko-app and kumiko-operator"
cargo build --quiet -p kube-sim --bin kube-sim -p kumiko-runtime --bin kumiko-app \
  -p kumiko-operator --bin kumiko-operator

mkdir -p "$demo_dir"
rm -f "$kubeconfig"
say "starting kube-sim (throwaway Postgres per CNPG Cluster, kumiko-app:dev -> target/debug/kumiko-app)"
# The operator runs outside kube-sim's pods: it resolves the Services' names
# (`<cluster>-rw.<ns>.svc`) through a copy of /etc/hosts that kube-sim keeps them in, bind-mounted
# on /etc/hosts in a mount namespace of its own (as kube-sim's kubelet does for its pods).
hosts_file="$demo_dir/hosts"
cat /etc/hosts >"$hosts_file"
setsid target/debug/kube-sim --kubeconfig "$kubeconfig" --start-postgres \
  --hosts-file "$hosts_file" \
  --image "kumiko-app:dev=$root/target/debug/kumiko-app" >"$demo_dir/kube-sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 300); do
  grep -q "kube-sim ready" "$demo_dir/kube-sim.log" 2>/dev/null && break
  kill -0 "$sim_pid" 2>/dev/null || fail "kube-sim exited: $(tail -n 20 "$demo_dir/kube-sim.log")"
  sleep 0.1
done
grep -q "kube-sim ready" "$demo_dir/kube-sim.log" || fail "kube-sim did not start within 30s"
say "$(grep "kube-sim ready" "$demo_dir/kube-sim.log")"

operator_runs=false
if target/debug/kumiko-operator --help 2>/dev/null | grep -qE '^[[:space:]]+run[[:space:]]'; then
  operator_runs=true
  say "starting kumiko-operator run"
  # shellcheck disable=SC2016 # $0 and $@ are the inner shell's.
  KUBECONFIG="$kubeconfig" setsid unshare --mount --propagation private -- \
    sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$hosts_file" \
    target/debug/kumiko-operator run --no-leader-election \
    --http-addr 127.0.0.1:0 >"$demo_dir/operator.log" 2>&1 &
  operator_pid=$!
fi

say "applying the KumikoApp CRD"
kubectl_demo apply --server-side -f crds/kumikoapp.yaml
kubectl_demo wait --for=condition=Established crd/kumikoapps.kumiko.so --timeout=30s >/dev/null
# The example's namespaces first (kubectl create sends protobuf, which kube-sim does not accept).
namespaces=$(sed -n 's/^  namespace:[[:space:]]*\([a-z0-9-]*\).*/\1/p' "$example" | sort -u)
for namespace in $namespaces; do
  kubectl_demo create namespace "$namespace" --dry-run=client -o yaml \
    | kubectl_demo apply --server-side -f - >/dev/null
done
say "applying $example"
kubectl_demo apply --server-side -f "$example"

if ! $operator_runs; then
  say "kumiko-operator has no \`run\` command yet: stopping after applying (nothing reconciles the app)."
  say "explore with: kubectl --kubeconfig target/demo/kubeconfig get kumikoapps -A"
  say "Ctrl-C tears everything down"
  wait "$sim_pid"
  exit 0
fi

say "waiting up to ${ready_timeout}s for the app to be Ready (operator log: target/demo/operator.log)"
deadline=$((SECONDS + ready_timeout))
last=""
while :; do
  if ! kill -0 "$operator_pid" 2>/dev/null; then
    fail "kumiko-operator exited: $(tail -n 20 "$demo_dir/operator.log")"
  fi
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
  [ "$SECONDS" -lt "$deadline" ] || fail "not Ready after ${ready_timeout}s; see target/demo/operator.log and \`kubectl --kubeconfig target/demo/kubeconfig get pods -A\`"
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
