#!/usr/bin/env bash
# gpu_check.sh [BUILD_DIR] [OUT_DIR]: the checks that need a GPU, run on a machine with one.
#  1. the CUDA tests: the backend's kernels (loom_runtime_tests --gtest_filter='Cuda*') and a
#     TransformerLM training step on the GPU against the CPU (loom_models_tests 'Cuda*');
#  2. the NCCL tests under mpirun, one rank per GPU (one rank on a one-GPU machine);
#  3. bench/compare_torch_cuda.py: each CUDA kernel against PyTorch's on the same GPU;
#  4. bench/compare_torch_gpu.py: training steps against PyTorch's (its options from
#     $GPU_CHECK_TRAIN_ARGS, default "--rounds 2"; GPU_CHECK_TRAIN_ARGS=skip leaves it out);
#  5. compute-sanitizer (last: the slowest): memcheck over the CUDA tests, racecheck over the
#     shared-memory kernels, each run limited to $GPU_CHECK_SANITIZER_TIMEOUT seconds (600).
# BUILD_DIR (default build) must hold tests/loom_{runtime,models,parallel}_tests and
# bench/{bench_cuda,bench_train}: a CUDA build, or the folder tools/gpu_bundle.sh packs for a GPU
# machine without the build's dependencies (its lib/ goes first on LD_LIBRARY_PATH). Logs and
# the benchmark JSON go to OUT_DIR (default gpu-check-out). Exits non-zero when any step fails;
# every step runs regardless.
set -uo pipefail
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-gpu-check-out}
mkdir -p "$out"
if [ -d "$build/lib" ]; then  # a gpu_bundle.sh folder: the libraries it carries
  export LD_LIBRARY_PATH="$(cd "$build/lib" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${gpus:-0}" -eq 0 ]; then
  echo "gpu_check: no GPU visible (nvidia-smi -L lists none)" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
failed=()
step() {  # step NAME COMMAND...: runs it, prints its status line, records a failure
  local name=$1
  shift
  "$@"
  local rc=$?
  echo "== $name: $([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)")"
  [ $rc -eq 0 ] || failed+=("$name")
}
tests=$build/tests/loom_runtime_tests
models=$build/tests/loom_models_tests
for suite in "$tests" "$models"; do
  log=$out/$(basename "$suite").cuda.log
  step "CUDA tests ($(basename "$suite"))" bash -c "timeout 300 $suite --gtest_filter='Cuda*' --gtest_color=no > $log 2>&1; \
    rc=\$?; grep -E '^\[  (PASSED|FAILED|SKIPPED) ' $log; grep -B3 -A8 'Failure' $log | head -60; exit \$rc"
done
step "NCCL tests ($gpus rank(s))" bash -c "OMPI_MCA_mca_base_component_show_load_errors=0 timeout 300 \
  mpirun --allow-run-as-root --oversubscribe -np $gpus -x LD_LIBRARY_PATH -x OMP_NUM_THREADS=1 \
  $build/tests/loom_parallel_tests --gtest_filter='Nccl*' --gtest_color=no > $out/nccl_tests.log 2>&1; \
  rc=\$?; grep -E '^\[  (PASSED|FAILED|SKIPPED) ' $out/nccl_tests.log; exit \$rc"
step "CUDA kernels vs PyTorch" env PYTHONUNBUFFERED=1 timeout 600 python3 bench/compare_torch_cuda.py \
  --bench "$build/bench/bench_cuda" --out "$out/cuda_bench.json"
train_args=${GPU_CHECK_TRAIN_ARGS:---rounds 2}
if [ "$train_args" != skip ]; then
  # shellcheck disable=SC2086 # the options are words
  step "training steps vs PyTorch" env PYTHONUNBUFFERED=1 timeout 900 python3 bench/compare_torch_gpu.py \
    --loom-bin "$build/bench/bench_train" --out "$out/train_bench.json" $train_args
fi
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
sanitizer_timeout=${GPU_CHECK_SANITIZER_TIMEOUT:-600}  # seconds per sanitizer run
step "memcheck" bash -c "timeout $sanitizer_timeout $sanitizer --tool memcheck --error-exitcode 9 $tests \
  --gtest_filter='Cuda*:-CudaBackend.*' --gtest_color=no > $out/memcheck.log 2>&1 && \
  timeout $sanitizer_timeout $sanitizer --tool memcheck --error-exitcode 9 $models --gtest_filter='Cuda*' --gtest_color=no \
  >> $out/memcheck.log 2>&1; rc=\$?; grep -E 'ERROR SUMMARY|^\[  (PASSED|FAILED) ' $out/memcheck.log; exit \$rc"
step "racecheck" bash -c "timeout $sanitizer_timeout $sanitizer --tool racecheck --error-exitcode 9 $tests \
  --gtest_filter='CudaNorm*:CudaReduce*:CudaSoftmax*:CudaCrossEntropy*:CudaAttention*' --gtest_color=no \
  > $out/racecheck.log 2>&1; rc=\$?; grep -E 'RACECHECK SUMMARY|^\[  (PASSED|FAILED) ' $out/racecheck.log; exit \$rc"
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu_check: failed: ${failed[*]}" >&2
  exit 1
fi
echo "gpu_check: all steps passed"
