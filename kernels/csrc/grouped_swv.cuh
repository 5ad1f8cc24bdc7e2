// grouped_sw_kernel's 96-row form (fp8 KV, head_dim 128, Qwen3 q_len 8) with V^T made by the
// producer. Why: ncu showed grouped_sw_kernel latency-bound (issue slots 42 %, 0.62 eligible
// warps per scheduler): each consumer warpgroup's stage is one serial chain, S^T -> column
// softmax -> P store -> V loads and conversion -> P V, waited for at the next stage's top,
// and the V fragments (32 registers) leave no room to keep P V in flight. Here
// - the producer warpgroup, after a stage's bytes land, converts its fp8 V into fp16 V^T in
//   shared memory (swv_convert_v: stmatrix.trans, the in-kernel transpose FlashAttention-3
//   describes), in O^T's permuted row order, so P V is an all-shared-memory wgmma and the
//   consumers do no V work at all;
// - a consumer leaves P V of stage it in flight under the softmax of its next stage (it + 2):
//   the loop top waits for S^T only, and P V is waited for after the softmax (or before a
//   raise rescales O), just before P is overwritten.
// Rings, each handed over with mbarriers: NSR raw fp8 stages (FR: landed, ER: S^T read K;
// the producer reads V itself before reusing a slot) and NSV fp16 V^T stages (FV: written,
// EV: that stage's P V completed). The softmax, Q's e4m3 hi/lo parts and the epilogue are
// grouped_sw_kernel's (grouped_sw.cuh).
#pragma once

#include <utility>

#include "grouped_sw.cuh"

namespace pd {

#ifndef PD_SWV_NSR
#define PD_SWV_NSR 5
#endif
#ifndef PD_SWV_LAG
#define PD_SWV_LAG 2
#endif
#ifndef PD_SWV_UNROLL
#define PD_SWV_UNROLL 1
#endif
constexpr int kSwvUnroll = PD_SWV_UNROLL;  // #pragma unroll does not expand macros
// Timing probes, wrong results: PD_SWV_PROBE_NO_CVT skips the producer's V^T conversion;
// PD_SWV_PROBE_WAIT0 waits for P V at the loop top (no overlap with the softmax).

template <int D, int N>
struct SwvCfg {
  static_assert(D == 128 && N == 96, "the 96-row form of grouped_sw_kernel only");
  static constexpr int NC = 2;                   // consumer warpgroups, alternate stages
  static constexpr int NT = (NC + 1) * 128;
  static constexpr int MIN_CTAS = 1;
  static constexpr int P_REGS = 40;
  static constexpr int C_REGS = 232;             // (65536 / 384 rounded to 8) * 384 - 128 * 40, / 256
  static_assert(128 * P_REGS + NC * 128 * C_REGS <= NT * (65536 / NT / 8 * 8), "register file");
  static constexpr int BN = 64;
  static constexpr int RAW_HALF = BN * D;        // fp8 K (or V) of one stage
  static constexpr int RAW = 2 * RAW_HALF;
  static constexpr int CPR = D / 16;
  // Ring depths. Producer step k issues stage k, then finishes stage k - LAG (FR, then its
  // V^T). A consumer at the end of stage it waits for FR(it + 2), which needs ER(it + 2 + LAG
  // - NSR) released: that must be a stage whose S^T has already been waited for by then, so
  // NSR >= LAG + 3; and V^T stage it + 1 - NSV's P V must be known complete by the other
  // warpgroup's stage it - 1: NSV >= 4 (bench/swv_protocol_model.py checks both).
  static constexpr int NSR = PD_SWV_NSR;
  static constexpr int LAG = PD_SWV_LAG;
  static constexpr int NSV = 4;
  static_assert(NSR >= LAG + 3 && LAG >= 0, "raw ring depth against the producer's lag");
  static constexpr int VT = D * BN * 2;          // one fp16 V^T stage: [128 rows][64 tok]
  static constexpr int QB = 2 * N * D;           // e4m3 Q^T hi and lo (sw_load_q)
  static constexpr int PB = N * BN * 2;          // one warpgroup's P^T: [N][64 tok] fp16
  static constexpr int RED = 4 * N * 4;
  static constexpr int MC = 2 * N * 4 + 16;
  static constexpr int P_OFF = QB;
  static constexpr int RING_OFF = P_OFF + NC * PB;
  static constexpr int VT_OFF = RING_OFF + NSR * RAW;
  static constexpr int RED_OFF = VT_OFF + NSV * VT;
  static constexpr int MC_OFF = RED_OFF + NC * RED;
  static constexpr int BAR_OFF = MC_OFF + NC * MC;
  static constexpr int SMEM = 1024 + BAR_OFF + 2 * (NSR + NSV) * 8;
  static_assert(QB % 1024 == 0 && PB % 1024 == 0 && RAW % 1024 == 0, "wgmma operands need 1024-byte alignment");
  static_assert(D * N * 4 <= QB + NC * PB, "the merge buffer reuses Q and P");
  static_assert(SMEM <= 227 * 1024, "shared memory per CTA");
};

// A raw stage's fp8 V ([64 tok][128 B], sw_off) -> fp16 V^T at vt ([128 rows][64 tok], 128-byte
// swizzle), rows in O^T's permuted order: row 64e + 16wl + 8h + g holds head_dim
// 32wl + 4g + 2e + h (sw_load_v's). Producer warp wl writes the 32 rows of its wl: per 8-token
// block one 8-byte load per lane (head_dim 32wl + 8q.., i.e. g = 2q and 2q + 1, all e and h),
// two byte permutes, four conversions and one stmatrix.x4.trans (matrix 2e + h, its row g).
__device__ __forceinline__ void swv_convert_v(uint32_t vt, const uint8_t* rv, int wl, int lane) {
  const int q = lane & 3, r = lane >> 2;  // source: token 8 tb + r
  const int i = lane >> 3, c = lane & 7;  // destination: row c of matrix i = 2e + h
  const uint32_t row = vt + (64 * (i >> 1) + 16 * wl + 8 * (i & 1) + c) * 128;
#pragma unroll kSwvUnroll  // unrolled, the hoisted loads spill the 40-register producer
  for (int tb = 0; tb < 8; ++tb) {
    const uint2 w = *reinterpret_cast<const uint2*>(rv + sw_off(8 * tb + r, 2 * wl + (q >> 1)) + 8 * (q & 1));
    uint32_t x0, x1, x2, x3;
    sw_cvt4(__byte_perm(w.x, w.y, 0x5140), x0, x1);  // (g, g+1) pairs of e = 0: h = 0, 1
    sw_cvt4(__byte_perm(w.x, w.y, 0x7362), x2, x3);  // e = 1
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(row + ((tb ^ c) << 4)),
                 "r"(x0), "r"(x1), "r"(x2), "r"(x3)
                 : "memory");
  }
}

