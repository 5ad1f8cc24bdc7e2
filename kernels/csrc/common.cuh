// Shared device helpers for the paged decode-attention kernels.
// No torch headers: everything here is plain CUDA C++.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace pd {

#ifdef HARNESS_PLANTED_SLOWDOWN
// TEST ONLY, never in a released build: lengthen each launch of a kernel by
// HARNESS_PLANTED_SLOWDOWN per mille of its own duration, so the harness can prove it
// catches a known regression (python -m harness run --planted-slowdown N). The last CTA
// to finish waits, with the GPU otherwise idle, for that fraction of the time since the
// first CTA started: the added time is the same fraction whether the kernel is bound by
// memory, tensor cores or latency (stretching every CTA instead overlapped with co-resident
// CTAs' work and added 0.8 % instead of 2 % to compute-bound cases). One launch at a time.
static __device__ unsigned long long planted_first_start = ~0ull;
static __device__ unsigned int planted_ctas_done = 0;

__device__ __forceinline__ unsigned long long planted_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Called by thread 0 of every CTA at its start.
__device__ __forceinline__ void planted_begin() { atomicMin(&planted_first_start, planted_now()); }

// Called by thread 0 of every CTA after its last store.
__device__ __forceinline__ void planted_end() {
  __threadfence();
  const unsigned int total = gridDim.x * gridDim.y * gridDim.z;
  if (atomicAdd(&planted_ctas_done, 1u) != total - 1) return;
  const unsigned long long t0 = atomicAdd(&planted_first_start, 0ull), t1 = planted_now();
  const unsigned long long until = t1 + (t1 - t0) * (HARNESS_PLANTED_SLOWDOWN) / 1000;
  while (planted_now() < until) __nanosleep(64);
  planted_first_start = ~0ull;  // ready for the next launch
  planted_ctas_done = 0;
  __threadfence();
}
#endif

// Every kernel's first statement: the planted slowdown's start mark in test builds (thread
// 0 of each CTA), nothing otherwise.
__device__ __forceinline__ void planted_cta_begin() {
#ifdef HARNESS_PLANTED_SLOWDOWN
  if (threadIdx.x == 0) planted_begin();
#endif
}

#ifdef PD_TIMELINE
// DIAGNOSTIC ONLY (bench/cta_timeline.py): %globaltimer marks of each CTA of the last launch,
// PD_TL_SLOTS per CTA in launch order; read back by pd_timeline_d<head_dim> (grouped_inst.cuh).
// One copy per translation unit (static), so each head_dim's kernels have their own.
#define PD_TL_SLOTS 16
#define PD_TL_CTAS 4096
static __device__ unsigned long long pd_tl[PD_TL_CTAS * PD_TL_SLOTS];
// This CTA's word `slot` (CTAs past PD_TL_CTAS keep no marks).
__device__ __forceinline__ void pd_tl_put(int slot, unsigned long long v) {
  const unsigned cta = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  if (cta < PD_TL_CTAS) pd_tl[cta * PD_TL_SLOTS + slot] = v;
}
__device__ __forceinline__ void pd_tl_mark(int slot) {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  pd_tl_put(slot, t);
}
__device__ __forceinline__ void pd_tl_smid() {  // slot 1: the SM the CTA ran on
  unsigned sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  pd_tl_put(1, sm);
}
#define PD_TL(slot, cond) \
  do {                    \
    if (cond) pd_tl_mark(slot); \
  } while (0)
#else
#define PD_TL(slot, cond) \
  do {                    \
  } while (0)
#endif

// dtype codes of the C ABI (kernels/binding.py mirrors them).
enum DType : int { kF16 = 0, kBF16 = 1, kE4M3 = 2 };

// Launch parameters shared by every kernel. Sizes are in elements unless named *_bytes.
struct Params {
  const void* q;            // [batch*q_len, hq, D] (T)
  const void* kv;           // [num_pages, 2, page_size, hkv, D] (T or e4m3)
  const int* page_table;    // [batch, max_pages]
  const int* kv_lens;       // [batch]
  void* out;                // like q
  float* ws_o;              // [num_splits, batch*q_len*hq, D] fp32 partial outputs
  float* ws_lse;            // [num_splits, batch*q_len*hq] log2-sum-exp of each partial
  int batch, q_len, hq, hkv, group;
  int page_size, page_shift, max_pages;
  float scale_log2;         // sm_scale * k_scale * log2(e)
  float v_scale;
  int num_splits, split_tokens, num_row_tiles;
  int kv_lookahead;         // stages in flight ahead of the computed one where the kernel
                            // lets the launch choose (shallow_lookahead); 0: its ring's NS - 1
  int kv_evict_first;       // the TMA KV reads' L2 policy is evict_first (kv_l2_policy)
  int cluster_heads;        // grouped grids launch as clusters of this many KV heads (1: none)
  // Balanced grid (stream-K; 0: the classic (KV head, row tile x split, request) grid):
  // sk_ctas CTAs, sk_ctas / hkv per KV head; a head's CTA c takes stages [c sk_units,
  // (c + 1) sk_units) of that head's (request, row tile) items laid end to end, sk_stages
  // each (cta_segment).
  int sk_units, sk_stages, sk_ctas;
};

