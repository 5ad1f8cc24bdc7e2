#!/usr/bin/env bash
# One device call for the kernels with both wgmma kernels (fp8 and 16-bit KV): build + full
# self-check, sanitizers on the self-check's first 17 cases and through the harness on
# matrices/smoke.toml, the q_len 8 rows (the wgmma kernels' rows) with and without the
# wgmma kernels, then the harness's coverage run and timed spec_decode (fp8) and
# spec_decode_bf16 runs of both kernels, the bf16 one beside the FlashInfer peers.
# Carry .whl-min and .whl-peers. QUICK=1 skips the sanitizers and the q_len 8 A/B.
LOG=wg16
source bench/prelude.sh
kernels_ok
if [ "${QUICK:-0}" != 1 ]; then
  CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for tool in memcheck racecheck; do
    $CS --tool $tool --error-exitcode 9 python3 -m kernels.selfcheck --cases 17 > /tmp/sc_$tool.log 2>&1
    echo "selfcheck $tool rc=$? $(grep -c '^ok' /tmp/sc_$tool.log) cases ok; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' /tmp/sc_$tool.log)" | log
    timeout 280 $CS --tool $tool --target-processes all --error-exitcode 9 \
      python3 -m harness run --matrix matrices/smoke.toml --no-build --no-timing --case-timeout 0 \
      --backends cuda_baseline,cuda_grouped --out /tmp/san_$tool --results-dir /tmp/san_$tool/results \
      > /tmp/smoke_$tool.log 2>&1
    echo "smoke $tool rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' /tmp/smoke_$tool.log | sort | uniq -c | tr '\n' ';') $(grep -E '[0-9]+ passed' /tmp/smoke_$tool.log | tail -1)" | log
  done
  PD_NO_WGMMA=1 python3 -m kernels.selfcheck --only-bench --kernels grouped --filter seqLenQ8 > "$OUT/q8_mma.log" 2>&1
  python3 -m kernels.selfcheck --only-bench --kernels grouped --filter seqLenQ8 > "$OUT/q8_wg.log" 2>&1
fi
harness_matrix coverage --no-timing
harness_matrix spec_decode
harness_matrix spec_decode_bf16 --peers