// O^T += V^T P^T of one stage: two 64-row halves of V^T times P^T, four k16 steps each.
template <int N, int... KK>
__device__ __forceinline__ void swv_issue_pv(float (&o)[2][N / 8][4], uint32_t vt_lo, uint32_t p_lo,
                                             std::integer_sequence<int, KK...>) {
  (wg_mma_ss16<N, (KK >> 2) * 8192 + (KK & 3) * 32, (KK & 3) * 32>(o[KK >> 2], vt_lo, p_lo), ...);
}

template <int D, int N, typename TQ>
__global__ void __launch_bounds__(SwvCfg<D, N>::NT, 1) grouped_swv_kernel(const Params p, int tile) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  planted_cta_begin();
  using C = SwvCfg<D, N>;
  constexpr int E = D / 64;
  extern __shared__ __align__(1024) uint8_t smem_swv_base[];
  const uint32_t base_u32 = smem_u32(smem_swv_base);
  uint8_t* sm = smem_swv_base + (((base_u32 + 1023u) & ~1023u) - base_u32);
  uint8_t* ring = sm + C::RING_OFF;
  const uint32_t vt_u32 = smem_u32(sm + C::VT_OFF);
  const uint32_t fr = smem_u32(sm + C::BAR_OFF), er = fr + C::NSR * 8, fv = er + C::NSR * 8, ev = fv + C::NSV * 8;
  const TileRange t = cta_tile(p, tile, C::BN);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (tid < C::NSR) {
    mbar_init(fr + tid * 8, 128);  // the producer threads
    mbar_init(er + tid * 8, 4);    // lane 0 of each warp of the stage's warpgroup
  } else if (tid >= 32 && tid < 32 + C::NSV) {
    mbar_init(fv + (tid - 32) * 8, 128);
    mbar_init(ev + (tid - 32) * 8, 4);
  }
  if (tid < C::NC) *reinterpret_cast<int*>(sm + C::MC_OFF + tid * C::MC) = 0;  // buffer 0 current
  for (int i = tid; i < C::NC * N; i += C::NT)
    reinterpret_cast<float*>(sm + C::MC_OFF + (i / N) * C::MC + 16)[i % N] = -INFINITY;
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  __syncthreads();

  if (warp >= C::NC * 4) {
    // Producer. Step k: stage k into raw slot k % NSR once ER says S^T of stage k - NSR read
    // it, then finish stage k - LAG (its copies landed): FR, then its V^T into slot
    // (k - LAG) % NSV once EV says that slot's previous P V completed. A raw slot's V is read
    // here before the slot is reused: finish(j) precedes step j + NSR with a producer barrier
    // (finish(j + 1)'s) in between, as NSR >= LAG + 2.
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(C::P_REGS) : "memory");
    KvStream<128, C::CPR, C::BN> kv(p, t, D);
    kv.tid = tid - C::NC * 128;
    const int pw = warp - C::NC * 4;
    auto finish = [&](int j) {
      fence_async_smem();  // this thread's landed bytes, visible to wgmma (async proxy)
      mbar_arrive(fr + (j % C::NSR) * 8);
      wg_bar(4, 128);      // every producer thread's copies of stage j landed
      if (j >= C::NSV) mbar_wait(ev + (j % C::NSV) * 8, ((j / C::NSV) - 1) & 1);
#ifndef PD_SWV_PROBE_NO_CVT
      swv_convert_v(vt_u32 + (j % C::NSV) * C::VT, ring + (j % C::NSR) * C::RAW + C::RAW_HALF, pw, lane);
#endif
      fence_async_smem();
      mbar_arrive(fv + (j % C::NSV) * 8);
    };
    if (t.ntiles > 0) kv.fetch(0);
