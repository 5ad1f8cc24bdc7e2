// `grouped` on Hopper tensor cores (sm_90a, wgmma): the same contract and grid as
// grouped.cuh, for row tiles of 128 or a full 64 (one or two warpgroups of 64 rows) and
// head_dim 64/128 — the large-tile cases where the mma.sync kernel is bound by its
// ldmatrix -> (convert ->) mma chain (kernels/NOTES.md). Two kernels: grouped_wg_kernel for
// fp8 e4m3 KV, grouped_wg16_kernel for bf16/fp16 KV.
//
// fp8, per 64-token stage: TMA boxes (one per page and K or V, issued by one lane of a warp
// per page, kv_tma.cuh) bring the raw fp8 K/V into an NS-deep ring; all threads convert each
// stage once into fp16 tiles in the canonical 128-byte-swizzled layout (K and V as
// [token][d]: K the K-major, V the MN-major B operand), double-buffered for head_dim 128;
// each warpgroup issues S = Q K^T (Q as the register A operand) as asynchronous wgmma and,
// while the tensor cores work, converts the next stage (head_dim 128) or this stage's V
// (head_dim 64, single-buffered), then O += P V (P from the S accumulators, whose fragment
// layout is the register A layout; single-buffered, it runs under the next stage's K
// conversion). The conversion happens once per CTA instead of once per warp, and the MMAs
// read shared memory without ldmatrix.
//
// bf16/fp16 KV (grouped_wg16_kernel) needs no conversion: cp.async writes K and V straight
// into the 128-byte-swizzled layout ([64 tok][128 B] blocks); K is the K-major B operand of
// Q K^T, V the MN-major ("transposed") B operand of P V, in a deeper ring (up to 6 stages).
#pragma once

#include <type_traits>
#include <utility>

#include "grouped.cuh"
#include "grouped_parts.cuh"
#include "kv_tma.cuh"

