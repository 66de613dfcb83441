#!/usr/bin/env bash
# test.sh: installs what is missing, builds, and runs every test: the Release build (CUDA
# backend compiled where nvcc exists) under ctest, then the unit tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
bash tools/build.sh build
ctest --test-dir build --output-on-failure -j 1
echo "== sanitizer build (ASan + UBSan) =="
cmake -S . -B build-asan -G Ninja -DLOOM_SANITIZE=ON -DLOOM_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-asan -j "$(nproc)" --target loom_runtime_tests loom_data_tests loom_models_tests loom_launch_tests loom_parallel_tests
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j 1 -L unit
