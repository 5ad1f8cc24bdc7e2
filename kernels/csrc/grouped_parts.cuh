// Pieces both `grouped` kernels (mma.sync in grouped.cuh, wgmma in grouped_wg.cuh) share, so
// the causal rule, the page-table walk and the online softmax exist once.
#pragma once

#include <type_traits>

#include "common.cuh"

namespace pd {

// Which problem one CTA works on (grid: x = row tile + split, y = KV head, z = request),
// its rows, its KV range and where masking starts.
struct TileRange {
  int b, h, split, kv_len;         // request, KV head, KV split, that request's KV length
  int rows, row0, nrows;           // rows of the head's problem; this tile's first and count
  int t_begin, t_end, mask_from;   // tokens [t_begin, t_end); below mask_from no row masks
  int ntiles;                      // stages of `bn` tokens
  int fill_to;                     // split: partial slots split+1..fill_to-1 get lse -inf
};

// The classic grid's CTA: x = KV head, y = row tile x split (row tile fastest), z =
// request, so the heads of one (request, row tile, split) are consecutive in launch order,
// as in the balanced grid (cta_segment). With the split in x (heads in y) the split rows ran
// slower: GPT-OSS bf16 batch 16 / 64 2.2-4.0 % / 1.5-5.6 %, batch 8 1.4-1.8 %, GPT-OSS fp8
// q_len 4 batch 8 2.7-3.1 % (H100, kernels/NOTES.md, twentieth session); an unsplit grid of one
// row tile launches in the same order either way. (Written out, not shared with cta_segment
// through a helper: built from one, ptxas scheduled the classic kernels differently, e.g.
// 6482 of grouped_sw_kernel's 4096 SASS lines moved.)
__device__ __forceinline__ TileRange cta_tile(const Params& p, int tile, int bn) {
  TileRange r;
  const int rt = blockIdx.y % p.num_row_tiles;
  r.split = blockIdx.y / p.num_row_tiles;
  r.h = blockIdx.x;
  r.b = blockIdx.z;
  r.kv_len = p.kv_lens[r.b];
  r.rows = p.q_len * p.group;
  r.row0 = rt * tile;
  r.nrows = min(tile, r.rows - r.row0);
  const int i_min = r.row0 / p.group, i_max = (r.row0 + r.nrows - 1) / p.group;
  r.t_begin = r.split * p.split_tokens;
  r.t_end = min(r.t_begin + p.split_tokens, r.kv_len - p.q_len + i_max + 1);
  r.mask_from = min(r.kv_len - p.q_len + i_min + 1, r.t_end);
  r.ntiles = r.t_end > r.t_begin ? (r.t_end - r.t_begin + bn - 1) / bn : 0;
  r.fill_to = r.split + 1;
  return r;
}

// Segment `seg` (0 or 1) of this CTA's work; false when it has no such segment. Classic grid:
// segment 0 is cta_tile. Balanced grid (p.sk_units > 0; x = KV head, y = the head's CTA
// index): a head's items (request, row tile; row tile fastest) of sk_stages stages each are
// laid end to end and its CTA c takes stages [c U, (c + 1) U), U = sk_units <= sk_stages, so
// it meets at most two items: the end of one and the start of the next. Every head is cut
// the same way, so the CTAs of one chunk (consecutive in launch order) read the same pages
// of the same request together, as the classic grid's heads do: where a KV head's row is
// half a 128-byte line (GPT-OSS fp8), heads out of step read each line twice (an item order
// with the head inside measured 1.2-1.75x slower). A CTA's partial slot in an item is its
// index among the CTAs that share the item (the first holding the item's first stage); the
// CTA that ends an item marks the item's unused slots up to num_splits (fill_to), so
// merge_kernel needs no count. kernels/plan.py's balanced_segments mirrors this.
__device__ __forceinline__ bool cta_segment(const Params& p, int tile, int bn, int seg, TileRange& r) {
  if (p.sk_units == 0) {
    if (seg == 0) r = cta_tile(p, tile, bn);
    return seg == 0;
  }
  // 32-bit: a head's stages (W) are under 2^31 (pd_paged_decode checks).
  const unsigned U = p.sk_units, T = p.sk_stages, W = (unsigned)p.batch * p.num_row_tiles * T;
  const unsigned lo = blockIdx.y * U, hi = min(lo + U, W);
  const unsigned j = lo / T + seg, j0 = j * T;
  const unsigned s0 = max(lo, j0), s1 = min(hi, j0 + T);
  if (s0 >= s1) return false;
  r.h = blockIdx.x;
  r.b = (int)(j / p.num_row_tiles);
  r.split = (int)(blockIdx.y - j0 / U);
  r.fill_to = s1 == j0 + T ? p.num_splits : r.split + 1;
  r.kv_len = p.kv_lens[r.b];
  r.rows = p.q_len * p.group;
  r.row0 = (int)(j % p.num_row_tiles) * tile;
  r.nrows = min(tile, r.rows - r.row0);
  // The causal limit clips the range, as in cta_tile.
  const int i_min = r.row0 / p.group, i_max = (r.row0 + r.nrows - 1) / p.group;
  r.t_begin = (int)(s0 - j0) * bn;
  r.t_end = min((int)(s1 - j0) * bn, r.kv_len - p.q_len + i_max + 1);
  r.mask_from = min(r.kv_len - p.q_len + i_min + 1, r.t_end);
  r.ntiles = r.t_end > r.t_begin ? (r.t_end - r.t_begin + bn - 1) / bn : 0;
  return true;
}

// The end of a grouped CTA in test builds: the planted slowdown's count (common.cuh).
__device__ __forceinline__ void planted_cta_end() {
#ifdef HARNESS_PLANTED_SLOWDOWN
  __syncthreads();  // every store of this CTA precedes its count
  if (threadIdx.x == 0) planted_end();
#endif
}

// Partial slots split+1..fill_to-1 of output row orow: lse -inf (cta_segment).
__device__ __forceinline__ void fill_unused(const Params& p, const TileRange& t, size_t orow) {
  const size_t rtot = (size_t)p.batch * p.q_len * p.hq;
  for (int s = t.split + 1; s < t.fill_to; ++s) p.ws_lse[(size_t)s * rtot + orow] = -INFINITY;
}

// Last token row r attends (DESIGN.md's causal rule: kv_len - q_len + r / group), clipped to
// the CTA's range; rows past the problem get a harmless full-range limit.
__device__ __forceinline__ int row_limit(const Params& p, const TileRange& t, int r) {
  return min(r < t.rows ? t.kv_len - p.q_len + r / p.group : t.kv_len - 1, t.t_end - 1);
}

// Row r of q for KV head h of request b.
template <int D, typename TQ>
__device__ __forceinline__ const TQ* q_row(const Params& p, int b, int h, int r) {
  const int i = r / p.group, j = r % p.group;
  return static_cast<const TQ*>(p.q) + ((size_t)(b * p.q_len + i) * p.hq + h * p.group + j) * D;
}

#ifndef PD_L2_SLICE
#define PD_L2_SLICE 1  // 0: no l2_prefetch_slice (A/B builds)
#endif
#ifndef PD_L2_WM_MAX
#define PD_L2_WM_MAX 1  // the mma.sync tiles (16 x WM rows) that use it
#endif

// KV head h's slice of page `page`, asked of L2 (cp.async.bulk.prefetch.L2; sm_90). For
// caches whose KV head has 64-byte rows (fp8 head_dim 64, GPT-OSS), one head per CTA reads
// 64 bytes of every 512, and DRAM serves such half-line reads slowly (bench/
// kv_read_granularity.cu: 2.55 TB/s with a 2-deep cp.async ring). A page is contiguous
// ([2][page_size][hkv][row]), so each of the hkv CTAs of a request asks for one contiguous
// 1/hkv of it (slice h at h x slice_bytes: exactly as many bytes as the head reads) a stage
// ahead of its own copies; together they bring whole pages in as long runs, and the heads'
// copies then hit L2 (2.89 TB/s in the same run). Used where it measured faster: the
// 16-row mma.sync tile with one stage in flight (KvStream's L2S; kernels/NOTES.md,
// thirteenth session, also for where it was slower).
__device__ __forceinline__ void l2_prefetch_slice(const Params& p, int page, uint32_t slice_off,
                                                  uint32_t slice_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const uint8_t* src = static_cast<const uint8_t*>(p.kv) +
                       (uint64_t)(uint32_t)page * ((uint32_t)p.hkv * slice_bytes) + slice_off;
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(src), "r"(slice_bytes) : "memory");
#endif
}

