// `grouped` for fp8 head_dim-64 KV (GPT-OSS) with a CTA per two adjacent KV heads, a
// warpgroup per head. Why: one head's token is 64 bytes, half of a 128-byte line, and the
// eleventh session's ncu put grouped_wg_kernel at 77 % of DRAM with one stage in flight
// per CTA; the tenth session's read microbenchmark (bench/kv_read_granularity.cu) read
// 64-byte rows at 2.31-2.66 TB/s and 128-byte rows at 2.67-3.01 TB/s. Here a TMA box reads
// both heads' rows of a page (128 bytes a token), one conversion pass of all 256 threads
// makes both heads' fp16 K and V tiles (head w's are block w of the head_dim-128 layout),
// and warpgroup w computes head w's 64 rows exactly as grouped_wg_kernel<64> does.
//
// Not the launch's default: it runs when PD_WG_PAIR is set at build time or in the
// environment, and hkv is even (kernels/NOTES.md, eleventh session: written without device
// time left; measure it against grouped_wg_kernel before making it the default).
#pragma once

#include "grouped_wg.cuh"

#ifndef PD_WG_PAIR
#define PD_WG_PAIR 0
#endif

namespace pd {

struct WPairCfg {
  static constexpr int HEADS = 2;                // KV heads per CTA (grid.y = hkv / 2)
  static constexpr int D = 64;
  static constexpr int NT = HEADS * 128;
  static constexpr int TILE = 64;                // rows per head
  static constexpr int BN = 64;                  // tokens per stage
  static constexpr int ROW = HEADS * D;          // raw bytes of one token's two heads
  static constexpr int NS = 4;                   // raw ring depth, NS - 1 stages in flight
  static constexpr int RAW_HALF = BN * ROW;      // K (or V) of one stage
  static constexpr int RAW = 2 * RAW_HALF;
  static constexpr int KC = BN * ROW * 2;        // fp16 K of both heads ([64 tok][128 B] each)
  static constexpr int CONV = 2 * KC;            // + V
  static constexpr int BAR_OFF = CONV + NS * RAW;
  static constexpr int SMEM = 1024 + BAR_OFF + NS * 8;  // 1024: alignment slack
  // TMA boxes (kv_tma.cuh) of both heads' rows (HEADS x 64 bytes), unswizzled (raw_off).
  static constexpr bool KV_MAP = true, TMA = true, TMA_SW128 = false;
  static constexpr int TMA_HEAD_BYTES = D;
  static_assert(2 * (SMEM + 1024) <= 228 * 1024, "two CTAs per SM: four warpgroups, as grouped_wg_kernel<64>");
};

// Whether head_dim-64 fp8 full 64-row tiles take the head-pair kernel (build define or
// environment switch PD_WG_PAIR).
inline bool wg_pair_enabled() {
  static const bool on = PD_WG_PAIR || env_switch("PD_WG_PAIR");
  return on;
}

template <typename TQ>
__global__ void __launch_bounds__(WPairCfg::NT, 1)
    grouped_wg_pair_kernel(const Params p, const __grid_constant__ CUtensorMap kv_map) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  planted_cta_begin();
  using C = WPairCfg;
  extern __shared__ __align__(1024) uint8_t smem_pair_base[];
  const uint32_t base_u32 = smem_u32(smem_pair_base);
  uint8_t* smem = smem_pair_base + (((base_u32 + 1023u) & ~1023u) - base_u32);
  uint8_t* ring = smem + C::CONV;
  const uint32_t full_u32 = smem_u32(smem + C::BAR_OFF);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, cq = lane & 3;
  const int wg = __shfl_sync(0xffffffffu, warp >> 2, 0), wl = warp & 3;
  const TileRange t = cta_tile(p, C::TILE, C::BN);  // t.h: the head pair
  const int h = C::HEADS * t.h + wg;                 // this warpgroup's KV head
  using Ring = TmaRing<C::BN, C::NS, C::RAW>;
  Ring::init(full_u32, p);

  // Rows of this thread: warp wl of the warpgroup owns rows 16 wl..16 wl+15 of its head's tile.
  const int r0 = t.row0 + wl * 16 + g, r1 = r0 + 8;
  const int lim0 = row_limit(p, t, r0), lim1 = row_limit(p, t, r1);
  uint32_t qa[C::D / 16][4];
  wg_load_q<C::D, TQ, __half>(qa, p, t.b, h, t.rows, r0, r1, cq);

  // Stages of both heads' rows (one box for K, one for V per page; TmaRing, kv_tma.cuh).
  Ring kv(&kv_map, p, t, C::ROW, ring, full_u32);

  float o[C::D / 8][4];
  zero(o);
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  const float sc = p.scale_log2;
  const uint32_t kc_u32 = smem_u32(smem) + wg * (C::BN * 128), vc_u32 = kc_u32 + C::KC;

  constexpr int LA = C::NS - 1;
  __syncthreads();  // the mbarriers' initialisation
  for (int s = 0; s < LA && s < t.ntiles; ++s) kv.issue(s);
  for (int it = 0; it < t.ntiles; ++it) {
    // Raw stage it landed and both warpgroups are done with the fp16 tiles (their P V of
    // stage it-1 was waited for); stage it+LA goes into the slot converted last iteration.
    kv.wait(it);
    __syncthreads();
    if (it + LA < t.ntiles) kv.issue(it + LA);
    // Both heads: the head_dim-128 pass, whose 64-column blocks are the two heads' tiles.
    wg_convert_stage<C::ROW, C::NT>(kv.slot(it), smem, tid, t, it);
    __syncthreads();
    float s[8][4];
    wg_qk<__half, C::D>(s, qa, kc_u32);
    wg_wait();
    wg_softmax_pv<__half, C::D>(s, o, vc_u32, t.t_begin + (it + 1) * C::BN > t.mask_from, t.t_begin + it * C::BN,
                                cq, lim0, lim1, sc, m0, m1, l0, l1);
    wg_wait();
  }
  wg_store<C::D, TQ>(p, o, l0, l1, m0, m1, r0, r1, t.rows, t.row0 + t.nrows, t.split, t.b, h, cq);
#else
  __trap();  // launched only on sm_90 devices (wg_supported), where the sm_90a code runs
#endif
}

}  // namespace pd
