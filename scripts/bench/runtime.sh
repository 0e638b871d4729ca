#!/usr/bin/env bash
# The app runtime's benchmark (run by `make bench`). Prints, from one run:
#   - time to ready on SQLite and on a local (throwaway) Postgres;
#   - /health/ready throughput as a ratio to a bare route of the same process (wrk);
#   - SIGTERM -> first 503 on /health/ready, p50/p99 over 20 runs;
#   - the bare route's throughput with the metrics layer on, as a ratio to it off
#     (KUMIKO_METRICS=off), two instances side by side, runs alternating;
#   - a drain run: HAProxy health-checking /health/ready in front of two instances, wrk through
#     it, SIGTERM to one instance under load, failed requests counted.
# and checks the goals: 0 failed requests, ready/bare >= 0.90, metrics on/off >= 0.95, p99 flip
# <= 50 ms, time to ready <= 50 ms on SQLite. All traffic stays on 127.0.0.1; every duration is bounded.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

for tool in wrk haproxy; do
  command -v "$tool" >/dev/null || { echo "runtime bench: $tool is missing; run make deps" >&2; exit 1; }
done

echo "runtime bench: building (release)"
cargo build --quiet --release -p kumiko-runtime --bin kumiko-app --example runtime_bench
app="$root/target/release/kumiko-app"
helper="$root/target/release/examples/runtime_bench"

scratch=$(mktemp -d)
pids=()
# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
  for pid in "${pids[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() { # port
  for _ in $(seq 1 300); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/health/ready")" = 200 ]; then
      return 0
    fi
    sleep 0.05
  done
  echo "runtime bench: instance on port $1 not ready" >&2
  return 1
}

start_instance() { # name port linger [metrics on|off] -> sets $instance_pid
  local name=$1 port=$2 linger=$3 metrics=${4:-on}
  mkdir -p "$scratch/$name"
  env -i PATH="$PATH" PORT="$port" KUMIKO_DATA_DIR="$scratch/$name/data" KUMIKO_LINGER="$linger" \
    KUMIKO_INSTANCE_ID="$name" KUMIKO_METRICS="$metrics" RUST_LOG=warn "$app" serve >"$scratch/$name/log" 2>&1 &
  instance_pid=$!
  pids+=("$instance_pid")
  wait_ready "$port"
}

rps() { # wrk output -> requests/s
  awk '/^Requests\/sec:/ {print $2}'
}

declare -A figure
missed=0
goal() { # description, condition (as an awk expression that is true when met)
  if awk "BEGIN { exit !($2) }"; then
    printf '  goal met:    %s\n' "$1"
  else
    printf '  goal MISSED: %s\n' "$1"
    missed=1
  fi
}

# --- time to ready --------------------------------------------------------------------------
echo "runtime bench: time to ready (10 runs each)"
while read -r name value; do figure[$name]=$value; done < <("$helper" "$app" ready-time 10)

# --- SIGTERM -> first 503 -------------------------------------------------------------------
echo "runtime bench: SIGTERM -> first 503 (20 runs)"
while read -r name value; do figure[$name]=$value; done < <("$helper" "$app" flip 20)

# --- /health/ready vs a bare route ----------------------------------------------------------
echo "runtime bench: /health/ready vs /api/ping throughput (wrk, 2 x 3 s each, alternating)"
port=$(free_port)
start_instance single "$port" 0s
single_pid=$instance_pid
bare_total=0; ready_total=0
for _ in 1 2; do
  bare=$(wrk -t2 -c32 -d3s "http://127.0.0.1:$port/api/ping" | rps)
  ready=$(wrk -t2 -c32 -d3s "http://127.0.0.1:$port/health/ready" | rps)
  bare_total=$(awk -v a="$bare_total" -v b="$bare" 'BEGIN { print a + b }')
  ready_total=$(awk -v a="$ready_total" -v b="$ready" 'BEGIN { print a + b }')
done
kill -TERM "$single_pid"; wait "$single_pid" 2>/dev/null || true
figure[bare_rps]=$(awk -v t="$bare_total" 'BEGIN { printf "%.0f", t / 2 }')
figure[ready_rps]=$(awk -v t="$ready_total" 'BEGIN { printf "%.0f", t / 2 }')
figure[ready_ratio]=$(awk -v r="$ready_total" -v b="$bare_total" 'BEGIN { printf "%.3f", r / b }')

# --- the metrics layer: on vs off -----------------------------------------------------------
echo "runtime bench: /api/ping with the metrics layer on vs off (wrk, 2 x 3 s each, alternating)"
port_on=$(free_port); port_off=$(free_port)
start_instance metrics-on "$port_on" 0s on
on_pid=$instance_pid
start_instance metrics-off "$port_off" 0s off
off_pid=$instance_pid
on_total=0; off_total=0
for _ in 1 2; do
  off=$(wrk -t2 -c32 -d3s "http://127.0.0.1:$port_off/api/ping" | rps)
  on=$(wrk -t2 -c32 -d3s "http://127.0.0.1:$port_on/api/ping" | rps)
  on_total=$(awk -v a="$on_total" -v b="$on" 'BEGIN { print a + b }')
  off_total=$(awk -v a="$off_total" -v b="$off" 'BEGIN { print a + b }')
