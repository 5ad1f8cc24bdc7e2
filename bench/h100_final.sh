#!/usr/bin/env bash
# One device call: the kernels as committed (wgmma path included) checked under the
# sanitizers and against the reference, then the README's side-by-side spec_decode table
# with the peers, and a quick A/A + planted check of the verdicts on the new kernel.
# Carry .whl-min and .whl-peers. QUICK=1: only the kernel checks, the A/B and the harness's
# coverage and spec_decode runs of both kernels (no peers, no verdict runs).
LOG=final
source bench/prelude.sh
kernels_ok
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
if [ "${QUICK:-0}" = 1 ]; then
  python3 -m harness run --matrix matrices/spec_decode.toml --no-build \
    --backends cuda_baseline,cuda_grouped --out reports/spec --results-dir reports/spec/results \
    2>&1 | tail -2 | log
  exit 0
fi
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