namespace pd {

// 1: the fp8 kernel's lazy first pass (WCfg::LAZY); 0: the eager softmax only.
#ifndef PD_WG_LAZY
#define PD_WG_LAZY 1
#endif
template <int D, int NWG, bool KV8 = true>
struct WCfg {
  static constexpr int NT = NWG * 128;
  static constexpr int TILE = NWG * 64;
  static constexpr int BN = 64;                  // tokens per stage
  static constexpr int ES = KV8 ? 1 : 2;         // bytes per KV element
  // Ring depth. fp8: raw stages (converted into the fp16 buffers below). 16-bit: the stages
  // wgmma reads, as deep as ~200 KB of shared memory per SM allows at this kernel's CTAs/SM.
  static constexpr int NS = KV8 ? 4 : (NWG == 2 ? 6 : (D == 128 ? 3 : 4));
  static constexpr int RAW_HALF = BN * D * ES;   // K (or V) of one stage
  static constexpr int RAW = 2 * RAW_HALF;
  static constexpr int KC = BN * D * 2;          // fp16 K tile, D/64 blocks of [64 tok][128 B]
  static constexpr int VC = BN * D * 2;          // fp16 V tile, the same layout
  static constexpr int CONV = KC + VC;           // one fp16 K + V buffer
  // Two buffers (convert stage it+1 under stage it's Q K^T) for head_dim 128; one for 64,
  // where the smaller footprint keeps a fourth CTA per SM (measured: the double-buffered
  // head_dim-64 kernel lost 20 % at GPT-OSS q_len 8 batch 64, a 1.3-wave grid).
  static constexpr bool DB = D >= 128;
  static constexpr bool SHALLOW = KV8 && !DB;  // lookahead chosen at launch (shallow_lookahead)
  // Four CTAs per SM fit the single-buffered one-warpgroup fp8 kernel's shared memory: its
  // registers are held to 128 so that four fit there too.
  static constexpr int MIN_CTAS = SHALLOW && NWG == 1 ? 4 : 1;
  // fp8 reads by TMA (kv_tma.cuh): boxes of one head's rows, unswizzled (raw_off).
  static constexpr bool KV_MAP = KV8, TMA = KV8, TMA_SW128 = false;
  static constexpr int TMA_HEAD_BYTES = D;
  // fp8: a lazy first pass (wg_tile), in the classic grid's instantiation only: the balanced
  // one's head_dim-64 form spilled 52 bytes with it (thirtieth session).
  static constexpr bool LAZY = KV8 && PD_WG_LAZY;
  static constexpr int CPR = D * ES / 16;        // 16-byte chunks per raw row
  static constexpr int CONV_BYTES = KV8 ? (DB ? 2 : 1) * CONV : 0;
  static constexpr int BAR_OFF = CONV_BYTES + NS * RAW;  // fp8: the ring's FULL mbarriers (TMA)
  static constexpr int SMEM = 1024 + BAR_OFF + (KV8 ? NS * 8 : 0);  // 1024: alignment slack
  static_assert(!KV8 || !DB || NS >= 3, "stage it+1 must land while stage it is computed");
  static_assert(SMEM <= 227 * 1024, "shared memory per CTA");
};

// Raw fp8 row t, 16-byte chunk c: rows back to back (the conversion pass reads them row by
// row, conflict-free).
template <int D>
__device__ __forceinline__ int raw_off(int t, int c) {
  return t * D + (c << 4);
}

// Low word of a wgmma shared-memory descriptor with a 128-byte swizzle and 8-row groups
// 1024 B apart (the high word, 1073741888: SBO 1024 B and the swizzle, is in the wgmma
// asm): K-major (LBO field 1), or MN-major (V as [token][d] for P V) with 64-element d
// blocks lbo bytes apart. Byte offsets within the CTA's shared memory add to it as >> 4:
// the address field (14 bits) cannot carry into the LBO field.
__device__ __forceinline__ uint32_t wg_desc_lo(uint32_t addr, uint32_t lbo = 16) {
  return ((addr & 0x3FFFF) >> 4) | ((lbo >> 4) << 16);
}
// 16-byte chunk c of token row r of a 16-bit [64 tok][D] tile in the swizzled block layout.
__device__ __forceinline__ int wg16_off(int r, int c) {
  return (c >> 3) * (64 * 128) + r * 128 + (((c & 7) ^ (r & 7)) << 4);
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N = 0>
__device__ __forceinline__ void wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void fence_async_smem() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Raw fp8 stage (K then V, [64 tok][D] each in raw_off's layout) -> fp16 K and V tiles, each
// [64 tok][D] in D/64 swizzled blocks (the wg16_off layout), at kc and after it, by NT
// threads: K is Q K^T's K-major B operand, V P V's MN-major one, so both take the same
// pass (V^T built by byte transposes cost ~1.5x the instructions per value). A fixed number
// of items per thread and unsigned index math: the loops unroll completely, with no
// signed-division code (the conversion is most of this kernel's issue slots, ncu).
// H0..H1-1: the halves converted (0 K, 1 V).
template <int D, int NT, bool TAIL = false, unsigned H0 = 0, unsigned H1 = 2>
__device__ __forceinline__ void wg_convert(const uint8_t* rk, uint8_t* kc, int tid, int valid = 64) {
  constexpr unsigned BN = 64, C8 = D / 8;  // 8-byte raw chunks (one fp16 16-byte chunk each) per row
  constexpr unsigned KI = BN * C8 / NT, RS = NT / C8;  // items per thread, rows between them
  static_assert(KI * NT == BN * C8 && RS * C8 == NT, "items per thread");
  // A thread's items are chunk c8 of rows n0 + i RS, so each one's offsets are the first
  // item's plus constants: the raw rows are D bytes apart, and the swizzle's row term
  // (n & 7) is n0's, or n0's with bit 2 flipped for odd i when RS is 4 (head_dim 256).
  // Written per item (n and c8 from the item index), ptxas recomputed every item's
  // addresses in each stage (the head_dim-64 kernel's loop: 579 SASS instructions then, 526
  // with these offsets and wg_desc_lo).
  static_assert(RS % 8 == 0 || RS == 4, "the swizzle's row term per item");
  const unsigned ut = tid, n0 = ut / C8, c8 = ut % C8;
  const unsigned st0 = (c8 >> 3) * (BN * 128) + n0 * 128 + (((c8 & 7) ^ (n0 & 7)) << 4);
#pragma unroll
  for (unsigned h = H0; h < H1; ++h) {  // K, then V
    const uint8_t* src = rk + h * (BN * D) + ut * 8;  // raw_off(n0, c8 / 2) + (c8 & 1) * 8
    uint8_t* dst = kc + h * (BN * D * 2);
    // Every load first, so their latencies overlap: loaded and converted item by item, the
    // conversions waited on each load (ncu: 20 % of the head_dim-64 kernel's stall samples),
    // 0.967-0.977x on GPT-OSS fp8 q_len 8 (twelfth session).
    uint2 xs[KI];
#pragma unroll
    for (unsigned i = 0; i < KI; ++i) xs[i] = *reinterpret_cast<const uint2*>(src + i * RS * D);
#pragma unroll
    for (unsigned i = 0; i < KI; ++i) {  // 8 raw bytes of row n -> fp16 chunk c8
      const uint2 x = xs[i];
      uint4 y;
      e4m3x4_to_half2x2(x.x, y.x, y.y);
      e4m3x4_to_half2x2(x.y, y.z, y.w);
      // TAIL (the last stage): V rows past the CTA's range as zeros; the TMA left stale or
      // whole-page bytes there (kv_tma.cuh), and P = 0 times a NaN is NaN.
      if (TAIL && h == 1 && (int)(n0 + i * RS) >= valid) y = make_uint4(0u, 0u, 0u, 0u);
      *reinterpret_cast<uint4*>(dst + (st0 ^ (((i * RS) & 4) << 4)) + i * RS * 128) = y;
    }
  }
  fence_async_smem();  // make the generic-proxy stores visible to wgmma
}

// Raw stage `it` of a CTA's range (at rk) -> fp16 tiles at kc by NT threads (wg_convert),
// the last stage's V rows past the range as zeros.
template <int D, int NT, unsigned H0 = 0, unsigned H1 = 2>
__device__ __forceinline__ void wg_convert_stage(const uint8_t* rk, uint8_t* kc, int tid, const TileRange& t, int it) {
  const int valid = t.t_end - (t.t_begin + it * 64);
  if (H1 < 2 || valid >= 64) wg_convert<D, NT, false, H0, H1>(rk, kc, tid);
  else wg_convert<D, NT, true, H0, H1>(rk, kc, tid, valid);
}

// wgmma m64nNk16, fp32 accumulators: A[64 x 16] from registers (T: fp16 or bf16), B[16 x N]
// from shared memory by descriptor; TB = 1 reads B MN-major (V as [token][d]). B is given as
// its descriptor's low word (wg_desc_lo) plus a compile-time byte offset OFF, added inside
// the asm (the high word is the same for all of them): a 64-bit descriptor built per k-step
// took the head_dim-64 fp8 kernel's loop to 74 uniform instructions, 50 this way.
#define PD_WG64(TY, TB)                                                                             \
  "{\n.reg .pred p;\n.reg .b32 tb;\n.reg .b64 db;\nsetp.ne.b32 p, %37, 0;\n"                        \
  "add.u32 tb, %36, %38;\nmov.b64 db, {tb, 1073741888};\n"                                      \
  "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " "                                       \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "  \
  "{%32, %33, %34, %35}, db, p, 1, 1, " #TB ";\n}\n"
#define PD_WG64_OUT "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
#define PD_WG128(TY, TB)                                                                            \
  "{\n.reg .pred p;\n.reg .b32 tb;\n.reg .b64 db;\nsetp.ne.b32 p, %69, 0;\n"                        \
  "add.u32 tb, %68, %70;\nmov.b64 db, {tb, 1073741888};\n"                                      \
  "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " "                                      \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "  \
  "{%64, %65, %66, %67}, db, p, 1, 1, " #TB ";\n}\n"
#define PD_WG128_OUT "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
#define PD_WG96(TY, TB)                                                                             \
  "{\n.reg .pred p;\n.reg .b32 tb;\n.reg .b64 db;\nsetp.ne.b32 p, %53, 0;\n"                        \
  "add.u32 tb, %52, %54;\nmov.b64 db, {tb, 1073741888};\n"                                      \
  "wgmma.mma_async.sync.aligned.m64n96k16.f32." TY "." TY " "                                       \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}, "  \
  "{%48, %49, %50, %51}, db, p, 1, 1, " #TB ";\n}\n"
#define PD_WG96_OUT "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3])
#define PD_WG_IN "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(desc_lo), "r"(scale_d), "n"(OFF >> 4)

#define PD_WG_FN(N)                                                                                  \
  template <typename T = __half, int TB = 0, int OFF = 0>                                            \
  __device__ __forceinline__ void wgmma_m64n##N##k16(float (&d)[N / 8][4], const uint32_t (&a)[4],   \
                                                     uint32_t desc_lo, int scale_d) {                \
    if constexpr (std::is_same_v<T, __half>) {                                                       \
      if constexpr (TB) asm volatile(PD_WG##N("f16", 1) : PD_WG##N##_OUT : PD_WG_IN : "memory");    \
      else asm volatile(PD_WG##N("f16", 0) : PD_WG##N##_OUT : PD_WG_IN : "memory");                 \
    } else {                                                                                         \
      if constexpr (TB) asm volatile(PD_WG##N("bf16", 1) : PD_WG##N##_OUT : PD_WG_IN : "memory");   \
      else asm volatile(PD_WG##N("bf16", 0) : PD_WG##N##_OUT : PD_WG_IN : "memory");                \
    }                                                                                                \
  }
PD_WG_FN(64)
PD_WG_FN(128)
PD_WG_FN(96)
#undef PD_WG_FN
#undef PD_WG_IN
#undef PD_WG64
#undef PD_WG64_OUT
#undef PD_WG128
#undef PD_WG128_OUT
#undef PD_WG96
#undef PD_WG96_OUT

// Rows r0 and r1 of q (zero past the problem) as the wgmma A fragments of Q K^T, in T.
template <int D, typename TQ, typename T>
__device__ __forceinline__ void wg_load_q(uint32_t (&qa)[D / 16][4], const Params& p, int b, int h, int rows, int r0,
                                          int r1, int cq) {
  auto q_cvt = [](uint32_t u) -> uint32_t {
    if constexpr (std::is_same_v<TQ, T>) return u;
    else return bf16x2_to_half2(u);
  };
  const TQ* qp0 = r0 < rows ? q_row<D, TQ>(p, b, h, r0) : nullptr;
  const TQ* qp1 = r1 < rows ? q_row<D, TQ>(p, b, h, r1) : nullptr;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const int e0 = kk * 16 + 2 * cq, e1 = e0 + 8;
    qa[kk][0] = qp0 ? q_cvt(*reinterpret_cast<const uint32_t*>(qp0 + e0)) : 0u;
    qa[kk][1] = qp1 ? q_cvt(*reinterpret_cast<const uint32_t*>(qp1 + e0)) : 0u;
    qa[kk][2] = qp0 ? q_cvt(*reinterpret_cast<const uint32_t*>(qp0 + e1)) : 0u;
    qa[kk][3] = qp1 ? q_cvt(*reinterpret_cast<const uint32_t*>(qp1 + e1)) : 0u;
  }
}

// Epilogue of both wgmma kernels (after draining the cp.async ring): each thread owns whole
// rows' columns (rows r0 and r1, no cross-warp merge); rows at or past row_end are not this
// CTA's. Unsplit: the normalised output in TQ; split: fp32 partial O and the row's
// log2-sum-exp for merge_kernel (and the slots after it that the tile's item leaves unused:
// fill_unused).
template <int D, typename TQ>
__device__ __forceinline__ void wg_store(const Params& p, float (&o)[D / 8][4], const RowStats& ml, int r0, int r1,
                                         const TileRange& t, int cq) {
  const int rows = t.rows, row_end = t.row0 + t.nrows, split = t.split, b = t.b, h = t.h;
  cp_async_wait<0>();
  const float l0 = quad_sum(ml.l0), l1 = quad_sum(ml.l1), m0 = ml.m0, m1 = ml.m1;
  const int rtot = p.batch * p.q_len * p.hq;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = half ? r1 : r0;
    if (r >= rows || r >= row_end) continue;
    const float l = half ? l1 : l0, m = half ? m1 : m0;
    const float inv = l > 0.f ? p.v_scale / l : 0.f;
    const int i = r / p.group, j = r % p.group;
    const size_t orow = (size_t)(b * p.q_len + i) * p.hq + h * p.group + j;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      const float x = o[dn][2 * half] * inv, y = o[dn][2 * half + 1] * inv;
      const int col = dn * 8 + 2 * cq;
      if (p.num_splits == 1) {
        *reinterpret_cast<uint32_t*>(static_cast<TQ*>(p.out) + orow * D + col) = Tr<TQ>::pack(x, y);
      } else {
        *reinterpret_cast<float2*>(p.ws_o + ((size_t)split * rtot + orow) * D + col) = make_float2(x, y);
      }
    }
    if (p.num_splits > 1 && cq == 0) {
      p.ws_lse[(size_t)split * rtot + orow] = l > 0.f ? m + __log2f(l) : -INFINITY;
      fill_unused(p, t, orow);
    }
  }
}

// P (the S accumulators after softmax, whose layout is the register A layout) packed in T
// as the A fragments of the four k16 steps of O += P V.
template <typename T>
__device__ __forceinline__ void wg_pack_p(const float (&s)[8][4], uint32_t (&pa)[4][4]) {
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    pa[kt][0] = Tr<T>::pack(s[2 * kt][0], s[2 * kt][1]);
    pa[kt][1] = Tr<T>::pack(s[2 * kt][2], s[2 * kt][3]);
    pa[kt][2] = Tr<T>::pack(s[2 * kt + 1][0], s[2 * kt + 1][1]);
    pa[kt][3] = Tr<T>::pack(s[2 * kt + 1][2], s[2 * kt + 1][3]);
  }
}

