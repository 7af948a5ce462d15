#!/usr/bin/env bash
# One-command set-up for a fresh Debian bookworm machine: installs the Debian packages parasol needs (idempotent;
# sudo when not root; apt-get update once), configures and builds. Then, depending on the argument:
#   scripts/setup.sh run    build the CLI alone, then run the main job (`parasol sim` on the embedded default scenario)
#   scripts/setup.sh test   build, then run the whole test suite (ctest -LE gpu)
#   scripts/setup.sh        build only
# Environment: BUILD_DIR (default build), JOBS (default 2), PARASOL_WERROR (default ON under CI).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-build}"
BUILD_DIR="${BUILD_DIR:-build}"
JOBS="${JOBS:-2}"
WERROR="${PARASOL_WERROR:-$([ -n "${CI:-}" ] && echo ON || echo OFF)}"

PACKAGES=(build-essential cmake ninja-build pkg-config libsimgrid-dev libyaml-cpp-dev libboost-graph-dev
          nlohmann-json3-dev libcli11-dev libopenmpi-dev openmpi-bin libgtest-dev libgmock-dev libbenchmark-dev
          libopenblas-dev libnlopt-cxx-dev)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPARASOL_WERROR="$WERROR" >/dev/null
else
  cmake -S . -B "$BUILD_DIR" -DPARASOL_WERROR="$WERROR" >/dev/null
fi
# The main job needs only the CLI (not the tests, benchmarks or CUDA kernels): `run` builds that target alone.
if [ "$mode" = run ]; then
  cmake --build "$BUILD_DIR" -j "$JOBS" --target parasol
else
  cmake --build "$BUILD_DIR" -j "$JOBS"
fi

case "$mode" in
  run)
    shift || true
    # Capture the help first: `grep -q` closing the pipe early would make pipefail see SIGPIPE.
    commands="$("$BUILD_DIR/parasol" --help)"
    if grep -qE '^  sim( |$)' <<<"$commands"; then
      exec "$BUILD_DIR/parasol" sim "$@"
    else
      exec "$BUILD_DIR/parasol" describe scenarios/default.yaml "$@"
    fi
    ;;
  test)
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    ctest --test-dir "$BUILD_DIR" -LE gpu -j "$JOBS" --output-on-failure --timeout 600
    ;;
  build) ;;
  *)
    echo "usage: scripts/setup.sh [run|test|build]" >&2
    exit 2
    ;;
esac
