// Whether a warpgroup's own ALU work overlaps its own in-flight wgmmas (kernels/NOTES.md,
// twenty-eighth session): the 96-row fp8 kernel measured 7-11 % slower when ptxas placed
// K's 32 conversions among P V's wgmma issues, and no earlier attempt to run a warpgroup's
// ALU work under its own register-A wgmmas paid. One CTA per SM, one or two warpgroups,
// each looping: 8 wgmma m64n96k16 (A from registers, or A from shared memory), commit,
// wait, with a block of independent ALU instructions (32 cvt.rn.f16x2.e4m3x2, or 32 FFMA)
// placed (a) after the wait (it reads the accumulators), (b) where ptxas puts it when it
// is free to (among the wgmma issues), or (c) after the last issue and before the wait
// (inside a loop whose trip count, 1, ptxas cannot see, so nothing crosses it). Prints
// cycles per iteration per warpgroup. Standalone:
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -o /tmp/wao bench/wgmma_alu_overlap.cu && /tmp/wao
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

constexpr int kIters = 4096;

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

#define PD_D96 "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3])
#define PD_DREGS "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}"

// wgmma m64n96k16, B (and for SS, A) K-major in shared memory with a 128-byte swizzle.
template <int OFF>
__device__ __forceinline__ void mma_rs(float (&d)[12][4], const uint32_t (&a)[4], uint32_t b_lo) {
  asm volatile("{\n.reg .b32 tb;\n.reg .b64 db;\nadd.u32 tb, %52, %53;\nmov.b64 db, {tb, 1073741888};\n"
               "wgmma.mma_async.sync.aligned.m64n96k16.f32.f16.f16 " PD_DREGS ", {%48, %49, %50, %51}, db, 1, 1, 1, 0;\n}\n"
               : PD_D96
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b_lo), "n"(OFF >> 4)
               : "memory");
}
template <int OFF>
__device__ __forceinline__ void mma_ss(float (&d)[12][4], uint32_t a_lo, uint32_t b_lo) {
  asm volatile("{\n.reg .b32 ta, tb;\n.reg .b64 da, db;\nadd.u32 ta, %48, %50;\nadd.u32 tb, %49, %50;\n"
               "mov.b64 da, {ta, 1073741888};\nmov.b64 db, {tb, 1073741888};\n"
               "wgmma.mma_async.sync.aligned.m64n96k16.f32.f16.f16 " PD_DREGS ", da, db, 1, 1, 1, 0, 0;\n}\n"
               : PD_D96
               : "r"(a_lo), "r"(b_lo), "n"(OFF >> 4)
               : "memory");
}
#undef PD_D96
#undef PD_DREGS

