#!/usr/bin/env bash
# The container build files (infra/docker/*.Dockerfile): hadolint clean at its strictest threshold,
# plus the rules this project sets for its images, which hadolint does not know:
#   - multi-stage: a Rust build stage, then a small runtime stage (distroless or debian-slim);
#   - the runtime runs as the numeric non-root user 65532 (numeric, so runAsNonRoot can verify it);
#   - the ENTRYPOINT is exec form, so the signal reaches the process;
#   - the build context (the workspace root) leaves out target/, .tools/ and .git via .dockerignore.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH="$root/.tools/bin:$PATH"
failed=0
fail() {
  printf 'containers: FAIL: %s\n' "$*" >&2
  failed=1
}

dockerfiles=(infra/docker/*.Dockerfile)
if [ ! -e "${dockerfiles[0]}" ] || [ "${#dockerfiles[@]}" -lt 2 ]; then
  fail "expected infra/docker/operator.Dockerfile and infra/docker/app.Dockerfile"
  exit 1
fi

if ! hadolint --failure-threshold info "${dockerfiles[@]}"; then
  fail "hadolint"
fi

for dockerfile in "${dockerfiles[@]}"; do
  froms=$(grep -cE '^FROM ' "$dockerfile" || true)
  if [ "$froms" -lt 2 ]; then
    fail "$dockerfile is not multi-stage ($froms FROM lines)"
  fi
  if ! grep -qE '^FROM rust:[0-9]+\.[0-9]+(\.[0-9]+)?-bookworm AS build$' "$dockerfile"; then
    fail "$dockerfile has no pinned 'FROM rust:<version>-bookworm AS build' stage"
  fi
  final_from=$(grep -E '^FROM ' "$dockerfile" | tail -n 1)
  case "$final_from" in
    "FROM gcr.io/distroless/cc-debian12:nonroot" | "FROM debian:bookworm-slim") ;;
    *) fail "$dockerfile: the runtime stage is '$final_from', not distroless cc or debian-slim" ;;
  esac
  # The instructions of the last stage only.
  final_stage=$(awk '/^FROM /{stage=""} {stage = stage $0 "\n"} END{printf "%s", stage}' "$dockerfile")
  user=$(grep -E '^USER ' <<<"$final_stage" | tail -n 1 || true)
  if [ "$user" != "USER 65532:65532" ]; then
    fail "$dockerfile: the runtime stage's last USER is '$user', not 'USER 65532:65532'"
  fi
  entrypoint=$(grep -E '^ENTRYPOINT ' <<<"$final_stage" | tail -n 1 || true)
  if ! [[ "$entrypoint" =~ ^ENTRYPOINT\ \[\"/ ]]; then
    fail "$dockerfile: '$entrypoint' is not an exec-form ENTRYPOINT with an absolute path"
  fi
done

for excluded in .git .tools target; do
  if ! grep -qxF "$excluded" .dockerignore 2>/dev/null; then
    fail ".dockerignore does not exclude $excluded"
  fi
done

if [ "$failed" -ne 0 ]; then
  exit 1
fi
echo "containers: hadolint and image rules OK for ${dockerfiles[*]}"