#pragma unroll 1
    for (int k = 0; k < t.ntiles; ++k) {
      const int slot = k % C::NSR;
      if (k >= C::NSR) mbar_wait(er + slot * 8, ((k / C::NSR) - 1) & 1);
      kv.load(k, ring + slot * C::RAW, C::RAW_HALF, [](int r, int c) { return sw_off(r, c); });
      cp_async_commit();
      if (k + 1 < t.ntiles) kv.fetch(k + 1);
      cp_async_wait<C::LAG>();
      if (k >= C::LAG) finish(k - C::LAG);
    }
    cp_async_wait<0>();
#pragma unroll 1
    for (int k = t.ntiles > C::LAG ? t.ntiles - C::LAG : 0; k < t.ntiles; ++k) finish(k);
#ifdef HARNESS_PLANTED_SLOWDOWN
    __syncthreads();  // pairs with the consumers' final one
#endif
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(C::C_REGS) : "memory");
  const int wg = warp >> 2, wl = warp & 3, g = lane >> 2, cq = lane & 3;
  const int bar_wg = 2 + wg;  // named barrier of this warpgroup (1: all consumers, 4: producer)
  const int ctid = tid & 127;
  const float q_scale = sw_load_q<D, N, TQ>(sm, reinterpret_cast<float*>(sm + C::RED_OFF), p, t, tid, C::NC * 128);
  for (int i = tid; i < C::NC * C::PB / 16; i += C::NC * 128)  // zero: the dummy P V's B (issue_pv)
    reinterpret_cast<uint4*>(sm + C::P_OFF)[i] = make_uint4(0, 0, 0, 0);
  fence_async_smem();
  wg_bar(1, C::NC * 128);

  const uint32_t p_u32 = smem_u32(sm + C::P_OFF + wg * C::PB);
  float* red = reinterpret_cast<float*>(sm + C::RED_OFF + wg * C::RED);
  float* const mcb = reinterpret_cast<float*>(sm + C::MC_OFF + wg * C::MC + 16);
  float* mc = mcb;
  const float sc = p.scale_log2 * q_scale;
  float o[E][N / 8][4];
#pragma unroll
  for (int e = 0; e < E; ++e) zero(o[e]);
  float l[N / 8][2];
#pragma unroll
  for (int j = 0; j < N / 8; ++j) l[j][0] = l[j][1] = 0.f;
  // O's zeroing stays ahead of the first wgmma (inside its pipeline stage ptxas serializes
  // every wgmma, C7515).
#pragma unroll
  for (int e = 0; e < E; ++e)