// Page-table-driven cp.async of the K and V of one stage of BN tokens. Thread-owned 16-byte
// chunks: slot j is row (tid + j*NT) / CPR, chunk (tid + j*NT) % CPR of both K and V. Page
// numbers are fetched a stage ahead so their latency hides behind the MMAs (two stages
// ahead in the wgmma kernels, whose every warp waits on them: fetch_ahead). L2S: with
// 64-byte rows and one stage in flight, l2_prefetch_slice each stage a stage ahead.
// L2S streams also touch each page's first line from the SM PD_XLAT_AHEAD stages ahead of its
// copies (xlat_stage; 0: never). 2 and 4 measured alike, 8 gained nothing (kernels/NOTES.md,
// twenty-first session).
#ifndef PD_XLAT_AHEAD
#define PD_XLAT_AHEAD 2
#endif
template <int NT, int CPR, int BN, bool L2S = false>
struct KvStream {
  static constexpr int J = BN * CPR / NT;
  static constexpr bool L2 = L2S && PD_L2_SLICE && CPR == 4;
  static_assert(BN * CPR % NT == 0, "tile chunks must divide threads");
  const int* pt;
  const uint8_t* head;  // this head's bytes in page 0
  // 32-bit: a page is under 2^31 bytes (pd_paged_decode checks), so only the page number's
  // offset needs 64-bit math (one wide multiply-add per chunk, not 64-bit products).
  uint32_t tok_bytes, page_bytes, v_off;
  uint32_t slice_off;  // l2_prefetch_slice's offset of this head's slice in a page
  int page_mask, page_shift, t_begin, t_end, tid;
  int pages[J];
  int ahead[J];  // the stage after pages' (fetch_ahead), for kernels with no producer warps
  int xlat_page = -1;  // xlat_stage: a page id loaded a stage before its prefetch

