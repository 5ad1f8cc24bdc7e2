// Internal launcher declarations shared by the translation units (not part of the C ABI).
#pragma once

#include <cuda_runtime.h>

#include "common.cuh"

namespace pd {

cudaError_t launch_baseline(const Params& p, int head_dim, int q_dtype, int kv_dtype,
                            cudaStream_t st);
cudaError_t launch_grouped_d64(const Params& p, int q_dtype, int kv_dtype, int tile, cudaStream_t st);
cudaError_t launch_grouped_d128(const Params& p, int q_dtype, int kv_dtype, int tile, cudaStream_t st);
cudaError_t launch_grouped_d256(const Params& p, int q_dtype, int kv_dtype, int tile, cudaStream_t st);
cudaError_t occupancy_grouped_d64(int q_dtype, int kv_dtype, int tile, int rows, bool mma_only, int* ctas);
cudaError_t occupancy_grouped_d128(int q_dtype, int kv_dtype, int tile, int rows, bool mma_only, int* ctas);
cudaError_t occupancy_grouped_d256(int q_dtype, int kv_dtype, int tile, int rows, bool mma_only, int* ctas);
cudaError_t balanced_grouped_d64(int q_dtype, int kv_dtype, int tile, int rows, int* ok);
cudaError_t balanced_grouped_d128(int q_dtype, int kv_dtype, int tile, int rows, int* ok);
cudaError_t balanced_grouped_d256(int q_dtype, int kv_dtype, int tile, int rows, int* ok);

}  // namespace pd
