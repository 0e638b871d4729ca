#!/usr/bin/env bash
# yamllint (config: .yamllint) on the hand-written YAML of the chart, infra/, the workflows and the
# check inputs. Helm templates and the generated CRD are excluded in .yamllint, with the reason.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH="$root/.tools/bin:$PATH"
yamllint --strict --config-file .yamllint \
  .yamllint charts infra .github scripts/checks/testdata
echo "yaml: yamllint clean"
