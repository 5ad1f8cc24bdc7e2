// `grouped` for 128-row tiles at head_dim 128 on sm_90a, warp-specialized (the structure
// FlashAttention-3 describes): a producer warpgroup streams K/V pages into a ring of 64-token
// stages with cp.async (fp8 KV: two producer warpgroups, which also convert each stage into
// fp16 K and V buffers); two consumer warpgroups (64 rows each) run Q K^T, softmax and
// P V on wgmma. setmaxnreg moves registers from the producers (56) to the consumers (224;
// 200 beside fp8's two producer warpgroups): a third warp on an SM sub-partition would
// leave 168 per thread otherwise. Why: grouped_wg16_kernel runs both warpgroups in lockstep
// behind one barrier per stage, so the tensor cores idle through every softmax (ncu: 29 %
// SM throughput, 68 % of DRAM bandwidth on Qwen3 bf16 q_len 8 batch 64). Here
//  - the ring is handed over with mbarriers (FULL: the producer's copies landed; EMPTY: both
//    warpgroups finished with the slot), so no CTA-wide barrier is left in the loop;
//  - each warpgroup issues Q K^T of stage it together with P V of stage it-1 and then does
//    stage it's softmax while the tensor cores work (intra-warpgroup overlap);
//  - the two warpgroups take turns issuing (two named barriers, "ping-pong"), so one
//    warpgroup's softmax runs under the other's MMAs.
#pragma once

#include "grouped_wg.cuh"

namespace pd {

template <int D, bool KV8>
struct WsCfg {
  static constexpr int NWG = 2;                  // consumer warpgroups, 64 rows each
  // Producer warpgroups: fp8 needs two, so the conversion's shared-memory latency hides
  // behind a second warp per SM sub-partition (one lost 2-5 % to the lockstep kernel).
  static constexpr int NP = KV8 ? 256 : 128;
  static constexpr int NT = NWG * 128 + NP;
  // setmaxnreg split of the 64K registers (each sub-partition's 16K over its warps).
  static constexpr int P_REGS = 56;
  static constexpr int C_REGS = KV8 ? 200 : 224;
  static_assert(NP * P_REGS + NWG * 128 * C_REGS <= 65536, "register file");
  static constexpr int TILE = NWG * 64;
  static constexpr int BN = 64;
  static constexpr int ES = KV8 ? 1 : 2;         // bytes per KV element
  static constexpr int RAW_HALF = BN * D * ES;   // K (or V) of one stage as loaded
  static constexpr int RAW = 2 * RAW_HALF;
  static constexpr int NS = KV8 ? 4 : 6;         // ring depth (fp8: only the producer reads it)
  // What the consumers read, NB deep: fp8, fp16 K and V ([64 tok][D] each) buffers
  // the producer converts into; 16-bit, the ring's own slots. V starts BN * D * 2 bytes in.
  static constexpr int NB = KV8 ? 3 : NS;
  static constexpr int BUF = KV8 ? 2 * BN * D * 2 : RAW;
  static constexpr int RING_OFF = KV8 ? NB * BUF : 0;
  static constexpr int CPR = D * ES / 16;        // 16-byte chunks per row
  static constexpr int SMEM = 1024 + RING_OFF + NS * RAW + 2 * NB * 8;  // + slack, mbarriers
  static_assert(SMEM <= 227 * 1024, "shared memory per CTA");
};

// Named barriers 1 and 2 (0 is __syncthreads): the two consumer warpgroups' turns.
__device__ __forceinline__ void turn_wait(int wg) {
  asm volatile("bar.sync %0, 256;\n" ::"r"(1 + wg) : "memory");
}
__device__ __forceinline__ void turn_pass(int wg) {
  asm volatile("bar.arrive %0, 256;\n" ::"r"(2 - wg) : "memory");
}

template <int D, typename TQ, bool KV8>
__global__ void __launch_bounds__(WsCfg<D, KV8>::NT, 1) grouped_ws_kernel(const Params p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  planted_cta_begin();
  using C = WsCfg<D, KV8>;
  using T = std::conditional_t<KV8, __half, TQ>;  // the MMA type (fp8 KV computes in fp16)
  extern __shared__ __align__(1024) uint8_t smem_ws_base[];
  const uint32_t base_u32 = smem_u32(smem_ws_base);
  uint8_t* bufs = smem_ws_base + (((base_u32 + 1023u) & ~1023u) - base_u32);
  uint8_t* ring = bufs + C::RING_OFF;
  const uint32_t bufs_u32 = smem_u32(bufs);
  const uint32_t full_u32 = smem_u32(ring) + C::NS * C::RAW, empty_u32 = full_u32 + C::NB * 8;
  const TileRange t = cta_tile(p, C::TILE, C::BN);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (tid < C::NB) {
    mbar_init(full_u32 + tid * 8, C::NP);    // the producer threads
    mbar_init(empty_u32 + tid * 8, 2 * 4);   // one lane of each consumer warp
  }
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  __syncthreads();

  if (warp >= 2 * 4) {
    // Producer. Buffer it % NB is written once both warpgroups released stage it-NB; FULL is
    // signalled after this thread's copies (fp8: the whole converted stage) are in place.
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(C::P_REGS) : "memory");
    const int ptid = tid - 2 * 128;
    KvStream<C::NP, C::CPR, C::BN> kv(p, t, D * C::ES);
    kv.tid = ptid;
    auto claim = [&](int it) {
      if (it >= C::NB) mbar_wait(empty_u32 + (it % C::NB) * 8, ((it / C::NB) - 1) & 1);
    };
    auto load_stage = [&](int it) {
      if constexpr (!KV8) claim(it);  // 16-bit: the ring slot is the consumers' buffer
      kv.fetch(it);
      if constexpr (KV8)
        kv.load(it, ring + (it % C::NS) * C::RAW, C::RAW_HALF, [](int r, int c) { return raw_off<D>(r, c); });
      else
        kv.load(it, ring + (it % C::NS) * C::RAW, C::RAW_HALF, [](int r, int c) { return wg16_off(r, c); });
    };
#pragma unroll 1
    for (int s = 0; s < C::NS - 1; ++s) {
      if (s < t.ntiles) load_stage(s);
      cp_async_commit();
    }
#pragma unroll 1
    for (int it = 0; it < t.ntiles; ++it) {
      cp_async_wait<C::NS - 2>();
      if constexpr (KV8) {
        // Every producer thread's copies of stage it landed, and all finished converting
        // stage it-1, whose raw slot the next load reuses.
        asm volatile("bar.sync 3, %0;\n" ::"n"(C::NP) : "memory");
        if (it + C::NS - 1 < t.ntiles) load_stage(it + C::NS - 1);
        cp_async_commit();
        claim(it);
        wg_convert<D, C::NP>(ring + (it % C::NS) * C::RAW, bufs + (it % C::NB) * C::BUF, ptid);
        mbar_arrive(full_u32 + (it % C::NB) * 8);
      } else {
        fence_async_smem();
        mbar_arrive(full_u32 + (it % C::NB) * 8);
        if (it + C::NS - 1 < t.ntiles) load_stage(it + C::NS - 1);
        cp_async_commit();
      }
    }
#ifdef HARNESS_PLANTED_SLOWDOWN
    __syncthreads();  // pairs with planted_cta_end's
#endif
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(C::C_REGS) : "memory");
  const int wg = warp >> 2;
  const int g = lane >> 2, cq = lane & 3;
  const int r0 = t.row0 + warp * 16 + g, r1 = r0 + 8;
  const int lim0 = row_limit(p, t, r0), lim1 = row_limit(p, t, r1);
  uint32_t qa[D / 16][4];
  wg_load_q<D, TQ, T>(qa, p, t.b, t.h, t.rows, r0, r1, cq);
  float o[D / 8][4];
  zero(o);
  RowStats ml;
  ml.m0 = ml.m1 = -INFINITY;  // softmax_p raises at every new maximum, from -inf
  const float sc = p.scale_log2;
  auto k_at = [&](int it) { return bufs_u32 + (it % C::NB) * C::BUF; };
  auto v_at = [&](int it) { return k_at(it) + C::BN * D * 2; };
  auto masked = [&](int it) { return t.t_begin + (it + 1) * C::BN > t.mask_from; };