#pragma unroll
    for (int j = 0; j < N / 8; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) asm volatile("" : "+f"(o[e][j][c]));

  float s[N / 8][4];
  const uint32_t ring_lo = wg_lo(smem_u32(ring)), q_lo = wg_lo(smem_u32(sm)), p_lo = wg_lo(p_u32);
  const uint32_t vt_lo = wg_lo(vt_u32);
  auto issue_s = [&](int it) {
    sw_issue_s<N>(s, ring_lo + (it % C::NSR) * (C::RAW >> 4), q_lo, std::make_integer_sequence<int, 8>{});
  };
  // O^T += V^T P^T of stage `it`. Stage wg - 2 (before the first) is a dummy with the same
  // shape, so the loop has one body: V^T from the P buffers (always finite fp16) times this
  // warpgroup's P buffer, still zero, adds 0. Why: the first stage peeled out of the loop
  // kept ~70 bytes more live across it and spilled.
  const uint32_t dummy_lo = wg_lo(smem_u32(sm + C::P_OFF));
  auto vt_at = [&](int it) { return it >= 0 ? vt_lo + (it % C::NSV) * (C::VT >> 4) : dummy_lo; };
  auto issue_pv = [&](uint32_t a_lo) { swv_issue_pv<N>(o, a_lo, p_lo, std::make_integer_sequence<int, 8>{}); };
  // Before P V of stage `it` is issued: its V^T written, P complete in all four warps (the
  // barrier also orders this stage's maxima reads before the next stage's writes).
  auto pv_ready = [&](int it) {
    if (it >= 0) mbar_wait(fv + (it % C::NSV) * 8, (it / C::NSV) & 1);
    fence_async_smem();
    wg_bar(bar_wg, 128);
  };
  // Stage it: S^T issued with P V of stage it - 2, the softmax under that P V, then P stored
  // once P V is done. S^T is issued and waited for in one iteration: across the loop's back
  // edge ptxas loses track of the commit groups and serializes every wgmma (C7514).
#pragma unroll 1
  for (int it = wg; it < t.ntiles; it += C::NC) {
    const int pv = it - C::NC;
    const uint32_t a_lo = vt_at(pv);  // ahead of the wgmmas: a branch among them serializes (C7519)
    mbar_wait(fr + (it % C::NSR) * 8, (it / C::NSR) & 1);
    pv_ready(pv);
    wg_fence();
    issue_s(it);
    wg_commit();
    issue_pv(a_lo);
    wg_commit();
#ifdef PD_SWV_PROBE_WAIT0
    wg_wait<0>();
#else
    wg_wait<1>();  // S^T of stage it; P V of stage it - 2 may still run, under this softmax
#endif
    __syncwarp();
    if (lane == 0) mbar_arrive(er + (it % C::NSR) * 8);  // K read
    sw_softmax<N, E, C::BN, true>(s, o, l, mc, mcb, red, sc, p, t, it, wl, g, cq, ctid, bar_wg);
    wg_wait<0>();  // P V of stage it - 2: the P buffer and that V^T slot are free
    __syncwarp();
    if (pv >= 0 && lane == 0) mbar_arrive(ev + (pv % C::NSV) * 8);
    sw_store_p<N>(s, p_u32, wl, lane);
  }
  if (wg < t.ntiles) {
    const int last = wg + (t.ntiles - 1 - wg) / C::NC * C::NC;
    const uint32_t a_lo = vt_at(last);
    pv_ready(last);
    wg_fence();
    issue_pv(a_lo);
    wg_commit();
    wg_wait<0>();
  }
  sw_epilogue<C, D, N, TQ>(p, t, sm, o, l, red, wg, wl, g, cq, ctid);
#ifdef HARNESS_PLANTED_SLOWDOWN
  __syncthreads();  // every store of this CTA precedes its count
  if (threadIdx.x == 0) planted_end();
#endif
#else
  __trap();  // launched only on sm_90 devices (wg_supported), where the sm_90a code runs
#endif
}

// Whether the 96-row fp8 tiles take this kernel rather than grouped_sw_kernel: unless
// PD_NO_SWV is set (A/B runs).
inline bool swv_enabled() {
  static const bool on = !env_switch("PD_NO_SWV");
  return on;
}

template <int D, int N, typename TQ>
cudaError_t launch_grouped_swv(const Params& p, int tile, cudaStream_t st) {
  return launch_tiles<SwvCfg<D, N>, grouped_swv_kernel<D, N, TQ>>(p, st, tile);
}

}  // namespace pd
