// `grouped` kernel: one CTA per (row tile, KV split, KV head, request) computes every
// q_len x group row of its tile on tensor cores (mma.sync m16n8k16, fp32 accumulate),
// so each KV page is read from HBM once per row tile instead of once per query token.
//
// Warp layout: WM warps along rows (16 rows each) x WN warps along the tokens of a
// 64-token stage. Each warp keeps its own online-softmax state; the WN partial results are
// merged through shared memory in the epilogue. K/V stream through an NS-deep cp.async
// ring with one barrier per stage. Shared tiles use a 16-byte XOR swizzle so ldmatrix is
// bank-conflict free.
//
// fp8 e4m3 KV stays fp8 in shared memory (half the bytes of every copy and ldmatrix) and is
// converted in registers right after ldmatrix (cvt.rn.f16x2.e4m3x2, fp16 MMA):
//  * K: a non-transposed ldmatrix of fp8 rows hands a thread 4 consecutive d of one token;
//    the reduction index d is permuted consistently for Q and K (Q is loaded to match), so
//    no shuffling is needed.
//  * V: a transposed ldmatrix hands a thread d-pairs of two tokens; one byte_perm regroups
//    them per d, which permutes the output columns (even/odd d in two n-tiles); the
//    epilogue writes them back in order.
#pragma once

#include <type_traits>

#include "grouped_parts.cuh"

namespace pd {

template <int D, bool KV8, int WM>
struct GCfg {
  // At least 4 warps; the 64-row tile at head_dim 256 (one CTA per SM) takes 8, two along
  // the tokens, so each scheduler has two warps to switch between (with 4, at 247-255
  // registers, it lost 10-22 % to two 32-row CTAs per SM, which also hold 8; with 8 it needs
  // 228-244: kernels/NOTES.md).
  static constexpr int NW = WM >= 4 ? (D == 256 && WM == 4 ? 8 : WM) : 4;
  static constexpr int WN = NW / WM;
  static constexpr int NT = NW * 32;
  static constexpr int BN = 64;  // tokens per stage (a multiple of every page size)
  static constexpr int TN = BN / WN;  // tokens per warp per stage
  static constexpr int TILE = WM * 16;
  static constexpr int NS = KV8 ? (D == 256 ? 3 : 4) : (D == 64 ? 4 : (D == 128 ? 3 : 2));
  static constexpr bool SHALLOW = KV8 && D == 64;  // lookahead chosen at launch (shallow_lookahead)
  static constexpr int ES = KV8 ? 1 : 2;
  static constexpr int HALF_STAGE = BN * D * ES;  // K or V of one stage
  static constexpr int STAGE = 2 * HALF_STAGE;
  static constexpr int CPR = D * ES / 16;          // 16-byte chunks per token row
  static constexpr bool Q_REGS = D <= 128;
  static constexpr int QB = Q_REGS ? 0 : TILE * D * 2;
  static constexpr int PIPE = NS * STAGE + QB;
  static constexpr int RS = D + 8;  // padded fp32 row of the epilogue buffer
  static constexpr int RED = WN * TILE * RS * 4 + WN * TILE * 2 * 4;
  static constexpr int SMEM = PIPE > RED ? PIPE : RED;
};

// CTAs per SM the balanced instantiation (grouped_kernel<..., true>) is held to: its segment
// loop costs 5-14 registers, and at fp8 head_dim 64 (GPT-OSS q_len 2 and 4: four CTAs per SM)
// the 32-row tile would lose its fourth CTA (119 -> 132 registers; 123 capped).
template <int D, bool KV8, int WM>
inline constexpr int kSkMinCtas = KV8 && D == 64 && WM <= 2 ? 4 : 1;

// Byte offset of 16-byte chunk c of row r in a swizzled 16-bit [rows][D] tile.
template <int D>
__device__ __forceinline__ int swz(int r, int c) {
  return r * D * 2 + ((c ^ (r & 7)) << 4);
}
// Same for an fp8 [rows][D] tile: 8 rows read at one chunk hit 8 distinct 16-byte banks.
template <int D>
__device__ __forceinline__ int swz8(int r, int c) {
  if constexpr (D >= 128) return r * D + ((c ^ (r & 7)) << 4);
  else return r * D + ((c ^ ((r >> 1) & 3)) << 4);
}

// Two e4m3 (low 16 bits of x) -> fp16x2.
__device__ __forceinline__ uint32_t e4m3x2_to_half2(uint32_t x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  uint32_t r;
  const uint16_t h = static_cast<uint16_t>(x);
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(r) : "h"(h));
  return r;
#else
  return Tr<__half>::fix(__byte_perm(x, 0u, 0x1404));
#endif
}

