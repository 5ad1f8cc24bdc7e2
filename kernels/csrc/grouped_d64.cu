// Instantiates the grouped kernel for head_dim 64 (one TU per head_dim: parallel builds).
#include "api_internal.h"
#include "grouped.cuh"

namespace pd {

template <typename T, bool KV8>
static cudaError_t launch_tile(const Params& p, int tile, cudaStream_t st) {
  PD_GROUPED_DISPATCH(64, launch_grouped_t, p, st)
}

template <typename T, bool KV8>
static cudaError_t occupancy_tile(int tile, int* ctas) {
  PD_GROUPED_DISPATCH(64, occupancy_grouped_t, ctas)
}

cudaError_t launch_grouped_d64(const Params& p, int q_dtype, int kv_dtype, int tile, cudaStream_t st) {
  const bool kv8 = kv_dtype == kE4M3;
  if (q_dtype == kF16)
    return kv8 ? launch_tile<__half, true>(p, tile, st) : launch_tile<__half, false>(p, tile, st);
  return kv8 ? launch_tile<__nv_bfloat16, true>(p, tile, st)
             : launch_tile<__nv_bfloat16, false>(p, tile, st);
}

cudaError_t occupancy_grouped_d64(int q_dtype, int kv_dtype, int tile, int* ctas) {
  const bool kv8 = kv_dtype == kE4M3;
  if (q_dtype == kF16)
    return kv8 ? occupancy_tile<__half, true>(tile, ctas) : occupancy_tile<__half, false>(tile, ctas);
  return kv8 ? occupancy_tile<__nv_bfloat16, true>(tile, ctas)
             : occupancy_tile<__nv_bfloat16, false>(tile, ctas);
}

}  // namespace pd
