// `grouped` for fp8 e4m3 KV on sm_90a with the KV tokens as the MMA's M dimension ("swapped"
// operands): S^T = K Q^T and O^T = V^T P^T. Why: in Q K^T form the rows are wgmma's M,
// padded to 64 (Qwen3 q_len 8: 96 rows computed as 128), and both K and V are its B
// operand, which must sit in shared memory as fp16: grouped_ws.cuh converts every stage
// and both consumer warpgroups read all of it (128 KB of shared-memory traffic per 64-token
// stage; 46 % of DRAM bandwidth on Qwen3 fp8 q_len 8). Swapped, the rows are wgmma's N,
// exactly 96 (or 48: Qwen3 q_len 4, on mma.sync before), and:
// - K is S^T's A operand and V^T O^T's, both from registers: each thread converts the fp8
//   bytes it loads straight into fp16 A fragments, against Q^T and P^T (fp16) in shared
//   memory. Until the ninth session K went through a per-warpgroup fp16 buffer; from
//   registers it saves 32 KB of shared-memory traffic per stage (4-6 % at q_len 8 batch
//   16-64). Not e4m3 wgmmas straight from the raw stage (8-14 % faster, sixth session):
//   Hopper's fp8 MMA accumulates with too few bits once scores grow (kernels/NOTES.md, the
//   ramp cases).
//
// Layout tricks: O^T's rows (head_dim) are permuted so a thread's V^T fragment is 4
// contiguous bytes of each of its tokens, and its output is contiguous; S^T's contraction
// (head_dim) is permuted so a thread's K fragments are 32 contiguous bytes of each of its
// tokens (Q^T is stored in that order, sw_k_pos); the raw stages' 16-byte chunks are
// XOR-swizzled (sw_off, wgmma's 128-byte swizzle), so those loads are conflict-free. P^T
// goes through shared memory (stmatrix.trans, 128-byte-swizzled K-major) as the B operand
// of O^T += V^T P^T.
//
// Structure: one producer warpgroup streams raw fp8 stages (TMA boxes issued by a few lanes
// of one warp, kv_tma.cuh; cp.async by all 128 in the 48-row form), mbarrier FULL/EMPTY;
// NC consumer warpgroups take alternate stages, each with its own online softmax (merged at
// the end); each issues P V of its stage, converts its next stage's K under it, then issues
// that stage's S^T, so the tensor cores get both while the other warpgroup runs its
// softmax. The softmax runs down the columns (a column is one query row, spread over the
// warpgroup's 4 warps), so the running maximum is shared through shared memory; it is only
// raised when some score exceeds it by more than 2^8 (bar.red.or decides,
// warpgroup-wide), the rescaling trick FlashAttention-4 describes, so most stages need no
// exchange. S^T's accumulators start at minus the running maxima (sw_preload_max) and, in
// the 96-row form, Q carries the softmax scale, so the MMA hands the softmax the
// exponential's argument itself (fourteenth session).
#pragma once

#include <type_traits>
#include <utility>

#include "grouped_ws.cuh"
#include "kv_tma.cuh"