  __device__ __forceinline__ KvStream(const Params& p, const TileRange& t, int row_bytes, int tid_ = threadIdx.x)
      : pt(p.page_table + (size_t)t.b * p.max_pages),
        head(static_cast<const uint8_t*>(p.kv) + (size_t)t.h * row_bytes),
        tok_bytes((uint32_t)p.hkv * row_bytes),
        page_bytes(2u * p.page_size * p.hkv * row_bytes),
        v_off((uint32_t)p.page_size * p.hkv * row_bytes),
        slice_off(2u * p.page_size * row_bytes * t.h),
        page_mask(p.page_size - 1),
        page_shift(p.page_shift),
        t_begin(t.t_begin),
        t_end(t.t_end),
        tid(tid_) {}

  __device__ __forceinline__ void fetch(int it) { fetch_into(it, pages); }

  // Page numbers two stages ahead of use: take_ahead() moves them into pages after a load.
  // Where every warp loads and computes (grouped_wg_kernel), one stage of lead left ~13 % of
  // the stall samples on the page-table read under full DRAM load (ncu, GPT-OSS fp8).
  __device__ __forceinline__ void fetch_ahead(int it) { fetch_into(it, ahead); }
  __device__ __forceinline__ void take_ahead() {
#pragma unroll
    for (int j = 0; j < J; ++j) pages[j] = ahead[j];
  }