  if (t.ntiles > 0) {
    if (wg == 1) turn_pass(wg);  // warpgroup 0 issues first
    float s[8][4];
    uint32_t pa[4][4];
    float c0, c1;
    mbar_wait(full_u32, 0);
    turn_wait(wg);
    wg_qk<T, D>(s, qa, k_at(0));
    turn_pass(wg);
    wg_wait<0>();
    softmax_p(s, masked(0), t.t_begin, cq, lim0, lim1, sc, ml.m0, ml.m1, ml.l0, ml.l1, c0, c1);
    wg_pack_p<T>(s, pa);
#pragma unroll 1
    for (int it = 1; it < t.ntiles; ++it) {
      mbar_wait(full_u32 + (it % C::NB) * 8, (it / C::NB) & 1);
      turn_wait(wg);
      wg_qk<T, D>(s, qa, k_at(it));              // its own fence and commit group
      wg_pv<T, D>(o, pa, v_at(it - 1));
      wg_commit();
      turn_pass(wg);
      wg_wait<1>();                              // S of stage it
      softmax_p(s, masked(it), t.t_begin + it * C::BN, cq, lim0, lim1, sc, ml.m0, ml.m1, ml.l0, ml.l1, c0, c1);
      wg_wait<0>();                              // P V of stage it-1: its buffer is free
      __syncwarp();
      if (lane == 0) mbar_arrive(empty_u32 + ((it - 1) % C::NB) * 8);
      rescale(o, c0, c1);
      wg_pack_p<T>(s, pa);
    }
    turn_wait(wg);
    wg_fence();
    wg_pv<T, D>(o, pa, v_at(t.ntiles - 1));
    wg_commit();
    if (wg == 0) turn_pass(wg);  // warpgroup 1's last turn is never waited for
    wg_wait<0>();
  }
  wg_store<D, TQ>(p, o, ml, r0, r1, t, cq);
  planted_cta_end();
#else
  __trap();  // launched only on sm_90 devices (wg_supported), where the sm_90a code runs
#endif
}

// Whether 128-row head_dim-128 tiles take this kernel (else grouped_wg16_kernel or
// grouped_wg_kernel): unless PD_NO_WS is set (used to A/B them).
inline bool ws_enabled() {
  static const bool on = !env_switch("PD_NO_WS");
  return on;
}

}  // namespace pd