// Four e4m3 bytes of x -> two fp16x2 words: lo from bytes 0-1, hi from bytes 2-3 (on sm_89+
// the upper pair is read as x's high half, no shift or mask).
__device__ __forceinline__ void e4m3x4_to_half2x2(uint32_t x, uint32_t& lo, uint32_t& hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm("{\n.reg .b16 l, h;\nmov.b32 {l, h}, %2;\ncvt.rn.f16x2.e4m3x2 %0, l;\ncvt.rn.f16x2.e4m3x2 %1, h;\n}\n"
      : "=r"(lo), "=r"(hi)
      : "r"(x));
#else
  lo = e4m3x2_to_half2(x);
  hi = e4m3x2_to_half2(x >> 16);
#endif
}

// One tile's work (a CTA's whole range, or one segment of a balanced grid's CTA: cta_segment)
// through the ring at smem, ending with its output or partial written.
template <int D, typename TQ, bool KV8, int WM>
__device__ __forceinline__ void grouped_tile(const Params& p, const TileRange& tr, uint8_t* smem, int tid) {
  using C = GCfg<D, KV8, WM>;
  // MMA dtype: q's for 16-bit KV; fp16 for fp8 KV (fp16 holds every e4m3 value exactly;
  // q is rounded to fp16 once).
  using T = std::conditional_t<KV8, __half, TQ>;
  const int lane = tid & 31, warp = tid >> 5;
  const int wm = warp % WM, wn = warp / WM;
  const int g = lane >> 2, cq = lane & 3;
  const int b = tr.b, h = tr.h, split = tr.split;
  const int rows = tr.rows, row0 = tr.row0, nrows = tr.nrows;
  const int t_begin = tr.t_begin, ntiles = tr.ntiles;
  const bool active = wm * 16 < nrows;
  uint8_t* qs = smem + C::NS * C::STAGE;  // D=256 only: Q tile

  // Per-thread row limits: row r attends tokens <= kv_len - q_len + r/group (and < t_end).
  const int r0 = row0 + wm * 16 + g, r1 = r0 + 8;
  const int lim0 = row_limit(p, tr, r0), lim1 = row_limit(p, tr, r1);
  auto q_row_ptr = [&](int r) { return q_row<D, TQ>(p, b, h, r); };
  auto q_cvt = [](uint32_t u) -> uint32_t {
    if constexpr (std::is_same_v<T, TQ>) return u;
    else return bf16x2_to_half2(u);
  };

  // ---- Q A-fragments: registers (D <= 128) or a swizzled smem tile (D = 256).
  // For fp8 KV the k index is permuted to match the K fragments: within each 16-d block,
  // lane quad cq holds d = 4cq..4cq+3 (a0/a1: first pair, a2/a3: second pair).
  uint32_t qa[C::Q_REGS ? D / 16 : 1][4];
  if constexpr (C::Q_REGS) {
    const TQ* qp0 = r0 < rows ? q_row_ptr(r0) : nullptr;
    const TQ* qp1 = r1 < rows ? q_row_ptr(r1) : nullptr;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int e0 = KV8 ? kk * 16 + 4 * cq : kk * 16 + 2 * cq;
      const int e1 = KV8 ? e0 + 2 : e0 + 8;
      qa[kk][0] = qp0 ? q_cvt(*reinterpret_cast<const uint32_t*>(qp0 + e0)) : 0u;
      qa[kk][1] = qp1 ? q_cvt(*reinterpret_cast<const uint32_t*>(qp1 + e0)) : 0u;
      qa[kk][2] = qp0 ? q_cvt(*reinterpret_cast<const uint32_t*>(qp0 + e1)) : 0u;
      qa[kk][3] = qp1 ? q_cvt(*reinterpret_cast<const uint32_t*>(qp1 + e1)) : 0u;
    }
  } else {
    // Plain loads + stores (converted when needed); the first loop barrier publishes them.
    constexpr int QC = D / 8;
    for (int idx = tid; idx < C::TILE * QC; idx += C::NT) {
      const int r = idx / QC, c = idx % QC;
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (r < nrows) {
        v = *reinterpret_cast<const uint4*>(q_row_ptr(row0 + r) + c * 8);
        v.x = q_cvt(v.x); v.y = q_cvt(v.y); v.z = q_cvt(v.z); v.w = q_cvt(v.w);
      }
      *reinterpret_cast<uint4*>(qs + swz<D>(r, c)) = v;
    }
  }
  auto q_frag = [&](int kk, uint32_t (&a)[4]) {
    if constexpr (C::Q_REGS) {
      a[0] = qa[kk][0]; a[1] = qa[kk][1]; a[2] = qa[kk][2]; a[3] = qa[kk][3];
    } else if constexpr (KV8) {
      const int ra = wm * 16 + g, c = 2 * kk + (cq >> 1), o = (cq & 1) * 8;
      const uint2 x0 = *reinterpret_cast<const uint2*>(qs + swz<D>(ra, c) + o);
      const uint2 x1 = *reinterpret_cast<const uint2*>(qs + swz<D>(ra + 8, c) + o);
      a[0] = x0.x; a[2] = x0.y; a[1] = x1.x; a[3] = x1.y;
    } else {
      const int r = wm * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      ldmatrix_x4(a, smem_u32(qs) + swz<D>(r, 2 * kk + (lane >> 4)));
    }
  };

  // The 16-row tile asks L2 for its head's page slices (l2_prefetch_slice, 64-byte rows):
  // GPT-OSS fp8 q_len 2 0.94-0.97x with one stage in flight; the 32-row tile, measured the
  // same way (PD_L2_WM_MAX=2), was 1.02-1.13x slower (kernels/NOTES.md, thirteenth session).
  KvStream<C::NT, C::CPR, C::BN, WM <= PD_L2_WM_MAX> kv(p, tr, D * C::ES, tid);
  auto load_tile = [&](int it, int stage) {
    kv.load(it, smem + stage * C::STAGE, C::HALF_STAGE,
            [](int r, int c) { return KV8 ? swz8<D>(r, c) : swz<D>(r, c); });
  };

  float o[D / 8][4];
  zero(o);
  RowStats st;
  const float sc = p.scale_log2;
  const int la = lookahead<C>(p);
  kv.template prime<C::NS>(p, ntiles, load_tile, la);

  for (int it = 0; it < ntiles; ++it) {
    cp_async_wait_stage<C::NS>(la);
    __syncthreads();  // tile `it` visible to all; everyone is done with tile it-1's stage
    kv.template advance<C::NS>(p, it, ntiles, load_tile, la);
    if (!active) continue;
    const uint32_t k_base = smem_u32(smem + (it % C::NS) * C::STAGE);
    const uint32_t v_base = k_base + C::HALF_STAGE;

    // ---- S = Q K^T for this warp's 16 rows x TN tokens.
    float s[C::TN / 8][4];
#pragma unroll
    for (int i = 0; i < C::TN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
    if constexpr (KV8) {
      // one ldmatrix.x4 = 2 token n-tiles x 2 k16 blocks of fp8 K
#pragma unroll
      for (int kk = 0; kk < D / 16; kk += 2) {
        uint32_t a0[4], a1[4];
        q_frag(kk, a0);
        q_frag(kk + 1, a1);
#pragma unroll
        for (int np = 0; np < C::TN / 16; ++np) {
          const int r = wn * C::TN + np * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
          uint32_t bk[4];
          ldmatrix_x4(bk, k_base + swz8<D>(r, kk + (lane >> 4)));
          Tr<T>::mma(s[2 * np], a0, e4m3x2_to_half2(bk[0]), e4m3x2_to_half2(bk[0] >> 16));
          Tr<T>::mma(s[2 * np + 1], a0, e4m3x2_to_half2(bk[1]), e4m3x2_to_half2(bk[1] >> 16));
          Tr<T>::mma(s[2 * np], a1, e4m3x2_to_half2(bk[2]), e4m3x2_to_half2(bk[2] >> 16));
          Tr<T>::mma(s[2 * np + 1], a1, e4m3x2_to_half2(bk[3]), e4m3x2_to_half2(bk[3] >> 16));
        }
      }
    } else {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t a[4];
        q_frag(kk, a);
#pragma unroll
        for (int np = 0; np < C::TN / 16; ++np) {
          const int r = wn * C::TN + np * 16 + (lane & 7) + (lane >> 4) * 8;
          uint32_t bk[4];
          ldmatrix_x4(bk, k_base + swz<D>(r, 2 * kk + ((lane >> 3) & 1)));
          Tr<T>::mma(s[2 * np], a, bk[0], bk[1]);
          Tr<T>::mma(s[2 * np + 1], a, bk[2], bk[3]);
        }
      }
    }

    // ---- causal mask (only on stages that reach a row limit) and online softmax.
    softmax_step(s, o, t_begin + (it + 1) * C::BN > tr.mask_from, t_begin + it * C::BN + wn * C::TN, cq,
                 lim0, lim1, sc, st);

    // ---- O += P V (P straight from the S accumulators).
#pragma unroll
    for (int kt = 0; kt < C::TN / 16; ++kt) {
      uint32_t a[4];
      a[0] = Tr<T>::pack(s[2 * kt][0], s[2 * kt][1]);
      a[1] = Tr<T>::pack(s[2 * kt][2], s[2 * kt][3]);
      a[2] = Tr<T>::pack(s[2 * kt + 1][0], s[2 * kt + 1][1]);
      a[3] = Tr<T>::pack(s[2 * kt + 1][2], s[2 * kt + 1][3]);
      const int r = wn * C::TN + kt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
      for (int dp = 0; dp < D / 16; dp += (KV8 ? 2 : 1)) {
        uint32_t bv[4];
        if constexpr (KV8) {
          // 16-d chunks dp, dp+1; per chunk q: even d -> o[2q], odd d -> o[2q+1]
          ldmatrix_x4_trans(bv, v_base + swz8<D>(r, dp + (lane >> 4)));
#pragma unroll
          for (int hq = 0; hq < 2; ++hq) {
            const uint32_t lo = __byte_perm(bv[2 * hq], 0u, 0x3120);
            const uint32_t hi = __byte_perm(bv[2 * hq + 1], 0u, 0x3120);
            const int q = dp + hq;
            Tr<T>::mma(o[2 * q], a, e4m3x2_to_half2(lo), e4m3x2_to_half2(hi));
            Tr<T>::mma(o[2 * q + 1], a, e4m3x2_to_half2(lo >> 16), e4m3x2_to_half2(hi >> 16));
          }
        } else {
          ldmatrix_x4_trans(bv, v_base + swz<D>(r, 2 * dp + (lane >> 4)));
          Tr<T>::mma(o[2 * dp], a, bv[0], bv[1]);
          Tr<T>::mma(o[2 * dp + 1], a, bv[2], bv[3]);
        }
      }
    }
  }

  // ---- epilogue: merge the WN token-slices of each row through shared memory.
  cp_async_wait<0>();
  __syncthreads();
  float* red = reinterpret_cast<float*>(smem);
  float* ml = red + C::WN * C::TILE * C::RS;
  const float l0 = quad_sum(st.l0), l1 = quad_sum(st.l1);
  if (active) {
    const int rr0 = wn * C::TILE + wm * 16 + g, rr1 = rr0 + 8;
    if constexpr (KV8) {
#pragma unroll
      for (int q = 0; q < D / 16; ++q) {
        const float* e = o[2 * q];
        const float* d = o[2 * q + 1];
        *reinterpret_cast<float4*>(red + rr0 * C::RS + q * 16 + 4 * cq) = make_float4(e[0], d[0], e[1], d[1]);
        *reinterpret_cast<float4*>(red + rr1 * C::RS + q * 16 + 4 * cq) = make_float4(e[2], d[2], e[3], d[3]);
      }
    } else {
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        *reinterpret_cast<float2*>(red + rr0 * C::RS + dn * 8 + 2 * cq) = make_float2(o[dn][0], o[dn][1]);
        *reinterpret_cast<float2*>(red + rr1 * C::RS + dn * 8 + 2 * cq) = make_float2(o[dn][2], o[dn][3]);
      }
    }
    if (cq == 0) {
      ml[rr0 * 2] = st.m0; ml[rr0 * 2 + 1] = l0;
      ml[rr1 * 2] = st.m1; ml[rr1 * 2 + 1] = l1;
    }
  }
  __syncthreads();
  const int rtot = p.batch * p.q_len * p.hq;
  for (int idx = tid; idx < nrows * (D / 4); idx += C::NT) {
    const int r = idx / (D / 4), d4 = idx % (D / 4);
    float mmax = -INFINITY;
#pragma unroll
    for (int w = 0; w < C::WN; ++w) mmax = fmaxf(mmax, ml[(w * C::TILE + r) * 2]);
    float lsum = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < C::WN; ++w) {
      const float mw = ml[(w * C::TILE + r) * 2];
      const float f = mw == -INFINITY ? 0.f : ex2(mw - mmax);
      lsum += f * ml[(w * C::TILE + r) * 2 + 1];
      const float4 v = *reinterpret_cast<const float4*>(red + (w * C::TILE + r) * C::RS + d4 * 4);
      acc.x += f * v.x; acc.y += f * v.y; acc.z += f * v.z; acc.w += f * v.w;
    }
    const float inv = lsum > 0.f ? p.v_scale / lsum : 0.f;
    const int gr = row0 + r;
    const int i = gr / p.group, j = gr % p.group;
    const size_t orow = (size_t)(b * p.q_len + i) * p.hq + h * p.group + j;
    if (p.num_splits == 1) {
      TQ* dst = static_cast<TQ*>(p.out) + orow * D + d4 * 4;
      uint2 w2;
      w2.x = Tr<TQ>::pack(acc.x * inv, acc.y * inv);
      w2.y = Tr<TQ>::pack(acc.z * inv, acc.w * inv);
      *reinterpret_cast<uint2*>(dst) = w2;
    } else {
      float* dst = p.ws_o + ((size_t)split * rtot + orow) * D + d4 * 4;
      *reinterpret_cast<float4*>(dst) = make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
      if (d4 == 0) {
        p.ws_lse[(size_t)split * rtot + orow] = lsum > 0.f ? mmax + __log2f(lsum) : -INFINITY;
        fill_unused(p, tr, orow);
      }
    }
  }
}

