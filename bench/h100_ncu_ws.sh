#!/usr/bin/env bash
# Nsight Compute on one grouped kernel (NCU_KERNEL, default the warp-specialized
# grouped_ws_kernel) for the seed-grid cases NCU_CASES ("label:filter ...", default Qwen3-480B
# q_len 8 batch 64, bf16 and fp8 KV). Speed of light, memory, compute, scheduler, occupancy,
# plus the per-reason warp stall ratios (all warps: producers and consumers together).
# Clocks left alone (--clock-control none, METHOD.md). Each profile is cut at 90 s.
LOG=${LOG:-ncu_ws}
source bench/prelude.sh
python3 -m kernels.build 2>&1 | tail -1 | log
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
SECTIONS="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
  --section SchedulerStats --section Occupancy --section LaunchStats"
STALLS=""
for r in barrier long_scoreboard short_scoreboard wait math_pipe_throttle mio_throttle lg_throttle \
  membar sleeping dispatch_stall no_instruction selected not_selected branch_resolving misc; do
  STALLS="$STALLS,smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio"
done
prof() {  # prof NAME CASE
  timeout 90 $NCU --clock-control none --target-processes all --kernel-name "regex:${NCU_KERNEL:-grouped_ws_kernel}" \
    --launch-skip 3 --launch-count 1 $SECTIONS --metrics "${STALLS#,}" \
    python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "$2" > "$OUT/ncu_$1.txt" 2>&1
  echo "$1 rc=$? $(grep -E 'Duration|DRAM Throughput|Compute \(SM\) Throughput' "$OUT/ncu_$1.txt" | head -3 | tr -s ' ' | tr '\n' ';')" | log
  grep -E "issue_stalled" "$OUT/ncu_$1.txt" | awk '{print $1, $NF}' | sed 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' | sort -k2 -gr | head -6 | tr '\n' ';' | log
}
for c in ${NCU_CASES:-qwen_bf16_ws:Qwen3-480B-bf16-batchSize64-seqLenQ8 qwen_fp8_ws:Qwen3-480B-fp8_e4m3-batchSize64-seqLenQ8}; do
  prof "${c%%:*}" "${c#*:}"
done
