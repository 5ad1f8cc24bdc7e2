#!/usr/bin/env bash
# Nsight Compute on the slowest spec_decode rows, the q_len 8 batch 64 ones that run the
# wgmma kernels (Qwen3-480B bf16 and fp8, GPT-OSS fp8), plus the mma.sync kernel on the same
# Qwen3 bf16 case (PD_NO_WGMMA=1) for comparison: speed of light, memory, compute, warp
# states, scheduler, occupancy. Clocks left alone (--clock-control none, METHOD.md).
# Each profile is cut at 90 s.
LOG=ncu
source bench/prelude.sh
python3 -m kernels.build 2>&1 | tail -1 | log
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
SECTIONS="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
  --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats"
prof() {  # prof NAME KERNEL_REGEX CASE [env...]
  local name=$1 kern=$2 case=$3
  shift 3
  env "$@" timeout 90 $NCU --clock-control none --target-processes all --kernel-name "regex:$kern" \
    --launch-skip 3 --launch-count 1 $SECTIONS \
    python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "$case" > "$OUT/ncu_$name.txt" 2>&1
  echo "$name rc=$? $(grep -E 'Duration|DRAM Throughput|Compute \(SM\) Throughput' "$OUT/ncu_$name.txt" | head -3 | tr -s ' ' | tr '\n' ';')" | log
}
prof qwen_bf16_wg grouped_wg16 Qwen3-480B-bf16-batchSize64-seqLenQ8
prof qwen_bf16_mma grouped_kernel Qwen3-480B-bf16-batchSize64-seqLenQ8 PD_NO_WGMMA=1
prof qwen_fp8_wg grouped_wg_kernel Qwen3-480B-fp8_e4m3-batchSize64-seqLenQ8
prof gpt_fp8_wg grouped_wg_kernel GPT-OSS-fp8_e4m3-batchSize64-seqLenQ8
