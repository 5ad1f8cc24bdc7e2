// The paged KV cache read by the Tensor Memory Accelerator (sm_90): one TMA box per page and
// K or V, instead of a cp.async per 16-byte chunk per thread. Why: in the fp8 wgmma kernels
// every thread spent ~100 instructions per stage on cp.async page and address math
// (grouped_wg_kernel, where the same warps load and compute, so it sat on the critical path),
// and the swapped kernel's producer warpgroup issued ~130 per stage on every SM
// sub-partition. With TMA a few lanes of one warp issue BN / page_size boxes per K and V.
//
// The map views the cache [num_pages, 2, page_size, hkv, row] as a 3-D byte tensor: rows of
// one token's KV heads (hkv x row bytes), 2 x page_size of them per page (K, then V), pages
// outermost. A box is one head's row bytes x page_size tokens of one page: it lands as
// [page_size][row bytes], rows back to back (or 128-byte swizzled, the swapped kernel's raw
// layout, sw_off). Page ids are int32, so the page extent is declared as 2^31 - 1: TMA only
// reads the boxes asked for, and the pages a table names are the caller's contract.
//
// Tokens past the CTA's range: pages that start past it are not read (their stale bytes
// stay); a partly used page is read whole. K rows there only reach masked scores; V rows
// must be zeroed by the consumer (P = 0 times a NaN byte pattern is NaN), which cp.async's
// zero-fill used to do.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>

#include "grouped_parts.cuh"

namespace pd {

// L2 promotion of the boxes' reads (PD_TMA_L2: 0 none, 1 64 B, 2 128 B, 3 256 B).
#ifndef PD_TMA_L2
#define PD_TMA_L2 2
#endif

// Tensor map of p's cache (`head_bytes` per KV head and token) for boxes of one head's rows x
// page_size tokens; `swizzle128` for 128-byte rows read into the 128-byte-swizzled layout.
// cudaErrorNotSupported when the driver has no cuTensorMapEncodeTiled.
inline cudaError_t encode_kv_map(CUtensorMap* map, const Params& p, int head_bytes, bool swizzle128) {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = nullptr;
  if (!encode) {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess || !fn)
      return cudaErrorNotSupported;
    encode = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }
  const cuuint64_t tok_bytes = (cuuint64_t)p.hkv * head_bytes;
  const cuuint64_t dims[3] = {tok_bytes, (cuuint64_t)2 * p.page_size, (cuuint64_t)0x7FFFFFFF};
  const cuuint64_t strides[2] = {tok_bytes, tok_bytes * 2 * p.page_size};
  const cuuint32_t box[3] = {(cuuint32_t)head_bytes, (cuuint32_t)p.page_size, 1};
  const cuuint32_t unit[3] = {1, 1, 1};
  const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, const_cast<void*>(p.kv), dims, strides, box, unit,
                            CU_TENSOR_MAP_INTERLEAVE_NONE,
                            swizzle128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
                            static_cast<CUtensorMapL2promotion>(PD_TMA_L2), CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

// L2 eviction priority of the grouped kernels' TMA KV reads: evict_first where the launch
// sets p.kv_evict_first (api.cu, kv_evict_first_rule), else none (0: no cache hint). Why:
// each KV byte is read once per CTA, and the lines it pushes out of L2 may be dirty — the
// timing's L2 flush leaves L2 full of them, as a serving step's write-heavy kernels do — so
// their write-back lands in the call. Measured on H100 with the swapped kernel (Qwen3 fp8
// q_len 8; kernels/NOTES.md, sixteenth session): 0.948-0.954x at batch 8 and 0.965-0.979x
// at batch 16 (streams of 2^28 and 2^29 bytes), 0.4-0.6 % slower at batch 40 and 64.
// PD_KV_EVICT: 0 never, 1 the launch's rule, 2 always (A/B builds). Only TMA reads take it
// (hence here, beside KvTma): with ptxas 13.0 a cp.async with a cache policy stopped on an
// illegal instruction at once (ptxas has known cache-policy miscompiles for cp.async,
// triton-lang/triton#11660).
#ifndef PD_KV_EVICT
#define PD_KV_EVICT 1
#endif
__device__ __forceinline__ uint64_t kv_l2_policy(const Params& p) {
  uint64_t pol = 0;
#if PD_KV_EVICT != 0 && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if (PD_KV_EVICT == 2 || p.kv_evict_first)
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
#else
  (void)p;
#endif
  return pol;
}

__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

// One lane of the warp, elected (elect.sync): a branch on it keeps values the warp holds in
// common provably uniform inside.
__device__ __forceinline__ bool elect_one() {
  uint32_t e;
  asm volatile("{\n .reg .pred P;\n elect.sync _|P, 0xffffffff;\n selp.u32 %0, 1, 0, P;\n}\n" : "=r"(e));
  return e != 0;
}

// One box of `map` at (c0, c1, c2) into shared memory at dst; its bytes count on mbarrier bar.
// pol != 0: under that L2 cache policy (kv_l2_policy), else the default one.
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const CUtensorMap* map, int c0, int c1, int c2,
                                            uint32_t bar, uint64_t pol) {
  if (pol != 0)
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1, "
        "{%2, %3, %4}], [%5], %6;\n" ::"r"(dst),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar), "l"(pol)
        : "memory");
  else
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
        "[%5];\n" ::"r"(dst),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
        : "memory");
}

