// `baseline` kernel: one CTA per (query token, KV head, request). It computes the `group`
// query heads of ONE token, so the KV cache is read q_len times (the seed's old path).
//
// Simple but not silly: K/V chunks stream into shared memory with 16-byte cp.async in a
// two-stage ring; with 8 warps, warp w owns heads w and w+8 for the whole run, so scores,
// softmax and P.V of a head stay inside one warp (warp shuffles, no block barriers besides
// the ring), and the per-chunk work of a warp is at most two heads.
#include "api_internal.h"
#include "common.cuh"

namespace pd {

template <int D, typename T, bool KV8>
struct BCfg {
  static constexpr int NW = 8;  // warps; heads per warp = ceil(group / NW) <= HPW
  static constexpr int HPW = 2;
  static constexpr int NT = NW * 32;
  static constexpr int CH = 8192 / D;  // tokens per chunk
  static constexpr int ES = KV8 ? 1 : 2;
  static constexpr int ROWB = D * ES;
  static constexpr int STAGE = 2 * CH * ROWB;
  static constexpr int LPR = D / 8;  // lanes per token row (8 elements each)
  static constexpr int TPS = 32 / LPR;
  static constexpr int SMEM = 2 * STAGE + 16 * CH * 4;
};

// 8 consecutive elements of a K/V row in shared memory, as floats.
template <typename T, bool KV8>
__device__ __forceinline__ void load8(const uint8_t* src, float (&f)[8]) {
  uint32_t w[4];
  if constexpr (KV8) {
    const uint2 x = *reinterpret_cast<const uint2*>(src);
    e4m3x4_to<T>(x.x, w[0], w[1]);
    e4m3x4_to<T>(x.y, w[2], w[3]);
  } else {
    const uint4 x = *reinterpret_cast<const uint4*>(src);
    w[0] = x.x; w[1] = x.y; w[2] = x.z; w[3] = x.w;
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 v = Tr<T>::unpack(w[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

template <int D, typename T, bool KV8>
__global__ void __launch_bounds__(256, 2) baseline_kernel(const Params p) {
  using C = BCfg<D, T, KV8>;
  extern __shared__ __align__(128) uint8_t smem[];
  float* sp = reinterpret_cast<float*>(smem + 2 * C::STAGE);  // [16][CH] scores / probs
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int dl = lane % C::LPR, ts = lane / C::LPR;
  const int qi = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int kv_len = p.kv_lens[b];
  const int ntok = kv_len - p.q_len + qi + 1;  // causal: positions 0 .. kv_len-q_len+qi
  const int nch = (ntok + C::CH - 1) / C::CH;
  const int* pt = p.page_table + (size_t)b * p.max_pages;
  const uint8_t* kvb = static_cast<const uint8_t*>(p.kv);
  const size_t tok_bytes = (size_t)p.hkv * D * C::ES;
  const size_t page_bytes = 2 * (size_t)p.page_size * tok_bytes;
  const size_t v_off = (size_t)p.page_size * tok_bytes;
  const size_t head_off = (size_t)h * C::ROWB;
  const int page_mask = p.page_size - 1;
  const float sc = p.scale_log2;

  auto load_chunk = [&](int ch, int stage) {
    uint8_t* sk = smem + stage * C::STAGE;
    constexpr int CPR = C::ROWB / 16;
    constexpr int TOTAL = C::CH * CPR;
    static_assert(TOTAL % C::NT == 0, "chunk must divide threads");
#pragma unroll
    for (int j = 0; j < TOTAL / C::NT; ++j) {
      const int idx = tid + j * C::NT;
      const int r = idx / CPR, c = idx % CPR;
      const int tok = ch * C::CH + r;
      const bool ok = tok < ntok;
      const int page = ok ? __ldg(pt + (tok >> p.page_shift)) : 0;
      const uint8_t* src =
          kvb + (size_t)page * page_bytes + (size_t)(tok & page_mask) * tok_bytes + head_off + c * 16;
      cp_async16(smem_u32(sk + r * C::ROWB + c * 16), src, ok);
      cp_async16(smem_u32(sk + C::CH * C::ROWB + r * C::ROWB + c * 16), src + v_off, ok);
    }
  };

  // q slices of this warp's heads (fp32 registers); heads beyond the group stay zero.
  float qf[C::HPW][8], o[C::HPW][8], m[C::HPW], l[C::HPW];
#pragma unroll
  for (int j = 0; j < C::HPW; ++j) {
    const int gh = warp + C::NW * j;
    m[j] = -INFINITY;
    l[j] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) o[j][e] = 0.f;
    if (gh < p.group) {
      const T* qp = static_cast<const T*>(p.q) +
                    ((size_t)(b * p.q_len + qi) * p.hq + h * p.group + gh) * D + dl * 8;
      const uint4 x = *reinterpret_cast<const uint4*>(qp);
      const uint32_t w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 v = Tr<T>::unpack(w[i]);
        qf[j][2 * i] = v.x;
        qf[j][2 * i + 1] = v.y;
      }
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) qf[j][e] = 0.f;
    }
  }
  const int nh = (p.group - warp + C::NW - 1) / C::NW;  // heads owned by this warp (0..HPW)

  load_chunk(0, 0);
  cp_async_commit();
  for (int ch = 0; ch < nch; ++ch) {
    if (ch + 1 < nch) load_chunk(ch + 1, (ch + 1) & 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const uint8_t* sk = smem + (ch & 1) * C::STAGE;
    const uint8_t* sv = sk + C::CH * C::ROWB;
    if (nh > 0) {
      // scores: lanes split a row into 8-element slices, TPS tokens per step
#pragma unroll 4
      for (int t0 = 0; t0 < C::CH; t0 += C::TPS) {
        const int t = t0 + ts;
        float kf[8];
        load8<T, KV8>(sk + t * C::ROWB + dl * 8 * C::ES, kf);
        float d[C::HPW];
#pragma unroll
        for (int j = 0; j < C::HPW; ++j) {
          float acc = 0.f;
          if (j < nh) {  // warp-uniform
#pragma unroll
            for (int e = 0; e < 8; ++e) acc = fmaf(qf[j][e], kf[e], acc);
#pragma unroll
            for (int off = 1; off < C::LPR; off <<= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
          }
          d[j] = acc;
        }
        if (dl == 0) {
          const bool ok = ch * C::CH + t < ntok;
#pragma unroll
          for (int j = 0; j < C::HPW; ++j)
            if (j < nh) sp[(warp + C::NW * j) * C::CH + t] = ok ? d[j] * sc : -INFINITY;
        }
      }
      __syncwarp();
      // online softmax per head over this chunk
      float corr[C::HPW];
#pragma unroll
      for (int j = 0; j < C::HPW; ++j) {
        corr[j] = 1.f;
        if (j < nh) {
          float* row = sp + (warp + C::NW * j) * C::CH;
          float mx = -INFINITY;
          for (int t = lane; t < C::CH; t += 32) mx = fmaxf(mx, row[t]);
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
          const float nm = fmaxf(m[j], mx);
          const float base = nm == -INFINITY ? 0.f : nm;
          corr[j] = ex2(m[j] - base);
          m[j] = nm;
          float sum = 0.f;
          for (int t = lane; t < C::CH; t += 32) {
            const float pv = ex2(row[t] - base);
            row[t] = pv;
            sum += pv;
          }
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
          l[j] = l[j] * corr[j] + sum;
        }
      }
      __syncwarp();
#pragma unroll
      for (int j = 0; j < C::HPW; ++j)
#pragma unroll
        for (int e = 0; e < 8; ++e) o[j][e] *= corr[j];
#pragma unroll 4
      for (int t0 = 0; t0 < C::CH; t0 += C::TPS) {
        const int t = t0 + ts;
        float vf[8];
        load8<T, KV8>(sv + t * C::ROWB + dl * 8 * C::ES, vf);
#pragma unroll
        for (int j = 0; j < C::HPW; ++j) {
          if (j < nh) {
            const float pv = sp[(warp + C::NW * j) * C::CH + t];
#pragma unroll
            for (int e = 0; e < 8; ++e) o[j][e] = fmaf(pv, vf[e], o[j][e]);
          }
        }
      }
    }
    __syncthreads();
  }

  // reduce the TPS token slots, then lanes of slot 0 write their 8-element slices
#pragma unroll
  for (int j = 0; j < C::HPW; ++j) {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
#pragma unroll
      for (int off = C::LPR; off < 32; off <<= 1) o[j][e] += __shfl_xor_sync(0xffffffffu, o[j][e], off);
    }
  }
  if (ts == 0) {
#pragma unroll
    for (int j = 0; j < C::HPW; ++j) {
      if (j < nh) {
        const float inv = l[j] > 0.f ? p.v_scale / l[j] : 0.f;
        T* dst = static_cast<T*>(p.out) +
                 ((size_t)(b * p.q_len + qi) * p.hq + h * p.group + warp + C::NW * j) * D + dl * 8;
        uint4 w;
        w.x = Tr<T>::pack(o[j][0] * inv, o[j][1] * inv);
        w.y = Tr<T>::pack(o[j][2] * inv, o[j][3] * inv);
        w.z = Tr<T>::pack(o[j][4] * inv, o[j][5] * inv);
        w.w = Tr<T>::pack(o[j][6] * inv, o[j][7] * inv);
        *reinterpret_cast<uint4*>(dst) = w;
      }
    }
  }
}

template <int D, typename T, bool KV8>
cudaError_t launch_baseline_t(const Params& p, cudaStream_t st) {
  using C = BCfg<D, T, KV8>;
  auto kern = baseline_kernel<D, T, KV8>;
  static unsigned long long done = 0;
  cudaError_t e = set_smem_once(kern, C::SMEM, done);
  if (e != cudaSuccess) return e;
  dim3 grid(p.q_len, p.hkv, p.batch);
  kern<<<grid, C::NT, C::SMEM, st>>>(p);
  return cudaGetLastError();
}

template <typename T, bool KV8>
cudaError_t launch_baseline_d(const Params& p, int head_dim, cudaStream_t st) {
  switch (head_dim) {
    case 64: return launch_baseline_t<64, T, KV8>(p, st);
    case 128: return launch_baseline_t<128, T, KV8>(p, st);
    case 256: return launch_baseline_t<256, T, KV8>(p, st);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_baseline(const Params& p, int head_dim, int q_dtype, int kv_dtype,
                            cudaStream_t st) {
  const bool kv8 = kv_dtype == kE4M3;
  if (q_dtype == kF16) {
    return kv8 ? launch_baseline_d<__half, true>(p, head_dim, st)
               : launch_baseline_d<__half, false>(p, head_dim, st);
  }
  return kv8 ? launch_baseline_d<__nv_bfloat16, true>(p, head_dim, st)
             : launch_baseline_d<__nv_bfloat16, false>(p, head_dim, st);
}

}  // namespace pd