// O += P V of one 64-token stage, issued (no fence, no commit): V as [64 tok][d] in the
// wg16_off layout, the MN-major B operand.
template <typename T, int D, int... KT>
__device__ __forceinline__ void wg_pv_steps(float (&o)[D / 8][4], const uint32_t (&pa)[4][4], uint32_t dv,
                                            std::integer_sequence<int, KT...>) {
  // 16 tokens a step: two 8-row groups of V, 2048 B
  if constexpr (D == 128) (wgmma_m64n128k16<T, 1, KT * 2048>(o, pa[KT], dv, 1), ...);
  else (wgmma_m64n64k16<T, 1, KT * 2048>(o, pa[KT], dv, 1), ...);
}
template <typename T, int D>
__device__ __forceinline__ void wg_pv(float (&o)[D / 8][4], const uint32_t (&pa)[4][4], uint32_t v_u32) {
  wg_pv_steps<T, D>(o, pa, wg_desc_lo(v_u32, 64 * 128), std::make_integer_sequence<int, 4>{});
}

// One stage's softmax on S (softmax_step, with the running maxima and sums of the thread's two
// rows in ml: m0, m1, th0, th1, l0, l1), then O += P V issued as one commit group (not waited
// for).
template <typename T, int D>
__device__ __forceinline__ void wg_softmax_pv(float (&s)[8][4], float (&o)[D / 8][4], uint32_t v_u32, bool masked,
                                              int tb, int cq, int lim0, int lim1, float sc, RowStats& ml,
                                              bool lazy = false) {
  softmax_step(s, o, masked, tb, cq, lim0, lim1, sc, ml, lazy);
  uint32_t pa[4][4];
  wg_pack_p<T>(s, pa);
  wg_fence();
  wg_pv<T, D>(o, pa, v_u32);
  wg_commit();
}

