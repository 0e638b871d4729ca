#!/usr/bin/env bash
# `make e2e-existing`: the e2e suite in its existing-cluster mode (KUMIKO_E2E_KUBECONFIG, the code
# path `make e2e-kind` takes) against a standalone kube-sim, on any machine without Docker.
#
# Starts the kube-sim binary (with the Gateway API installed, --gateway-api) with a throwaway
# Postgres per CNPG Cluster and the images mapped to
# the local binaries (kumiko-app:* -> kumiko-app, kumiko-app:broken-migration ->
# kumiko-app-broken-migration, kumiko-operator:* -> kumiko-operator); installs the operator as
# users do, with `helm install --wait` of its chart: two replicas in kumiko-system, as the chart's
# ServiceAccount under the chart's RBAC, electing a leader on the Lease kumiko-operator under
# their pod names (kube-sim runs the pods as local processes); then runs
# `cargo nextest run -p kumiko-e2e` with the same environment scripts/e2e-kind.sh passes. The
# harness starts nothing itself then: pods, Services and Postgres are reached through the API
# server only, the leader is killed by deleting its pod. Logs stay in target/e2e-existing/.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.tools/bin:$PATH"

work_dir="$root/target/e2e-existing"
kubeconfig="$work_dir/kubeconfig"
operator_namespace=kumiko-system
sim_pid=""

say() { printf 'e2e-existing: %s\n' "$*"; }
fail() {
  printf 'e2e-existing: FAIL: %s\n' "$*" >&2
  exit 1
}

# Stops kube-sim's process group (started with setsid): SIGTERM (it stops its pods and removes
# its Postgres servers), then SIGKILL after 30s.
stop_sim() {
  [ -n "$sim_pid" ] || return 0
  kill -0 "$sim_pid" 2>/dev/null || return 0
  kill -TERM -- "-$sim_pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$sim_pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$sim_pid" 2>/dev/null || true
}

cleanup() {
  trap - EXIT INT TERM
  stop_sim
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kubectl_sim() { kubectl --kubeconfig "$kubeconfig" "$@"; }

command -v kubectl >/dev/null || fail "kubectl is not installed: run \`make deps\`"
command -v helm >/dev/null || fail "helm is not installed: run \`make deps\`"
[ -f crds/kumikoapp.yaml ] || fail "crds/kumikoapp.yaml is missing: run \`make crds\`"

say "building kube-sim, kumiko-operator, kumiko-app and kumiko-app-broken-migration"
cargo build --quiet -p kube-sim --bin kube-sim -p kumiko-operator --bin kumiko-operator \
  -p kumiko-runtime --bin kumiko-app -p kumiko-e2e --bin kumiko-app-broken-migration

rm -rf "$work_dir"
mkdir -p "$work_dir/bin"
# The broken-migration program runs the kumiko-app beside it.
cp target/debug/kumiko-app-broken-migration "$work_dir/bin/"
ln -s "$root/target/debug/kumiko-app" "$work_dir/bin/kumiko-app"

say "starting kube-sim"
setsid target/debug/kube-sim --kubeconfig "$kubeconfig" --gateway-api --start-postgres --backoff-seconds 1 --metric-resolution 5 --horizontal-pod-autoscaler-sync-period 5 \
  --image "kumiko-app:broken-migration=$work_dir/bin/kumiko-app-broken-migration" \
  --image "kumiko-app=$root/target/debug/kumiko-app" \
  --image "kumiko-operator=$root/target/debug/kumiko-operator" \
  >"$work_dir/kube-sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 300); do
  grep -q "kube-sim ready" "$work_dir/kube-sim.log" 2>/dev/null && break
  kill -0 "$sim_pid" 2>/dev/null || fail "kube-sim exited: $(tail -n 20 "$work_dir/kube-sim.log")"
  sleep 0.1
done
grep -q "kube-sim ready" "$work_dir/kube-sim.log" || fail "kube-sim did not start within 30s"
say "$(grep "kube-sim ready" "$work_dir/kube-sim.log")"

say "applying the CRD; installing the operator with its chart (helm install --wait, two replicas in $operator_namespace)"
kubectl_sim apply --server-side -f crds/kumikoapp.yaml >/dev/null
kubectl_sim wait --for=condition=Established crd/kumikoapps.kumiko.so --timeout=30s >/dev/null
# As users install it: the chart's ServiceAccount, RBAC and Deployment. The pods run the local
# binary (the image is mapped), reach the API server through the kubelet's KUBERNETES_SERVICE_*
# and ServiceAccount token (kube-rs's in-cluster configuration), and, since kube-sim's pods share
# the host's network, each listens on its own loopback PORT.
cat >"$work_dir/values.yaml" <<'VALUES'
image:
  repository: kumiko-operator
  tag: dev
httpListenAddress: "127.0.0.1:$(PORT)"
VALUES
helm --kubeconfig "$kubeconfig" install kumiko-operator charts/kumiko-operator \
  --namespace "$operator_namespace" --create-namespace --wait --timeout 120s \
  --values "$work_dir/values.yaml" >"$work_dir/helm-install.log" 2>&1 ||
  fail "helm install: $(tail -n 20 "$work_dir/helm-install.log")"
helm --kubeconfig "$kubeconfig" status kumiko-operator --namespace "$operator_namespace" >/dev/null
for _ in $(seq 1 300); do
  holder=$(kubectl_sim -n "$operator_namespace" get lease kumiko-operator \
    -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
  [ -n "$holder" ] && break
  sleep 0.1
done
[ -n "$holder" ] || fail "no operator replica took the Lease within 30s"
say "the operator's leader: $holder"

say "running the e2e suite against it (KUMIKO_E2E_KUBECONFIG=$kubeconfig)"
status=0
KUMIKO_E2E_KUBECONFIG="$kubeconfig" \
  KUMIKO_E2E_APP_IMAGE=kumiko-app:dev \
  KUMIKO_E2E_APP_IMAGE_V2=kumiko-app:v2 \
  KUMIKO_E2E_BROKEN_MIGRATION_IMAGE=kumiko-app:broken-migration \
  KUMIKO_E2E_OPERATOR_NAMESPACE="$operator_namespace" \
  cargo nextest run -p kumiko-e2e --no-fail-fast || status=$?
if [ "$status" -ne 0 ]; then
  kubectl_sim get pods -A -o wide >"$work_dir/pods.txt" 2>&1 || true
  kubectl_sim get kumikoapps -A -o yaml >"$work_dir/kumikoapps.yaml" 2>&1 || true
  say "failed; kube-sim's log, pods and KumikoApps are in $work_dir"
  exit "$status"
fi
