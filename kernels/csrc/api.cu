// The plain C ABI of the library (kernels/binding.py loads it with ctypes).
// Every entry point validates its arguments, launches on the caller's stream and returns a
// cudaError_t code (0 = success); launches are checked with cudaGetLastError.
#include <math.h>

#include "api_internal.h"
#include "grouped.cuh"

namespace pd {

// Split-KV merge: out[row] = sum_s w_s * O_s / sum_s w_s with w_s = 2^(lse_s - max lse).
template <typename T>
__global__ void __launch_bounds__(128) merge_kernel(const float* __restrict__ ws_o,
                                                    const float* __restrict__ ws_lse, T* out,
                                                    int rtot, int num_splits, int d4n,
                                                    float unused) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= rtot * d4n) return;
  const int r = idx / d4n, d4 = idx % d4n;
  float mx = -INFINITY;
  for (int s = 0; s < num_splits; ++s) mx = fmaxf(mx, ws_lse[(size_t)s * rtot + r]);
  float wsum = 0.f;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int s = 0; s < num_splits; ++s) {
    const float lse = ws_lse[(size_t)s * rtot + r];
    if (lse == -INFINITY) continue;
    const float w = ex2(lse - mx);
    const float4 v = *reinterpret_cast<const float4*>(ws_o + ((size_t)s * rtot + r) * d4n * 4 + d4 * 4);
    wsum += w;
    acc.x += w * v.x; acc.y += w * v.y; acc.z += w * v.z; acc.w += w * v.w;
  }
  const float inv = wsum > 0.f ? 1.f / wsum : 0.f;
  uint2 w2;
  w2.x = Tr<T>::pack(acc.x * inv, acc.y * inv);
  w2.y = Tr<T>::pack(acc.z * inv, acc.w * inv);
  *reinterpret_cast<uint2*>(out + (size_t)r * d4n * 4 + d4 * 4) = w2;
}

static cudaError_t launch_merge(const Params& p, int head_dim, int q_dtype, cudaStream_t st) {
  const int rtot = p.batch * p.q_len * p.hq;
  const int d4n = head_dim / 4;
  const long long n = (long long)rtot * d4n;
  const int blocks = (int)((n + 127) / 128);
  if (q_dtype == kF16) {
    merge_kernel<__half><<<blocks, 128, 0, st>>>(p.ws_o, p.ws_lse, static_cast<__half*>(p.out), rtot,
                                                 p.num_splits, d4n, 0.f);
  } else {
    merge_kernel<__nv_bfloat16><<<blocks, 128, 0, st>>>(
        p.ws_o, p.ws_lse, static_cast<__nv_bfloat16*>(p.out), rtot, p.num_splits, d4n, 0.f);
  }
  return cudaGetLastError();
}

static bool valid_tile(int t) { return t == 16 || t == 32 || t == 64 || t == 128; }

}  // namespace pd

using namespace pd;

#define PD_API __attribute__((visibility("default")))

