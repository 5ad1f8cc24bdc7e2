#!/usr/bin/env bash
# One device call: the wgmma grouped kernel (sm_90a, fp8 KV, 64/128-row tiles) checked and
# timed against the mma.sync kernel (PD_NO_WGMMA=1) on the same GPU in the same call.
set -uo pipefail
export PYTHONUNBUFFERED=1 HARNESS_CUDA_ARCHS=${HARNESS_CUDA_ARCHS:-90a}
OUT=${OUT:-/tmp/out}
source bench/wheels.sh
python3 -m kernels.build 2>&1 | tail -1 | tee "$OUT/wg.log"
t0=$(date +%s)
python3 -m kernels.selfcheck 2>&1 | tee "$OUT/wg_selfcheck.log" | tail -15
t1=$(date +%s)
echo "selfcheck wall $((t1-t0)) s" | tee -a "$OUT/wg.log"
PD_NO_WGMMA=1 python3 -m kernels.selfcheck --only-bench --kernels grouped --filter fp8 2>&1 \
  | tee "$OUT/bench_mma.log" | tail -3
python3 -m kernels.selfcheck --only-bench --kernels grouped --filter fp8 2>&1 \
  | tee "$OUT/bench_wg.log" | tail -3
if grep -q "FAIL" "$OUT/wg_selfcheck.log"; then echo "selfcheck FAILED: no harness runs"; exit 1; fi
python3 -m harness run --matrix matrices/coverage.toml --no-build --no-timing \
  --backends cuda_baseline,cuda_grouped --out reports/coverage \
  --results-dir reports/coverage/results 2>&1 | tee "$OUT/coverage.log" | tail -3
python3 -m harness run --matrix matrices/spec_decode.toml --no-build --peers \
  --backends cuda_baseline,cuda_grouped --out reports/peers --results-dir reports/peers/results \
  2>&1 | tee "$OUT/spec_peers.log" | tail -4
cp reports/peers/summary.md "$OUT/summary_wg.md" 2>/dev/null
echo "total wall $(( $(date +%s) - t0 )) s" | tee -a "$OUT/wg.log"
