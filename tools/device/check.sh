#!/usr/bin/env bash
# The one GPU check of parasol, for a machine with an NVIDIA GPU, nvcc, cmake and ninja (no yaml-cpp, Boost, SimGrid or
# MPI needed). Run from the repository root:
#     tools/device/check.sh [--quick]
# It
#   1. builds tools/device standalone (kernels + exec/cuda + the cpu reference) for this card's architecture;
#   2. runs build-gpu-check/parasol_gpu_check: every op of the cuda backend against the cpu backend on fresh random
#      inputs, tensor-parallel layouts on one GPU (device-local communicator) against the unsharded run, the card's
#      copy bandwidth and bf16 GEMM peak, every op timed over a sweep of shapes (calibration CSV + one table), and
#      Llama-3.1-8B-shaped decode steps (batch 1/16/64/256, context 1k/8k) and a 4k prefill;
#   3. if yaml-cpp and Boost are installed (and FULL is not 0), configures the whole project without SimGrid/MPI and
#      runs the gpu-labelled gtests (tests/gpu) under a time limit.
# Everything goes to $OUT (default out/gpu-check): summary.txt (card, driver, date, commit, command), build.log,
# gpu_check.log, table.txt, calibration.csv, op_checks.csv, gtest_gpu.log. Exit status: that of parasol_gpu_check
# (0 all checks passed, 1 a check failed), or 4 when the build failed.
# Environment: OUT, JOBS (default nproc), ARCH (CUDA architecture, default from nvidia-smi), FULL (0 skips step 3),
# COMMIT (recorded when git is not available).
set -uo pipefail
cd "$(dirname "$0")/../.."

QUICK=""
[ "${1:-}" = "--quick" ] && QUICK="--quick"
OUT="${OUT:-$PWD/out/gpu-check}"
mkdir -p "$OUT"
JOBS="${JOBS:-$(nproc)}"
START=$(date +%s)

if [ -z "${ARCH:-}" ]; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  ARCH="${cap:-90}"
fi
COMMIT="${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
DIRTY=$(git status --porcelain 2>/dev/null | grep -qv '^??' && echo " (with uncommitted changes)" || true)
{
  echo "parasol GPU check"
  echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit:  ${COMMIT}${DIRTY}"
  echo "command: tools/device/check.sh ${QUICK}"
  echo "arch:    sm_${ARCH}"
  echo "nvcc:    $(nvcc --version 2>/dev/null | tail -1)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv 2>&1
} > "$OUT/summary.txt"
cat "$OUT/summary.txt"

echo "== build (standalone tools/device, sm_${ARCH}, ${JOBS} jobs)"
if ! { cmake -S tools/device -B build-gpu-check -G Ninja -DCMAKE_BUILD_TYPE=Release \
         -DCMAKE_CUDA_ARCHITECTURES="$ARCH" &&
       cmake --build build-gpu-check -j "$JOBS"; } > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  echo "build failed (see build.log)" | tee -a "$OUT/summary.txt"
  exit 4
fi
echo "built in $(( $(date +%s) - START )) s"

echo "== parasol_gpu_check ${QUICK}"
./build-gpu-check/parasol_gpu_check --out "$OUT" $QUICK 2>&1 | tee "$OUT/gpu_check.log"
RC=${PIPESTATUS[0]}
echo "parasol_gpu_check exit ${RC} after $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"

if [ "${FULL:-1}" != "0" ] && [ -f /usr/include/yaml-cpp/yaml.h ] && [ -d /usr/include/boost/graph ] &&
   [ -f /usr/include/gtest/gtest.h ] && [ -f /usr/include/CLI/CLI.hpp ] && [ -f /usr/include/nlohmann/json.hpp ]; then
  echo "== gpu gtests (whole project without SimGrid/MPI)"
  if timeout 240 bash -c "cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DPARASOL_WITH_SIM=OFF \
        -DPARASOL_WITH_MPI=OFF -DPARASOL_BUILD_BENCH=OFF -DCMAKE_CUDA_ARCHITECTURES=$ARCH &&
        cmake --build build-gpu -j $JOBS --target parasol_test_gpu &&
        ./build-gpu/tests/parasol_test_gpu" > "$OUT/gtest_gpu.log" 2>&1; then
    echo "gpu gtests: passed" | tee -a "$OUT/summary.txt"
  else
    tail -30 "$OUT/gtest_gpu.log"
    echo "gpu gtests: FAILED or timed out (see gtest_gpu.log)" | tee -a "$OUT/summary.txt"
    [ "$RC" = 0 ] && RC=1
  fi
else
  echo "gpu gtests: skipped (FULL=0, or yaml-cpp/Boost/GoogleTest headers missing)" | tee -a "$OUT/summary.txt"
fi
echo "total $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
exit "$RC"
