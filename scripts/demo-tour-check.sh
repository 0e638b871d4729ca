#!/usr/bin/env bash
# Checks the tour `make demo` prints (scripts/demo.sh runs this with DEMO_CHECK_TOUR=1, before it
# tears the cluster down): the app's URL answers 200 with the status page, and every command of
# the tour file succeeds, in order, as a user would type them.
#
# Usage: demo-tour-check.sh URL TOUR_FILE [EXTRA_COMMAND] (the extra command runs first)
# TOUR_FILE holds `# comment` lines and one command per step. A watch (`get ... -w`) never ends
# by itself: it runs for 5s and must have printed the app. The psql step reads its SQL from stdin.
# After the upgrade the check waits until the app is Ready on the new image again.
set -euo pipefail

url=$1
tour=$2
extra=${3:-}

say() { printf 'demo tour: %s\n' "$*"; }
fail() {
  printf 'demo tour: FAIL: %s\n' "$*" >&2
  exit 1
}

page=$(mktemp)
trap 'rm -f "$page"' EXIT
code=$(curl -sS -o "$page" -w '%{http_code}' "$url") || fail "$url does not answer"
[ "$code" = 200 ] || fail "$url answered $code"
grep -q '<title>Status</title>' "$page" || fail "$url is not the status page: $(head -c 300 "$page")"
say "ok: $url answers 200 with the status page"

# The extra command first: the tour rotates the credentials, and a pod keeps its environment
# until it restarts onto the new ones.
if [ -n "$extra" ]; then
  output=$(timeout 60 bash -c "$extra" 2>&1) || fail "$extra failed: $output"
  say "ok: $extra: $(head -n 1 <<<"$output")"
fi

step=0
while IFS= read -r command; do
  case "$command" in '#'* | '') continue ;; esac
  step=$((step + 1))
  case "$command" in
    *' -w')
      output=$(timeout 5 bash -c "$command" 2>&1) && status=0 || status=$?
      [ "$status" = 124 ] || fail "step $step ended ($status) instead of watching: $command: $output"
      grep -q . <<<"$output" || fail "step $step printed nothing: $command"
      ;;
    *psql*)
      output=$(echo 'select current_user, current_database();' | timeout 60 bash -c "$command" 2>&1) \
        || fail "step $step failed: $command: $output"
      grep -q '_runtime' <<<"$output" || fail "step $step: psql did not answer: $output"
      ;;
    *)
      output=$(timeout 60 bash -c "$command" 2>&1) || fail "step $step failed: $command: $output"
      ;;
  esac
  say "ok: step $step: $(head -n 1 <<<"$output")"
  case "$command" in
    *kumiko-app:v2*)
      # The upgrade converges: the migrate Job ran, the pods run the new image, the app is Ready.
      k=${command%% patch *}
      app=$(awk '{for (i = 1; i <= NF; i++) if ($i == "kapp") {print $(i + 1); exit}}' <<<"$command")
      for _ in $(seq 1 90); do
        image=$($k get kapp "$app" -o jsonpath='{.status.image}' 2>/dev/null || true)
        ready=$($k get kapp "$app" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
        [ "$image" = kumiko-app:v2 ] && [ "$ready" = True ] && break
        sleep 1
      done
      [ "$image" = kumiko-app:v2 ] && [ "$ready" = True ] \
        || fail "the upgrade to kumiko-app:v2 did not converge within 90s (image ${image:-none}, Ready ${ready:-none})"
      say "ok: the app is Ready on kumiko-app:v2"
      ;;
  esac
done <"$tour"
[ "$step" = 5 ] || fail "the tour has $step commands, not 5"

say "every step works"
