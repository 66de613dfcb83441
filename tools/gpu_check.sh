#!/usr/bin/env bash
# gpu_check.sh [BUILD_DIR] [OUT_DIR]: the checks that need a GPU, run on a machine with one.
#  1. the CUDA backend's tests (loom_runtime_tests --gtest_filter='Cuda*');
#  2. the NCCL tests under mpirun, one rank per GPU (one rank on a one-GPU machine);
#  3. compute-sanitizer: memcheck over the CUDA tests, racecheck over the block-reduction kernels;
#  4. bench/compare_torch_cuda.py: each CUDA kernel against PyTorch's on the same GPU.
# BUILD_DIR (default build) must hold tests/loom_runtime_tests, tests/loom_parallel_tests and
# bench/bench_cuda. Logs and the benchmark JSON go to OUT_DIR (default gpu-check-out). Exits
# non-zero when any step fails; every step runs regardless.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-gpu-check-out}
mkdir -p "$out"
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
step "CUDA tests" bash -c "timeout 300 $tests --gtest_filter='Cuda*' --gtest_color=no > $out/cuda_tests.log 2>&1; \
  rc=\$?; grep -E '^\[  (PASSED|FAILED|SKIPPED) ' $out/cuda_tests.log; grep -B3 -A8 'Failure' $out/cuda_tests.log | head -60; exit \$rc"
step "NCCL tests ($gpus rank(s))" bash -c "OMPI_MCA_mca_base_component_show_load_errors=0 timeout 300 \
  mpirun --allow-run-as-root --oversubscribe -np $gpus -x LD_LIBRARY_PATH -x OMP_NUM_THREADS=1 \
  $build/tests/loom_parallel_tests --gtest_filter='Nccl*' --gtest_color=no > $out/nccl_tests.log 2>&1; \
  rc=\$?; grep -E '^\[  (PASSED|FAILED|SKIPPED) ' $out/nccl_tests.log; exit \$rc"
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
step "memcheck" bash -c "timeout 600 $sanitizer --tool memcheck --error-exitcode 9 $tests \
  --gtest_filter='Cuda*:-CudaBackend.*' --gtest_color=no > $out/memcheck.log 2>&1; \
  rc=\$?; grep -E 'ERROR SUMMARY|^\[  (PASSED|FAILED) ' $out/memcheck.log; exit \$rc"
step "racecheck" bash -c "timeout 600 $sanitizer --tool racecheck --error-exitcode 9 $tests \
  --gtest_filter='CudaNorm*:CudaReduce*:CudaSoftmax*:CudaCrossEntropy*' --gtest_color=no > $out/racecheck.log 2>&1; \
  rc=\$?; grep -E 'RACECHECK SUMMARY|^\[  (PASSED|FAILED) ' $out/racecheck.log; exit \$rc"
step "CUDA kernels vs PyTorch" env PYTHONUNBUFFERED=1 timeout 600 python3 bench/compare_torch_cuda.py \
  --bench "$build/bench/bench_cuda" --out "$out/cuda_bench.json"
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu_check: failed: ${failed[*]}" >&2
  exit 1
fi
echo "gpu_check: all steps passed"
