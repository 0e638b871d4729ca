#!/usr/bin/env bash
# The e2e suite on a kind cluster, step by step. `make e2e-kind` runs every step; the GitHub
# workflow (.github/workflows/e2e-kind.yml) runs them one at a time with `make e2e-kind STEP=...`.
#
#   cluster  create the kind cluster (infra/kind/cluster.yaml), or reuse it if it exists
#   cnpg     install CloudNativePG, the exact version in infra/cnpg/VERSION
#   images   build kumiko-operator:dev, kumiko-app:dev (tagged kumiko-app:v2 too, the image-update
#            scenarios' second tag) and kumiko-app:broken-migration (infra/docker), and
#            `kind load` them
#   chart    apply the CRDs server-side, then `helm upgrade --install` the operator chart
#   test     run the e2e suite (kumiko-e2e) against the cluster: two tests at a time (each
#            starts a CNPG cluster; E2E_KIND_TEST_THREADS), every wait five times as long as on
#            kube-sim (image pulls, Postgres start; KUMIKO_E2E_TIMEOUT_SCALE)
#   example  apply infra/kind/hello.yaml and wait until the KumikoApp is Ready
#   logs     collect cluster state and logs into target/e2e-kind/logs
#   down     delete the kind cluster
#   all      cluster, cnpg, images, chart, test (logs on failure); the cluster is kept
#
# Needs Docker, kind, kubectl, helm and cargo-nextest. Writes its kubeconfig to
# target/e2e-kind/kubeconfig and never touches ~/.kube/config.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

cluster_name=${KIND_CLUSTER_NAME:-kumiko-e2e}
work_dir=${E2E_KIND_DIR:-$root/target/e2e-kind}
kubeconfig="$work_dir/kubeconfig"
operator_image=kumiko-operator:dev
app_image=kumiko-app:dev
app_image_v2=kumiko-app:v2
broken_migration_image=kumiko-app:broken-migration
operator_namespace=kumiko-system
cnpg_version=$(tr -d '[:space:]' <infra/cnpg/VERSION)
cnpg_minor=${cnpg_version%.*}
cnpg_manifest="https://raw.githubusercontent.com/cloudnative-pg/cloudnative-pg/release-${cnpg_minor}/releases/cnpg-${cnpg_version}.yaml"

say() { printf 'e2e-kind: %s\n' "$*"; }
die() {
  printf 'e2e-kind: %s\n' "$*" >&2
  exit 1
}

need() {
  local tool
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      case "$tool" in
        kind) die "kind is not installed: see https://kind.sigs.k8s.io/docs/user/quick-start/#installation (v0.29.0)" ;;
        docker) die "docker is not installed; kind and the image builds need it" ;;
        helm) die "helm is not installed: run make deps (it installs one into .tools/bin)" ;;
        cargo-nextest) die "cargo-nextest is not installed: run make deps or cargo install --locked cargo-nextest" ;;
        *) die "$tool is not installed" ;;
      esac
    fi
  done
}

cluster_exists() {
  kind get clusters 2>/dev/null | grep -qxF "$cluster_name"
}

need_cluster() {
  if ! cluster_exists; then
    die "there is no kind cluster $cluster_name: run make e2e-kind STEP=cluster first"
  fi
  mkdir -p "$work_dir"
  kind get kubeconfig --name "$cluster_name" >"$kubeconfig"
  export KUBECONFIG="$kubeconfig"
}

step_cluster() {
  need docker kind kubectl
  docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info fails)"
  mkdir -p "$work_dir"
  if cluster_exists; then
    say "reusing the kind cluster $cluster_name"
  else
    say "creating the kind cluster $cluster_name (infra/kind/cluster.yaml)"
    kind create cluster --name "$cluster_name" --config infra/kind/cluster.yaml \
      --kubeconfig "$kubeconfig" --wait 180s
  fi
  need_cluster
  kubectl get nodes -o wide
}

step_cnpg() {
  need kind kubectl
  need_cluster
  say "installing CloudNativePG $cnpg_version: $cnpg_manifest"
  kubectl apply --server-side --force-conflicts -f "$cnpg_manifest"
  kubectl -n cnpg-system rollout status deployment/cnpg-controller-manager --timeout=300s
  kubectl wait --for=condition=Established crd/clusters.postgresql.cnpg.io --timeout=60s
}

step_images() {
  need docker kind
  need_cluster
  say "building $operator_image"
  DOCKER_BUILDKIT=1 docker build -f infra/docker/operator.Dockerfile -t "$operator_image" .
  say "building $app_image (also tagged $app_image_v2)"
  DOCKER_BUILDKIT=1 docker build -f infra/docker/app.Dockerfile -t "$app_image" .
  docker tag "$app_image" "$app_image_v2"
  say "building $broken_migration_image"
  DOCKER_BUILDKIT=1 docker build -f infra/docker/app-broken-migration.Dockerfile \
    -t "$broken_migration_image" .
  say "loading the images into the nodes of $cluster_name"
  kind load docker-image "$operator_image" "$app_image" "$app_image_v2" "$broken_migration_image" \
    --name "$cluster_name"
}

