#!/usr/bin/env bash
# The chart ships the CRD in charts/kumiko-operator/crds/; it must be byte for byte the one
# generated from the Rust types (crds/kumikoapp.yaml, written with the chart's copy by `make crds`).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
source_crd=crds/kumikoapp.yaml
chart_crd=charts/kumiko-operator/crds/kumikoapp.yaml

for file in "$source_crd" "$chart_crd"; do
  if [ ! -f "$file" ]; then
    echo "crds: FAIL: $file is missing: run make crds" >&2
    exit 1
  fi
done
if ! cmp -s "$source_crd" "$chart_crd"; then
  diff -u "$source_crd" "$chart_crd" | head -40 >&2 || true
  echo "crds: FAIL: $chart_crd differs from $source_crd: run make crds and commit both" >&2
  exit 1
fi
# Nothing else in the chart's crds/: Helm would install it without this check seeing it.
extra=$(find charts/kumiko-operator/crds -type f ! -name kumikoapp.yaml)
if [ -n "$extra" ]; then
  echo "crds: FAIL: unexpected files in charts/kumiko-operator/crds: $extra" >&2
  exit 1
fi
echo "crds: the chart's CRD matches $source_crd"