// SK: the balanced grid's instantiation (cta_segment's one or two segments); the classic
// one runs cta_tile's range as straight-line code (the segment loop costs registers and
// 0.5-2 % on every row: kernels/NOTES.md, nineteenth session).
template <int D, typename TQ, bool KV8, int WM, bool SK = false>
__global__ void __launch_bounds__(GCfg<D, KV8, WM>::NT, SK ? kSkMinCtas<D, KV8, WM> : 1)
    grouped_kernel(const Params p) {
  planted_cta_begin();
  using C = GCfg<D, KV8, WM>;
  extern __shared__ __align__(128) uint8_t smem[];
  if constexpr (SK) {
    TileRange tr;
    for (int seg = 0; cta_segment(p, C::TILE, C::BN, seg, tr); ++seg) {
      if (seg) __syncthreads();  // the previous segment's epilogue read the shared memory
      grouped_tile<D, TQ, KV8, WM>(p, tr, smem, tid_x());
    }
  } else {
    grouped_tile<D, TQ, KV8, WM>(p, cta_tile(p, C::TILE, C::BN), smem, threadIdx.x);
  }
  planted_cta_end();
}

// Occupancy-relevant constants of one configuration (the Python cost model mirrors them).
template <int D, bool KV8, int WM>
inline void grouped_config(int* threads, int* smem_bytes) {
  using C = GCfg<D, KV8, WM>;
  *threads = C::NT;
  *smem_bytes = C::SMEM;
}

}  // namespace pd
