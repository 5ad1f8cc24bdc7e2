#!/usr/bin/env bash
# One device call for the warp-specialized kernel (grouped_ws.cuh, 128-row head_dim-128
# tiles, 16-bit and fp8 KV): build + full self-check; memcheck and racecheck on the
# self-check's first 5 cases (cases 3 and 4 run it: bf16 and fp8); the Qwen3 seed rows with
# and without it (PD_NO_WS=1: the lockstep wgmma kernels), twice each, alternating; then the
# harness's coverage run, timed spec_decode (fp8) and spec_decode_bf16 (with --peers when
# .whl-peers was carried). Carry .whl-min (+ .whl-peers).
LOG=ws
source bench/prelude.sh
kernels_ok
sanitize_selfcheck 5 200
for r in 1 2; do
  PD_NO_WS=1 python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "${AB_FILTER:-Qwen3}" > "/tmp/ab_wg_$r.log" 2>&1
  python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "${AB_FILTER:-Qwen3}" > "/tmp/ab_ws_$r.log" 2>&1
done
paste <(grep -E "^Qwen" /tmp/ab_wg_1.log | awk '{print $1, $3}') \
  <(grep -E "^Qwen" /tmp/ab_ws_1.log | awk '{print $3}') \
  <(grep -E "^Qwen" /tmp/ab_wg_2.log | awk '{print $3}') \
  <(grep -E "^Qwen" /tmp/ab_ws_2.log | awk '{print $3}') |
  awk '{printf "%-42s lockstep %8s %8s ws %8s %8s  ws/lockstep %.3f\n", $1, $2, $4, $3, $5, ($3+$5)/($2+$4)}' | log
harness_matrix coverage --no-timing
harness_matrix spec_decode
PEERS=""
ls .whl-peers/*.whl* > /dev/null 2>&1 && PEERS="--peers"
harness_matrix spec_decode_bf16 $PEERS
