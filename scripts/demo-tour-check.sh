#!/usr/bin/env bash
# Checks the tour `make demo` prints (scripts/demo.sh runs this with DEMO_CHECK_TOUR=1, before it
# tears the cluster down): the app's URL answers 200 with the status page, and every command of
# the tour file succeeds, in order, as a user would type them.
#
# Usage: demo-tour-check.sh URL TOUR_FILE [MIGRATE_STATUS_COMMAND] [BROKEN_UPGRADE_COMMAND]
# TOUR_FILE holds `# comment` lines and one command per step. A watch (`get ... -w`) never ends
# by itself: it runs for 5s and must have printed the app. The psql step reads its SQL from stdin.
# After the upgrade the check waits until the app is Ready on the new image again, and the
# migrate-status command (run first, and again then) must list kumiko-app:v2's migration as
# applied. The broken upgrade runs last: the app must report MigrationFailed while its pods keep
# running kumiko-app:v2, and patching the image back to kumiko-app:v2 must make it Ready again.
set -euo pipefail

url=$1
tour=$2
extra=${3:-}
broken=${4:-}

# Waits up to 90s until the app `$2` (kubectl prefix `$1`) has status.image `$3` and Ready `$4`
# with reason `$5` (any reason when empty).
wait_for_app() {
  local k=$1 app=$2 want_image=$3 want_ready=$4 want_reason=${5:-}
  for _ in $(seq 1 90); do
    image=$($k get kapp "$app" -o jsonpath='{.status.image}' 2>/dev/null || true)
    ready=$($k get kapp "$app" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    reason=$($k get kapp "$app" -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}' 2>/dev/null || true)
    if [ "$image" = "$want_image" ] && [ "$ready" = "$want_ready" ] \
      && { [ -z "$want_reason" ] || [ "$reason" = "$want_reason" ]; }; then
      return 0
    fi
    sleep 1
  done
  return 1
}

# The kubectl prefix and the app of a `... patch kapp APP ...` command.
kubectl_of() { printf '%s' "${1%% patch *}"; }
app_of() { awk '{for (i = 1; i <= NF; i++) if ($i == "kapp") {print $(i + 1); exit}}' <<<"$1"; }

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
      k=$(kubectl_of "$command")
      app=$(app_of "$command")
      wait_for_app "$k" "$app" kumiko-app:v2 True \
        || fail "the upgrade to kumiko-app:v2 did not converge within 90s (image ${image:-none}, Ready ${ready:-none})"
      say "ok: the app is Ready on kumiko-app:v2"
      if [ -n "$extra" ]; then
        # The new release's migration is in the database (a new pod: the new image's program).
        output=$(timeout 60 bash -c "$extra" 2>&1) || fail "$extra failed after the upgrade: $output"
        grep 'incidents by component' <<<"$output" | grep -q applied \
          || fail "after the upgrade, kumiko-app:v2's migration is not applied: $output"
        say "ok: the migrate Job of kumiko-app:v2 applied 'incidents by component'"
      fi
      ;;
  esac
done <"$tour"
[ "$step" = 5 ] || fail "the tour has $step commands, not 5"

if [ -n "$broken" ]; then
  k=$(kubectl_of "$broken")
  app=$(app_of "$broken")
  # The rotation of step 4 restarts the pods: the broken upgrade starts from a Ready app.
  wait_for_app "$k" "$app" kumiko-app:v2 True \
    || fail "the app was not Ready on kumiko-app:v2 before the broken upgrade (Ready ${ready:-none} ${reason:-})"
  output=$(timeout 60 bash -c "$broken" 2>&1) || fail "$broken failed: $output"
  wait_for_app "$k" "$app" kumiko-app:v2 False MigrationFailed \
    || fail "the broken upgrade did not report MigrationFailed on kumiko-app:v2 within 90s (image ${image:-none}, Ready ${ready:-none} ${reason:-})"
  template=$($k get deployment "$app-api" -o jsonpath='{.spec.template.spec.containers[0].image}')
  [ "$template" = kumiko-app:v2 ] || fail "the broken upgrade rolled the API to $template"
  code=$(curl -sS -o /dev/null -w '%{http_code}' "$url") || fail "$url does not answer during the failed migration"
  [ "$code" = 200 ] || fail "$url answered $code during the failed migration"
  say "ok: the broken upgrade reports MigrationFailed; the API keeps serving kumiko-app:v2"
  recover=${broken/kumiko-app:broken-migration/kumiko-app:v2}
  output=$(timeout 60 bash -c "$recover" 2>&1) || fail "$recover failed: $output"
  wait_for_app "$k" "$app" kumiko-app:v2 True \
    || fail "patching the image back to kumiko-app:v2 did not make the app Ready within 90s (Ready ${ready:-none} ${reason:-})"
  say "ok: back on kumiko-app:v2, Ready"
fi

say "every step works"
