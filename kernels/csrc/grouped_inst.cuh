// The grouped kernel's instantiations for one head_dim, PD_HEAD_DIM, defined by the
// including .cu file (one translation unit per head_dim so nvcc builds them in parallel).
#pragma once
#ifndef PD_HEAD_DIM
#error "define PD_HEAD_DIM before including grouped_inst.cuh"
#endif
#include "api_internal.h"
#include "grouped.cuh"
#include "grouped_wg.cuh"
#include "grouped_sw.cuh"
#include "grouped_ws.cuh"

#define PD_CAT_(a, b) a##b
#define PD_CAT(a, b) PD_CAT_(a, b)

namespace pd {

template <typename T, bool KV8>
static cudaError_t launch_tile(const Params& p, int tile, cudaStream_t st) {
  // On an sm_90 GPU a 128-row tile, or a full 64-row one, runs the wgmma kernels
  // (grouped_wg.cuh), faster than mma.sync there on H100: 8-16 % for fp8 KV, 3-8 % for bf16
  // (kernels/NOTES.md).
  // A part-filled 64-row tile with 16-bit KV (Qwen3 q_len 4: 48 rows) stays on mma.sync:
  // the lockstep wgmma kernel's serial per-stage phases lost 12 % in a one-CTA-per-SM tail.
  if constexpr (PD_HEAD_DIM <= 128) {
    // fp8 KV at head_dim 128 with 65-96 rows in a 128-row tile (Qwen3 q_len 8) or 33-48 in a
    // 64-row one (Qwen3 q_len 4): swapped operands (grouped_sw.cuh), 17-20 % faster than
    // grouped_ws_kernel on q_len 8 (fp16 MMAs; an e4m3 S^T was faster but inaccurate at
    // large scores, kernels/NOTES.md). A head_dim-64 form (GPT-OSS q_len 8) lost 16 % to
    // grouped_wg_kernel at batch 64 and was removed.
    if constexpr (KV8 && PD_HEAD_DIM == 128) {
      const int fill = p.q_len * p.group < tile ? p.q_len * p.group : tile;
      if (sw_enabled() && wg_supported()) {
        if (tile == 128 && fill > 64 && fill <= 96) return launch_grouped_sw<128, 96, T>(p, tile, st);
        if (tile == 64 && fill > 32 && fill <= 48) return launch_grouped_sw<128, 48, T>(p, tile, st);
      }
    }
    const bool wg_tile = tile == 128 || (tile == 64 && p.q_len * p.group >= 64);
    if (wg_tile && wg_supported()) {
      if constexpr (PD_HEAD_DIM == 128)  // warp-specialized (grouped_ws.cuh): 15-22 % faster
        if (tile == 128 && ws_enabled()) return launch_grouped_ws<PD_HEAD_DIM, T, KV8>(p, st);
      if constexpr (KV8)
        return tile == 64 ? launch_grouped_wg<PD_HEAD_DIM, T, 1>(p, st) : launch_grouped_wg<PD_HEAD_DIM, T, 2>(p, st);
      else
        return tile == 64 ? launch_grouped_wg16<PD_HEAD_DIM, T, 1>(p, st)
                          : launch_grouped_wg16<PD_HEAD_DIM, T, 2>(p, st);
    }
  }
  PD_GROUPED_DISPATCH(PD_HEAD_DIM, launch_grouped_t, p, st)
}

template <typename T, bool KV8>
static cudaError_t occupancy_tile(int tile, int* ctas) {
  PD_GROUPED_DISPATCH(PD_HEAD_DIM, occupancy_grouped_t, ctas)
}

cudaError_t PD_CAT(launch_grouped_d, PD_HEAD_DIM)(const Params& p, int q_dtype, int kv_dtype, int tile, cudaStream_t st) {
  const bool kv8 = kv_dtype == kE4M3;
  if (q_dtype == kF16)
    return kv8 ? launch_tile<__half, true>(p, tile, st) : launch_tile<__half, false>(p, tile, st);
  return kv8 ? launch_tile<__nv_bfloat16, true>(p, tile, st)
             : launch_tile<__nv_bfloat16, false>(p, tile, st);
}

cudaError_t PD_CAT(occupancy_grouped_d, PD_HEAD_DIM)(int q_dtype, int kv_dtype, int tile, int* ctas) {
  const bool kv8 = kv_dtype == kE4M3;
  if (q_dtype == kF16)
    return kv8 ? occupancy_tile<__half, true>(tile, ctas) : occupancy_tile<__half, false>(tile, ctas);
  return kv8 ? occupancy_tile<__nv_bfloat16, true>(tile, ctas)
             : occupancy_tile<__nv_bfloat16, false>(tile, ctas);
}

}  // namespace pd
