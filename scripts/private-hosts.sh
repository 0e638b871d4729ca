#!/bin/sh
# Runs a test binary (nextest's wrapper script for kumiko-e2e, see .config/nextest.toml) in a mount
# namespace of its own whose /etc/hosts is a private copy of the machine's, and tells the e2e
# harness so with KUMIKO_E2E_PRIVATE_ETC_HOSTS=1. The harness's in-process kube-sim then writes the
# Services' fully-qualified names (<svc>.<ns>.svc, ...) into that copy, so the test process and the
# in-process operator resolve them as a pod on a real cluster does; the machine's /etc/hosts is
# never touched. unshare(1) moves only the calling thread of a multi-threaded process, so this is
# done here, before the test binary starts any thread.
#
# Without the privilege to unshare (not root), the binary runs as it is: the harness then refuses
# to start a local kube-sim with a message saying why (tests against KUMIKO_E2E_KUBECONFIG need no
# private names).
set -eu

if [ "${KUMIKO_E2E_PRIVATE_ETC_HOSTS:-}" != "1" ] \
  && unshare --mount --propagation private true 2>/dev/null; then
  dir="${TMPDIR:-/tmp}/kumiko-e2e-hosts"
  mkdir -p "$dir"
  # The copy must stay linked while the test runs: the kubelet of the in-process kube-sim mounts
  # its pods' hosts files over this /etc/hosts, and Linux refuses to mount on an unlinked file.
  # Copies of tests long finished (a test is terminated after 6 minutes) are removed here.
  find "$dir" -type f -name 'hosts.*' -mmin +120 -delete 2>/dev/null || true
  copy=$(mktemp "$dir/hosts.XXXXXX")
  cat /etc/hosts >"$copy"
  KUMIKO_E2E_PRIVATE_ETC_HOSTS=1
  export KUMIKO_E2E_PRIVATE_ETC_HOSTS
  # shellcheck disable=SC2016 # $0 and $@ are the inner shell's.
  exec unshare --mount --propagation private -- \
    sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$copy" "$@"
fi
exec "$@"
