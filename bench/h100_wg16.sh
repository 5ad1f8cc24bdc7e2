#!/usr/bin/env bash
# One device call for the 16-bit-KV wgmma kernel (grouped_wg16_kernel): build + full
# self-check, the bf16 seed grid with and without it (PD_NO_WGMMA=1: mma.sync), the
# sanitizers on the self-check's first 17 cases (every wgmma variant), then memcheck and
# racecheck through the harness itself on matrices/smoke.toml (both CUDA backends).
LOG=wg16
source bench/prelude.sh
kernels_ok
PD_NO_WGMMA=1 python3 -m kernels.selfcheck --only-bench --kernels grouped --filter bf16 > "$OUT/bench_mma.log" 2>&1
python3 -m kernels.selfcheck --only-bench --kernels grouped --filter bf16 > "$OUT/bench_wg.log" 2>&1
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for tool in memcheck racecheck; do
  $CS --tool $tool --error-exitcode 9 python3 -m kernels.selfcheck --cases 17 > /tmp/sc_$tool.log 2>&1
  echo "selfcheck $tool rc=$? $(grep -c '^ok' /tmp/sc_$tool.log) cases ok; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' /tmp/sc_$tool.log)" | log
done
for tool in memcheck racecheck; do
  timeout 280 $CS --tool $tool --target-processes all --error-exitcode 9 \
    python3 -m harness run --matrix matrices/smoke.toml --no-build --no-timing --case-timeout 0 \
    --backends cuda_baseline,cuda_grouped --out /tmp/san_$tool --results-dir /tmp/san_$tool/results \
    > "$OUT/smoke_$tool.log" 2>&1
  echo "smoke $tool rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/smoke_$tool.log" | sort | uniq -c | tr '\n' ';') $(grep -E '[0-9]+ passed' "$OUT/smoke_$tool.log" | tail -1)" | log
done
