#!/usr/bin/env bash
# `make demo` as a new user runs it (issue 17): from nothing to a Ready app on kube-sim, then the
# tour it prints is checked before the teardown: the app's URL answers 200 with the status page,
# and each printed command succeeds (scripts/demo-tour-check.sh).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
DEMO_EXIT_WHEN_READY=1 DEMO_CHECK_TOUR=1 bash scripts/demo.sh
