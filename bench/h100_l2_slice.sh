#!/usr/bin/env bash
# The L2 slice prefetch for 64-byte KV rows (thirteenth session): DRAM bytes read, L2 hit
# rate and duration (Nsight Compute, one launch each, clocks left alone) of GPT-OSS fp8
# batch-64 kernels with and without it (PD_L2_SLICE=0). The kept code uses it in the 16-row
# mma.sync tile (q_len 2) only; q_len 4 and 8 are the controls. It builds both variants.
LOG=l2_slice
source bench/prelude.sh
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
METRICS=dram__bytes_read.sum,lts__t_sector_hit_rate.pct,gpu__time_duration.sum,lts__t_sectors_srcunit_tex_op_read.sum
for v in "" PD_L2_SLICE=0; do
  python3 -m kernels.build $([ -n "$v" ] && echo "--define $v") 2>&1 | tail -1 | log
  for c in grouped_kernel:GPT-OSS-fp8_e4m3-batchSize64-seqLenQ2 grouped_kernel:GPT-OSS-fp8_e4m3-batchSize64-seqLenQ4 \
    grouped_wg_kernel:GPT-OSS-fp8_e4m3-batchSize64-seqLenQ8; do
    k=${c%%:*}
    HARNESS_KERNEL_DEFINES=$v timeout 120 $NCU --clock-control none --target-processes all --kernel-name "regex:$k" \
      --launch-skip 3 --launch-count 1 --metrics "$METRICS" \
      python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "${c#*:}" > /tmp/ncu.txt 2>&1
    echo "${v:-default} ${c#*:} rc=$? $(grep -E 'dram__bytes_read.sum|hit_rate|gpu__time_duration|tex_op_read' /tmp/ncu.txt | tr -s ' ' | tr '\n' ';')" | log
  done
done
