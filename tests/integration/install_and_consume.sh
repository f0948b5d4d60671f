#!/usr/bin/env bash
# Installs cfutures into a temporary prefix, then builds and runs programs
# that use it the two ways others will: through pkg-config (C and C++), and
# as a meson subproject.
#   install_and_consume.sh SOURCE_ROOT
set -euo pipefail
src=$(cd "$1" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. Install a fresh build into a prefix.
meson setup "$tmp/build" "$src" --prefix="$tmp/prefix" --libdir=lib \
  -Dtests=false -Dexamples=false >/dev/null
ninja -C "$tmp/build" >/dev/null
meson install -C "$tmp/build" >/dev/null
test -f "$tmp/prefix/include/cfutures.h"
test -f "$tmp/prefix/include/cfutures/future.h"
test -f "$tmp/prefix/lib/pkgconfig/cfutures.pc"

# Only cf_ symbols are exported.
bad=$(nm -D --defined-only "$tmp/prefix/lib/libcfutures.so" | awk '$2 ~ /[TDBR]/ {print $3}' | grep -v '^cf_' || true)
if [ -n "$bad" ]; then
  echo "symbols exported without the cf_ prefix:"; echo "$bad"; exit 1
fi
# The soname carries the ABI version.
readelf -d "$tmp/prefix/lib/libcfutures.so" | grep -q 'SONAME.*libcfutures.so.0'

# 2. pkg-config consumers, in C and C++.
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
# Users get our include directory and nothing else: no public header uses
# Concurrency Kit or jemalloc, so their flags (ck's -D__x86_64__, an
# -I/usr/include) must not leak into the user's build.
cflags=$(pkg-config --cflags cfutures)
[ "$(echo $cflags)" = "-I$tmp/prefix/include" ] ||
  { echo "pkg-config --cflags cfutures gives: $cflags"; exit 1; }
cc -std=c11 -Wall -Werror "$src/tests/integration/consumer.c" -o "$tmp/consumer" \
  $(pkg-config --cflags --libs cfutures)
out=$(LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/consumer")
[ "$out" = "consumer: 20 42" ] || { echo "unexpected: $out"; exit 1; }
c++ -std=c++11 -Wall -Werror "$src/tests/integration/consumer.cpp" -o "$tmp/consumer++" \
  $(pkg-config --cflags --libs cfutures)
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/consumer++" | grep -q "consumer++: CF_OK 1"
# Static linking works too.
cc -std=c11 "$src/tests/integration/consumer.c" -o "$tmp/consumer-static" \
  $(pkg-config --cflags cfutures) "$tmp/prefix/lib/libcfutures.a" \
  $(pkg-config --libs --static cfutures | sed 's/-lcfutures//')
[ "$("$tmp/consumer-static")" = "consumer: 20 42" ]

# 3. A meson project that uses cfutures as a subproject.
mkdir -p "$tmp/sub/subprojects"
ln -s "$src" "$tmp/sub/subprojects/cfutures"
cp "$src/tests/integration/consumer.c" "$tmp/sub/"
cat > "$tmp/sub/meson.build" <<'MESON'
project('consumer', 'c', default_options: ['c_std=c11'])
cfutures = dependency('cfutures', fallback: ['cfutures', 'cfutures_dep'],
  default_options: ['tests=false', 'examples=false', 'default_library=static'])
executable('consumer', 'consumer.c', dependencies: cfutures)
MESON
meson setup "$tmp/sub/build" "$tmp/sub" >/dev/null
ninja -C "$tmp/sub/build" >/dev/null
[ "$("$tmp/sub/build/consumer")" = "consumer: 20 42" ]
echo "integration: install, pkg-config (C, C++, static) and subproject consumers OK"
