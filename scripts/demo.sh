#!/usr/bin/env bash
# `make demo`: from nothing to a Ready KumikoApp on the local cluster (e2e/kube-sim), with the
# operator installed as users install it.
#
# Builds kube-sim, kumiko-app and kumiko-operator; starts kube-sim with a throwaway Postgres per
# CNPG Cluster and the images mapped to the local binaries (`kumiko-app:dev` ->
# target/debug/kumiko-app, `kumiko-operator:*` -> target/debug/kumiko-operator); installs the
# operator with `helm install --wait` of charts/kumiko-operator (its CRD, ServiceAccount, RBAC and
# Deployment: the operator runs as a pod under the chart's RBAC, with kube-rs's in-cluster
# configuration); applies examples/minimal.yaml, exposed on `<app>.demo.test` through kube-sim's
# simulated ingress (unless the example sets spec.api.expose); prints progress until the app is
# Ready; then prints the tour: the app's URL (kube-sim's own forwarding of the app's Service, which
# follows the Service's endpoints through upgrades and restarts), the `curl -H 'Host: ...'` that
# reaches it through the ingress by its host name, and five commands to try, also written
# to target/demo/tour.sh; then keeps everything running for exploring with
# `kubectl --kubeconfig target/demo/kubeconfig`. Ctrl-C tears everything down.
#
# Three images of the app are mapped: `kumiko-app:dev` (the example's, target/debug/kumiko-app),
# `kumiko-app:v2` (target/debug/kumiko-app-v2: the same program with one more migration, so
# upgrading to it runs a migrate Job that changes the schema before the pods roll), and
# `kumiko-app:broken-migration` (e2e/src/bin/kumiko-app-broken-migration.rs, compiled with rustc
# alone: its migration fails, so the app keeps serving the release it runs and says why).
#
# Environment: DEMO_EXAMPLE (default examples/minimal.yaml), DEMO_READY_TIMEOUT (seconds, default
# 300), DEMO_EXIT_WHEN_READY=1 (tear down once Ready instead of waiting for Ctrl-C),
# DEMO_CHECK_TOUR=1 (with DEMO_EXIT_WHEN_READY=1: before tearing down, check that the URL answers
# with the status page and run every printed command, scripts/demo-tour-check.sh), DEMO_PSQL_PORT
# (the local port of the tour's psql step, default 15432).
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

say "building kube-sim, kumiko-app (two releases) and kumiko-operator"
cargo build --quiet -p kube-sim --bin kube-sim -p kumiko-runtime --bin kumiko-app \
  --bin kumiko-app-v2 -p kumiko-operator --bin kumiko-operator

mkdir -p "$demo_dir"
rm -f "$kubeconfig"
# The broken-migration image: the program (standard library only) beside a link to the app, which
# it runs for every command but `migrate`.
broken_image_dir="$demo_dir/images/broken-migration"
mkdir -p "$broken_image_dir"
rustc --edition 2024 -O -o "$broken_image_dir/kumiko-app-broken-migration" \
  e2e/src/bin/kumiko-app-broken-migration.rs
ln -sfn "$root/target/debug/kumiko-app" "$broken_image_dir/kumiko-app"
# The second release goes by the name `kumiko-app` in its image, as the first does (so
# `kubectl exec ... -- kumiko-app migrate status` finds it there).
v2_image_dir="$demo_dir/images/v2"
mkdir -p "$v2_image_dir"
ln -sfn "$root/target/debug/kumiko-app-v2" "$v2_image_dir/kumiko-app"
say "starting kube-sim (throwaway Postgres per CNPG Cluster; kumiko-app:dev, kumiko-app:v2, kumiko-app:broken-migration and kumiko-operator mapped to local programs)"
setsid target/debug/kube-sim --kubeconfig "$kubeconfig" --start-postgres \
  --image "kumiko-app:dev=$root/target/debug/kumiko-app" \
  --image "kumiko-app:v2=$v2_image_dir/kumiko-app" \
  --image "kumiko-app:broken-migration=$broken_image_dir/kumiko-app-broken-migration" \
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
# Expose the app through kube-sim's simulated ingress on a host name of its own, unless the
# example already sets spec.api.expose.
demo_host=""
if [ -z "$(kubectl_demo get -f "$example" -o jsonpath='{.spec.api.expose}')" ]; then
  demo_host="$(kubectl_demo get -f "$example" -o jsonpath='{.metadata.name}').demo.test"
  say "exposing the app on http://$demo_host/ through kube-sim's ingress (spec.api.expose)"
  kubectl_demo patch -f "$example" --type merge \
    -p "{\"spec\":{\"api\":{\"expose\":{\"hosts\":[\"$demo_host\"],\"ingress\":{}}}}}" >/dev/null