done
kill -TERM "$on_pid" "$off_pid"; wait "$on_pid" "$off_pid" 2>/dev/null || true
figure[metrics_on_rps]=$(awk -v t="$on_total" 'BEGIN { printf "%.0f", t / 2 }')
figure[metrics_off_rps]=$(awk -v t="$off_total" 'BEGIN { printf "%.0f", t / 2 }')
figure[metrics_ratio]=$(awk -v a="$on_total" -v b="$off_total" 'BEGIN { printf "%.3f", a / b }')

# --- drain behind HAProxy -------------------------------------------------------------------
echo "runtime bench: drain run (HAProxy, two instances, SIGTERM to one under load)"
port_a=$(free_port); port_b=$(free_port); port_lb=$(free_port)
start_instance a "$port_a" 1s
pid_a=$instance_pid
start_instance b "$port_b" 1s
cat >"$scratch/haproxy.cfg" <<EOF
global
  maxconn 4096
  stats socket $scratch/haproxy.sock mode 600 level user
defaults
  mode http
  timeout connect 1s
  timeout client 10s
  timeout server 10s
  retries 3
  option redispatch
frontend front
  bind 127.0.0.1:$port_lb
  default_backend apps
backend apps
  balance roundrobin
  option httpchk GET /health/ready
  http-check expect status 200
  default-server inter 100ms fall 1 rise 2
  server a 127.0.0.1:$port_a check
  server b 127.0.0.1:$port_b check
EOF
haproxy -f "$scratch/haproxy.cfg" -db >"$scratch/haproxy.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port_lb/api/ping")" = 200 ] && break
  sleep 0.05
done
sleep 0.5  # both servers up (rise 2)
wrk -t2 -c32 -d6s "http://127.0.0.1:$port_lb/api/ping" >"$scratch/wrk-drain.txt" &
wrk_pid=$!
sleep 2
kill -TERM "$pid_a"
drain_exit=0
wait "$pid_a" || drain_exit=$?
wait "$wrk_pid"
# Per-server 2xx answers (from HAProxy's stats socket): proves both instances carried traffic.
read -r served_a served_b < <(python3 - "$scratch/haproxy.sock" <<'PY'
import csv, io, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
rows = list(csv.reader(io.StringIO(data.decode().lstrip("# "))))
header = rows[0]
by_server = {r[1]: r for r in rows[1:] if len(r) == len(header) and r[0] == "apps"}
col = header.index("hrsp_2xx")
print(by_server["a"][col], by_server["b"][col])
PY
)
figure[drain_requests]=$(awk '/requests in/ {print $1}' "$scratch/wrk-drain.txt")
non2xx=$(awk -F': ' '/Non-2xx or 3xx responses/ {print $2}' "$scratch/wrk-drain.txt")
socket=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$scratch/wrk-drain.txt")
figure[drain_failed]=$(( ${non2xx:-0} + ${socket:-0} ))
figure[drain_exit]=$drain_exit

# --- report ---------------------------------------------------------------------------------
echo
echo "== kumiko-runtime bench (release build, 127.0.0.1) =="
printf '  time to ready, SQLite (existing data dir):  p50 %6s ms   p99 %6s ms\n' "${figure[ready_sqlite_ms_p50]}" "${figure[ready_sqlite_ms_p99]}"
printf '  time to ready, SQLite (fresh, migrates):    p50 %6s ms   p99 %6s ms\n' "${figure[ready_sqlite_fresh_ms_p50]}" "${figure[ready_sqlite_fresh_ms_p99]}"
printf '  time to ready, local Postgres:              p50 %6s ms   p99 %6s ms\n' "${figure[ready_postgres_ms_p50]}" "${figure[ready_postgres_ms_p99]}"
printf '  /api/ping (bare):      %8s req/s\n' "${figure[bare_rps]}"
printf '  /health/ready:         %8s req/s   ratio ready/bare %s\n' "${figure[ready_rps]}" "${figure[ready_ratio]}"
printf '  /api/ping, metrics on: %8s req/s   off %s req/s   ratio on/off %s\n' "${figure[metrics_on_rps]}" "${figure[metrics_off_rps]}" "${figure[metrics_ratio]}"
printf '  SIGTERM -> first 503:  p50 %s ms   p99 %s ms   max %s ms (20 runs)\n' "${figure[flip_ms_p50]}" "${figure[flip_ms_p99]}" "${figure[flip_ms_max]}"
printf '  drain behind HAProxy:  %s requests, %s failed (non-2xx %s, socket errors %s); drained instance exit %s\n' \
  "${figure[drain_requests]}" "${figure[drain_failed]}" "${non2xx:-0}" "${socket:-0}" "${figure[drain_exit]}"
printf '                         2xx served by the drained instance %s, by the other %s\n' "$served_a" "$served_b"
goal "0 failed requests in the drain run (${figure[drain_failed]})" "${figure[drain_failed]} == 0 && ${figure[drain_exit]} == 0 && $served_a > 0"
goal "ready throughput >= 0.90 of bare (${figure[ready_ratio]})" "${figure[ready_ratio]} >= 0.90"
goal "bare route with metrics >= 0.95 of without (${figure[metrics_ratio]})" "${figure[metrics_ratio]} >= 0.95"
goal "p99 SIGTERM -> 503 <= 50 ms (${figure[flip_ms_p99]} ms)" "${figure[flip_ms_p99]} <= 50"
goal "time to ready on SQLite <= 50 ms (p50 ${figure[ready_sqlite_ms_p50]} ms)" "${figure[ready_sqlite_ms_p50]} <= 50"
exit "$missed"