  // L2 (one stage in flight, la == 1): this head's slice of each page of stage it (its pages
  // just fetched), asked by the thread that copies the page's first chunk.
  __device__ __forceinline__ void l2_stage(const Params& p, int it, int la) const {
    if constexpr (L2) {
      if (la != 1) return;
      const int tb = t_begin + it * BN;
#pragma unroll
      for (int j = 0; j < J; ++j) {
        const unsigned idx = tid + j * NT;
        const int r = idx / CPR;
        if (idx % CPR == 0 && (r & page_mask) == 0 && tb + r < t_end)
          l2_prefetch_slice(p, pages[j], slice_off, 32u * CPR * p.page_size);  // 2 x rows x 16 B
      }
    }
  }

  // L2S: prefetch.global.L2 of this head's first line of each page whose id the previous
  // call loaded (stage s - 1: no wait on the id), then the ids of stage s's pages, one per
  // thread. Why: the seed's shuffled pages cost an address translation per 16 KB page (in
  // order they ran GPT-OSS fp8 q_len 2 batch 64 4.6 % faster, twentieth session); the bulk
  // L2 slice prefetch (l2_stage) goes through the TMA unit, this one through the SM's own
  // path, so the page's translation is warm when its cp.async copies come: 0.982x at batch
  // 64, 0.986x at 32, 0.988x at 16 (H100, twenty-first session).
  __device__ __forceinline__ void xlat_stage(int s, int ntiles) {
#if defined(__CUDA_ARCH__)
    if (xlat_page >= 0) asm volatile("prefetch.global.L2 [%0];" ::"l"(head + (uint64_t)(uint32_t)xlat_page * page_bytes));
#endif
    xlat_page = -1;
    const int tok = t_begin + s * BN + (tid << page_shift);
    if (s < ntiles && tid < (BN >> page_shift) && tok < t_end) xlat_page = __ldg(pt + (tok >> page_shift));
  }

  __device__ __forceinline__ void fetch_into(int it, int (&dst)[J]) const {
    const int tb = t_begin + it * BN;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int tok = tb + (int)(((unsigned)tid + j * NT) / CPR);
      dst[j] = tok < t_end ? __ldg(pt + (tok >> page_shift)) : 0;
    }
  }

  // Pipeline fill: stages 0..la-1 in flight (one commit group each; la, the lookahead, is
  // the ring's NS - 1 unless shallow_lookahead), stage la's pages fetched (and its
  // l2_stage; AHEAD: stage la+1's pages too, into `ahead`). load_stage(it, slot) issues
  // stage it into ring slot `slot`.
  template <int NS, bool AHEAD = false, typename Load>
  __device__ __forceinline__ void prime(const Params& p, int ntiles, Load load_stage, int la = NS - 1) {
#pragma unroll
    for (int s = 0; s < NS - 1; ++s) {
      if (s < la) {
        if (s < ntiles) {
          fetch(s);
          load_stage(s, s);
        }
        cp_async_commit();
      }
    }
    if (la < ntiles) {
      fetch(la);
      l2_stage(p, la, la);
    }
    if (AHEAD && la + 1 < ntiles) fetch_ahead(la + 1);
  }

  // In iteration it: stage it+la into its slot, the next stage's pages (AHEAD: the one
  // after it too; L2: that stage's l2_stage), one commit group.
  template <int NS, bool AHEAD = false, typename Load>
  __device__ __forceinline__ void advance(const Params& p, int it, int ntiles, Load load_stage, int la = NS - 1) {
    if (it + la < ntiles) {
      load_stage(it + la, (it + la) % NS);
      if constexpr (AHEAD) {
        take_ahead();
        if (it + la + 2 < ntiles) fetch_ahead(it + la + 2);
      } else if (it + la + 1 < ntiles) {
        fetch(it + la + 1);
      }
      if (it + la + 1 < ntiles) l2_stage(p, it + la + 1, la);
      if constexpr (L2 && PD_XLAT_AHEAD > 0) xlat_stage(it + la + 1 + PD_XLAT_AHEAD, ntiles);
    }
    cp_async_commit();
  }

  // K chunk (row r, chunk c) lands at k_dst + off(r, c), its V at k_dst + v_dst_off + off(r, c);
  // tokens past t_end are zero-filled.
  template <typename Off>
  __device__ __forceinline__ void load(int it, uint8_t* k_dst, int v_dst_off, Off off) const {
    const int tb = t_begin + it * BN;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const unsigned idx = tid + j * NT;
      const int r = idx / CPR, c = idx % CPR;
      const int tok = tb + r;
      const uint8_t* src = head + (uint64_t)(uint32_t)pages[j] * page_bytes +
                           ((uint32_t)(tok & page_mask) * tok_bytes + (uint32_t)c * 16u);
      const int o = off(r, c);
      cp_async16(smem_u32(k_dst + o), src, tok < t_end);
      cp_async16(smem_u32(k_dst + v_dst_off + o), src + v_off, tok < t_end);
    }
  }
};

