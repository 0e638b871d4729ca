#!/usr/bin/env bash
# Reconciler benchmark: N KumikoApps on kube-sim, from nothing to all Ready, with the real
# kumiko-operator binary. Prints time to Ready, writes per app, writes per steady-state resync
# (goal 0), API reads and writes per app, and the operator's peak RSS and CPU. KUMIKO_BENCH_APPS:
# space-separated app counts (default "100 1000"). Then 100 apps beside KUMIKO_BENCH_LARGE_SECRETS
# (default 2000; 0 skips the run) Secrets of 512 KiB in other namespaces, for the operator's peak
# RSS when the cluster holds much Secret data it does not read (goal < 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q --release -p kumiko-operator --bin kumiko-operator --example bench_operator
for apps in ${KUMIKO_BENCH_APPS:-100 1000}; do
  echo "operator bench: $apps apps"
  target/release/examples/bench_operator "$apps"
done
large_secrets=${KUMIKO_BENCH_LARGE_SECRETS:-2000}
if [ "$large_secrets" -gt 0 ]; then
  echo "operator bench: 100 apps beside $large_secrets Secrets of 512 KiB"
  target/release/examples/bench_operator 100 --large-secrets "$large_secrets"
fi