fi

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

# The tour: the app's URL and five commands, each of which works against this cluster.
app=$(kubectl_demo get -f "$example" -o jsonpath='{.metadata.name}')
app_namespace=$(kubectl_demo get -f "$example" -o jsonpath='{.metadata.namespace}')
# kube-sim forwards every Service port from a loopback port of its own, published on the Service.
proxy_port=$(kubectl_demo -n "$app_namespace" get service "$app-api" \
  -o jsonpath='{.metadata.annotations.kube-sim\.kumiko\.so/proxy-port-80}')
[ -n "$proxy_port" ] || fail "the Service $app_namespace/$app-api publishes no local port"
url="http://127.0.0.1:$proxy_port/"
psql_port="${DEMO_PSQL_PORT:-15432}"
k="kubectl --kubeconfig target/demo/kubeconfig -n $app_namespace"
tour="$demo_dir/tour.sh"
cat >"$tour" <<TOUR
# 1. Watch the app (its Ready condition, the API and worker summaries); Ctrl-C stops watching.
$k get kapp -w
# 2. Upgrade the image: the migrate Job of kumiko-app:v2 runs its one new migration first, then the pods roll.
$k patch kapp $app --type merge -p '{"spec":{"image":"kumiko-app:v2"}}'
# 3. Scale the worker to two pods.
$k patch kapp $app --type merge -p '{"spec":{"worker":{"replicas":2}}}'
# 4. Rotate the runtime role's credentials (a new password, the pods restart onto it).
$k annotate kapp $app --overwrite kumiko.so/rotate-credentials=\$(date +%s)
# 5. Open psql on the app's database, through a port-forward to its Postgres.
$k port-forward svc/$app-db-rw $psql_port:5432 >/dev/null & sleep 2; PGPASSWORD=\$($k get secret $app-db-runtime -o jsonpath='{.data.password}' | base64 -d) psql -h 127.0.0.1 -p $psql_port -U ${app//-/_}_runtime $app; kill \$!
TOUR
say "the app's status page: $url"
ingress_command=""
if [ -n "$demo_host" ]; then
  ingress_port=$(kubectl_demo -n "$app_namespace" get ingress "$app-api" \
    -o jsonpath='{.status.loadBalancer.ingress[0].ports[0].port}')
  [ -n "$ingress_port" ] || fail "the Ingress $app_namespace/$app-api publishes no port"
  ingress_command="curl -H 'Host: $demo_host' http://127.0.0.1:$ingress_port/"
  say "and by its host name through the ingress ($(kubectl_demo get -f "$example" -o jsonpath='{.status.urls[0]}')): $ingress_command"
fi
say "try next (also in target/demo/tour.sh):"
sed 's/^/  /' "$tour"
migrate_status="$k exec deploy/$app-api -- sh -c 'KUMIKO_PROCESS=migrate kumiko-app migrate status'"
broken_upgrade="$k patch kapp $app --type merge -p '{\"spec\":{\"image\":\"kumiko-app:broken-migration\"}}'"
say "and look inside a pod (the migrations the app's database holds; after step 2, 0003 incidents by component too): $migrate_status"
say "and see a failed migration hold the release that runs (the Job fails, Ready says MigrationFailed with the Job's log, the pods keep serving; patch the image back to recover): $broken_upgrade"
if [ "${DEMO_EXIT_WHEN_READY:-0}" = "1" ]; then
  if [ "${DEMO_CHECK_TOUR:-0}" = "1" ]; then
    if [ -n "$ingress_command" ]; then
      page=$(bash -c "$ingress_command -sS -w '\n%{http_code}'") || fail "$ingress_command does not answer"
      if [ "$(tail -n 1 <<<"$page")" != 200 ] || ! grep -q '<title>Status</title>' <<<"$page"; then
        fail "$ingress_command is not the status page: $(head -c 300 <<<"$page")"
      fi
      say "ok: $ingress_command answers 200 with the status page"
    fi
    bash scripts/demo-tour-check.sh "$url" "$tour" "$migrate_status" "$broken_upgrade" \
      || fail "the tour does not work"
  fi
  exit 0
fi
say "Ctrl-C tears everything down"
wait "$sim_pid"