// This thread's maxima of rows g (mx0) and g + 8 (mx1) over its NT8 n8 tiles of S.
template <int NT8>
__device__ __forceinline__ void thread_row_max(const float (&s)[NT8][4], float& mx0, float& mx1) {
  mx0 = -INFINITY;
  mx1 = -INFINITY;
#pragma unroll
  for (int nt = 0; nt < NT8; ++nt) {
    mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
    mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
  }
}

// Maximum over the 4 lanes that share a row.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

// Scores of tokens past each row's limit (the causal rule) as -inf: tile nt's tokens
// tb + 8 nt + 2 cq + {0, 1} of rows g (limit lim0) and g + 8 (lim1).
template <int NT8>
__device__ __forceinline__ void mask_rows(float (&s)[NT8][4], int tb, int cq, int lim0, int lim1) {
#pragma unroll
  for (int nt = 0; nt < NT8; ++nt) {
    const int tok = tb + nt * 8 + 2 * cq;
    if (tok > lim0) s[nt][0] = -INFINITY;
    if (tok + 1 > lim0) s[nt][1] = -INFINITY;
    if (tok > lim1) s[nt][2] = -INFINITY;
    if (tok + 1 > lim1) s[nt][3] = -INFINITY;
  }
}

// An online-softmax step that raises the maxima at every new maximum (m from -inf) and
// leaves the factors (corr0, corr1) the output rows must be scaled by to the caller:
// grouped_ws.cuh, whose O is rescaled at another point of its pipeline. Otherwise as
// softmax_step below.
template <int NT8>
__device__ __forceinline__ void softmax_p(float (&s)[NT8][4], bool masked, int tb, int cq, int lim0, int lim1,
                                          float sc, float& m0, float& m1, float& l0, float& l1, float& corr0,
                                          float& corr1) {
  if (masked) mask_rows(s, tb, cq, lim0, lim1);
  float mx0, mx1;
  thread_row_max(s, mx0, mx1);
  mx0 = quad_max(mx0);
  mx1 = quad_max(mx1);
  const float nm0 = fmaxf(m0, mx0 * sc), nm1 = fmaxf(m1, mx1 * sc);
  const float base0 = nm0 == -INFINITY ? 0.f : nm0;
  const float base1 = nm1 == -INFINITY ? 0.f : nm1;
  corr0 = ex2(m0 - base0);
  corr1 = ex2(m1 - base1);
  m0 = nm0;
  m1 = nm1;
  float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
  for (int nt = 0; nt < NT8; ++nt) {
    s[nt][0] = ex2(fmaf(s[nt][0], sc, -base0));
    s[nt][1] = ex2(fmaf(s[nt][1], sc, -base0));
    s[nt][2] = ex2(fmaf(s[nt][2], sc, -base1));
    s[nt][3] = ex2(fmaf(s[nt][3], sc, -base1));
    ps0 += s[nt][0] + s[nt][1];
    ps1 += s[nt][2] + s[nt][3];
  }
  l0 = l0 * corr0 + ps0;
  l1 = l1 * corr1 + ps1;
}

