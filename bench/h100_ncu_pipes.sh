#!/usr/bin/env bash
# Which execution pipe paces a kernel: Nsight Compute's per-pipe utilization (instructions
# executed and cycles active, % of peak; ncu's "shared" pipe is the one FP16 and the tensor
# cores share, not shared memory, whose wavefronts and bank conflicts come from the memory
# tables section) for NCU_KERNEL
# (default grouped_sw_kernel) on NCU_CASES ("label:filter ...", default Qwen3-480B fp8 q_len 8
# batch 64), plus the kernel's SASS opcode histogram (bench/sass_histogram.sh). Clocks left
# alone (--clock-control none, METHOD.md); each profile cut at 120 s.
LOG=${LOG:-ncu_pipes}
source bench/prelude.sh
python3 -m kernels.build 2>&1 | tail -1 | log
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
K=${NCU_KERNEL:-grouped_sw_kernel}
KERNEL=$K bash bench/sass_histogram.sh | log
METRICS="regex:^sm__inst_executed_pipe_[a-z0-9_]+\.avg\.pct_of_peak_sustained_active$"
METRICS="$METRICS,regex:^sm__pipe_[a-z0-9_]+_cycles_active\.avg\.pct_of_peak_sustained_active$"
METRICS="$METRICS,smsp__inst_executed.sum,sm__cycles_elapsed.avg,smsp__issue_active.avg.pct_of_peak_sustained_active"
for c in ${NCU_CASES:-qwen_fp8_q8:Qwen3-480B-fp8_e4m3-batchSize64-seqLenQ8}; do
  name=${c%%:*}
  timeout 120 $NCU --clock-control none --target-processes all --kernel-name "regex:$K" \
    --launch-skip 3 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis_Tables \
    --metrics "$METRICS" \
    python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "${c#*:}" > "$OUT/ncu_pipes_$name.txt" 2>&1
  echo "$name rc=$?" | log
  grep -E "Duration|pct_of_peak|inst_executed.sum|cycles_elapsed|Shared" "$OUT/ncu_pipes_$name.txt" | tr -s ' ' | log
done
