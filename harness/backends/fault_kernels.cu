// Test-only CUDA faults for the harness's fault-handling tests (never a real backend):
// an out-of-bounds write that poisons the CUDA context, like a broken kernel PR would.
#include <cuda_runtime.h>

__global__ void harness_oob_write(float* p, long long offset) { p[offset] = 1.0f; }

extern "C" int harness_fault_oob(void* stream) {
  float* p = nullptr;
  cudaError_t err = cudaMalloc(&p, sizeof(float));
  if (err != cudaSuccess) return static_cast<int>(err);
  harness_oob_write<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(p, 1LL << 38);
  err = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
  return static_cast<int>(err);
}

extern "C" const char* harness_fault_error_string(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}