extern "C" {

// ABI version: bump when a signature below changes (binding.py checks it).
PD_API int pd_abi_version(void) { return 3; }

// Bytes of split-KV workspace the grouped kernel needs for this launch (0 when unsplit).
PD_API size_t pd_workspace_bytes(int batch, int q_len, int num_qo_heads, int head_dim, int num_splits) {
  if (num_splits <= 1) return 0;
  const size_t rtot = (size_t)batch * q_len * num_qo_heads;
  return (size_t)num_splits * rtot * ((size_t)head_dim + 1) * sizeof(float);
}

// Threads and dynamic shared memory of one grouped configuration (host-only; no GPU needed).
PD_API int pd_grouped_config(int tile, int head_dim, int kv_dtype, int* threads, int* smem_bytes) {
  const bool kv8 = kv_dtype == kE4M3;
#define PD_CFG(D)                                                            \
  switch (tile) {                                                            \
    case 16: kv8 ? grouped_config<D, true, 1>(threads, smem_bytes)           \
                 : grouped_config<D, false, 1>(threads, smem_bytes); break;  \
    case 32: kv8 ? grouped_config<D, true, 2>(threads, smem_bytes)           \
                 : grouped_config<D, false, 2>(threads, smem_bytes); break;  \
    case 64: kv8 ? grouped_config<D, true, 4>(threads, smem_bytes)           \
                 : grouped_config<D, false, 4>(threads, smem_bytes); break;  \
    case 128: kv8 ? grouped_config<D, true, 8>(threads, smem_bytes)          \
                  : grouped_config<D, false, 8>(threads, smem_bytes); break; \
    default: return (int)cudaErrorInvalidValue;                              \
  }
  switch (head_dim) {
    case 64: PD_CFG(64) break;
    case 128: PD_CFG(128) break;
    case 256: PD_CFG(256) break;
    default: return (int)cudaErrorInvalidValue;
  }
#undef PD_CFG
  return 0;
}

// Resident CTAs per SM of the grouped kernel on the current device: `rows` (q_len x group)
// < 0 asks for the mma.sync kernel (the configuration GCfg, which kernels/plan.py mirrors),
// otherwise for the kernel a `tile`-row tile of such a problem actually runs here (on sm_90
// the wgmma kernels), which is what the cost model plans the grid with.
static int grouped_occupancy(int tile, int head_dim, int q_dtype, int kv_dtype, int rows, int* ctas_per_sm) {
  if (!ctas_per_sm) return (int)cudaErrorInvalidValue;
  const bool mma_only = rows < 0;
  switch (head_dim) {
    case 64: return (int)occupancy_grouped_d64(q_dtype, kv_dtype, tile, rows, mma_only, ctas_per_sm);
    case 128: return (int)occupancy_grouped_d128(q_dtype, kv_dtype, tile, rows, mma_only, ctas_per_sm);
    case 256: return (int)occupancy_grouped_d256(q_dtype, kv_dtype, tile, rows, mma_only, ctas_per_sm);
    default: return (int)cudaErrorInvalidValue;
  }
}

PD_API int pd_grouped_occupancy(int tile, int head_dim, int q_dtype, int kv_dtype, int* ctas_per_sm) {
  return grouped_occupancy(tile, head_dim, q_dtype, kv_dtype, -1, ctas_per_sm);
}

PD_API int pd_grouped_occupancy_for(int tile, int head_dim, int q_dtype, int kv_dtype, int rows, int* ctas_per_sm) {
  if (rows < 1) return (int)cudaErrorInvalidValue;
  return grouped_occupancy(tile, head_dim, q_dtype, kv_dtype, rows, ctas_per_sm);
}

// Whether the kernel a `tile`-row tile of a `rows`-row problem runs on the current device
// takes a balanced grid (cta_segment): *ok 1 or 0.
PD_API int pd_grouped_balanced(int tile, int head_dim, int q_dtype, int kv_dtype, int rows, int* ok) {
  if (!ok || rows < 1) return (int)cudaErrorInvalidValue;
  switch (head_dim) {
    case 64: return (int)balanced_grouped_d64(q_dtype, kv_dtype, tile, rows, ok);
    case 128: return (int)balanced_grouped_d128(q_dtype, kv_dtype, tile, rows, ok);
    case 256: return (int)balanced_grouped_d256(q_dtype, kv_dtype, tile, rows, ok);
    default: return (int)cudaErrorInvalidValue;
  }
}

// Whether the grouped kernels' TMA KV reads go evict_first (kv_l2_policy): only where one
// row tile reads each KV byte (several row tiles of a head share its reads through L2), and
// where the whole stream (every request's table, K and V) is under 2^30 bytes: there it
// measured 2-5 % faster on H100 (the dirty lines a write-heavy kernel before it left in L2
// stay there, written back later), on longer streams 0.4-0.6 % slower (kv_tma.cuh).
static int kv_evict_first_rule(const Params& p, size_t page_bytes) {
  const double stream_bytes = (double)p.batch * p.max_pages * (double)page_bytes;
  return p.num_row_tiles == 1 && stream_bytes < (double)(1u << 30) ? 1 : 0;
}

// Clusters of how many consecutive KV heads the grouped grids launch as (launch_tiles): 2,
// where the heads' count is even and a head's KV row is at least a 128-byte line, else 1.
// Why: a cluster's CTAs run in one GPC, and the seed's shuffled pages cost an address
// translation per page (2 MiB blocks of pages in order ran GPT-OSS fp8 q_len 2 batch 64 3.6 %
// faster); pairs of heads ran 0.98x (GPT-OSS bf16 batch 64) to 1.00x on H100, and fp8
// head_dim 64 (64-byte rows: two heads per line) 0.99-1.011x, so it keeps none. Clusters of
// 4 or 8 heads ran 1.01-1.86x slower on all but four rows (kernels/NOTES.md, twentieth session).
// PD_CLUSTER_HEADS=0 builds launch none (A/B builds).
#ifndef PD_CLUSTER_HEADS
#define PD_CLUSTER_HEADS 2
#endif
static int cluster_heads_rule(int num_kv_heads, int head_dim, int kv_dtype) {
  const int row_bytes = head_dim * (kv_dtype == kE4M3 ? 1 : 2);
  return PD_CLUSTER_HEADS > 1 && num_kv_heads % PD_CLUSTER_HEADS == 0 && row_bytes >= 128 ? PD_CLUSTER_HEADS : 1;
}

// kernel: 0 = baseline, 1 = grouped. dtype codes: 0 fp16, 1 bf16, 2 fp8 e4m3 (KV only).
// tile_rows / num_splits / kv_tokens_per_split / balanced_ctas come from kernels.plan
// (grouped only). balanced_ctas > 0: a balanced grid of that many CTAs (a multiple of
// num_kv_heads), each taking kv_tokens_per_split tokens' worth of stages of its KV head's
// items laid end to end (cta_segment), with num_splits partial slots per item.
PD_API int pd_paged_decode(int kernel, const void* q, const void* kv_cache, const int* page_table,
                    const int* kv_lens, void* out, int batch, int q_len, int num_qo_heads,
                    int num_kv_heads, int head_dim, int page_size, int max_pages, int q_dtype,
                    int kv_dtype, float sm_scale, float k_scale, float v_scale, int tile_rows,
                    int num_splits, int kv_tokens_per_split, int balanced_ctas, void* workspace,
                    size_t workspace_bytes, cudaStream_t stream) {
  if (!q || !kv_cache || !page_table || !kv_lens || !out) return (int)cudaErrorInvalidValue;
  // 16-byte copies of q and the cache (cp.async, TMA): a misaligned start would fault and
  // leave the context unusable, so it is refused here (binding.py says why in words).
  if (((uintptr_t)q | (uintptr_t)kv_cache | (uintptr_t)out) & 15u) return (int)cudaErrorInvalidValue;
  if (batch < 1 || q_len < 1 || q_len > 16 || num_kv_heads < 1 || num_qo_heads % num_kv_heads)
    return (int)cudaErrorInvalidValue;
  if (head_dim != 64 && head_dim != 128 && head_dim != 256) return (int)cudaErrorInvalidValue;
  if (page_size != 16 && page_size != 32 && page_size != 64) return (int)cudaErrorInvalidValue;
  if (q_dtype != kF16 && q_dtype != kBF16) return (int)cudaErrorInvalidValue;
  if (kv_dtype != kE4M3 && kv_dtype != q_dtype) return (int)cudaErrorInvalidValue;
  const int group = num_qo_heads / num_kv_heads;
  if (group > 16) return (int)cudaErrorInvalidValue;
  // A page (K and V of page_size tokens, all KV heads) must stay under 2^31 bytes: the
  // kernels address within a page in 32 bits.
  const size_t page_bytes = (size_t)2 * page_size * num_kv_heads * head_dim * (kv_dtype == kE4M3 ? 1 : 2);
  if (page_bytes >= ((size_t)1 << 31)) return (int)cudaErrorInvalidValue;

  Params p{};
  p.q = q;
  p.kv = kv_cache;
  p.page_table = page_table;
  p.kv_lens = kv_lens;
  p.out = out;
  p.batch = batch;
  p.q_len = q_len;
  p.hq = num_qo_heads;
  p.hkv = num_kv_heads;
  p.group = group;
  p.page_size = page_size;
  p.page_shift = page_size == 16 ? 4 : (page_size == 32 ? 5 : 6);
  p.max_pages = max_pages;
  p.scale_log2 = sm_scale * k_scale * 1.4426950408889634f;
  p.v_scale = v_scale;
  p.num_splits = 1;
  p.split_tokens = 1 << 30;
  p.num_row_tiles = 1;

  if (kernel == 0) return (int)launch_baseline(p, head_dim, q_dtype, kv_dtype, stream);
  if (kernel != 1) return (int)cudaErrorInvalidValue;

  if (!valid_tile(tile_rows) || num_splits < 1 || balanced_ctas < 0) return (int)cudaErrorInvalidValue;
  const int rows = q_len * group;
  p.num_row_tiles = (rows + tile_rows - 1) / tile_rows;
  // The classic grid's y is row tiles x splits (launch_tiles): at most 65535.
  if ((long long)p.num_row_tiles * num_splits > 65535) return (int)cudaErrorInvalidValue;
  p.num_splits = num_splits;
  if (num_splits > 1) {
    if (kv_tokens_per_split < 64 || kv_tokens_per_split % 64) return (int)cudaErrorInvalidValue;
    const size_t need = pd_workspace_bytes(batch, q_len, num_qo_heads, head_dim, num_splits);
    if (!workspace || workspace_bytes < need) return (int)cudaErrorInvalidValue;
    p.split_tokens = kv_tokens_per_split;
    p.ws_o = static_cast<float*>(workspace);
    p.ws_lse = p.ws_o + (size_t)num_splits * batch * q_len * num_qo_heads * head_dim;
  }
  if (balanced_ctas > 0) {
    // Every stage of every item covered, and no item split over more than num_splits CTAs
    // (cta_segment's slots): a bad plan is refused rather than written past the workspace.
    // It needs partial slots (num_splits >= 2), so kv_tokens_per_split passed the check above.
    if (num_splits < 2) return (int)cudaErrorInvalidValue;
    // Each KV head's items are cut alike (cta_segment): balanced_ctas / hkv CTAs per head.
    const long long stages = ((long long)max_pages * page_size + 63) / 64;
    const long long units = kv_tokens_per_split / 64;
    const long long work = (long long)batch * p.num_row_tiles * stages;  // one head's
    const long long per_head = balanced_ctas / num_kv_heads;
    if (balanced_ctas % num_kv_heads || per_head > 65535 || work >= (1LL << 31) || units > stages ||
        per_head * units < work ||
        (per_head - 1) * units >= work || (stages - 1) / units + 2 > num_splits)
      return (int)cudaErrorInvalidValue;
    p.sk_units = (int)units;
    p.sk_stages = (int)stages;
    p.sk_ctas = balanced_ctas;
  }
  p.kv_evict_first = kv_evict_first_rule(p, page_bytes);
  p.cluster_heads = cluster_heads_rule(num_kv_heads, head_dim, kv_dtype);
  cudaError_t e;
  switch (head_dim) {
    case 64: e = launch_grouped_d64(p, q_dtype, kv_dtype, tile_rows, stream); break;
    case 128: e = launch_grouped_d128(p, q_dtype, kv_dtype, tile_rows, stream); break;
    default: e = launch_grouped_d256(p, q_dtype, kv_dtype, tile_rows, stream); break;
  }
  if (e != cudaSuccess || num_splits == 1) return (int)e;
  return (int)launch_merge(p, head_dim, q_dtype, stream);
}

PD_API const char* pd_error_string(int code) { return cudaGetErrorString((cudaError_t)code); }

}  // extern "C"
