#!/usr/bin/env bash
# gpu_bundle.sh [BUILD_DIR] [OUT_FILE]: packs what tools/gpu_check.sh runs, for a GPU machine that
# has the CUDA runtime, cuBLAS, NCCL and Open MPI but not this machine's build dependencies.
#  - BUILD_DIR (default build-cuda, a CUDA build: tools/build.sh build-cuda -DLOOM_CUDA=ON):
#    its tests/loom_{runtime,models,parallel}_tests and bench/{bench_cuda,bench_train}, stripped,
#    keep their tests/ and bench/ places, so the unpacked folder is a BUILD_DIR for gpu_check.sh;
#  - lib/: the shared libraries those programs load from outside the CUDA toolkit, glibc, the
#    compiler's runtime and Open MPI (OpenBLAS and its Fortran runtime on Debian), which
#    gpu_check.sh puts first on LD_LIBRARY_PATH.
# OUT_FILE (default gpu-bundle.tar.xz) unpacks to a folder gpu-bundle/. On the GPU machine:
#   tar xJf gpu-bundle.tar.xz && tools/gpu_check.sh gpu-bundle
set -euo pipefail
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
build=${1:-build-cuda}
out=${2:-gpu-bundle.tar.xz}
programs=(tests/loom_runtime_tests tests/loom_models_tests tests/loom_parallel_tests bench/bench_cuda bench/bench_train)
for p in "${programs[@]}"; do
  [ -x "$build/$p" ] || { echo "gpu_bundle: $build/$p is missing (a CUDA build: tools/build.sh $build -DLOOM_CUDA=ON)" >&2; exit 1; }
done
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/gpu-bundle/tests" "$stage/gpu-bundle/bench" "$stage/gpu-bundle/lib"
for p in "${programs[@]}"; do
  strip -o "$stage/gpu-bundle/$p" "$build/$p"
done
# Libraries a GPU image is not expected to have: everything ldd resolves except glibc, the
# compiler's runtime, the CUDA toolkit's (cudart, cuBLAS, NCCL) and Open MPI's with its helpers.
skip='^(libc|libm|libdl|libpthread|librt|ld-linux|linux-vdso|libstdc\+\+|libgcc_s|libgomp|libcudart|libcublas|libcublasLt|libnccl|libmpi|libmpi_cxx|libopen-pal|libopen-rte|libhwloc|libevent|libevent_core|libevent_pthreads|libudev|libz)[-.]'
for p in "${programs[@]}"; do ldd "$build/$p"; done | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
  while read -r name path; do
    [[ $name =~ $skip ]] || cp -L "$path" "$stage/gpu-bundle/lib/$name"
  done
tar cf - -C "$stage" gpu-bundle | xz -T0 -6 >"$out"
echo "gpu_bundle: $out ($(du -h "$out" | cut -f1)): ${programs[*]}; lib: $(ls "$stage/gpu-bundle/lib" | tr '\n' ' ')"
