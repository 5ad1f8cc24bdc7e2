#!/usr/bin/env bash
# One short device call after a kernel refactor: correctness (selfcheck, occupancy model vs
# CUDA, sanitizers on the first cases), the fp8 grid timed with both grouped paths, and the
# harness's coverage and spec_decode runs of both kernels.
set -uo pipefail
export PYTHONUNBUFFERED=1 HARNESS_CUDA_ARCHS=${HARNESS_CUDA_ARCHS:-90a}
OUT=${OUT:-/tmp/out}
source bench/wheels.sh
log() { tee -a "$OUT/check.log"; }
python3 -m kernels.build 2>&1 | tail -1 | log
python3 -m kernels.selfcheck 2>&1 | tee "$OUT/selfcheck.log" | tail -8 | log
grep -q "CORRECTNESS: PASS" "$OUT/selfcheck.log" || { echo "selfcheck failed: stopping" | log; exit 1; }
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
$CS --tool memcheck --error-exitcode 9 python3 -m kernels.selfcheck --cases 14 2>&1 | grep "ERROR SUMMARY" | log
$CS --tool racecheck --error-exitcode 9 python3 -m kernels.selfcheck --cases 14 2>&1 | grep "RACECHECK SUMMARY" | log
PD_NO_WGMMA=1 python3 -m kernels.selfcheck --only-bench --kernels grouped --filter fp8 > "$OUT/bench_mma.log" 2>&1
python3 -m kernels.selfcheck --only-bench --kernels grouped --filter fp8 > "$OUT/bench_wg.log" 2>&1
python3 -m harness run --matrix matrices/coverage.toml --no-build --no-timing \
  --backends cuda_baseline,cuda_grouped --out reports/coverage \
  --results-dir reports/coverage/results 2>&1 | tail -2 | log
python3 -m harness run --matrix matrices/spec_decode.toml --no-build \
  --backends cuda_baseline,cuda_grouped --out reports/spec --results-dir reports/spec/results \
  2>&1 | tail -2 | log
cp reports/spec/summary.md "$OUT/summary_check.md"
