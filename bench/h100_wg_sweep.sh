#!/usr/bin/env bash
# One device call: correctness of both grouped kernels, then every (tile, splits) timed on
# the slowest fp8 shapes with the wgmma kernel and with the mma.sync kernel (PD_NO_WGMMA=1),
# and the fp8 seed grid with each: data for the cost model.
LOG=sweep
source bench/prelude.sh
kernels_ok
S="Qwen3-480B-fp8_e4m3-batchSize64-seqLenQ8|Qwen3-480B-fp8_e4m3-batchSize40-seqLenQ4|Qwen3-480B-fp8_e4m3-batchSize16-seqLenQ8|GPT-OSS-fp8_e4m3-batchSize64-seqLenQ8"
python3 -m kernels.selfcheck --only-bench --sweep "$S" > "$OUT/sweep_wg.log" 2>&1
PD_NO_WGMMA=1 python3 -m kernels.selfcheck --only-bench --sweep "$S" > "$OUT/sweep_mma.log" 2>&1
PD_NO_WGMMA=1 python3 -m kernels.selfcheck --only-bench --kernels grouped --filter fp8 > "$OUT/bench_mma.log" 2>&1
python3 -m kernels.selfcheck --only-bench --kernels grouped --filter fp8 > "$OUT/bench_wg.log" 2>&1
tail -3 "$OUT/bench_wg.log"
