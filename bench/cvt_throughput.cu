// Throughput of the fp8 e4m3 -> fp16 conversions the fp8 kernels use, against an ALU-only bit
// trick, MUFU ex2, and the two mixed: whether converting K/V competes with the softmax for a
// pipe. Prints Gvalues/s and values per clock per SM. Standalone:
//   nvcc -O3 -arch=sm_90a -o /tmp/cvt bench/cvt_throughput.cu && /tmp/cvt
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

constexpr int kChains = 8, kIters = 4096;

__device__ __forceinline__ void cvt_hw(uint32_t x, uint32_t& lo, uint32_t& hi) {
  asm volatile("{\n.reg .b16 l, h;\nmov.b32 {l, h}, %2;\ncvt.rn.f16x2.e4m3x2 %0, l;\ncvt.rn.f16x2.e4m3x2 %1, h;\n}\n"
               : "=r"(lo), "=r"(hi) : "r"(x));
}
// e4m3 bits placed as fp16 bits of value * 2^-8 (sign to bit 15, exponent+mantissa to 14..7).
__device__ __forceinline__ void cvt_alu(uint32_t x, uint32_t& lo, uint32_t& hi) {
  const uint32_t a = __byte_perm(x, 0, 0x1404), b = __byte_perm(x, 0, 0x3424);
  lo = ((a >> 1) & 0x3f803f80u) | (a & 0x80008000u);
  hi = ((b >> 1) & 0x3f803f80u) | (b & 0x80008000u);
}

template <int MODE>
__global__ void kern(uint32_t seed, uint32_t* out) {
  uint32_t v[kChains];
  float f[kChains];
#pragma unroll
  for (int c = 0; c < kChains; ++c) { v[c] = seed * (threadIdx.x + c + 1); f[c] = __uint_as_float(v[c] & 0x3f7fffffu); }
  for (int i = 0; i < kIters; ++i) {
#pragma unroll
    for (int c = 0; c < kChains; ++c) {
      uint32_t lo, hi;
      if (MODE == 0 || MODE == 3) { cvt_hw(v[c], lo, hi); v[c] = lo ^ hi; }
      if (MODE == 1) { cvt_alu(v[c], lo, hi); v[c] = lo ^ hi; }
      if (MODE >= 2) { float r; asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(f[c])); f[c] = r; }
    }
  }
  uint32_t acc = 0;
#pragma unroll
  for (int c = 0; c < kChains; ++c) acc ^= v[c] ^ __float_as_uint(f[c]);
  if (acc == 0x9e3779b9u) out[0] = acc;
}

int main() {
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  int clk_khz = 0;
  cudaDeviceGetAttribute(&clk_khz, cudaDevAttrClockRate, 0);
  uint32_t* out;
  cudaMalloc(&out, 4);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  const char* names[] = {"cvt.f16x2.e4m3x2 (F2FP)", "ALU bit trick (PRMT+SHF+LOP3)", "ex2 only", "F2FP + ex2 mixed"};
  const dim3 grid(prop.multiProcessorCount * 8), block(256);
  for (int mode = 0; mode < 4; ++mode) {
    auto run = [&]() {
      switch (mode) {
        case 0: kern<0><<<grid, block>>>(12345u, out); break;
        case 1: kern<1><<<grid, block>>>(12345u, out); break;
        case 2: kern<2><<<grid, block>>>(12345u, out); break;
        default: kern<3><<<grid, block>>>(12345u, out); break;
      }
    };
    run();
    cudaEventRecord(e0);
    for (int r = 0; r < 5; ++r) run();
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    const double threads = double(grid.x) * block.x, ops = threads * kIters * kChains * 5;
    // values: 4 per conversion op, 1 per ex2
    const double per_s = ops / (ms * 1e-3);
    std::printf("%-34s %8.3f ms  %9.1f G chain-steps/s  %6.1f steps/clk/SM (at %d MHz)\n", names[mode], ms, per_s / 1e9,
                per_s / (prop.multiProcessorCount * clk_khz * 1e3), clk_khz / 1000);
  }
  std::printf("(%s) %s\n", prop.name, cudaGetErrorString(cudaGetLastError()));
  return 0;
}
