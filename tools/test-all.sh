#!/usr/bin/env bash
# The whole test suite: a plain build, an ASan+UBSan build and a
# ThreadSanitizer build, each running every meson test (unit, stress,
# integration, examples), each with -Dwerror=true in its own build directory.
# The ASan+UBSan build also turns the park backstop off (-Dpark_backstop=false),
# so a lost wake-up hangs a test there instead of costing a second.
# Every build runs even when an earlier one failed; the failing tests' logs
# are printed, and the script exits non-zero. The last line is always
#   N passed, N failed
# summed over the builds (skipped tests are counted on the line before it).
#
#   tools/test-all.sh                 all three builds
#   tools/test-all.sh plain tsan      some of: plain asan tsan
# Environment: CC (gcc or clang; default cc), TEST_ALL_PREFIX (build
# directories are $TEST_ALL_PREFIX-<build>, default build-test).
set -euo pipefail
cd "$(dirname "$0")/.."

builds=("$@")
[ ${#builds[@]} -gt 0 ] || builds=(plain asan tsan)
prefix=${TEST_ALL_PREFIX:-build-test}
jobs=2
passed=0
failed=0
skipped=0
status=0

# clang's ASan/TSan runtimes are not linked into shared libraries, so meson
# must not pass -Wl,--no-undefined there; gcc needs no such option.
is_clang=false
if "${CC:-cc}" --version 2>/dev/null | grep -q clang; then
  is_clang=true
fi

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
    bad = 1  # the test run did not get that far
print(ok, bad, skip)
PY
}

# Prints the end of the text log and the names of the failed tests.
show_failures() {
  local dir=$1
  echo "=== failed tests in $dir ==="
  python3 - "$dir/meson-logs/testlog.json" <<'PY' || true
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["result"] not in ("OK", "EXPECTEDFAIL", "SKIP"):
        print("  %s: %s" % (r["name"], r["result"]))
PY
  echo "=== tail of $dir/meson-logs/testlog.txt ==="
  tail -n 150 "$dir/meson-logs/testlog.txt" 2>/dev/null || true
}

run_build() {
  local kind=$1 dir="$prefix-$1" mult=1
  local -a opts=(-Dwerror=true -Dbuildtype=debugoptimized)
  case $kind in
    plain) ;;
    asan)
      # Without the 1 s park backstop: no wake-up may depend on it.
      opts+=(-Db_sanitize=address,undefined -Dpark_backstop=false)
      mult=3
      ;;
    tsan)
      opts+=(-Db_sanitize=thread)
      mult=5
      ;;
    *)
      echo "test-all: unknown build '$kind' (plain, asan or tsan)" >&2
      return 2
      ;;
  esac
  if $is_clang && [ "$kind" != plain ]; then
    opts+=(-Db_lundef=false)
  fi
  echo "=== $kind build ($dir: ${opts[*]}) ==="
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "${opts[@]}" >/dev/null ||
      meson setup --wipe "$dir" "${opts[@]}" >/dev/null || {
      echo "=== $kind: meson setup failed ==="
      return 1
    }
  else
    rm -rf "$dir"
    meson setup "$dir" "${opts[@]}" >/dev/null || {
      echo "=== $kind: meson setup failed ==="
      return 1
    }
  fi
  if ! ninja -C "$dir" -j "$jobs" >"$dir/ninja.log" 2>&1; then
    tail -n 60 "$dir/ninja.log"
    echo "=== $kind: the build failed ==="
    return 1
  fi
  local rc=0
  tests_ran=true
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    meson test -C "$dir" --num-processes "$jobs" \
    --timeout-multiplier "$mult" || rc=$?
  local ok bad skip
  read -r ok bad skip < <(count_results "$dir/meson-logs/testlog.json")
  passed=$((passed + ok))
  failed=$((failed + bad))
  skipped=$((skipped + skip))
  echo "=== $kind: $ok passed, $bad failed, $skip skipped ==="
  if [ "$rc" -ne 0 ] || [ "$bad" -ne 0 ]; then
    show_failures "$dir"
    return 1
  fi
  return 0
}

t0=$(date +%s)
for b in "${builds[@]}"; do
  tests_ran=false
  if ! run_build "$b"; then
    status=1
    # A build or setup failure has no test results: count it as a failure.
    $tests_ran || failed=$((failed + 1))
  fi
done
echo "test-all: ${builds[*]} in $(($(date +%s) - t0)) s; $skipped skipped"
echo "$passed passed, $failed failed"
exit $status
