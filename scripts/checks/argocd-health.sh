#!/usr/bin/env bash
# The Argo CD health script for KumikoApp (infra/gitops/argocd/health.lua), run on sample statuses
# (Progressing, Degraded, Healthy, stale generation, ...) by infra/gitops/argocd/health_test.lua,
# under Lua 5.4 and under Lua 5.1, the dialect of the gopher-lua that Argo CD embeds.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
for lua in lua5.4 lua5.1; do
  if ! command -v "$lua" >/dev/null 2>&1; then
    echo "argocd-health: FAIL: $lua is not installed: run make deps" >&2
    exit 1
  fi
  echo "argocd-health: $lua"
  "$lua" infra/gitops/argocd/health_test.lua infra/gitops/argocd/health.lua
done
