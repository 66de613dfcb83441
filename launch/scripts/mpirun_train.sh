#!/usr/bin/env bash
# mpirun_train.sh NP CONFIG [loom train args...]: `loom train` on NP ranks of this machine under
# Open MPI, one OpenMP thread per rank unless OMP_NUM_THREADS says otherwise. The layout comes
# from the config's parallel: section (or --set parallel.tp=2 ...); dp takes the rest.
#   launch/scripts/mpirun_train.sh 4 configs/quickstart.yaml --set parallel.tp=2 --set parallel.zero_stage=1
set -euo pipefail
np=${1:?usage: mpirun_train.sh NP CONFIG [args...]}
shift
loom=${LOOM:-$(dirname "$0")/../../build/loom}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
extra=()
[ "$(id -u)" = 0 ] && extra+=(--allow-run-as-root)
# More ranks than cores is fine for testing layouts; each rank then shares a core.
[ "$np" -gt "$(nproc)" ] && extra+=(--oversubscribe)
exec mpirun "${extra[@]}" -np "$np" -x OMP_NUM_THREADS -x LOOM_COMM_TIMEOUT "$loom" train "$@"