// Output rows g and g+8 times c0 and c1.
template <int NO>
__device__ __forceinline__ void scale_rows(float (&o)[NO][4], float c0, float c1) {
#pragma unroll
  for (int dn = 0; dn < NO; ++dn) {
    o[dn][0] *= c0; o[dn][1] *= c0;
    o[dn][2] *= c1; o[dn][3] *= c1;
  }
}

// scale_rows, skipped when no lane's maximum moved.
template <int NO>
__device__ __forceinline__ void rescale(float (&o)[NO][4], float corr0, float corr1) {
  if (__any_sync(0xffffffffu, corr0 != 1.f || corr1 != 1.f)) scale_rows(o, corr0, corr1);  // maxima rarely move
}

// The online softmax raises a running maximum only when a score exceeds it by more than
// 2^PD_SW_RAISE (FlashAttention-4's conditional rescaling; P then stays below 2^8, well inside
// fp16 and bf16), so most stages need no maximum exchange and no rescale. A build with 0
// raises at every new maximum: the self-check's way to exercise that path
// (bench/h100_ab_base.sh CHECK_VARIANTS).
#ifndef PD_SW_RAISE
#define PD_SW_RAISE 8
#endif
// A running maximum before any score: finite, so exponentials and rescale factors need no
// -inf test (a score only raises it past its threshold, -inf at first). Far below any scaled
// score.
constexpr float kNoMax = -1e30f;

