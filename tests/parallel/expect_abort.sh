#!/usr/bin/env bash
# expect_abort.sh MAX_SECONDS PATTERN COMMAND...: passes when COMMAND exits non-zero within
# MAX_SECONDS and its output (stdout and stderr) matches the extended regex PATTERN.
# Used by ctest for the jobs that must abort (tests/parallel/test_failure.cpp).
set -u
max=$1 pattern=$2
shift 2
start=$(date +%s%N)
out=$(timeout --kill-after=5 $((max + 30)) "$@" 2>&1)
rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf '%s\n' "$out" | tail -n 30
echo "expect_abort: exit code $rc after ${ms} ms (limit ${max} s)"
if [ "$rc" -eq 0 ]; then echo "FAIL: the job exited 0; expected an abort"; exit 1; fi
if [ "$ms" -gt $((max * 1000)) ]; then echo "FAIL: the job took longer than ${max} s"; exit 1; fi
if ! grep -Eq -- "$pattern" <<<"$out"; then echo "FAIL: no line matches: $pattern"; exit 1; fi
echo "PASS"
