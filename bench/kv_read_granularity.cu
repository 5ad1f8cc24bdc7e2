// How fast can a paged KV cache be read when each CTA takes a narrow slice of every token?
// GPT-OSS fp8 (head_dim 64) gives a KV head 64 contiguous bytes per token, 512 bytes apart;
// Qwen3 fp8 and every bf16 shape give it 128 or more. This reads the same cache (shuffled
// pages, L2 flushed, both K and V) with 1, 2, 4 or 8 adjacent heads per CTA, i.e. 64-512
// contiguous bytes per token, and prints TB/s for each: whether reading two heads per CTA
// is worth a kernel change. Pure data movement, no MMA; standalone (nvcc, no torch).
//   nvcc -O3 -arch=sm_90a -o /tmp/kvg bench/kv_read_granularity.cu && /tmp/kvg
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#define CK(x)                                                                  \
  do {                                                                         \
    cudaError_t e = (x);                                                       \
    if (e != cudaSuccess) {                                                    \
      std::printf("CUDA error %s at line %d\n", cudaGetErrorString(e), __LINE__); \
      return 1;                                                                \
    }                                                                          \
  } while (0)

constexpr int kThreads = 128;
constexpr int kPageTok = 16;
constexpr int kUnroll = 4;  // pages in flight per CTA iteration

// One CTA per (split, head group, request): reads K and V of CPR 16-byte chunks per token
// (the group's heads, contiguous) for its pages, XOR-folds them so the loads stay live.
template <int CPR>
__global__ void __launch_bounds__(kThreads) read_kv(const uint4* kv, const int* pt, int pages_per_req, int heads,
                                                   int head_bytes, unsigned* sink) {
  const int split = blockIdx.x, hg = blockIdx.y, b = blockIdx.z;
  const int per = pages_per_req / gridDim.x;
  const int p0 = split * per;
  constexpr int CHUNKS = 2 * kPageTok * CPR;         // per page, K and V
  constexpr int PER_T = (CHUNKS + kThreads - 1) / kThreads;
  const size_t tok_stride = (size_t)heads * head_bytes / 16;  // in uint4
  const size_t half_stride = kPageTok * tok_stride;
  const size_t col0 = (size_t)hg * CPR;
  unsigned acc = 0;
  for (int i = 0; i < per; i += kUnroll) {
    uint4 v[kUnroll][PER_T];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int page = pt[(size_t)b * pages_per_req + p0 + min(i + u, per - 1)];
#pragma unroll
      for (int j = 0; j < PER_T; ++j) {
        const int idx = threadIdx.x + j * kThreads;
        const int c = idx % CPR, tok = (idx / CPR) % kPageTok, half = idx / (CPR * kPageTok);
        v[u][j] = idx < CHUNKS ? __ldg(kv + (size_t)page * 2 * half_stride + half * half_stride + tok * tok_stride + col0 + c)
                               : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int j = 0; j < PER_T; ++j) acc ^= v[u][j].x ^ v[u][j].y ^ v[u][j].z ^ v[u][j].w;
  }
  if (acc == 0x12345678u) sink[0] = acc;
}

