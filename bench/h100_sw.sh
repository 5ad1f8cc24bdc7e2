#!/usr/bin/env bash
# One device call for the swapped-operand fp8 kernel (grouped_sw.cuh: Qwen3 q_len 8 and 4 at
# head_dim 128): build + full self-check; memcheck and racecheck on the self-check's first
# SAN_CASES cases (default 5; case 3 runs it, 10-12 too); the AB_FILTER seed rows (default
# fp8) with and without it (PD_NO_SW=1: grouped_ws / grouped_wg / mma.sync), twice each,
# alternating; then the harness's timed spec_decode run (SKIP_HARNESS=1 skips it). Carry
# .whl-min.
LOG=sw
source bench/prelude.sh
kernels_ok
sanitize_selfcheck "${SAN_CASES:-5}" 300
F=${AB_FILTER:-fp8}
for r in 1 2; do
  PD_NO_SW=1 python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "$F" > "/tmp/ab_old_$r.log" 2>&1
  python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "$F" > "/tmp/ab_sw_$r.log" 2>&1
done
cp /tmp/ab_sw_1.log "$OUT/bench_sw.log"
paste <(grep -E "^(Qwen|GPT)" /tmp/ab_old_1.log | awk '{print $1, $3}') \
  <(grep -E "^(Qwen|GPT)" /tmp/ab_sw_1.log | awk '{print $3}') \
  <(grep -E "^(Qwen|GPT)" /tmp/ab_old_2.log | awk '{print $3}') \
  <(grep -E "^(Qwen|GPT)" /tmp/ab_sw_2.log | awk '{print $3}') |
  awk '{printf "%-42s old %8s %8s sw %8s %8s  sw/old %.3f\n", $1, $2, $4, $3, $5, ($3+$5)/($2+$4)}' | log
[ -n "${SKIP_HARNESS:-}" ] || harness_matrix spec_decode