step_chart() {
  need kind kubectl helm docker
  need_cluster
  # Helm installs crds/ only on the first install and never upgrades them: apply them the way
  # the chart's README tells users to, so a rerun on an existing cluster gets the current CRD.
  say "applying the CRDs server-side"
  kubectl apply --server-side -f charts/kumiko-operator/crds/
  kubectl wait --for=condition=Established crd/kumikoapps.kumiko.so --timeout=60s
  # The namespace enforces the restricted Pod Security Standard: the chart must meet it.
  kubectl create namespace "$operator_namespace" --dry-run=client -o yaml | kubectl apply -f -
  kubectl label namespace "$operator_namespace" --overwrite pod-security.kubernetes.io/enforce=restricted
  # The image ID as a pod annotation: a rebuilt :dev image rolls the pods even though the tag is
  # unchanged.
  local image_id
  image_id=$(docker image inspect --format '{{.Id}}' "$operator_image" | tr ':' '-')
  say "helm upgrade --install kumiko-operator (image $operator_image, $image_id)"
  helm upgrade --install kumiko-operator charts/kumiko-operator \
    --namespace "$operator_namespace" \
    --values infra/kind/operator-values.yaml \
    --set-string "podAnnotations.kumiko\.so/image-id=$image_id" \
    --wait --timeout 5m
  kubectl -n "$operator_namespace" rollout status deployment/kumiko-operator --timeout=300s
}

step_test() {
  need kind cargo-nextest
  need_cluster
  say "running the e2e suite against $cluster_name"
  KUMIKO_E2E_TARGET=kind \
    KUMIKO_E2E_KUBECONFIG="$kubeconfig" \
    KUMIKO_E2E_APP_IMAGE="$app_image" \
    KUMIKO_E2E_APP_IMAGE_V2="$app_image_v2" \
    KUMIKO_E2E_BROKEN_MIGRATION_IMAGE="$broken_migration_image" \
    KUMIKO_E2E_OPERATOR_NAMESPACE="$operator_namespace" \
    KUMIKO_E2E_TIMEOUT_SCALE="${KUMIKO_E2E_TIMEOUT_SCALE:-5}" \
    cargo nextest run --profile kind -p kumiko-e2e --no-fail-fast \
      --test-threads "${E2E_KIND_TEST_THREADS:-2}"
}

step_example() {
  need kind kubectl
  need_cluster
  say "applying infra/kind/hello.yaml and waiting for Ready"
  kubectl apply --server-side -f infra/kind/hello.yaml
  kubectl -n hello wait kumikoapp/hello --for=condition=Ready --timeout=15m
  kubectl -n hello get kumikoapp hello -o wide
}

step_logs() {
  need kind kubectl
  local logs="$work_dir/logs"
  mkdir -p "$logs"
  if ! cluster_exists; then
    say "no kind cluster $cluster_name: nothing to collect"
    return 0
  fi
  need_cluster
  say "collecting logs into $logs"
  # Every command may fail on a broken cluster; collect what can be collected.
  kubectl get nodes -o wide >"$logs/nodes.txt" 2>&1 || true
  kubectl get all,pvc,resourcequotas,leases,poddisruptionbudgets -A -o wide >"$logs/objects.txt" 2>&1 || true
  kubectl get kumikoapps -A -o yaml >"$logs/kumikoapps.yaml" 2>&1 || true
  kubectl describe kumikoapps -A >"$logs/kumikoapps-describe.txt" 2>&1 || true
  kubectl get clusters.postgresql.cnpg.io -A -o yaml >"$logs/cnpg-clusters.yaml" 2>&1 || true
  kubectl get jobs -A -o yaml >"$logs/jobs.yaml" 2>&1 || true
  kubectl get events -A --sort-by=.lastTimestamp >"$logs/events.txt" 2>&1 || true
  kubectl -n "$operator_namespace" describe pods >"$logs/operator-pods.txt" 2>&1 || true
  kubectl -n "$operator_namespace" logs -l app.kubernetes.io/name=kumiko-operator \
    --all-containers --prefix --tail=-1 >"$logs/operator.log" 2>&1 || true
  kubectl -n "$operator_namespace" logs -l app.kubernetes.io/name=kumiko-operator \
    --all-containers --prefix --previous --tail=-1 >"$logs/operator-previous.log" 2>&1 || true
  kubectl -n cnpg-system logs deployment/cnpg-controller-manager --tail=-1 >"$logs/cnpg-operator.log" 2>&1 || true
  local namespace
  for namespace in $(kubectl get kumikoapps -A -o jsonpath='{.items[*].metadata.namespace}' 2>/dev/null || true); do
    kubectl -n "$namespace" describe pods >"$logs/app-$namespace-pods.txt" 2>&1 || true
    kubectl -n "$namespace" logs -l app.kubernetes.io/managed-by=kumiko-operator \
      --all-containers --prefix --tail=-1 >"$logs/app-$namespace.log" 2>&1 || true
  done
  kind export logs "$logs/kind" --name "$cluster_name" >/dev/null 2>&1 || true
  say "logs are in $logs"
}

step_down() {
  need kind
  if cluster_exists; then
    kind delete cluster --name "$cluster_name"
  else
    say "no kind cluster $cluster_name"
  fi
}

step_all() {
  local step
  for step in cluster cnpg images chart test; do
    # Each step in its own process: errexit does not apply inside a function called as an
    # `if` condition, so calling step_$step directly here would carry on past a failed command.
    if ! bash "$root/scripts/e2e-kind.sh" "$step"; then
      say "step $step failed"
      step_logs || true
      return 1
    fi
  done
  say "done; the cluster $cluster_name is kept (make e2e-kind STEP=down deletes it)"
}

main() {
  local step=${1:-all}
  case "$step" in
    cluster | cnpg | images | chart | test | example | logs | down | all) "step_$step" ;;
    *) die "unknown step '$step': use cluster, cnpg, images, chart, test, example, logs, down or all" ;;
  esac
}

main "$@"