// The lazy softmax (a pass with no raise check past its first stage: grouped_sw.cuh,
// grouped_wg.cuh) must run again where some exponential passed fp16 (+inf), and that leaves
// O non-finite: +inf times any V value (0 too) is inf or NaN, and stays so. A sum keeps NaN
// where fmaxf would drop it; a finite sum that overflows only costs a needless second pass.
// PD_LAZY_RERUN (tests): 1 (default) where O is not finite, 2 always (every CTA runs the
// eager pass too), 0 never (wrong where a P passed fp16: shows the check is needed).
#ifndef PD_LAZY_RERUN
#define PD_LAZY_RERUN 1
#endif
template <int COUNT>
__device__ __forceinline__ bool nonfinite(const float* o) {
  float a[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int i = 0; i < COUNT; ++i) a[i & 3] += o[i];
  const float x = (a[0] + a[1]) + (a[2] + a[3]);
  return PD_LAZY_RERUN == 2 || (PD_LAZY_RERUN == 1 && (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u);
}

// The running softmax state of a thread's two rows (g and g + 8 of its warp).
struct RowStats {
  float m0 = kNoMax, m1 = kNoMax;          // maxima, log2 domain, scaled by sc
  float th0 = -INFINITY, th1 = -INFINITY;  // raise thresholds, raw score units
  float l0 = 0.f, l1 = 0.f;                // sums of P (this thread's columns)
};

// One online-softmax step on a warp's S fragment: NT8 n8 tiles, rows g and g+8 of the warp,
// tile nt's tokens tb + 8 nt + 2 cq + {0, 1}. Masks tokens beyond each row's limit when
// `masked`; the row maxima m (log2 domain, scaled by sc; kNoMax at first) move only when some
// score of the warp exceeds its row's threshold th = (m + 2^PD_SW_RAISE) / sc in raw score
// units (-inf at first), and O and l are rescaled then; leaves P = 2^(s sc - m) in s and adds
// it to l. Skipping the quad shuffles on most stages: 5-6 % on GPT-OSS fp8 q_len 8 (twelfth
// session). `lazy`: no check at all, the exponentials from the maxima as they stand (a lazy
// pass past its first stage, grouped_wg.cuh's wg_tile: a P past fp16 shows as a non-finite O).
template <int NT8, int NO>
__device__ __forceinline__ void softmax_step(float (&s)[NT8][4], float (&o)[NO][4], bool masked, int tb, int cq,
                                             int lim0, int lim1, float sc, RowStats& r, bool lazy = false) {
  if (masked) mask_rows(s, tb, cq, lim0, lim1);
  float mx0, mx1;
  if (!lazy && (thread_row_max(s, mx0, mx1), __any_sync(0xffffffffu, mx0 > r.th0 || mx1 > r.th1))) {
    mx0 = quad_max(mx0);
    mx1 = quad_max(mx1);
    const float nm0 = fmaxf(r.m0, mx0 * sc), nm1 = fmaxf(r.m1, mx1 * sc);
    const float c0 = ex2(r.m0 - nm0), c1 = ex2(r.m1 - nm1);
    r.m0 = nm0;
    r.m1 = nm1;
    r.th0 = __fdividef(nm0 + float(PD_SW_RAISE), sc);
    r.th1 = __fdividef(nm1 + float(PD_SW_RAISE), sc);
    r.l0 *= c0;
    r.l1 *= c1;
    scale_rows(o, c0, c1);
  }
  float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
  for (int nt = 0; nt < NT8; ++nt) {
    s[nt][0] = ex2(fmaf(s[nt][0], sc, -r.m0));
    s[nt][1] = ex2(fmaf(s[nt][1], sc, -r.m0));
    s[nt][2] = ex2(fmaf(s[nt][2], sc, -r.m1));
    s[nt][3] = ex2(fmaf(s[nt][3], sc, -r.m1));
    ps0 += s[nt][0] + s[nt][1];
    ps1 += s[nt][2] + s[nt][3];
  }
  r.l0 += ps0;
  r.l1 += ps1;
}

template <int N>
__device__ __forceinline__ void zero(float (&a)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) a[i][0] = a[i][1] = a[i][2] = a[i][3] = 0.f;
}

// Row sums of l over the 4 lanes that share a row.
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Stages in flight ahead of the one being computed, where a configuration C lets the launch
// choose (C::SHALLOW: fp8 head_dim 64, whose 64-byte rows are half a 128-byte line): 1, 2
// or the ring's NS - 1 (p.kv_lookahead, 0 for the last). Each is one cp.async.wait_group
// count, an immediate: a uniform branch picks it.
// Configurations without C::SHALLOW keep the compile-time NS - 1.
template <class C>
__device__ __forceinline__ int lookahead(const Params& p) {
  if constexpr (C::SHALLOW) return p.kv_lookahead > 0 && p.kv_lookahead < C::NS - 1 ? p.kv_lookahead : C::NS - 1;
  else return C::NS - 1;
}
// Wait until the stage about to be computed has landed, with `la` stages issued ahead of it.
template <int NS>
__device__ __forceinline__ void cp_async_wait_stage(int la) {
  static_assert(NS <= 4, "lookaheads 1, 2 and NS - 1 only");
  if (la == 1) cp_async_wait<0>();
  else if (NS > 3 && la == 2) cp_async_wait<1>();
  else cp_async_wait<NS - 2>();
}