namespace pd {

// The softmax raises a column's running maximum as softmax_step (grouped_parts.cuh) raises a
// row's: only past 2^PD_SW_RAISE, from the finite kNoMax.
// Ring depth of the 96-row form (one CTA per SM): 8 (128 KB) measured 0.5-1 % faster than 6;
// 10 (room since K needs no fp16 buffer) no faster than 8 (ninth session).
#ifndef PD_SW_NS
#define PD_SW_NS 8
#endif
// The 48-row form reads by cp.async unless PD_SW48_TMA is set: there TMA measured 3-4 %
// slower on split grids (Qwen3 q_len 4 batch 8 and 16) and 1 % faster unsplit (batch 64).
// 1: the 96-row form stores Q times the softmax scale (SwCfg::QSCALE), so S^T comes out of
// the MMA in the exponential's units; 0: Q as it is everywhere, S^T in raw units, the scale
// applied per score. See SwCfg::QSCALE for the trade.
#ifndef PD_SW_QSCALE
#define PD_SW_QSCALE 1
#endif
#ifndef PD_SW48_TMA
#define PD_SW48_TMA 0
#endif
#ifndef PD_SW48_LAZY
#define PD_SW48_LAZY 0
#endif

template <int D, int N>
struct SwCfg {
  // head_dim 128 only: a head_dim-64 form (GPT-OSS q_len 8, three CTAs per SM) lost to
  // grouped_wg_kernel (kernels/NOTES.md) and was removed.
  static_assert(D == 128, "head_dim");
  // Over 64 rows (Qwen3 q_len 8): two consumer warpgroups, one CTA per SM. Up to 64 rows
  // (Qwen3 q_len 4): one, two CTAs per SM — the cost model's occupancy for those tiles
  // (kernels/plan.py).
  static constexpr int NC = N > 64 ? 2 : 1;
  static constexpr int NT = (NC + 1) * 128;
  static constexpr int MIN_CTAS = NC == 2 ? 1 : 2;
  // setmaxnreg split of the registers each thread gets at launch.
  static constexpr int LAUNCH_REGS = (65536 / MIN_CTAS / NT) / 8 * 8;
  // The producer needs few (TMA issue, or the 48-row form's cp.async): 24, the least
  // setmaxnreg allows, gives the 96-row form's consumers 240 instead of 232, 2-3 % faster
  // at Qwen3 q_len 8 batch 32-64 (eleventh session; PD_SW_PREGS overrides it).
#ifdef PD_SW_PREGS
  static constexpr int P_REGS = PD_SW_PREGS;
#else
  static constexpr int P_REGS = 24;
#endif
  static constexpr int C_REGS_FIT = (NT * LAUNCH_REGS - 128 * P_REGS) / (NC * 128) / 8 * 8;
  static constexpr int C_REGS = C_REGS_FIT < 240 ? C_REGS_FIT : 240;
  // The next stage's raw K loaded before the softmax, not after P V's issue: 1.7-2.2 % faster
  // in the 48-row form (216 registers per consumer, room to spare); at 96 rows the 16 more
  // live registers made q_len 8 up to 5 % slower (twelfth session).
  static constexpr bool K_EARLY = N <= 48;
  // Q times the softmax scale in fp16 takes the per-score multiply off the softmax's path:
  // Qwen3 fp8 q_len 8 0.966-0.987x; applied per score instead, 0.991-1.038x (fourteenth
  // session). The price is one fp16 rounding of q sc, which Q alone (fp16, or bf16 made
  // fp16) does not have: on the self-check's steepest ramp (max logit ~117) the 96-row
  // form's max error rose from 1.47e-2 (the baseline's) to 1.67e-2. The 48-row form gained
  // nothing from it (0.995-1.001x) and lost precision (1.9e-3 -> 5.2e-3 on its ramp case),
  // so it keeps Q as it is.
  static constexpr bool QSCALE = PD_SW_QSCALE && N > 48;
  // The lazy first pass (sw_pass_again) at 96 rows only: the 48-row form spilled 40 bytes
  // with it and ran 1.001-1.006x (thirtieth session).
  static constexpr bool LAZY = N > 48 || PD_SW48_LAZY;
  static constexpr int BN = 64;                  // tokens per stage
  static constexpr int RAW_HALF = BN * D;        // fp8 K (or V) of one stage
  static constexpr int RAW = 2 * RAW_HALF;
  static constexpr int NS = NC == 2 ? PD_SW_NS : 4;  // ring depth (4: two CTAs per SM)
  // KV by TMA boxes (kv_tma.cuh; 4-6 % faster at 96 rows) or by the producers' cp.async;
  // the kernel takes the tensor map either way. Boxes: one head's 128-byte rows, swizzled.
  static constexpr bool TMA = N > 48 || PD_SW48_TMA;
  static constexpr bool KV_MAP = true, TMA_SW128 = true;
  static constexpr int TMA_HEAD_BYTES = D;
  static constexpr int CPR = D / 16;             // 16-byte chunks per raw row
  static constexpr int QB = N * D * 2;           // fp16 Q^T operand: D/64 blocks of [N][128 B]
  static constexpr int PB = N * BN * 2;          // one warpgroup's P^T: [N][64 tok] fp16
  static constexpr int RED = 4 * N * 4;          // one warpgroup's 4 warps' column maxima/sums
  static constexpr int MC = 4 * N * 4 + 16;      // one warpgroup's running maxima per column, two
                                                 // buffers (raised ones go to the other), their
                                                 // S^T preloads (the same two), + which
  static constexpr int P_OFF = QB;
  static constexpr int RING_OFF = P_OFF + NC * PB;
  static constexpr int RED_OFF = RING_OFF + NS * RAW;
  static constexpr int MC_OFF = RED_OFF + NC * RED;
  static constexpr int BAR_OFF = MC_OFF + NC * MC;
  static constexpr int SMEM = 1024 + BAR_OFF + 2 * NS * 8;
  static_assert(QB % 1024 == 0 && PB % 1024 == 0, "wgmma operands need 1024-byte alignment");
  static_assert(NC == 1 || D * N * 4 <= QB + NC * PB, "the merge buffer reuses Q and P");
  static_assert(N == 48 || N == 96, "rows per tile: the two forms launch_tile dispatches");
  static_assert(MIN_CTAS * (SMEM + 1024) <= 228 * 1024, "shared memory per SM");
};

// Raw fp8 row r (a token, 128 bytes), 16-byte chunk c: XOR-swizzled so both the K loads
// (16-byte chunks of 2 rows per 8 lanes) and the V^T fragment loads (4 bytes of 4 rows per
// chunk) hit distinct banks.
__device__ __forceinline__ int sw_off(int r, int c) { return r * 128 + ((c ^ (r & 7)) << 4); }

#define PD_SWRS48 "{\n.reg .pred p;\n.reg .b32 tb;\n.reg .b64 db;\n" \
  "setp.ne.b32 p, %29, 0;\nadd.u32 tb, %28, %30;\nmov.b64 db, {tb, 1073741888};\n" \
  "wgmma.mma_async.sync.aligned.m64n48k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23}, {%24, %25, %26, %27}, db, p, 1, 1, 0;\n}\n"
#define PD_SW48_OUT "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3])
#define PD_SW48_NEW "=f"(d[0][0]), "=f"(d[0][1]), "=f"(d[0][2]), "=f"(d[0][3]), "=f"(d[1][0]), "=f"(d[1][1]), "=f"(d[1][2]), "=f"(d[1][3]), "=f"(d[2][0]), "=f"(d[2][1]), "=f"(d[2][2]), "=f"(d[2][3]), "=f"(d[3][0]), "=f"(d[3][1]), "=f"(d[3][2]), "=f"(d[3][3]), "=f"(d[4][0]), "=f"(d[4][1]), "=f"(d[4][2]), "=f"(d[4][3]), "=f"(d[5][0]), "=f"(d[5][1]), "=f"(d[5][2]), "=f"(d[5][3])
#define PD_SWRS96 "{\n.reg .pred p;\n.reg .b32 tb;\n.reg .b64 db;\n" \
  "setp.ne.b32 p, %53, 0;\nadd.u32 tb, %52, %54;\nmov.b64 db, {tb, 1073741888};\n" \
  "wgmma.mma_async.sync.aligned.m64n96k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}, {%48, %49, %50, %51}, db, p, 1, 1, 0;\n}\n"
#define PD_SW96_OUT "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3])
#define PD_SW96_NEW "=f"(d[0][0]), "=f"(d[0][1]), "=f"(d[0][2]), "=f"(d[0][3]), "=f"(d[1][0]), "=f"(d[1][1]), "=f"(d[1][2]), "=f"(d[1][3]), "=f"(d[2][0]), "=f"(d[2][1]), "=f"(d[2][2]), "=f"(d[2][3]), "=f"(d[3][0]), "=f"(d[3][1]), "=f"(d[3][2]), "=f"(d[3][3]), "=f"(d[4][0]), "=f"(d[4][1]), "=f"(d[4][2]), "=f"(d[4][3]), "=f"(d[5][0]), "=f"(d[5][1]), "=f"(d[5][2]), "=f"(d[5][3]), "=f"(d[6][0]), "=f"(d[6][1]), "=f"(d[6][2]), "=f"(d[6][3]), "=f"(d[7][0]), "=f"(d[7][1]), "=f"(d[7][2]), "=f"(d[7][3]), "=f"(d[8][0]), "=f"(d[8][1]), "=f"(d[8][2]), "=f"(d[8][3]), "=f"(d[9][0]), "=f"(d[9][1]), "=f"(d[9][2]), "=f"(d[9][3]), "=f"(d[10][0]), "=f"(d[10][1]), "=f"(d[10][2]), "=f"(d[10][3]), "=f"(d[11][0]), "=f"(d[11][1]), "=f"(d[11][2]), "=f"(d[11][3])

// wgmma m64nNk16, fp16 in, fp32 accumulators, A from registers, B from shared memory
// (K-major, 128-byte swizzle, 8-row groups 1024 B apart): S^T = K Q^T (K converted from the
// raw stage straight into A fragments) and O^T += V^T P^T. B is given as the descriptor's
// low word (wg_lo) plus a compile-time byte offset, added inside the asm so the compiler
// does not hoist one 64-bit descriptor per k-step out of the loop.
__device__ __forceinline__ uint32_t wg_lo(uint32_t addr) { return (addr >> 4) | (1u << 16); }

#define PD_SW_RS(NN, OUTS, SCALE) \
  asm volatile(PD_SWRS##NN : OUTS : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b_lo), "r"(SCALE), "n"(OB >> 4) : "memory")
template <int N, int OB>
__device__ __forceinline__ void wg_mma_rs(float (&d)[N / 8][4], const uint32_t (&a)[4], uint32_t b_lo, bool accumulate) {
  // Without `accumulate` d is overwritten: its old values are not inputs (need not stay live).
  if (accumulate) {
    if constexpr (N == 48) PD_SW_RS(48, PD_SW48_OUT, 1);
    else PD_SW_RS(96, PD_SW96_OUT, 1);
  } else {
    if constexpr (N == 48) PD_SW_RS(48, PD_SW48_NEW, 0);
    else PD_SW_RS(96, PD_SW96_NEW, 0);
  }
}
#undef PD_SW_RS

#undef PD_SWRS48
#undef PD_SW48_OUT
#undef PD_SW48_NEW
#undef PD_SWRS96
#undef PD_SW96_OUT
#undef PD_SW96_NEW

// S^T = K Q^T of one stage, one wgmma per 16 head_dim columns KK (issued, not committed):
// K as A fragments (sw_k_frags), Q^T [N][D] in D/64 swizzled blocks.
// PRE: the first k-step adds onto s as it is (the column maxima preloaded, sw_preload_max)
// instead of overwriting it.
template <int N, bool PRE, int... KK>
__device__ __forceinline__ void sw_issue_s(float (&s)[N / 8][4], const uint32_t (&kf)[sizeof...(KK)][4],
                                           uint32_t q_lo, std::integer_sequence<int, KK...>) {
  (wg_mma_rs<N, (KK >> 2) * (N * 128) + (KK & 3) * 32>(s, kf[KK], q_lo, PRE || KK > 0), ...);
}

// Named barrier `id` over n threads.
__device__ __forceinline__ void wg_bar(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }

// S^T's contraction runs over head_dim in a permuted order, so a thread's K A fragments are
// 32 contiguous raw bytes of each of its tokens (sw_k_frags): logical k = 16 kk + r, with
// r in {2cq, 2cq+1, 2cq+8, 2cq+9}, is physical head_dim 32 cq + 4 kk + {0, 1, 2, 3}.
// Position of physical head_dim h in the logical order:
__device__ __forceinline__ int sw_k_pos(int h) {
  const int cq = h >> 5, kk = (h >> 2) & 7, t = h & 3;
  return 16 * kk + 2 * cq + (t & 1) + 8 * (t >> 1);
}

// Q of the tile's N rows (zero past nrows; with QS times the softmax scale sc, log2 units,
// k_scale folded in), as fp16 in that order: the K-major B operand of S^T, D/64 blocks of [N rows]
// [128 B], 128-byte swizzled. With sc in Q, S^T comes out of the MMA in the exponential's
// units (SwCfg::QSCALE). Four physical head_dims are two logical pairs; once per CTA, by NTH
// threads. Every load is issued before the first store: loaded and stored item by item, each
// load waited for the store before it (the compiler cannot tell q from the shared tile), 12
// global latencies in a row per CTA; Q then reached shared memory 6.6 µs after a Qwen3
// q_len 8 CTA's start under full DRAM load, 4.2 µs now (fifteenth session).
template <int D, int N, typename TQ, bool QS, int NTH>
__device__ __forceinline__ void sw_load_q(uint8_t* qs, const Params& p, const TileRange& t, int tid) {
  constexpr int ITEMS = N * (D / 4), PER = (ITEMS + NTH - 1) / NTH;
  uint2 w[PER];
#pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int idx = tid + i * NTH, n = idx / (D / 4), h = 4 * (idx % (D / 4));
    w[i] = make_uint2(0u, 0u);
    if ((ITEMS % NTH == 0 || idx < ITEMS) && n < t.nrows)
      w[i] = *reinterpret_cast<const uint2*>(q_row<D, TQ>(p, t.b, t.h, t.row0 + n) + h);
  }
  const float sc = QS ? p.scale_log2 : 1.f;
#pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int idx = tid + i * NTH, n = idx / (D / 4), h = 4 * (idx % (D / 4));
    if (ITEMS % NTH != 0 && idx >= ITEMS) continue;
    const float2 a = Tr<TQ>::unpack(w[i].x), b = Tr<TQ>::unpack(w[i].y);  // zeros stay zeros
    const uint32_t lo = Tr<__half>::pack(a.x * sc, a.y * sc), hi = Tr<__half>::pack(b.x * sc, b.y * sc);
    auto at = [&](int kl) {
      const int c = (kl & 63) >> 3;
      return reinterpret_cast<uint32_t*>(qs + (kl >> 6) * (N * 128) + n * 128 + ((c ^ (n & 7)) << 4) + (kl & 7) * 2);
    };
    const int kl = sw_k_pos(h);  // h, h+1 -> kl, kl+1; h+2, h+3 -> kl+8, kl+9
    *at(kl) = lo;
    *at(kl + 8) = hi;
  }
}

