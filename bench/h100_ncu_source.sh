#!/usr/bin/env bash
# Where one kernel's warps stall, per SASS instruction: Nsight Compute's source page
# (SourceCounters: warp-state samples per instruction) for NCU_KERNEL (default
# grouped_sw_kernel) on NCU_CASE (default Qwen3-480B fp8 q_len 8 batch 64), as CSV in $OUT
# (one section per instantiation; rank the instructions by stall samples off the device).
# Clocks left alone; cut at 150 s.
LOG=${LOG:-ncu_source}
source bench/prelude.sh
python3 -m kernels.build 2>&1 | tail -1 | log
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
K=${NCU_KERNEL:-grouped_sw_kernel}
timeout 150 $NCU --clock-control none --target-processes all --kernel-name "regex:$K" \
  --launch-skip 3 --launch-count 1 --section SourceCounters --section WarpStateStats \
  -o /tmp/ncu_source -f \
  python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "${NCU_CASE:-Qwen3-480B-fp8_e4m3-batchSize64-seqLenQ8}" \
  > /tmp/ncu_source_run.txt 2>&1
echo "profile rc=$?" | log
$NCU --import /tmp/ncu_source.ncu-rep --page source --csv --print-source sass > "$OUT/ncu_source.csv" 2>&1
echo "source page rc=$? $(wc -l < "$OUT/ncu_source.csv") lines" | log
head -3 "$OUT/ncu_source.csv" | cut -c1-600 | log