// ALU: 0 none, 1 32 cvt.rn.f16x2.e4m3x2, 2 32 FFMA. WHERE: 0 after the wait (reading the
// accumulators), 1 free (ptxas's choice), 2 pinned between the last issue and the wait.
// SS: A from shared memory instead of registers. `one` is 1 (a kernel argument).
template <int ALU, int WHERE, bool SS>
__global__ void __launch_bounds__(256, 1) kern(uint32_t seed, int one, uint32_t* out, long long* cycles) {
  __shared__ __align__(1024) uint8_t sm[2][24 * 1024];  // per warpgroup: B (12 KB), A (8 KB)
  const int wg = threadIdx.x >> 7;
  for (int i = threadIdx.x; i < 2 * 24 * 1024 / 4; i += blockDim.x) reinterpret_cast<uint32_t*>(sm)[i] = 0x3c003c00u * (i & 1);
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
  const uint32_t b_lo = ((smem_u32(sm[wg]) & 0x3FFFF) >> 4) | (1u << 16);
  const uint32_t a_lo = ((smem_u32(sm[wg] + 12 * 1024) & 0x3FFFF) >> 4) | (1u << 16);
  float d[12][4];
#pragma unroll
  for (int j = 0; j < 12; ++j)
#pragma unroll
    for (int c = 0; c < 4; ++c) d[j][c] = 0.f;
  uint32_t a[8][4];
#pragma unroll
  for (int k = 0; k < 8; ++k)
#pragma unroll
    for (int c = 0; c < 4; ++c) a[k][c] = 0x3c003c00u ^ (seed * (k + c));
  uint32_t x[16];
  float f[16];
#pragma unroll
  for (int c = 0; c < 16; ++c) { x[c] = seed * (threadIdx.x + c + 1); f[c] = __uint_as_float(0x3f800000u | (x[c] & 0xffff)); }
  uint32_t acc = 0;
  const long long t0 = clock64();
#pragma unroll 1
  for (int it = 0; it < kIters; ++it) {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
    if constexpr (SS) {
      mma_ss<0>(d, a_lo, b_lo); mma_ss<32>(d, a_lo, b_lo); mma_ss<64>(d, a_lo, b_lo); mma_ss<96>(d, a_lo, b_lo);
      mma_ss<0>(d, a_lo + 64, b_lo); mma_ss<32>(d, a_lo + 64, b_lo); mma_ss<64>(d, a_lo + 64, b_lo); mma_ss<96>(d, a_lo + 64, b_lo);
    } else {
      mma_rs<0>(d, a[0], b_lo); mma_rs<32>(d, a[1], b_lo); mma_rs<64>(d, a[2], b_lo); mma_rs<96>(d, a[3], b_lo);
      mma_rs<0>(d, a[4], b_lo); mma_rs<32>(d, a[5], b_lo); mma_rs<64>(d, a[6], b_lo); mma_rs<96>(d, a[7], b_lo);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    auto alu = [&]() {
      if constexpr (ALU == 1) {
#pragma unroll
        for (int c = 0; c < 16; ++c) {
          uint32_t lo, hi, in = x[c];
          if constexpr (WHERE == 0) in ^= __float_as_uint(d[c % 12][c / 12]);
          asm volatile("{\n.reg .b16 l, h;\nmov.b32 {l, h}, %2;\ncvt.rn.f16x2.e4m3x2 %0, l;\ncvt.rn.f16x2.e4m3x2 %1, h;\n}\n"
                       : "=r"(lo), "=r"(hi) : "r"(in));
          x[c] = lo ^ (hi + it);
        }
      } else if constexpr (ALU == 2) {
#pragma unroll
        for (int c = 0; c < 16; ++c) {
          float r, in = f[c];
          if constexpr (WHERE == 0) in += d[c % 12][c / 12];
          asm volatile("fma.rn.f32 %0, %1, %1, %2;\n" : "=f"(r) : "f"(in), "f"(-0.5f));
          asm volatile("fma.rn.f32 %0, %1, 0f3F000000, %2;\n" : "=f"(f[c]) : "f"(r), "f"(0.75f));
        }
      }
    };
    if constexpr (WHERE == 1) alu();
    if constexpr (WHERE == 2)
      for (int r = 0; r < one; ++r) alu();
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    if constexpr (WHERE == 0) alu();
  }
  const long long t1 = clock64();
#pragma unroll
  for (int c = 0; c < 16; ++c) acc ^= x[c] ^ __float_as_uint(f[c]);
#pragma unroll
  for (int j = 0; j < 12; ++j)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc ^= __float_as_uint(d[j][c]);
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
  if ((threadIdx.x & 127) == 0) cycles[blockIdx.x * 2 + wg] = t1 - t0;
}

template <int ALU, int WHERE, bool SS>
void run(const char* name, int nwg, uint32_t* out, long long* cyc, int sms) {
  long long host[2 * 1024];
  for (int rep = 0; rep < 2; ++rep) {  // the first launch warms up
    kern<ALU, WHERE, SS><<<sms, nwg * 128>>>(12345u, 1, out, cyc);
    cudaDeviceSynchronize();
  }
  cudaMemcpy(host, cyc, sizeof(long long) * 2 * sms, cudaMemcpyDeviceToHost);
  double s = 0;
  for (int b = 0; b < sms; ++b)
    for (int w = 0; w < nwg; ++w) s += host[b * 2 + w];
  printf("%-34s %d warpgroup(s): %7.1f cycles per iteration per warpgroup\n", name, nwg, s / (sms * nwg) / kIters);
}

int main() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  uint32_t* out;
  long long* cyc;
  cudaMalloc(&out, sizeof(uint32_t) * sms * 256);
  cudaMalloc(&cyc, sizeof(long long) * 2 * sms);
  for (int nwg = 1; nwg <= 2; ++nwg) {
    run<0, 0, false>("RS wgmma alone", nwg, out, cyc, sms);
    run<1, 0, false>("RS + 32 cvt after the wait", nwg, out, cyc, sms);
    run<1, 1, false>("RS + 32 cvt, ptxas's place", nwg, out, cyc, sms);
    run<1, 2, false>("RS + 32 cvt before the wait", nwg, out, cyc, sms);
    run<2, 0, false>("RS + 32 FFMA after the wait", nwg, out, cyc, sms);
    run<2, 1, false>("RS + 32 FFMA, ptxas's place", nwg, out, cyc, sms);
    run<2, 2, false>("RS + 32 FFMA before the wait", nwg, out, cyc, sms);
    run<0, 0, true>("SS wgmma alone", nwg, out, cyc, sms);
    run<1, 0, true>("SS + 32 cvt after the wait", nwg, out, cyc, sms);
    run<1, 1, true>("SS + 32 cvt, ptxas's place", nwg, out, cyc, sms);
    run<1, 2, true>("SS + 32 cvt before the wait", nwg, out, cyc, sms);
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    printf("CUDA error: %s\n", cudaGetErrorString(e));
    return 1;
  }
  return 0;
}