// The kernels' way: 64-token stages (4 pages, K and V) copied with 16-byte cp.async into an
// NS-deep shared-memory ring; wait for the oldest, barrier, issue the next, touch the stage.
// PF > 0: the head groups' CTAs of a request also share an L2 prefetch of each page PF
// stages ahead: CTA hg asks for the hg-th contiguous slice of the whole page (all heads, K
// and V; cp.async.bulk.prefetch.L2), so DRAM sees page-sized runs instead of 64-byte rows.
template <int CPR, int NS, int PF = 0>
__global__ void __launch_bounds__(kThreads) read_kv_async(const uint4* kv, const int* pt, int pages_per_req,
                                                         int heads, int head_bytes, unsigned* sink) {
  extern __shared__ uint4 ring[];
  constexpr int STAGE = 2 * 64 * CPR;  // uint4 per stage: K and V of 64 tokens
  constexpr int PER_T = STAGE / kThreads;
  const int split = blockIdx.x, hg = blockIdx.y, b = blockIdx.z;
  const int per = pages_per_req / gridDim.x, p0 = split * per, nst = per / 4;
  const size_t tok_stride = (size_t)heads * head_bytes / 16, half_stride = kPageTok * tok_stride;
  const size_t col0 = (size_t)hg * CPR;
  auto issue = [&](int st) {
    if constexpr (PF > 0) {
      const int pst = st + PF;
      if (pst < nst && threadIdx.x < 4) {
        const uint32_t slice = (uint32_t)(2 * half_stride * 16 / gridDim.y);
        const int page = pt[(size_t)b * pages_per_req + p0 + pst * 4 + threadIdx.x];
        const uint8_t* src = reinterpret_cast<const uint8_t*>(kv + (size_t)page * 2 * half_stride) + (size_t)hg * slice;
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(src), "r"(slice) : "memory");
      }
    }
    if (st < nst) {
#pragma unroll
      for (int j = 0; j < PER_T; ++j) {
        const int idx = threadIdx.x + j * kThreads;
        const int c = idx % CPR, tok = (idx / CPR) % 64, half = idx / (CPR * 64);
        const int page = pt[(size_t)b * pages_per_req + p0 + st * 4 + tok / kPageTok];
        const uint4* src = kv + (size_t)page * 2 * half_stride + half * half_stride + (tok % kPageTok) * tok_stride + col0 + c;
        const unsigned dst = (unsigned)__cvta_generic_to_shared(ring + (st % NS) * STAGE + idx);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
      }
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  };
  for (int st = 0; st < NS - 1; ++st) issue(st);
  unsigned acc = 0;
  for (int st = 0; st < nst; ++st) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(NS - 2) : "memory");
    __syncthreads();
    issue(st + NS - 1);
    acc ^= ring[(st % NS) * STAGE + threadIdx.x].x;
  }
  if (acc == 0x12345678u) sink[0] = acc;
}