// K of tokens wl*16 + g and +8 of a raw stage as S^T's A fragments for the 8 k-steps: the
// thread's 32 bytes (chunks 2cq, 2cq+1) of each token (sw_k_raw), word kk giving (a0|a1,
// a2|a3) of step kk (sw_k_pos's order; sw_k_cvt).
__device__ __forceinline__ void sw_k_raw(uint4 (&kr)[2][2], const uint8_t* rk, int wl, int g, int cq) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int i = wl * 16 + g + 8 * h;
    kr[h][0] = *reinterpret_cast<const uint4*>(rk + sw_off(i, 2 * cq));
    kr[h][1] = *reinterpret_cast<const uint4*>(rk + sw_off(i, 2 * cq + 1));
  }
}
__device__ __forceinline__ void sw_k_cvt(uint32_t (&kf)[8][4], const uint4 (&kr)[2][2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint32_t w[8] = {kr[h][0].x, kr[h][0].y, kr[h][0].z, kr[h][0].w,
                           kr[h][1].x, kr[h][1].y, kr[h][1].z, kr[h][1].w};
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) e4m3x4_to_half2x2(w[kk], kf[kk][h], kf[kk][2 + h]);
  }
}
__device__ __forceinline__ void sw_k_frags(uint32_t (&kf)[8][4], const uint8_t* rk, int wl, int g, int cq) {
  uint4 kr[2][2];
  sw_k_raw(kr, rk, wl, g, cq);
  sw_k_cvt(kf, kr);
}

// V of a raw stage for the A fragments of O^T += V^T P^T: the thread's 4 bytes of tokens
// ia = 16 kt + 2 cq + 8 hh and ia + 1, [k16 step][hh][token]. Logical O^T row
// (e, 16 wl + g + 8 h) is physical head_dim 4 (8 wl + g) + 2 e + h.
__device__ __forceinline__ void sw_load_v(uint32_t (&vr)[4][2][2], const uint8_t* rv, int wl, int g, int cq) {
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int ia = kt * 16 + 2 * cq + 8 * hh, ib = ia + 1;
      const int c = 2 * wl + (g >> 2), o = (g & 3) * 4;
      vr[kt][hh][0] = *reinterpret_cast<const uint32_t*>(rv + sw_off(ia, c) + o);
      vr[kt][hh][1] = *reinterpret_cast<const uint32_t*>(rv + sw_off(ib, c) + o);
    }
  }
}

