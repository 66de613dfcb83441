#!/usr/bin/env bash
# build.sh [BUILD_DIR] [extra cmake args...]: configures and builds Loom (Release, Ninja).
# The CUDA backend is compiled when nvcc is found (LOOM_CUDA=auto), even without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$dir" -j "$(nproc)"
