#!/usr/bin/env bash
# Reconciler benchmark: N KumikoApps on kube-sim, from nothing to all Ready, with the real
# kumiko-operator binary. Prints time to Ready, writes per app, writes per steady-state resync
# (goal 0), API reads and writes per app, and the operator's peak RSS and CPU. KUMIKO_BENCH_APPS:
# space-separated app counts (default "100 1000").
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q --release -p kumiko-operator --bin kumiko-operator --example bench_operator
for apps in ${KUMIKO_BENCH_APPS:-100 1000}; do
  echo "operator bench: $apps apps"
  target/release/examples/bench_operator "$apps"
done