// Those bytes of tokens at or past `valid` (the last stage's, past the CTA's range) as zeros:
// the TMA read whole pages, or none, there (kv_tma.cuh), and P = 0 times a NaN is NaN.
__device__ __forceinline__ void sw_zero_v_tail(uint32_t (&vr)[4][2][2], int valid, int cq) {
#pragma unroll
  for (int kt = 0; kt < 4; ++kt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh)
#pragma unroll
      for (int u = 0; u < 2; ++u)
        if (kt * 16 + 2 * cq + 8 * hh + u >= valid) vr[kt][hh][u] = 0u;
}

// Those bytes as fp16 A fragments: [k16 step][head_dim half][4].
__device__ __forceinline__ void sw_cvt_v(uint32_t (&va)[4][2][4], const uint32_t (&vr)[4][2][2]) {
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const uint32_t a = vr[kt][hh][0], b = vr[kt][hh][1];
      // (a0 b0) (a1 b1), (a2 b2) (a3 b3): the token pair of each byte
      e4m3x4_to_half2x2(__byte_perm(a, b, 0x5140), va[kt][0][2 * hh], va[kt][0][2 * hh + 1]);
      e4m3x4_to_half2x2(__byte_perm(a, b, 0x7362), va[kt][1][2 * hh], va[kt][1][2 * hh + 1]);
    }
  }
}

// Whether any thread of the n at named barrier `id` passes `pred` (and a barrier). The count
// is an operand, not the immediate 128 of before: the builds timed in the thirtieth session
// were scheduled with it (an immediate reorders a few dozen instructions of the 96-row loop).
__device__ __forceinline__ bool bar_any(bool pred, int id, int n) {
  uint32_t r;
  asm volatile(
      "{\n.reg .pred pi, po;\nsetp.ne.u32 pi, %1, 0;\nbar.red.or.pred po, %2, %3, pi;\nselp.u32 %0, 1, 0, po;\n}\n"
      : "=r"(r)
      : "r"((uint32_t)pred), "r"(id), "r"(n)
      : "memory");
  return r != 0;
}
// The same over one warpgroup.
__device__ __forceinline__ bool wg_any(bool pred, int id) { return bar_any(pred, id, 128); }

// The lazy softmax's second chance (sw_softmax, SwCfg::LAZY). Why: the raise check and its
// warpgroup vote cost ~4 % of a Qwen3 q_len 8 stage, and a per-stage redo path kept none of
// that (kernels/NOTES.md, twenty-ninth session). A range whose maxima stay within 2^16 of
// the first stage's (the common case) runs one pass with neither; one that does not shows
// it in O, and the whole CTA (producer included) runs the range again with the eager
// softmax, twice the time for that CTA.
//
// sw_pass_again is the CTA's vote after a pass (every thread; `again` from the consumers).
// If it says so, both sides run the ring through its empty stages (sw_ring_round) and meet
// at sw_ring_ready. The ring is not re-armed (mbarrier inval + init): racecheck reported that
// re-arm against the producer's expect_tx (kernels/NOTES.md, thirtieth session).
__device__ __forceinline__ bool sw_pass_again(bool again) {
  __syncthreads();
  return __syncthreads_or(again);
}
__device__ __forceinline__ void sw_ring_ready() { __syncthreads(); }
// Stages a pass rounds its ring up to before a second one: a multiple of 2 NS, after which
// every slot's FULL and EMPTY have completed an even number of phases, as at the start.
template <class C>
__device__ __forceinline__ int sw_ring_round(int ntiles) {
  return (ntiles + 2 * C::NS - 1) / (2 * C::NS) * (2 * C::NS);
}

// P (the S^T accumulators, fp32) as fp16 into the warpgroup's K-major [N][64 tok] buffer.
template <int N>
__device__ __forceinline__ void sw_store_p(const float (&s)[N / 8][4], uint32_t p_u32, int wl, int lane) {
  const int mi = lane >> 3, r = lane & 7;
  const uint32_t row = p_u32 + (8 * (mi >> 1) + r) * 128 + (((2 * wl + (mi & 1)) ^ r) << 4);
#pragma unroll
  for (int j = 0; j < N / 8; j += 2) {
    const uint32_t r0 = Tr<__half>::pack(s[j][0], s[j][1]), r1 = Tr<__half>::pack(s[j][2], s[j][3]);
    const uint32_t r2 = Tr<__half>::pack(s[j + 1][0], s[j + 1][1]), r3 = Tr<__half>::pack(s[j + 1][2], s[j + 1][3]);
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(row + j * 1024),
                 "r"(r0), "r"(r1), "r"(r2), "r"(r3)
                 : "memory");
  }
}

// S^T's accumulators preloaded with minus the running maxima of the thread's columns (the
// current buffer's preloads, 2N floats after its maxima at mc: -m, or -m / sc without
// SwCfg::QSCALE): the MMA then yields s sc - m (or s - m / sc), so neither the raise check
// nor the exponentials need a per-column value, and these loads and copies sit before the
// S^T issue, off the softmax's path.
template <int N, int NJ>
__device__ __forceinline__ void sw_preload_max(float (&s)[NJ][4], const float* mc, int cq) {
#pragma unroll
  for (int j = 0; j < NJ; ++j) {
    const float2 nm = *reinterpret_cast<const float2*>(mc + 2 * N + 8 * j + 2 * cq);
    s[j][0] = s[j][2] = nm.x;
    s[j][1] = s[j][3] = nm.y;
  }
}

// The causal tail of a stage masked: scores of tokens past a column's row limit as -inf.
template <int N, int BN>
__device__ __forceinline__ void sw_mask(float (&s)[N / 8][4], const Params& p, const TileRange& t, int it, int wl,
                                        int g, int cq) {
  constexpr int NJ = N / 8;
  // Rows of this thread: tokens tok0 and tok0 + 8.
  const int tok0 = t.t_begin + it * BN + wl * 16 + g;
  if (t.t_begin + (it + 1) * BN > t.mask_from) {
#pragma unroll
    for (int j = 0; j < NJ; ++j)
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        const int lim = row_limit(p, t, t.row0 + 8 * j + 2 * cq + b);
        if (tok0 > lim) s[j][b] = -INFINITY;
        if (tok0 + 8 > lim) s[j][2 + b] = -INFINITY;
      }
  }
}

// Whether any of this thread's scores (s sc - m) exceeds thr = PD_SW_RAISE (or, in raw
// units, PD_SW_RAISE / sc), i.e. its exponential would pass 2^PD_SW_RAISE.
template <int N>
__device__ __forceinline__ bool sw_over(const float (&s)[N / 8][4], float thr) {
  constexpr int NJ = N / 8;
  // Four independent predicate chains (one would serialize NJ compare-and-ors).
  bool raise[4] = {false, false, false, false};
#pragma unroll
  for (int j = 0; j < NJ; ++j) raise[j & 3] |= (fmaxf(s[j][0], s[j][2]) > thr) | (fmaxf(s[j][1], s[j][3]) > thr);
  return raise[0] | raise[1] | raise[2] | raise[3];
}

