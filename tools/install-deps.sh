#!/usr/bin/env bash
# Installs what cfutures needs to build and test, from Debian 12's packages.
# Run as root (or with sudo available). Idempotent: apt-get runs only when
# something is missing. Benchmarks install their own peers (bench/).
set -euo pipefail

packages=(
  # build (gcc is the default compiler; g++ builds the C++ consumer test;
  # clang and its sanitizer runtimes for CC=clang tools/test-all.sh)
  meson ninja-build pkg-config gcc g++ libc6-dev binutils
  clang libclang-rt-14-dev
  # the library's dependencies (Boost.Context: only its fcontext switch,
  # linked statically into libcfutures)
  libck-dev libjemalloc-dev libboost-context-dev libuv1-dev
  # tests
  libcmocka-dev python3 procps
  # examples
  libcurl4-openssl-dev libgumbo-dev
  # the MPI executor (libcfutures-mpi, -Dmpi=auto), its tests and examples
  # under mpiexec, and mpi4py for its benchmark peer
  libopenmpi-dev openmpi-bin python3-mpi4py
)

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null; then
  sudo=(sudo)
else
  echo "install-deps: run as root or install sudo" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: everything is installed"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