// S = Q K^T of one 64-token stage (K: [64 tok][D] in D/64 swizzled blocks at k_u32), issued
// as one commit group.
template <typename T, int D, int... KK>
__device__ __forceinline__ void wg_qk_steps(float (&s)[8][4], const uint32_t (&qa)[D / 16][4], uint32_t dk,
                                            std::integer_sequence<int, KK...>) {
  (wgmma_m64n64k16<T, 0, (KK >> 2) * (64 * 128) + (KK & 3) * 32>(s, qa[KK], dk, KK > 0), ...);
}
template <typename T, int D>
__device__ __forceinline__ void wg_qk(float (&s)[8][4], const uint32_t (&qa)[D / 16][4], uint32_t k_u32) {
  wg_fence();
  wg_qk_steps<T, D>(s, qa, wg_desc_lo(k_u32), std::make_integer_sequence<int, D / 16>{});
  wg_commit();
}

// One tile's work in grouped_wg_kernel (a CTA's whole range, or one segment of a balanced
// grid's CTA: cta_segment), its ring's mbarriers freshly initialised.
template <int D, typename TQ, int NWG, bool LAZY>
__device__ __forceinline__ void wg_tile(const Params& p, const TileRange& t, const CUtensorMap& kv_map, uint8_t* smem,
                                        uint32_t full_u32, int tid) {
  using C = WCfg<D, NWG>;
  using Ring = TmaRing<C::BN, C::NS, C::RAW>;
  uint8_t* ring = smem + C::CONV_BYTES;  // raw fp8 stages after the fp16 buffers
  const int lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, cq = lane & 3;

  // Rows of this thread (warp w owns rows 16w..16w+15 of the tile, as wgmma lays them out).
  const int r0 = t.row0 + warp * 16 + g, r1 = r0 + 8;
  const int lim0 = row_limit(p, t, r0), lim1 = row_limit(p, t, r1);
  uint32_t qa[D / 16][4];
  wg_load_q<D, TQ, __half>(qa, p, t.b, t.h, t.rows, r0, r1, cq);

  float o[D / 8][4];
  RowStats ml;
  const float sc = p.scale_log2;
  const int la = lookahead<C>(p);
  // The range in one lazy pass (softmax_step past the first stage: no raise check), or if
  // that leaves O non-finite anywhere in the CTA, once more with the eager softmax (the
  // swapped kernel's sw_pass_again says why).
  bool lazy = LAZY;
#pragma unroll 1
  for (;;) {
    // Page j of each stage is issued (a TMA box each for K and V) by an elected lane of warp j
    // (2-4 % faster than lanes of warp 0, whose issue loop then delayed its conversion and so
    // the CTA's barrier); everyone waits on the stage's FULL (TmaRing, kv_tma.cuh).
    Ring kv(&kv_map, p, t, D, ring, full_u32);
    auto convert = [&](int it, int buf) { wg_convert_stage<D, C::NT>(kv.slot(it), smem + buf * C::CONV, tid, t, it); };
    zero(o);
    ml = RowStats{};

    // The mbarriers' initialisation (in a second segment or pass, their re-initialisation).
    __syncthreads();
    for (int s = 0; s < la && s < t.ntiles; ++s) kv.issue(s);
    if (C::DB && t.ntiles > 0) {
      kv.wait(0);
      convert(0, 0);
    }

    for (int it = 0; it < t.ntiles; ++it) {
      // Double-buffered: raw stage it+1 landed, stage it's fp16 buffer is complete, and every
      // warpgroup is done with the other buffer (its P V of stage it-1 was waited for).
      // Single: raw stage it landed and every warp is done with K's buffer (stage it-1's
      // Q K^T was waited for; its P V may still be reading V's). Either way the slot stage
      // it+la goes into was converted in an earlier iteration.
      if constexpr (C::DB) {
        if (it + 1 < t.ntiles) kv.wait(it + 1);
      } else {
        kv.wait(it);
      }
      __syncthreads();
      if (it + la < t.ntiles) kv.issue(it + la);
      if constexpr (!C::DB) {
        wg_convert_stage<D, C::NT, 0, 1>(kv.slot(it), smem, tid, t, it);  // K; V below
        // P V of stage it-1 (not waited for at the end of its iteration) ran under the above;
        // it must be done, in every warp (the barrier), before V is overwritten: 0.985-0.992x
        // on GPT-OSS fp8 q_len 8 (twelfth session).
        wg_wait();
        __syncthreads();
      }
      const int buf = C::DB ? (it & 1) : 0;
      const uint32_t kc_u32 = smem_u32(smem + buf * C::CONV), vc_u32 = kc_u32 + C::KC;

      // S = Q K^T (64 rows per warpgroup x 64 tokens), asynchronously, while this thread
      // converts the next stage into the other buffer; then softmax and O += P V.
      float s[8][4];
      wg_qk<__half, D>(s, qa, kc_u32);
      if (C::DB && it + 1 < t.ntiles) convert(it + 1, (it + 1) & 1);
      // Single buffer: K was converted before Q K^T, V is converted under it and is complete
      // (the barrier) before P V: 0.99x of converting both first (twelfth session).
      if constexpr (!C::DB) wg_convert_stage<D, C::NT, 1, 2>(kv.slot(it), smem, tid, t, it);
      wg_wait();
      if constexpr (!C::DB) __syncthreads();
      wg_softmax_pv<__half, D>(s, o, vc_u32, t.t_begin + (it + 1) * C::BN > t.mask_from, t.t_begin + it * C::BN, cq,
                                  lim0, lim1, sc, ml, lazy && it > 0);
      if constexpr (C::DB) wg_wait();
    }
    if constexpr (!C::DB) wg_wait();
    // Every stage landed and was waited for; past the barrier no thread waits on the ring.
    if (!LAZY || !__syncthreads_or(lazy && nonfinite<D / 2>(&o[0][0]))) break;
    __syncthreads();  // no thread still at the vote's barrier when the ring is re-armed
    Ring::reinit(full_u32, p);
    lazy = false;
  }
  wg_store<D, TQ>(p, o, ml, r0, r1, t, cq);
}