// Some score of the warpgroup would pass 2^PD_SW_RAISE: the warps' column maxima
// exchanged (through red, with a barrier), the maxima raised into the other buffer (mc then
// points at it), O and l rescaled, and S^T -> P in place (fp32), added to l.
template <int N, int E, bool QS>
__device__ __forceinline__ void sw_raise(float (&s)[N / 8][4], float (&o)[E][N / 8][4], float (&l)[N / 8][2],
                                         bool first, float sc, float*& mc, float* const mcb, float* red, int wl,
                                         int g, int cq, int ctid, int bar_wg) {
  constexpr int NJ = N / 8;
#pragma unroll
  for (int j = 0; j < NJ; ++j) {
    float x0 = fmaxf(s[j][0], s[j][2]), x1 = fmaxf(s[j][1], s[j][3]);
#pragma unroll
    for (int sh = 4; sh < 32; sh <<= 1) {
      x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, sh));
      x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, sh));
    }
    if (g == 0) *reinterpret_cast<float2*>(red + wl * N + 8 * j + 2 * cq) = make_float2(x0, x1);
  }
  wg_bar(bar_wg, 128);
  float* const mnew = mc == mcb ? mcb + N : mcb;  // last read before this stage's P barrier
#pragma unroll
  for (int j = 0; j < NJ; ++j) {
    const float2 mo = *reinterpret_cast<const float2*>(mc + 8 * j + 2 * cq);
    float2 x = *reinterpret_cast<const float2*>(red + 8 * j + 2 * cq);
#pragma unroll
    for (int w = 1; w < 4; ++w) {
      const float2 y = *reinterpret_cast<const float2*>(red + w * N + 8 * j + 2 * cq);
      x.x = fmaxf(x.x, y.x);
      x.y = fmaxf(x.y, y.y);
    }
    // s holds s sc - pre (raw: s - pre / sc): pre = 0 on the warpgroup's first stage
    // (nothing preloaded, the maxima still kNoMax), the running maximum mo after it. The new
    // maximum never falls.
    const float mo0 = mo.x, mo1 = mo.y, u = QS ? 1.f : sc;
    const float pre0 = first ? 0.f : mo0, pre1 = first ? 0.f : mo1;
    const float m0 = fmaxf(mo0, fmaf(x.x, u, pre0)), m1 = fmaxf(mo1, fmaf(x.y, u, pre1));  // finite (kNoMax)
    if (wl == 0 && g == 0) {
      *reinterpret_cast<float2*>(mnew + 8 * j + 2 * cq) = make_float2(m0, m1);
      *reinterpret_cast<float2*>(mnew + 2 * N + 8 * j + 2 * cq) =
          QS ? make_float2(-m0, -m1) : make_float2(__fdividef(-m0, sc), __fdividef(-m1, sc));
    }
    const float c0 = ex2(mo0 - m0), c1 = ex2(mo1 - m1);
    const float d0 = pre0 - m0, d1 = pre1 - m1;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      o[e][j][0] *= c0; o[e][j][2] *= c0;
      o[e][j][1] *= c1; o[e][j][3] *= c1;
    }
    s[j][0] = ex2(fmaf(s[j][0], u, d0));
    s[j][1] = ex2(fmaf(s[j][1], u, d1));
    s[j][2] = ex2(fmaf(s[j][2], u, d0));
    s[j][3] = ex2(fmaf(s[j][3], u, d1));
    l[j][0] = l[j][0] * c0 + s[j][0] + s[j][2];
    l[j][1] = l[j][1] * c1 + s[j][1] + s[j][3];
  }
  mc = mnew;
  if (ctid == 0) *reinterpret_cast<int*>(mcb - 4) = mc == mcb ? 0 : 1;
}

// One stage's softmax down the columns, S^T -> P in place (fp32): s arrives as s sc - m
// (sw_preload_max; on the warpgroup's first stage as s sc; raw units without QS), the
// causal tail is masked, and the running maxima (at mc; raised ones go to the other of the
// two buffers at mcb) move only when some score's exponential would exceed 2^PD_SW_RAISE,
// or on the first stage, rescaling l and O then (sw_raise). Otherwise P = 2^s as it stands.
//
// lazy (the range's first pass, sw_pass_again): past the warpgroup's first stage no check and
// no vote at all; the exponentials come from the maxima as they stand. P, O and l of a
// column then carry one common factor that the final division cancels, as long as every P
// fits fp16; a P that does not is +inf and leaves its whole column of O non-finite, which
// sw_pass_again finds after the loop.
template <int N, int E, int BN, bool QS>
__device__ __forceinline__ void sw_softmax(float (&s)[N / 8][4], float (&o)[E][N / 8][4], float (&l)[N / 8][2],
                                           bool lazy, bool first, float sc, float thr, float*& mc, float* const mcb,
                                           float* red, const Params& p, const TileRange& t, int it, int wl, int g,
                                           int cq, int ctid, int bar_wg) {
  sw_mask<N, BN>(s, p, t, it, wl, g, cq);
  // Lazy past the first stage: not even the check (its maxima would be computed for nothing).
  if (!(lazy && !first) && wg_any(first || sw_over<N>(s, thr), bar_wg)) {
    sw_raise<N, E, QS>(s, o, l, first, sc, mc, mcb, red, wl, g, cq, ctid, bar_wg);
  } else {
#pragma unroll
    for (int j = 0; j < N / 8; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) s[j][c] = ex2(QS ? s[j][c] : s[j][c] * sc);
      l[j][0] += s[j][0] + s[j][2];
      l[j][1] += s[j][1] + s[j][3];
    }
  }
}

// The columns 8 J0 .. 8 (J0 + JH) - 1 of the tile finished by one warpgroup (sw_epilogue;
// warpgroup 1 when J0 > 0): its O merged with the other warpgroup's (`oth`, [e][j - J0][c]
// [thread]; none with one warpgroup) by the two warpgroups' final maxima and column sums, normalised, and written:
// out directly, or the split's partial O and log-sum-exp. In three passes (per-column
// factors, the merge, the stores) so no shared-memory load waits behind a global store: as
// one loop per column it took ~7.7 µs of every Qwen3 q_len 8 CTA (fifteenth session).
template <class C, int D, int N, typename TQ, int J0, int JH>
__device__ __forceinline__ void sw_finish(const Params& p, const TileRange& t, const uint8_t* sm,
                                          float (&o)[D / 64][N / 8][4], const float* oth, int wl, int g, int cq,
                                          int ctid) {
  constexpr int E = D / 64;
  const float* red0 = reinterpret_cast<const float*>(sm + C::RED_OFF);
  // Each warpgroup's final maxima: the buffer its last raise wrote (index before them).
  auto final_max = [&](int w) {
    const float* b = reinterpret_cast<const float*>(sm + C::MC_OFF + w * C::MC + 16);
    return b + N * *reinterpret_cast<const int*>(b - 4);
  };
  const float* mc0 = final_max(0);
  const float* mc1 = final_max(C::NC - 1);
  float a0[JH][2], a1[JH][2], inv[JH][2], lse[JH][2];
#pragma unroll
  for (int jj = 0; jj < JH; ++jj)
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      const int n = 8 * (J0 + jj) + 2 * cq + b;
      float m = mc0[n], lsum = 0.f;
      a0[jj][b] = 1.f;
      a1[jj][b] = 0.f;
#pragma unroll
      for (int w = 0; w < 4; ++w) lsum += red0[w * N + n];
      if constexpr (C::NC == 2) {
        const float mb = mc1[n];
        float lb = 0.f;
#pragma unroll
        for (int w = 0; w < 4; ++w) lb += red0[4 * N + w * N + n];
        const float mm = fmaxf(m, mb);
        a0[jj][b] = ex2(m - mm);  // finite maxima (kNoMax), no -inf test
        a1[jj][b] = ex2(mb - mm);
        lsum = lsum * a0[jj][b] + lb * a1[jj][b];
        m = mm;
      }
      inv[jj][b] = lsum > 0.f ? __fdividef(p.v_scale, lsum) : 0.f;
      lse[jj][b] = lsum > 0.f ? m + __log2f(lsum) : -INFINITY;
    }
  // a0 scales warpgroup 0's O, a1 warpgroup 1's: here o is warpgroup 1's when J0 > 0.
  constexpr bool W1 = C::NC == 2 && J0 > 0;
