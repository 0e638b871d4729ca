#!/usr/bin/env bash
# RBAC equals use (issue 13, item 9): `make test` runs the e2e suite with the operator as its
# chart's ServiceAccount under the chart's RBAC on kube-sim, recording every authorization
# decision about it in target/rbac-use/ (KUMIKO_RBAC_USE_DIR). This check fails when the operator
# was refused anything, or when the chart grants a permission no scenario used that is not listed
# in testdata/rbac-unused.txt with the reason it is kept.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH="$root/.tools/bin:$PATH"
python="$root/.tools/venv/bin/python"
use_dir=${KUMIKO_RBAC_USE_DIR:-target/rbac-use}

if [ ! -d "$use_dir" ]; then
  echo "rbac-use: skipped: $use_dir does not exist (make test records it while running the e2e suite)"
  exit 0
fi
helm template kumiko-operator charts/kumiko-operator --namespace kumiko-system |
  "$python" scripts/checks/lib/rbac_use.py "$use_dir" scripts/checks/testdata/rbac-unused.txt