// SK: the balanced grid's instantiation (cta_segment's one or two segments, the ring's
// mbarriers initialised anew for the second); the classic one runs cta_tile's range alone.
template <int D, typename TQ, int NWG, bool SK = false>
__global__ void __launch_bounds__(WCfg<D, NWG>::NT, WCfg<D, NWG>::MIN_CTAS)
    grouped_wg_kernel(const Params p, const __grid_constant__ CUtensorMap kv_map) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  planted_cta_begin();
  using C = WCfg<D, NWG>;
  extern __shared__ __align__(1024) uint8_t smem_raw_base[];
  const uint32_t base_u32 = smem_u32(smem_raw_base);
  uint8_t* smem = smem_raw_base + (((base_u32 + 1023u) & ~1023u) - base_u32);
  const uint32_t full_u32 = smem_u32(smem + C::BAR_OFF);
  using Ring = TmaRing<C::BN, C::NS, C::RAW>;
  Ring::init(full_u32, p);
  if constexpr (SK) {
    TileRange t;
    for (int seg = 0; cta_segment(p, C::TILE, C::BN, seg, t); ++seg) {
      // The shared-memory and tensor-map addresses anew each segment (constants: cheaper to
      // rebuild than to keep live through the stage loop, where they spilled). The opaque
      // part is an offset, not the pointer: through a laundered pointer the compiler no
      // longer knew it for shared memory and made every conversion store generic (ST, not
      // STS: the stage loop 4 % slower).
      uint32_t zero = 0;
      const CUtensorMap* map = &kv_map;
      asm volatile("" : "+r"(zero), "+l"(map));
      uint8_t* sm = smem_raw_base + zero;
      const uint32_t b32 = smem_u32(sm);
      sm += ((b32 + 1023u) & ~1023u) - b32;
      const uint32_t full = smem_u32(sm + C::BAR_OFF);
      if (seg) {
        __syncthreads();  // every thread past its last wait on the first segment's stages
        Ring::reinit(full, p);
      }
      wg_tile<D, TQ, NWG, false>(p, t, *map, sm, full, tid_x());
    }
  } else {
    wg_tile<D, TQ, NWG, C::LAZY>(p, cta_tile(p, C::TILE, C::BN), kv_map, smem, full_u32, threadIdx.x);
  }
  planted_cta_end();
