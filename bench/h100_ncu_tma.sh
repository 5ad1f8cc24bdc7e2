#!/usr/bin/env bash
# Nsight Compute on the two fp8 q_len 8 batch-64 kernels after the TMA change (eleventh
# session): Speed Of Light, warp-state stalls and per-pipe utilization of grouped_sw_kernel
# (Qwen3-480B) and grouped_wg_kernel (GPT-OSS), one profile each, cut at 150 s. Clocks left
# alone (--clock-control none, METHOD.md).
LOG=ncu_tma
source bench/prelude.sh
python3 -m kernels.build 2>&1 | tail -1 | log
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
METRICS="regex:^sm__inst_executed_pipe_[a-z0-9_]+\.avg\.pct_of_peak_sustained_active$"
METRICS="$METRICS,smsp__inst_executed.sum,sm__cycles_elapsed.avg,smsp__issue_active.avg.pct_of_peak_sustained_active"
for c in grouped_sw_kernel:Qwen3-480B-fp8_e4m3-batchSize64-seqLenQ8 grouped_wg_kernel:GPT-OSS-fp8_e4m3-batchSize64-seqLenQ8; do
  k=${c%%:*}
  timeout 150 $NCU --clock-control none --target-processes all --kernel-name "regex:$k" \
    --launch-skip 3 --launch-count 1 --section SpeedOfLight --section WarpStateStats --metrics "$METRICS" \
    python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "${c#*:}" > "$OUT/ncu_$k.txt" 2>&1
  echo "$k rc=$?" | log
  grep -E "Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Stall|pct_of_peak|inst_executed.sum|cycles_elapsed|Warp Cycles|Active Warps" "$OUT/ncu_$k.txt" | tr -s ' ' | log
done
