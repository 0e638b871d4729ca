#!/usr/bin/env bash
# The Helm chart of the operator (charts/kumiko-operator):
#   1. `helm lint --strict` with the default values and with every ci/*-values.yaml;
#   2. `helm template` of each (CRDs included) is valid under `kubernetes-validate --strict` for
#      Kubernetes 1.33. The only kind kubernetes-validate has no schema for is the Prometheus
#      Operator's ServiceMonitor; any other unknown kind fails the check, and the ServiceMonitor
#      is checked by lib/chart_wiring.py instead (its selector and port must reach the Service);
#   3. lib/chart_wiring.py: selectors, ports, bindings, security context, leader election;
#   4. every RBAC rule of the operator's own roles has a comment saying why; the sample KumikoApp
#      in NOTES.txt validates against the CRD;
#   5. the chart's README documents every value;
#   6. the values schema rejects each file in testdata/chart-invalid/, naming the field.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH="$root/.tools/bin:$PATH"
python="$root/.tools/venv/bin/python"
chart=charts/kumiko-operator
namespace=kumiko-system
failed=0

fail() {
  printf 'chart: FAIL: %s\n' "$*" >&2
  failed=1
}

# 1-3. Lint, render and validate each values set.
value_sets=("")
for values in "$chart"/ci/*-values.yaml; do
  value_sets+=("$values")
done
for values in "${value_sets[@]}"; do
  args=()
  label="default values"
  if [ -n "$values" ]; then
    args=(-f "$values")
    label="$values"
  fi
  if ! lint_output=$(helm lint --strict "$chart" --namespace "$namespace" "${args[@]}" 2>&1); then
    printf '%s\n' "$lint_output" >&2
    fail "helm lint --strict with $label"
    continue
  fi
  if ! rendered=$(helm template kumiko-operator "$chart" --namespace "$namespace" --include-crds "${args[@]}" 2>&1); then
    printf '%s\n' "$rendered" >&2
    fail "helm template with $label"
    continue
  fi
  if ! validation=$(kubernetes-validate --strict --kubernetes-version 1.33 --quiet - <<<"$rendered" 2>&1); then
    printf '%s\n' "$validation" >&2
    fail "kubernetes-validate --strict (1.33) with $label"
  fi
  # A kind without a schema is only a warning to kubernetes-validate; here only ServiceMonitor
  # may be one (it is checked below), anything else must have been validated.
  unknown=$(grep "Couldn't find schema" <<<"$validation" | grep -v 'kind ServiceMonitor with api version monitoring.coreos.com/v1' || true)
  if [ -n "$unknown" ]; then
    printf '%s\n' "$unknown" >&2
    fail "kubernetes-validate has no schema for a kind rendered with $label"
  fi
  if ! "$python" scripts/checks/lib/chart_wiring.py "$namespace" <<<"$rendered"; then
    fail "the rendered objects do not fit together with $label"
  fi
done

# The CRDs are rendered only when they exist; until `make crds` has written them the drift check
# (crds.sh) fails, so this is not silently skipped for long.
if [ -z "$(ls "$chart"/crds/*.yaml 2>/dev/null)" ]; then
  fail "$chart/crds/ holds no CRD: run make crds"
fi

# 4. Every rule of the operator's own roles is preceded by a comment line.
for template in "$chart"/templates/clusterrole.yaml "$chart"/templates/role.yaml; do
  uncommented=$(awk '
    /^[[:space:]]*- apiGroups:/ { if (previous !~ /^[[:space:]]*#/) printf "%s:%d: %s\n", FILENAME, NR, $0 }
    { previous = $0 }
  ' "$template")
  if [ -n "$uncommented" ]; then
    printf '%s\n' "$uncommented" >&2
    fail "an RBAC rule without a comment saying why it is needed"
  fi
done

# The sample KumikoApp in NOTES.txt (what `helm install` prints) validates against the CRD, and the
# notes give the `kubectl wait` command and the CRD upgrade command.
if notes=$(helm install kumiko-operator "$chart" --namespace "$namespace" --dry-run=client 2>&1); then
  sample=$(sed -n "/<<'YAML'$/,/^  YAML$/p" <<<"$notes" | sed '1d;$d;s/^  //')
  if ! "$python" scripts/checks/lib/kumikoapp_schema.py crds/kumikoapp.yaml "$chart/templates/NOTES.txt" <<<"$sample"; then
    fail "the sample KumikoApp in NOTES.txt does not validate against the CRD"
  fi
  for expected in "wait kumikoapp/" "--for=condition=Ready" "kubectl apply --server-side -f"; do
    if ! grep -qF -- "$expected" <<<"$notes"; then
      fail "NOTES.txt lacks '$expected'"
    fi
  done
else
  printf '%s\n' "$notes" >&2
  fail "helm install --dry-run=client"
fi

# The example app chart (examples/app-chart, what e2e/tests/helm_wait.rs installs with --wait):
# lint, and its KumikoApp validates against the CRD.
example=examples/app-chart
if ! lint_output=$(helm lint --strict "$example" 2>&1); then
  printf '%s\n' "$lint_output" >&2
  fail "helm lint --strict $example"
fi
if example_app=$(helm template example "$example" --set-json 'lifecycle={"linger":"1s"}' 2>&1); then
  if ! "$python" scripts/checks/lib/kumikoapp_schema.py crds/kumikoapp.yaml "$example" <<<"$example_app"; then
    fail "the KumikoApp of $example does not validate against the CRD"
  fi
else
  printf '%s\n' "$example_app" >&2
  fail "helm template $example"
fi

# 5. The chart's README documents every value (two levels deep; deeper ones are Kubernetes objects
#    or the probe settings documented together).
undocumented=$("$python" - "$chart" <<'PYTHON'
import sys, yaml
chart = sys.argv[1]
values = yaml.safe_load(open(f"{chart}/values.yaml"))
readme = open(f"{chart}/README.md").read()
paths = []
for key, value in values.items():
    paths.append(key)
    if isinstance(value, dict) and key != "resources":
        paths.extend(f"{key}.{child}" for child in value)
print(" ".join(path for path in paths if f"`{path}" not in readme))
PYTHON
)
if [ -n "$undocumented" ]; then
  fail "$chart/README.md does not document the values: $undocumented"
fi

# 6. The schema rejects bad values and names the field.
invalid_dir=scripts/checks/testdata/chart-invalid
count=0
for values in "$invalid_dir"/*.yaml; do
  count=$((count + 1))
  expect=$(sed -n 's/^# expect: //p' "$values")
  if [ -z "$expect" ]; then
    fail "$values has no '# expect: <text>' line"
    continue
  fi
  for command in lint template; do
    if [ "$command" = lint ]; then
      output=$(helm lint --strict "$chart" -f "$values" 2>&1) && status=0 || status=$?
    else
      output=$(helm template kumiko-operator "$chart" -f "$values" 2>&1) && status=0 || status=$?
    fi
    if [ "$status" -eq 0 ]; then
      fail "helm $command accepted $values"
    elif ! grep -qF -- "$expect" <<<"$output"; then
      printf '%s\n' "$output" >&2
      fail "helm $command rejected $values without naming '$expect'"
    fi
  done
done
if [ "$count" -lt 5 ]; then
  fail "expected the bad values files in $invalid_dir, found $count"
fi

if [ "$failed" -ne 0 ]; then
  exit 1
fi
echo "chart: lint, render, kubernetes-validate (1.33), wiring and ${count} bad values files OK"