#else
  __trap();  // launched only on sm_90 devices (wg_supported), where the sm_90a code runs
#endif
}

// The 16-bit-KV wgmma kernel (T: the KV dtype, which equals q's): no conversion pass, so
// one barrier per stage and the two MMAs; the ring keeps NS - 1 stages in flight.
template <int D, typename T, int NWG>
__global__ void __launch_bounds__(WCfg<D, NWG, false>::NT, 1) grouped_wg16_kernel(const Params p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  planted_cta_begin();
  using C = WCfg<D, NWG, false>;
  extern __shared__ __align__(1024) uint8_t smem16_base[];
  const uint32_t base_u32 = smem_u32(smem16_base);
  uint8_t* ring = smem16_base + (((base_u32 + 1023u) & ~1023u) - base_u32);
  const TileRange t = cta_tile(p, C::TILE, C::BN);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, cq = lane & 3;
  const int r0 = t.row0 + warp * 16 + g, r1 = r0 + 8;
  const int lim0 = row_limit(p, t, r0), lim1 = row_limit(p, t, r1);
  uint32_t qa[D / 16][4];
  wg_load_q<D, T, T>(qa, p, t.b, t.h, t.rows, r0, r1, cq);

  KvStream<C::NT, C::CPR, C::BN> kv(p, t, D * 2);
  auto load_stage = [&](int it, int slot) {
    kv.load(it, ring + slot * C::RAW, C::RAW_HALF, [](int r, int c) { return wg16_off(r, c); });
  };
  kv.template prime<C::NS, true>(p, t.ntiles, load_stage);

  float o[D / 8][4];
  zero(o);
  RowStats ml;
  for (int it = 0; it < t.ntiles; ++it) {
    // Stage it landed (this thread's copies), is visible to the async proxy, and every
    // warpgroup finished stage it-1, whose slot the next load reuses.
    cp_async_wait<C::NS - 2>();
    fence_async_smem();
    __syncthreads();
    kv.template advance<C::NS, true>(p, it, t.ntiles, load_stage);
    const uint32_t k_u32 = smem_u32(ring + (it % C::NS) * C::RAW), v_u32 = k_u32 + C::RAW_HALF;

    float s[8][4];
    wg_qk<T, D>(s, qa, k_u32);
    wg_wait();
    wg_softmax_pv<T, D>(s, o, v_u32, t.t_begin + (it + 1) * C::BN > t.mask_from, t.t_begin + it * C::BN, cq,
                           lim0, lim1, p.scale_log2, ml);
    wg_wait();
  }
  wg_store<D, T>(p, o, ml, r0, r1, t, cq);
  planted_cta_end();
#else
  __trap();  // launched only on sm_90 devices (wg_supported), where the sm_90a code runs
#endif
}

// Whether an A/B switch such as PD_NO_WGMMA is set in the environment (any value but
// empty or "0").
inline bool env_switch(const char* name) {
  const char* v = getenv(name);
  return v && *v && *v != '0';
}

// Whether the wgmma kernels may run on the current device: an sm_90 GPU (the fat binary's
// sm_90a code), unless PD_NO_WGMMA is set (used to A/B them against mma.sync).
inline bool wg_supported() {
  static int cached[64];
  return device_flag(cached, [](int dev) {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    return major == 9 && minor == 0 && !env_switch("PD_NO_WGMMA");
  });
}

}  // namespace pd