#pragma unroll
  for (int e = 0; e < E; ++e)
#pragma unroll
    for (int jj = 0; jj < JH; ++jj)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        float x = o[e][J0 + jj][c] * (W1 ? a1 : a0)[jj][c & 1];
        if constexpr (C::NC == 2) x += oth[((e * JH + jj) * 4 + c) * 128 + ctid] * (W1 ? a0 : a1)[jj][c & 1];
        o[e][J0 + jj][c] = x * inv[jj][c & 1];
      }
  // O^T's rows are in the permuted head_dim order (sw_load_v): a thread's four values of a
  // column are contiguous.
  const int d0 = 4 * (8 * wl + g), rtot = p.batch * p.q_len * p.hq;
  auto out_row = [&](int n) {
    const int r = t.row0 + n;
    return (size_t)(t.b * p.q_len + r / p.group) * p.hq + t.h * p.group + r % p.group;
  };
  // f(jj, b, n) for each of the thread's columns n of the tile's rows; the split test
  // outside, so each loop is branch-free.
  auto each_column = [&](auto&& f) {
#pragma unroll
    for (int jj = 0; jj < JH; ++jj)
#pragma unroll
      for (int b = 0; b < 2; ++b)
        if (const int n = 8 * (J0 + jj) + 2 * cq + b; n < t.nrows) f(jj, b, n);
  };
  if (p.num_splits == 1) {
    each_column([&](int jj, int b, int n) {
      TQ* dst = static_cast<TQ*>(p.out) + out_row(n) * D + d0;
      *reinterpret_cast<uint2*>(dst) = make_uint2(Tr<TQ>::pack(o[0][J0 + jj][b], o[0][J0 + jj][b + 2]),
                                                  Tr<TQ>::pack(o[1][J0 + jj][b], o[1][J0 + jj][b + 2]));
    });
  } else {
    each_column([&](int jj, int b, int n) {
      const size_t row = (size_t)t.split * rtot + out_row(n);
      *reinterpret_cast<float4*>(p.ws_o + row * D + d0) =
          make_float4(o[0][J0 + jj][b], o[0][J0 + jj][b + 2], o[1][J0 + jj][b], o[1][J0 + jj][b + 2]);
      if (wl == 0 && g == 0) p.ws_lse[row] = lse[jj][b];
    });
  }
}

// After the loop: each warpgroup's column sums, then the tile's columns finished (sw_finish):
// with two warpgroups, each finishes half of them, taking the other's O of that half
// through shared memory (over Q and P, free by then).
template <class C, int D, int N, typename TQ>
__device__ __forceinline__ void sw_epilogue(const Params& p, const TileRange& t, uint8_t* sm,
                                            float (&o)[D / 64][N / 8][4], float (&l)[N / 8][2], float* red, int wg,
                                            int wl, int g, int cq, int ctid) {
  constexpr int NJ = N / 8, E = D / 64;
  static_assert(E == 2, "sw_finish's stores take two head_dim halves");
  // Column sums of l over the warpgroup: lanes, then warps through `red`.
#pragma unroll
  for (int j = 0; j < NJ; ++j)
#pragma unroll
    for (int b = 0; b < 2; ++b)
#pragma unroll
      for (int sh = 4; sh < 32; sh <<= 1) l[j][b] += __shfl_xor_sync(0xffffffffu, l[j][b], sh);
  if (g == 0)
#pragma unroll
    for (int j = 0; j < NJ; ++j) *reinterpret_cast<float2*>(red + wl * N + 8 * j + 2 * cq) = make_float2(l[j][0], l[j][1]);
  if constexpr (C::NC == 2) {
    constexpr int JH = NJ / 2, REGION = E * JH * 4 * 128;  // floats of one handed-over half
    static_assert(2 * REGION * 4 <= C::QB + C::NC * C::PB, "the hand-over reuses Q and P");
    float* ob = reinterpret_cast<float*>(sm);  // region w: what warpgroup w finishes, from the other
    wg_bar(1, C::NC * 128);                    // both loops done: Q and P are free
    PD_TL(9, threadIdx.x == 0);
    // Warpgroup 0 finishes columns 0 .. JH - 1 and hands over the rest; warpgroup 1 the other
    // way round (constant register indices in both branches).
    auto hand_over = [&](auto j_from, float* dst) {
#pragma unroll
      for (int e = 0; e < E; ++e)
#pragma unroll
        for (int jj = 0; jj < JH; ++jj)
#pragma unroll
          for (int c = 0; c < 4; ++c) dst[((e * JH + jj) * 4 + c) * 128 + ctid] = o[e][decltype(j_from)::value + jj][c];
    };
    if (wg == 0) hand_over(std::integral_constant<int, JH>{}, ob + REGION);
    else hand_over(std::integral_constant<int, 0>{}, ob);
    wg_bar(1, C::NC * 128);
    PD_TL(10, threadIdx.x == 0);
    if (wg == 0) sw_finish<C, D, N, TQ, 0, JH>(p, t, sm, o, ob, wl, g, cq, ctid);
    else sw_finish<C, D, N, TQ, JH, JH>(p, t, sm, o, ob + REGION, wl, g, cq, ctid);
  } else {
    wg_bar(1, 128);
    sw_finish<C, D, N, TQ, 0, NJ>(p, t, sm, o, nullptr, wl, g, cq, ctid);
  }
}

// Every consumer lane arrives on a slot's EMPTY (128 arrivals), not lane 0 of each warp after
// __syncwarp: with one lane's arrive releasing the warp's reads, racecheck reported the
// 48-row form's cp.async producer writing a slot the other lanes had read (when the ring
// wraps); with every lane's, none, and Qwen3 fp8 q_len 4 and 8 ran 0.997-1.004x
// (nineteenth session). PD_SW_EMPTY_ALL=0 builds keep the one-lane arrive.
#ifndef PD_SW_EMPTY_ALL
#define PD_SW_EMPTY_ALL 1
#endif

