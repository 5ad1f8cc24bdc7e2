#!/usr/bin/env bash
# Why GPT-OSS fp8 (head_dim 64: 64 bytes per token and KV head) stays near 2 TB/s at every
# q_len: the standalone read-granularity and conversion-throughput microbenchmarks
# (bench/kv_read_granularity.cu, bench/cvt_throughput.cu); Nsight Compute's speed-of-light,
# memory, warp-state, occupancy and pipe sections for the batch-64 rows at q_len 2
# (grouped_kernel, mma.sync) and 8 (grouped_wg_kernel); and a tile x split sweep of the
# small-batch q_len 8 rows (SWEEP_BATCHES, SWEEP_SPLITS) for the cost model.
LOG=${LOG:-gptoss_fp8}
source bench/prelude.sh
python3 -m kernels.build 2>&1 | tail -1 | log
for b in kv_read_granularity cvt_throughput; do
  nvcc -O3 -arch=sm_90a -o "/tmp/$b" "bench/$b.cu" && "/tmp/$b" 2>&1 | log
done
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
METRICS="regex:^sm__inst_executed_pipe_[a-z0-9_]+\.avg\.pct_of_peak_sustained_active$"
METRICS="$METRICS,smsp__issue_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed"
for c in ${NCU_CASES:-q2:grouped_kernel:GPT-OSS-fp8_e4m3-batchSize64-seqLenQ2 q8:grouped_wg_kernel:GPT-OSS-fp8_e4m3-batchSize64-seqLenQ8}; do
  IFS=: read -r name k filt <<< "$c"
  timeout 150 $NCU --clock-control none --target-processes all --kernel-name "regex:$k" \
    --launch-skip 3 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section WarpStateStats --section Occupancy --section LaunchStats --section SchedulerStats \
    --metrics "$METRICS" \
    python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "$filt" > "$OUT/ncu_$name.txt" 2>&1
  echo "ncu $name ($k, $filt) rc=$?" | log
done
if [ -n "${SWEEP:-}" ]; then
  python3 -m kernels.selfcheck --sweep "$SWEEP" --batches "${SWEEP_BATCHES:-8}" \
    --splits "${SWEEP_SPLITS:-1,2,3,4,6,8}" 2>&1 | grep -v "^library" | log
fi
