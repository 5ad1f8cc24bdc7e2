#!/usr/bin/env bash
# One device call: the kernels as committed (wgmma path included) checked under the
# sanitizers and against the reference, then the README's side-by-side spec_decode table
# with the peers, and a quick A/A + planted check of the verdicts on the new kernel.
# Carry .whl-min and .whl-peers.
set -uo pipefail
export PYTHONUNBUFFERED=1 HARNESS_CUDA_ARCHS=${HARNESS_CUDA_ARCHS:-90a}
OUT=${OUT:-/tmp/out}
source bench/wheels.sh
log() { tee -a "$OUT/final.log"; }
python3 -m kernels.build 2>&1 | tail -1 | log
python3 -m kernels.selfcheck 2>&1 | tee "$OUT/selfcheck.log" | tail -3 | log
grep -q "CORRECTNESS: PASS" "$OUT/selfcheck.log" || { echo "selfcheck failed: stopping" | log; exit 1; }
PD_NO_WGMMA=1 python3 -m kernels.selfcheck --only-bench --kernels grouped --filter fp8 > "$OUT/bench_mma.log" 2>&1
python3 -m kernels.selfcheck --only-bench --kernels grouped --filter fp8 > "$OUT/bench_wg.log" 2>&1
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
$CS --tool memcheck --error-exitcode 9 python3 -m kernels.selfcheck --cases 14 > "$OUT/memcheck.log" 2>&1
echo "memcheck rc=$? $(grep -c '^ok' "$OUT/memcheck.log") cases ok; $(grep 'ERROR SUMMARY' "$OUT/memcheck.log")" | log
$CS --tool racecheck --error-exitcode 9 python3 -m kernels.selfcheck --cases 14 > "$OUT/racecheck.log" 2>&1
echo "racecheck rc=$? $(grep -c '^ok' "$OUT/racecheck.log") cases ok; $(grep 'RACECHECK SUMMARY' "$OUT/racecheck.log")" | log
python3 -m harness run --matrix matrices/coverage.toml --no-build --no-timing \
  --backends cuda_baseline,cuda_grouped --out reports/coverage \
  --results-dir reports/coverage/results 2>&1 | tail -2 | log
python3 -m harness run --matrix matrices/spec_decode.toml --no-build --peers \
  --backends cuda_baseline,cuda_grouped --out reports/peers --results-dir reports/peers/results \
  2>&1 | tail -3 | log
cp reports/peers/summary.md "$OUT/summary_final.md"
python3 -m harness calibrate --matrix matrices/spec_decode.toml --backend cuda_grouped \
  --runs 1 --threshold 0.01 --out reports/calibration 2>&1 | tail -2 | log
python3 -m harness run --matrix matrices/spec_decode.toml --no-build --planted-slowdown 20 \
  --backends cuda_grouped --threshold 0.01 -k planted \
  --out reports/planted --results-dir reports/planted/results 2>&1 | tail -2 | log
grep "planted vs" reports/planted/summary.md | awk -F'|' '{print $3, $5, $6}' > "$OUT/planted.txt"