template <int D, int N, typename TQ>
__global__ void __launch_bounds__(SwCfg<D, N>::NT, SwCfg<D, N>::MIN_CTAS) grouped_sw_kernel(const Params p, int tile,
                                                                                  const __grid_constant__ CUtensorMap kv_map) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  planted_cta_begin();
  PD_TL(0, threadIdx.x == 0);
#ifdef PD_TIMELINE
  if (threadIdx.x == 0) pd_tl_smid();
#endif
  using C = SwCfg<D, N>;
  constexpr int NJ = N / 8, E = D / 64;
  extern __shared__ __align__(1024) uint8_t smem_sw_base[];
  const uint32_t base_u32 = smem_u32(smem_sw_base);
  uint8_t* sm = smem_sw_base + (((base_u32 + 1023u) & ~1023u) - base_u32);
  uint8_t* ring = sm + C::RING_OFF;
  const uint32_t full_u32 = smem_u32(sm + C::BAR_OFF), empty_u32 = full_u32 + C::NS * 8;
  const TileRange t = cta_tile(p, tile, C::BN);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // The running maxima as a pass over the range starts (again for sw_pass_again's second
  // pass, by its `n` threads from thread 0).
  auto reset_maxima = [&](int n) {
    if (tid < C::NC) *reinterpret_cast<int*>(sm + C::MC_OFF + tid * C::MC) = 0;  // buffer 0 current
    for (int i = tid; i < C::NC * N; i += n)  // the first stage raises from kNoMax
      reinterpret_cast<float*>(sm + C::MC_OFF + (i / N) * C::MC + 16)[i % N] = kNoMax;
  };
  if (tid < C::NS) {
    mbar_init(full_u32 + tid * 8, C::TMA ? KvTma<C::BN>::arrivals(p) : 128);  // page owners or producers
    mbar_init(empty_u32 + tid * 8, PD_SW_EMPTY_ALL ? 128 : 4);  // the stage's warpgroup
  }
  reset_maxima(C::NT);
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  // A second pass runs the stage loops as they are: sw_ring_round's empty stages first put
  // the ring back at the parities the pass's stage k expects in slot k % NS.
  const int ring_end = sw_ring_round<C>(t.ntiles);
  __syncthreads();

  if (warp >= C::NC * 4) {
    // Producer: stage it into slot it % NS once the warpgroup that read stage it-NS freed it.
    // Lanes of one warp issue the TMA boxes, a page each (kv_tma.cuh); FULL(k) completes when
    // stage k's bytes have landed, so every ring slot can be in flight. The rest idle.
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(C::P_REGS) : "memory");
    // The range again, from its start, when the consumers' lazy pass asks for it
    // (sw_pass_again): after the vote, the ring's empty stages, then a barrier with them.
#pragma unroll 1
    do {
      if constexpr (C::TMA) {
        KvTma<C::BN, true> kv(&kv_map, p, t, D, warp == C::NC * 4 ? lane : C::BN);  // lane j: page j
        if (kv.owner()) {
#pragma unroll 1
          for (int k = 0; k < t.ntiles; ++k) {
            const int slot = k % C::NS;
            if (k >= C::NS) mbar_wait(empty_u32 + slot * 8, ((k / C::NS) - 1) & 1);
            kv.issue(k, ring + slot * C::RAW, C::RAW_HALF, full_u32 + slot * 8);
            PD_TL(6, k == 0 && lane == 0);
            PD_TL(7, k == C::NS - 1 && lane == 0);
          }
        }
      } else {
        // cp.async by all 128 producer threads: FULL(k) arrives by itself when this thread's
        // copies of stage k have landed (cp.async's mbarrier arrive), so the producer never
        // waits for its own copies. Page numbers are fetched a stage ahead.
        KvStream<128, C::CPR, C::BN> kv(p, t, D);
        kv.tid = tid - C::NC * 128;
        if (t.ntiles > 0) kv.fetch(0);
#pragma unroll 1
        for (int k = 0; k < t.ntiles; ++k) {
          const int slot = k % C::NS;
          if (k >= C::NS) mbar_wait(empty_u32 + slot * 8, ((k / C::NS) - 1) & 1);
          kv.load(k, ring + slot * C::RAW, C::RAW_HALF, [](int r, int c) { return sw_off(r, c); });
          cp_async_mbar_arrive(full_u32 + slot * 8);
          if (k + 1 < t.ntiles) kv.fetch(k + 1);
        }
        cp_async_wait_all();
      }
      __syncwarp();  // the page owners' lanes and the rest meet before the CTA's barriers
      if constexpr (!C::LAZY) {
        break;
      } else {
        if (!sw_pass_again(false)) break;
        // The empty stages (sw_ring_round): FULL with no bytes once the slot is free.
        if (!C::TMA || (warp == C::NC * 4 && KvTma<C::BN>::owns(p, lane))) {  // kv's owners
#pragma unroll 1
          for (int k = t.ntiles; k < ring_end; ++k) {
            const int slot = k % C::NS;
            if (k >= C::NS) mbar_wait(empty_u32 + slot * 8, ((k / C::NS) - 1) & 1);
            if constexpr (C::TMA) mbar_expect_tx(full_u32 + slot * 8, 0u);
            else mbar_arrive(full_u32 + slot * 8);
          }
        }
        __syncwarp();
        sw_ring_ready();
      }
    } while (true);
#ifdef HARNESS_PLANTED_SLOWDOWN
    __syncthreads();  // pairs with the consumers' final one
#endif
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(C::C_REGS) : "memory");
  // wg through a shuffle: provably warp-uniform, so ptxas keeps the wgmma descriptors built
  // from it in uniform registers (no R2UR per wgmma).
  const int wg = __shfl_sync(0xffffffffu, warp >> 2, 0), wl = warp & 3, g = lane >> 2, cq = lane & 3;
  const int bar_wg = 2 + wg;  // named barrier of this warpgroup (1: all consumers)
  const int ctid = tid & 127;
  sw_load_q<D, N, TQ, C::QSCALE, C::NC * 128>(sm, p, t, tid);
  fence_async_smem();
  wg_bar(1, C::NC * 128);
  PD_TL(2, tid == 0);

  const uint32_t q_u32 = smem_u32(sm), p_u32 = smem_u32(sm + C::P_OFF + wg * C::PB);
  float* red = reinterpret_cast<float*>(sm + C::RED_OFF + wg * C::RED);  // [4 warps][N]
  float* const mcb = reinterpret_cast<float*>(sm + C::MC_OFF + wg * C::MC + 16);  // [2][N]
  float* mc = mcb;  // the current buffer (uniform over the warpgroup)
  const float sc = p.scale_log2, thr = C::QSCALE ? float(PD_SW_RAISE) : __fdividef(float(PD_SW_RAISE), sc);
  float o[E][NJ][4];
  float l[NJ][2];
  float s[NJ][4];
  const uint32_t q_lo = wg_lo(q_u32), p_lo = wg_lo(p_u32);
  // K of a stage as S^T's A fragments, straight from the raw stage: no fp16 K buffer to
  // write and read back (32 KB of shared-memory traffic per stage).
  uint32_t kf[D / 16][4];
  // The warpgroup's first S^T overwrites s; later ones add onto the preloaded maxima.
  auto issue_s_first = [&]() { sw_issue_s<N, false>(s, kf, q_lo, std::make_integer_sequence<int, D / 16>{}); };
  auto issue_s = [&]() { sw_issue_s<N, true>(s, kf, q_lo, std::make_integer_sequence<int, D / 16>{}); };
  // The range in one lazy pass (sw_softmax), or if that fails in a second, eager one.
  bool lazy = C::LAZY;