// The lookahead a grid of `ctas` CTAs reads its 64-byte rows with: fewer stages in flight per
// CTA the more CTAs share an SM (averaged over the SMs). H100, 512 CTAs of fp8 head_dim 64: a
// 4-deep cp.async ring read 2.31 TB/s, a 2-deep one 2.66 (bench/kv_read_granularity.cu), and
// the kernels with one stage in flight took 0.77-0.94x the time of three (kernels/NOTES.md);
// at ~2.4 CTAs per SM one stage is too little (GPT-OSS fp8 q_len 2 batch 40: 1.07x slower).
#ifndef PD_LA1_MIN
#define PD_LA1_MIN 3  // CTAs per SM from which one stage is in flight
#endif
#ifndef PD_LA2_MIN
#define PD_LA2_MIN 2  // and two
#endif
inline int shallow_lookahead(long long ctas) {
  static int sms[64];  // per device ordinal, 0 unknown
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  int& n = sms[dev & 63];
  if (n == 0 && cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) n = 0;
  if (n <= 0) return 0;
  return ctas >= (long long)PD_LA1_MIN * n ? 1 : (ctas >= (long long)PD_LA2_MIN * n ? 2 : 0);
}

template <class C, class = void>
struct has_shallow : std::false_type {};
template <class C>
struct has_shallow<C, std::void_t<decltype(C::SHALLOW)>> : std::bool_constant<C::SHALLOW> {};

// Kernel's dynamic shared-memory limit raised to C::SMEM, once per device: `done` is this
// instantiation's, so the kernel's, own static, shared by its launch and its occupancy query.
template <typename C, auto Kernel>
inline cudaError_t tiles_smem() {
  static unsigned long long done = 0;
  return set_smem_once(Kernel, C::SMEM, done);
}

// Whether the current device launches thread-block clusters (sm_90 and later).
inline bool cluster_capable() {
  static int cached[64];
  return device_flag(cached, [](int dev) {
    int major = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    return major >= 9;
  });
}

// Launch grouped kernel Kernel, whose configuration C gives its threads (NT) and dynamic
// shared memory (SMEM), on its grid, raising its shared-memory limit first (tiles_smem),
// with its lookahead (shallow_lookahead). The grid: (KV head, row tile x split, request)
// (cta_tile), or for a balanced grid (p.sk_units > 0; Kernel is then the kernel's balanced
// instantiation) (KV head, p.sk_ctas / hkv), in clusters of p.cluster_heads heads where
// that is over 1 and the device has clusters. Arguments after st (`extra`) are passed on to
// the kernel.
template <typename C, auto Kernel, typename... Extra>
inline cudaError_t launch_tiles(const Params& p, cudaStream_t st, Extra... extra) {
  cudaError_t e = tiles_smem<C, Kernel>();
  if (e != cudaSuccess) return e;
  const dim3 grid = p.sk_units > 0 ? dim3(p.hkv, p.sk_ctas / p.hkv, 1)
                                   : dim3(p.hkv, p.num_row_tiles * p.num_splits, p.batch);
  Params q = p;
  q.kv_lookahead = 0;
  if constexpr (has_shallow<C>::value) q.kv_lookahead = shallow_lookahead((long long)grid.x * grid.y * grid.z);
  if (p.cluster_heads > 1 && cluster_capable()) {
    // Clusters of p.cluster_heads consecutive KV heads (x): api.cu's cluster_heads_rule.
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = dim3(C::NT, 1, 1);
    cfg.dynamicSmemBytes = C::SMEM;
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = p.cluster_heads;
    at[0].val.clusterDim.y = 1;
    at[0].val.clusterDim.z = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, Kernel, q, extra...);
  }
  Kernel<<<grid, C::NT, C::SMEM, st>>>(q, extra...);
  return cudaGetLastError();
}

// CTAs of Kernel (configuration C) one SM holds with the shared memory launch_tiles gives
// it: the occupancy the host cost model (kernels/plan.py) plans the grid with.
template <typename C, auto Kernel>
inline cudaError_t tiles_occupancy(int* ctas_per_sm) {
  cudaError_t e = tiles_smem<C, Kernel>();
  if (e != cudaSuccess) return e;
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(ctas_per_sm, Kernel, C::NT, C::SMEM);
}

}  // namespace pd
