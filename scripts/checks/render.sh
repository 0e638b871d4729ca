#!/usr/bin/env bash
# Every example passes the generated CRD schema, every invalid example fails it, and every object
# `kumiko-operator render` prints for every example (first deploy and rolled out) is valid under
# kubernetes-validate --strict for Kubernetes 1.33.
set -euo pipefail
cd "$(dirname "$0")/../.."

export PATH="$PWD/.tools/bin:$PATH"
python=.tools/venv/bin/python
cargo build --quiet -p kumiko-operator
operator=target/debug/kumiko-operator

schema_check=scripts/checks/lib/kumikoapp_schema.py
for example in examples/*.yaml; do
  "$python" "$schema_check" crds/kumikoapp.yaml "example ${example##*/}" <"$example"
done

for bad in examples/invalid/schema-*.yaml; do
  if "$python" "$schema_check" crds/kumikoapp.yaml "invalid example ${bad##*/}" <"$bad" >/dev/null; then
    echo "render: $bad passed the CRD schema but must fail it" >&2
    exit 1
  fi
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for example in examples/*.yaml; do
  name=$(basename "$example" .yaml)
  "$operator" render -f "$example" >"$scratch/$name.yaml"
  "$operator" render -f "$example" --rolled-out >"$scratch/$name-rolled-out.yaml"
done
# The CNPG Cluster and the prometheus-operator PodMonitor are custom resources kubernetes-validate
# has no schema for: the Cluster is checked by kube-sim's Cluster CRD in the e2e suite and by the
# real CNPG on kind, the PodMonitor by a structural PodMonitor CRD in the e2e suite
# (e2e/tests/pod_monitor.rs, fixtures/podmonitor-crd.yaml). Every other object must pass.
output=$(kubernetes-validate --strict --kubernetes-version 1.33.0 "$scratch"/*.yaml 2>&1) || {
  echo "$output" >&2
  exit 1
}
if echo "$output" | grep -v -e "kind Cluster with api version postgresql.cnpg.io/v1" \
  -e "kind PodMonitor with api version monitoring.coreos.com/v1" | grep -E '^(WARN|ERROR)'; then
  echo "render: kubernetes-validate reported problems above" >&2
  exit 1
fi
echo "render: $(echo "$output" | grep -c ' passed for resource ') objects valid under kubernetes-validate --strict (1.33)"