// Raise a kernel's dynamic shared-memory limit once per device: `done` is a bitmask of
// device ordinals owned by the caller (one static per kernel instantiation), so launches
// made later under CUDA graph capture issue no attribute calls. A racing repeat is harmless.
template <typename Kernel>
inline cudaError_t set_smem_once(Kernel kern, int bytes, unsigned long long& done) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  const unsigned long long bit = 1ull << (dev & 63);
  if (done & bit) return cudaSuccess;
  e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess) done |= bit;
  return e;
}

// Whether pred(device ordinal) holds for the current device, asked once per device: `cached`
// is the caller's own (0 unknown, 1 yes, 2 no, per ordinal).
template <typename Pred>
inline bool device_flag(int (&cached)[64], Pred pred) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  int& c = cached[dev & 63];
  if (c == 0) c = pred(dev) ? 1 : 2;
  return c == 1;
}

// threadIdx.x as the compiler cannot hoist or reuse: a kernel that runs its tile code more
// than once (a balanced grid's two segments, cta_segment) would otherwise compute every
// thread-index-derived offset once before the loop and keep it live through the whole
// tile (the mma.sync tiles: 9-14 more registers, spills at head_dim 256).
__device__ __forceinline__ int tid_x() {
  int t;
  asm volatile("mov.u32 %0, %%tid.x;\n" : "=r"(t));
  return t;
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy global -> shared; src_bytes = 0 zero-fills (keeps masked lanes finite).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// An arrive on the mbarrier at `bar` once all of this thread's earlier cp.async copies have
// landed (.noinc: it is one of the arrivals the barrier was initialised to expect).
__device__ __forceinline__ void cp_async_mbar_arrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar) : "memory");
}
// Until the barrier's phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// Until all of this thread's cp.async copies have landed (committed into groups or not).
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Per-type traits: MMA, packing, and e4m3 -> T conversion by bit placement + one multiply.
// e4m3 magnitude bits are moved under T's exponent/mantissa fields; one multiply by
// 2^(bias_T - 7) fixes the exponent bias (exact, subnormals included, since T holds e4m3).
template <typename T>
struct Tr;

template <>
struct Tr<__half> {
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  static __device__ __forceinline__ float2 unpack(uint32_t u) {
    return __half22float2(*reinterpret_cast<__half2*>(&u));
  }
  static __device__ __forceinline__ uint32_t fix(uint32_t a) {
    // sign stays, 7 magnitude bits -> fp16 [13:7]; multiply by 2^8.
    uint32_t h = (a & 0x80008000u) | ((a & 0x7F007F00u) >> 1);
    uint32_t r;
    asm("mul.rn.f16x2 %0, %1, %2;\n" : "=r"(r) : "r"(h), "r"(0x5C005C00u));
    return r;
  }
};

template <>
struct Tr<__nv_bfloat16> {
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  static __device__ __forceinline__ float2 unpack(uint32_t u) {
    return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xFFFF0000u));
  }
  static __device__ __forceinline__ uint32_t fix(uint32_t a) {
    // 7 magnitude bits -> bf16 [10:4]; multiply by 2^120 (fma with -0 works from sm_80 on).
    uint32_t h = (a & 0x80008000u) | ((a & 0x7F007F00u) >> 4);
    uint32_t r;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(h), "r"(0x7B807B80u), "r"(0x80008000u));
    return r;
  }
};

// Four e4m3 bytes -> four fp16 values (two words), with the hardware converter from sm_89 on.
__device__ __forceinline__ void e4m3x4_to_half(uint32_t x, uint32_t& lo, uint32_t& hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  const uint16_t a = static_cast<uint16_t>(x & 0xFFFFu), b = static_cast<uint16_t>(x >> 16);
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(lo) : "h"(a));
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(hi) : "h"(b));
#else
  lo = Tr<__half>::fix(__byte_perm(x, 0u, 0x1404));
  hi = Tr<__half>::fix(__byte_perm(x, 0u, 0x3424));
#endif
}

// bf16x2 -> fp16x2 (the fp8-KV path computes in fp16 whatever q's dtype is).
__device__ __forceinline__ uint32_t bf16x2_to_half2(uint32_t u) {
  const float2 f = Tr<__nv_bfloat16>::unpack(u);
  return Tr<__half>::pack(f.x, f.y);
}

// Four e4m3 bytes -> four T values packed as two 32-bit words (element order kept).
template <typename T>
__device__ __forceinline__ void e4m3x4_to(uint32_t x, uint32_t& lo, uint32_t& hi) {
  lo = Tr<T>::fix(__byte_perm(x, 0u, 0x1404));
  hi = Tr<T>::fix(__byte_perm(x, 0u, 0x3424));
}

}  // namespace pd
