#!/usr/bin/env bash
# The whole test suite: a release-like build, an ASan+UBSan build and a
# ThreadSanitizer build, each running every meson test (unit, stress,
# integration, examples). Fails on the first failing build; prints
# "N passed, N failed" at the end.
#   tools/test-all.sh            all three builds
#   tools/test-all.sh plain      one of: plain asan tsan
set -euo pipefail
cd "$(dirname "$0")/.."

builds=("$@")
[ ${#builds[@]} -gt 0 ] || builds=(plain asan tsan)
passed=0
failed=0
skipped=0

# Prints "passed failed skipped" from a meson testlog.json.
count_results() {
  python3 - "$1" <<'PY'
import json, sys
ok = bad = skip = 0
try:
    for line in open(sys.argv[1]):
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"):
            ok += 1
        elif r == "SKIP":
            skip += 1
        else:
            bad += 1
except FileNotFoundError:
    bad = 1  # the build or the test run did not get that far
print(ok, bad, skip)
PY
}

run_build() {
  local kind=$1 dir="build-test-$1" mult=1
  local -a opts=(-Dwerror=true -Dbuildtype=debugoptimized)
  case $kind in
    plain) ;;
    asan) opts+=(-Db_sanitize=address,undefined -Db_lundef=false); mult=3 ;;
    tsan) opts+=(-Db_sanitize=thread -Db_lundef=false); mult=5 ;;
    *) echo "unknown build $kind" >&2; return 2 ;;
  esac
  echo "=== $kind build ($dir) ==="
  if [ -d "$dir" ]; then
    meson setup --reconfigure "$dir" "${opts[@]}" >/dev/null
  else
    meson setup "$dir" "${opts[@]}" >/dev/null
  fi
  if ! ninja -C "$dir"; then
    failed=$((failed + 1))
    echo "=== $kind: the build failed ==="
    return 1
  fi
  local rc=0
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    meson test -C "$dir" --num-processes 2 --timeout-multiplier "$mult" \
      --print-errorlogs || rc=$?
  local ok bad skip
  read -r ok bad skip < <(count_results "$dir/meson-logs/testlog.json")
  passed=$((passed + ok))
  failed=$((failed + bad))
  skipped=$((skipped + skip))
  echo "=== $kind: $ok passed, $bad failed, $skip skipped ==="
  return $rc
}

status=0
for b in "${builds[@]}"; do
  run_build "$b" || { status=1; break; }
done
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