// The stages of one CTA's KV range. Page j of a stage (j < BN / page_size) is owned by one
// thread, which fetches its id two stages ahead (under full DRAM load a page-table read is a
// long wait) and per stage arrives on the stage's FULL mbarrier with the bytes it issues
// (none past the range), so FULL is initialised for BN / page_size arrivals (arrivals()).
// Owners call issue() for stages 0, 1, 2, ... in order; other threads construct it unused.
// EVICT: the boxes under kv_l2_policy where the launch asks for it. Only the swapped kernel's
// producer warp takes it. grouped_wg_kernel (GPT-OSS fp8 q_len 8) measured 0.97-0.99x with it
// at batch 8-16 but 0.99-1.02x at batch 32-40 over four calls, inside that row's spread
// between calls; four alternating rounds in one call found only batch 16 faster (0.986x;
// kernels/NOTES.md, sixteenth session), so it stays as it was.
template <int BN, bool EVICT = false>
struct KvTma {
  static constexpr int kNoPage = 0x7FFFFFFF;  // `tok` of a thread that owns no page
  const CUtensorMap* map;
  const int* pt;
  int col, tok, tok_end, page_shift, page_size;
  uint32_t box_bytes, dst_off;  // one box; the owned page's offset in a stage
  int cur, nxt;  // the owned page of the next stage to issue and of the one after (-1: none)
  uint64_t pol;   // kv_l2_policy: 0, or evict_first

