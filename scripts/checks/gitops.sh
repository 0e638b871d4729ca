#!/usr/bin/env bash
# The GitOps examples (infra/gitops) and the pinned CNPG install (infra/cnpg): see lib/gitops.py
# for what is checked. Besides, the chart must accept, and render valid objects from, the values
# that the Argo CD Application, the Flux HelmRelease and the kind run pass to it.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH="$root/.tools/bin:$PATH"
python="$root/.tools/venv/bin/python"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=0

if ! "$python" scripts/checks/lib/gitops.py "$root" "$scratch"; then
  failed=1
fi

count=0
while IFS=$'\t' read -r values where; do
  count=$((count + 1))
  if ! rendered=$(helm template kumiko-operator charts/kumiko-operator --namespace kumiko-system -f "$values" 2>&1); then
    printf '%s\n' "$rendered" >&2
    echo "gitops: FAIL: the chart rejects the values of $where" >&2
    failed=1
    continue
  fi
  if ! kubernetes-validate --strict --kubernetes-version 1.33 --quiet - <<<"$rendered" >&2; then
    echo "gitops: FAIL: the chart renders invalid objects from the values of $where" >&2
    failed=1
  fi
done <"$scratch/index.txt"
if [ "$count" -lt 3 ]; then
  echo "gitops: FAIL: expected the values of the Argo CD Application, the Flux HelmRelease and kind; found $count" >&2
  failed=1
fi

if [ "$failed" -ne 0 ]; then
  exit 1
fi
echo "gitops: paths, embedded health script, CNPG pin, example KumikoApps and $count values sets OK"