int main() {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  const int batch = 64, kv_len = 16384, heads = 8;
  const int pages_per_req = kv_len / kPageTok;
  const int num_pages = batch * pages_per_req;
  std::vector<int> pt(num_pages);
  std::iota(pt.begin(), pt.end(), 0);
  std::shuffle(pt.begin(), pt.end(), std::mt19937(7));
  int* d_pt;
  unsigned* sink;
  uint8_t* flush;
  const size_t flush_bytes = 256u << 20;
  CK(cudaMalloc(&d_pt, pt.size() * sizeof(int)));
  CK(cudaMemcpy(d_pt, pt.data(), pt.size() * sizeof(int), cudaMemcpyHostToDevice));
  CK(cudaMalloc(&sink, 4));
  CK(cudaMalloc(&flush, flush_bytes));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  // Median of 10 timed launches (after 2 warm-ups), each behind an L2 flush; -1 on an error.
  auto median_ms = [&](auto launch) -> float {
    std::vector<float> ts;
    for (int r = 0; r < 12; ++r) {
      float ms = 0.f;
      if (cudaMemsetAsync(flush, r, flush_bytes) != cudaSuccess || cudaEventRecord(e0) != cudaSuccess) return -1.f;
      launch();
      if (cudaEventRecord(e1) != cudaSuccess || cudaEventSynchronize(e1) != cudaSuccess ||
          cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess)
        return -1.f;
      if (r >= 2) ts.push_back(ms);
    }
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
      std::printf("CUDA error %s\n", cudaGetErrorString(e));
      return -1.f;
    }
    std::sort(ts.begin(), ts.end());
    return ts[ts.size() / 2];
  };
  std::printf("%-10s %-6s %-6s %-6s %-8s %-8s\n", "head_B", "hpc", "split", "CTAs", "us", "TB/s");
  for (int head_bytes : {64, 128}) {
    const size_t bytes = (size_t)num_pages * 2 * kPageTok * heads * head_bytes;
    uint4* kv;
    CK(cudaMalloc(&kv, bytes));
    CK(cudaMemset(kv, 1, bytes));
    for (int hpc : {1, 2, 4, 8}) {
      const int cpr = hpc * head_bytes / 16;
      for (int split : {1, 2, 4}) {
        const dim3 grid(split, heads / hpc, batch);
        auto launch = [&]() {
          switch (cpr) {
            case 4: read_kv<4><<<grid, kThreads>>>(kv, d_pt, pages_per_req, heads, head_bytes, sink); break;
            case 8: read_kv<8><<<grid, kThreads>>>(kv, d_pt, pages_per_req, heads, head_bytes, sink); break;
            case 16: read_kv<16><<<grid, kThreads>>>(kv, d_pt, pages_per_req, heads, head_bytes, sink); break;
            case 32: read_kv<32><<<grid, kThreads>>>(kv, d_pt, pages_per_req, heads, head_bytes, sink); break;
            default: read_kv<64><<<grid, kThreads>>>(kv, d_pt, pages_per_req, heads, head_bytes, sink); break;
          }
        };
        const float med = median_ms(launch);
        if (med < 0) return 1;
        std::printf("%-10d %-6d %-6d %-6d %-8.1f %-8.2f\n", head_bytes, hpc, split, grid.x * grid.y * grid.z,
                    med * 1e3f, bytes / (med * 1e-3) / 1e12);
      }
    }
    // cp.async rings like the kernels': 512 CTAs (split 512 / (heads / hpc) / batch). One head
    // per CTA is also run in clusters of 2 along the heads (adjacent heads' CTAs start together
    // on one GPC, so both halves of each 128-byte line are asked for at about the same time).
    for (int hpc : {1, 2}) {
      const int cpr = hpc * head_bytes / 16;
      const int split = hpc;
      const dim3 grid(split, heads / hpc, batch);
      for (int cl : {1, 2}) {
        if (cl == 2 && hpc != 1) continue;
        for (int ns : {2, 3, 4, 6}) {
          const int smem = ns * 2 * 64 * cpr * 16;
          auto launch = [&]() {
            cudaLaunchConfig_t cfg = {};
            cudaLaunchAttribute attr[1];
            cfg.gridDim = grid;
            cfg.blockDim = dim3(kThreads);
            cfg.dynamicSmemBytes = smem;
            attr[0].id = cudaLaunchAttributeClusterDimension;
            attr[0].val.clusterDim.x = 1;
            attr[0].val.clusterDim.y = cl;
            attr[0].val.clusterDim.z = 1;
            cfg.attrs = attr;
            cfg.numAttrs = 1;
#define KVG_CASE(C, N)                                                                                  \
  if (cpr == C && ns == N) {                                                                              \
    cudaFuncSetAttribute(read_kv_async<C, N>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);         \
    cudaLaunchKernelEx(&cfg, read_kv_async<C, N>, (const uint4*)kv, (const int*)d_pt, pages_per_req, heads, \
                       head_bytes, sink);                                                                \
  }
            KVG_CASE(4, 2) KVG_CASE(4, 3) KVG_CASE(4, 4) KVG_CASE(4, 6)
            KVG_CASE(8, 2) KVG_CASE(8, 3) KVG_CASE(8, 4) KVG_CASE(8, 6)
            KVG_CASE(16, 2) KVG_CASE(16, 3) KVG_CASE(16, 4) KVG_CASE(16, 6)
#undef KVG_CASE
          };
          const float med = median_ms(launch);
          if (med < 0) return 1;
          std::printf("async %-4d %-6d %-6d ring %-2d (%3d KB) cluster %d  %-8.1f %-8.2f\n", head_bytes, hpc, split, ns,
                      smem >> 10, cl, med * 1e3f, bytes / (med * 1e-3) / 1e12);
        }
      }
    }
    // One head per CTA (512 CTAs) with the shared L2 prefetch PF stages ahead.
    for (int pf : {1, 2, 4}) {
      for (int ns : {2, 3, 4}) {
        const int cpr = head_bytes / 16;
        const int smem = ns * 2 * 64 * cpr * 16;
        const dim3 grid(1, heads, batch);
        auto launch = [&]() {
#define KVP_CASE(C, N, P)                                                                        \
  if (cpr == C && ns == N && pf == P) {                                                          \
    cudaFuncSetAttribute(read_kv_async<C, N, P>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem); \
    read_kv_async<C, N, P><<<grid, kThreads, smem>>>(kv, d_pt, pages_per_req, heads, head_bytes, sink); \
  }
#define KVP_ROW(C, P) KVP_CASE(C, 2, P) KVP_CASE(C, 3, P) KVP_CASE(C, 4, P)
          KVP_ROW(4, 1) KVP_ROW(4, 2) KVP_ROW(4, 4) KVP_ROW(8, 1) KVP_ROW(8, 2) KVP_ROW(8, 4)
#undef KVP_ROW
#undef KVP_CASE
        };
        const float med = median_ms(launch);
        if (med < 0) return 1;
        std::printf("async %-4d 1      1      ring %-2d (%3d KB) L2 prefetch %d stages ahead  %-8.1f %-8.2f\n", head_bytes,
                    ns, smem >> 10, pf, med * 1e3f, bytes / (med * 1e-3) / 1e12);
      }
    }
    CK(cudaFree(kv));
  }
  return 0;
}