  // `j`: the page of each stage this thread owns (none when j >= BN / page_size).
  __device__ __forceinline__ KvTma(const CUtensorMap* m, const Params& p, const TileRange& t, int row_bytes, int j)
      : map(m),
        pt(p.page_table + (size_t)t.b * p.max_pages),
        col(t.h * row_bytes),
        tok(owns(p, j) ? t.t_begin + j * p.page_size : kNoPage),
        tok_end(t.t_end),
        page_shift(p.page_shift),
        page_size(p.page_size),
        box_bytes((uint32_t)p.page_size * row_bytes),
        dst_off((uint32_t)(j * p.page_size * row_bytes)) {
    if (owner()) asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(m)) : "memory");
    cur = fetch(0);
    nxt = fetch(1);
    pol = EVICT ? kv_l2_policy(p) : 0;
  }

  __device__ static __forceinline__ int arrivals(const Params& p) { return BN >> p.page_shift; }
  // Whether the thread constructed with `j` owns a page of each stage (one of arrivals()).
  __device__ static __forceinline__ bool owns(const Params& p, int j) { return j < arrivals(p); }
  __device__ __forceinline__ bool owner() const { return tok != kNoPage; }

  __device__ __forceinline__ int fetch(int it) const {
    if (!owner()) return -1;
    const int k = tok + it * BN;
    return k < tok_end ? __ldg(pt + (k >> page_shift)) : -1;
  }

  // The owned page of stage `it` into k_dst (K box) and k_dst + v_off (V box), counted on
  // mbarrier `bar`. Owners only.
  __device__ __forceinline__ void issue(int it, uint8_t* k_dst, int v_off, uint32_t bar) {
    put(cur, smem_u32(k_dst) + dst_off, v_off, bar);
    advance(it);
  }
  // issue() by all 32 lanes of a warp whose lanes own the same page (TmaRing): with the page
  // id made provably warp-uniform by a shuffle and one elected lane issuing, the tensor-map
  // operands sit in uniform registers without the waterfall loops (ELECT, R2UR, BRA.U.ANY)
  // that a one-lane divergent region costs the warp. GPT-OSS fp8 q_len 8: 0.993-0.995x
  // (kernels/NOTES.md, thirty-first session).
  __device__ __forceinline__ void issue_warp(int it, uint8_t* k_dst, int v_off, uint32_t bar) {
    const int pg = __shfl_sync(0xffffffffu, cur, 0);
    const uint32_t dst = smem_u32(k_dst) + dst_off;
    if (elect_one()) put(pg, dst, v_off, bar);
    advance(it);
  }

 private:
  // Page pg's K and V boxes (none for pg < 0) into dst and dst + v_off, with their byte count
  // on mbarrier bar.
  __device__ __forceinline__ void put(int pg, uint32_t dst, int v_off, uint32_t bar) {
    mbar_expect_tx(bar, pg >= 0 ? 2u * box_bytes : 0u);
    if (pg >= 0) {
      tma_load_3d(dst, map, col, 0, pg, bar, pol);
      tma_load_3d(dst + v_off, map, col, page_size, pg, bar, pol);
    }
  }
  __device__ __forceinline__ void advance(int it) {
    cur = nxt;
    nxt = fetch(it + 2);
  }
};

// A ring of NS raw stages (RAW bytes each: K, then V at RAW / 2) at `ring`, filled by TMA,
// with one FULL mbarrier per slot at `full`, for kernels whose every warp loads and computes
// (grouped_wg_kernel): every lane of warp j holds page j of each stage, one elected lane
// issues it (KvTma::issue_warp), and everyone waits on the stage's FULL. init() runs before
// the CTA's first barrier.
template <int BN, int NS, int RAW>
struct TmaRing {
  KvTma<BN> kv;
  uint8_t* ring;
  uint32_t full;

  __device__ __forceinline__ TmaRing(const CUtensorMap* m, const Params& p, const TileRange& t, int row_bytes,
                                     uint8_t* ring_, uint32_t full_)
      : kv(m, p, t, row_bytes, __shfl_sync(0xffffffffu, (int)threadIdx.x >> 5, 0)), ring(ring_), full(full_) {}

  __device__ static __forceinline__ void init(uint32_t full, const Params& p) {
    const int tid = threadIdx.x;
    if (tid < NS) mbar_init(full + tid * 8, KvTma<BN>::arrivals(p));  // the page owners
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  // init() again for a balanced grid's second segment (cta_segment), once every thread is
  // past its last wait on them (a barrier) and no copy is in flight: the stage count starts
  // over at 0 instead of being carried (one register fewer through the stage loop).
  __device__ static __forceinline__ void reinit(uint32_t full, const Params& p) {
    if (threadIdx.x < NS) asm volatile("mbarrier.inval.shared::cta.b64 [%0];\n" ::"r"(full + threadIdx.x * 8) : "memory");
    init(full, p);
  }
  __device__ __forceinline__ uint8_t* slot(int it) const { return ring + (it % NS) * RAW; }
  __device__ __forceinline__ uint32_t bar(int it) const { return full + (it % NS) * 8; }
  // Stage it into its slot (the page owners' part of it).
  __device__ __forceinline__ void issue(int it) {
    if (kv.owner()) kv.issue_warp(it, slot(it), RAW / 2, bar(it));  // warp-uniform: warp j owns page j
  }
  // Until stage it has landed.
  __device__ __forceinline__ void wait(int it) const { mbar_wait(bar(it), (it / NS) & 1); }
};

}  // namespace pd