#pragma unroll 1
  for (;;) {
    mc = mcb;
#pragma unroll
    for (int e = 0; e < E; ++e) zero(o[e]);
#pragma unroll
    for (int j = 0; j < NJ; ++j) l[j][0] = l[j][1] = 0.f;
    // Keep O's zeroing ahead of the first wgmma: moved into its pipeline stage, ptxas
    // serializes every wgmma (C7515).
#pragma unroll
    for (int e = 0; e < E; ++e)
#pragma unroll
      for (int j = 0; j < NJ; ++j)
#pragma unroll
        for (int c = 0; c < 4; ++c) asm volatile("" : "+f"(o[e][j][c]));

    if (wg < t.ntiles) {
      mbar_wait(full_u32 + (wg % C::NS) * 8, (wg / C::NS) & 1);
      PD_TL(3, tid == 0);
      sw_k_frags(kf, ring + (wg % C::NS) * C::RAW, wl, g, cq);
      wg_fence();
      issue_s_first();
      wg_commit();
    }
    // Per iteration: S^T of the stage waited for, its softmax, P V issued, the next stage's K
    // converted under it, P V waited for, the next S^T issued. P V and S^T are not in flight
    // together: their register operands (V and K fragments) would not fit beside O, S and l.
    // The other warpgroup's MMAs run under this one's softmax.
#pragma unroll 1
    for (int it = wg; it < t.ntiles; it += C::NC) {
      const int slot = it % C::NS, nx = it + C::NC;
      const uint8_t* rk = ring + slot * C::RAW;
      wg_wait<0>();
      // K_EARLY: the next stage's raw K loaded now, its latency hidden by the softmax.
      uint4 kr[2][2];
      if constexpr (C::K_EARLY) {
        if (nx < t.ntiles) mbar_wait(full_u32 + (nx % C::NS) * 8, (nx / C::NS) & 1);
        sw_k_raw(kr, nx < t.ntiles ? ring + (nx % C::NS) * C::RAW : rk, wl, g, cq);
      }
      sw_softmax<N, E, C::BN, C::QSCALE>(s, o, l, lazy, it == wg, sc, thr, mc, mcb, red, p, t, it, wl, g, cq, ctid,
                                         bar_wg);
      sw_store_p<N>(s, p_u32, wl, lane);
      // V to registers before the barrier: its loads and conversion fill the wait for the
      // warpgroup's slowest warp (1-2 % at q_len 8, kernels/NOTES.md).
      uint32_t vr[4][2][2], va[4][E][4];
      sw_load_v(vr, rk + C::RAW_HALF, wl, g, cq);
      if constexpr (C::TMA)
        if (const int valid = t.t_end - (t.t_begin + it * C::BN); valid < C::BN) sw_zero_v_tail(vr, valid, cq);
      __syncwarp();
      if (PD_SW_EMPTY_ALL || lane == 0) mbar_arrive(empty_u32 + slot * 8);  // K was read in the previous iteration
      sw_cvt_v(va, vr);
      fence_async_smem();   // P, written above, for wgmma (the async proxy)
      wg_bar(bar_wg, 128);  // P complete; orders this stage's maxima reads before the next writes
      wg_fence();
#pragma unroll
      for (int e = 0; e < E; ++e) {
        wg_mma_rs<N, 0>(o[e], va[0][e], p_lo, true);
        wg_mma_rs<N, 32>(o[e], va[1][e], p_lo, true);
        wg_mma_rs<N, 64>(o[e], va[2][e], p_lo, true);
        wg_mma_rs<N, 96>(o[e], va[3][e], p_lo, true);
      }
      wg_commit();
      // Past the last stage: fragments from this stage's slot (not refilled in this pass:
      // stage it + NS does not exist; a second pass starts after a CTA barrier), S^T issued
      // and discarded. A conditional issue serializes (C7520);
      // conditional fragments keep the last ones live through the whole loop, which spills.
      // Not Q's bytes: with those, racecheck reported hazards against the epilogue's writes
      // over Q (ninth session, call 11), though a named barrier orders the two.
      if constexpr (C::K_EARLY) {
        sw_k_cvt(kf, kr);
      } else {
        if (nx < t.ntiles) mbar_wait(full_u32 + (nx % C::NS) * 8, (nx / C::NS) & 1);
        sw_k_frags(kf, nx < t.ntiles ? ring + (nx % C::NS) * C::RAW : rk, wl, g, cq);
      }
      wg_wait<0>();
      sw_preload_max<N>(s, mc, cq);
      wg_fence();
      issue_s();
      wg_commit();
    }
    wg_wait<0>();
    // Every stage was taken and every copy landed; the producer votes too.
    if constexpr (!C::LAZY) {
      break;
    } else {
      if (!sw_pass_again(lazy && nonfinite<E * NJ * 4>(&o[0][0][0]))) break;
      // This warpgroup's empty stages (sw_ring_round, stage r is warpgroup r % NC's): waited
      // for and released.
#pragma unroll 1
      for (int r = t.ntiles + ((wg - t.ntiles) % C::NC + C::NC) % C::NC; r < ring_end; r += C::NC) {
        mbar_wait(full_u32 + (r % C::NS) * 8, (r / C::NS) & 1);
        if (PD_SW_EMPTY_ALL || lane == 0) mbar_arrive(empty_u32 + (r % C::NS) * 8);
      }
      reset_maxima(C::NC * 128);
      sw_ring_ready();  // the ring back at even phases, the maxima reset: the producer starts over
      lazy = false;
    }
  }
  PD_TL(4, tid == 0);
  PD_TL(8, tid == 128);

  sw_epilogue<C, D, N, TQ>(p, t, sm, o, l, red, wg, wl, g, cq, ctid);
  PD_TL(5, tid == 0);
#ifdef HARNESS_PLANTED_SLOWDOWN
  __syncthreads();  // every store of this CTA precedes its count
  if (threadIdx.x == 0) planted_end();
#endif
#else
  __trap();  // launched only on sm_90 devices (wg_supported), where the sm_90a code runs
#endif
}

// Whether fp8 tiles may take this kernel: unless PD_NO_SW is set (used to A/B it against
// grouped_ws_kernel / grouped_wg_kernel).
inline bool sw_enabled() {
  static const bool on = !env_switch("PD_NO_SW");
  return on;
}

}  // namespace pd
