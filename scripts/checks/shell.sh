#!/usr/bin/env bash
# Runs shellcheck on every shell script in the repository: each *.sh outside build output and local
# tools, plus .ci/run and any other file whose first line is a bash or sh shebang.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH="$root/.tools/bin:$PATH"

scripts=()
while IFS= read -r -d '' file; do
  case "$file" in
    *.sh) scripts+=("$file") ;;
    *)
      first=$(head -c 64 "$file" 2>/dev/null | head -n 1 || true)
      case "$first" in
        '#!/usr/bin/env bash'* | '#!/bin/bash'* | '#!/bin/sh'* | '#!/usr/bin/env sh'*) scripts+=("$file") ;;
      esac
      ;;
  esac
done < <(find . \( -path ./target -o -path ./.tools -o -path ./.git -o -name node_modules \) -prune \
  -o -type f \( -name '*.sh' -o -perm -u+x -o -path ./.ci/run \) -print0)

if [ "${#scripts[@]}" -eq 0 ]; then
  echo "shell: FAIL: found no shell scripts" >&2
  exit 1
fi
# -x follows `source` of other files; --severity=style reports everything shellcheck knows.
shellcheck --external-sources --severity=style "${scripts[@]}"
echo "shell: shellcheck clean on ${#scripts[@]} scripts"
