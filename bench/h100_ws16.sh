#!/usr/bin/env bash
# One device call for the warp-specialized 16-bit-KV kernel (grouped_ws.cuh): build + full
# self-check, memcheck and racecheck on the self-check's first 17 cases (two of them run
# it), the bf16 q_len 8 seed rows with and without it (PD_NO_WS=1: grouped_wg16_kernel),
# twice each, alternating, then the harness's coverage run and timed spec_decode_bf16.
LOG=ws16
source bench/prelude.sh
kernels_ok
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for tool in memcheck racecheck; do
  timeout 150 $CS --tool $tool --error-exitcode 9 python3 -m kernels.selfcheck --cases 17 > /tmp/sc_$tool.log 2>&1
  echo "selfcheck $tool rc=$? $(grep -c '^ok' /tmp/sc_$tool.log) cases ok; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' /tmp/sc_$tool.log)" | log
  grep -E "^FAIL|Error|hazard" /tmp/sc_$tool.log | head -5 | log
done
for r in 1 2; do
  PD_NO_WS=1 python3 -m kernels.selfcheck --only-bench --kernels grouped --filter bf16-batchSize > "/tmp/ab_wg16_$r.log" 2>&1
  python3 -m kernels.selfcheck --only-bench --kernels grouped --filter bf16-batchSize > "/tmp/ab_ws16_$r.log" 2>&1
done
paste <(grep -E "^(Qwen|GPT)" /tmp/ab_wg16_1.log | awk '{print $1, $3}') \
  <(grep -E "^(Qwen|GPT)" /tmp/ab_ws16_1.log | awk '{print $3}') \
  <(grep -E "^(Qwen|GPT)" /tmp/ab_wg16_2.log | awk '{print $3}') \
  <(grep -E "^(Qwen|GPT)" /tmp/ab_ws16_2.log | awk '{print $3}') |
  awk '{printf "%-42s wg16 %8s %8s ws16 %8s %8s  ws/wg %.3f\n", $1, $2, $4, $3, $5, ($3+$5)/($2+$4)}' | log
python3 -m harness run --matrix matrices/coverage.toml --no-build --no-timing \
  --backends cuda_baseline,cuda_grouped --out /tmp/coverage --results-dir /tmp/coverage/results \
  2>&1 | grep -E "report:|done in" | log
python3 -m harness run --matrix matrices/spec_decode_bf16.toml --no-build \
  --backends cuda_baseline,cuda_grouped --out /tmp/bf16 --results-dir /tmp/bf16/results 2>&1 |
  grep -E "report:|done in" | log
cp /tmp/bf16/summary.md "$OUT/summary_spec_decode_bf16.md"
