// The grouped kernel's instantiations for one head_dim, PD_HEAD_DIM, defined by the
// including .cu file (one translation unit per head_dim so nvcc builds them in parallel).
#pragma once
#ifndef PD_HEAD_DIM
#error "define PD_HEAD_DIM before including grouped_inst.cuh"
#endif
#include "api_internal.h"
#include "grouped.cuh"
#include "grouped_wg.cuh"
#include "grouped_sw.cuh"
#include "grouped_ws.cuh"

#define PD_CAT_(a, b) a##b
#define PD_CAT(a, b) PD_CAT_(a, b)

namespace pd {

// PD_BALANCED=0 builds run no balanced grid (the planner then keeps the classic one: A/B
// builds).
#ifndef PD_BALANCED
#define PD_BALANCED 1
#endif

// A grouped kernel as a type: its configuration C (threads NT, shared memory SMEM, and for
// kernels that take the cache's tensor map, KV_MAP, what its TMA boxes read: kv_tma.cuh), its
// __global__ function, whether it takes the tile rows as an argument (grouped_sw_kernel),
// and its balanced-grid instantiation (cta_segment; nullptr: none).
template <class C, auto K, bool TILE_ARG = false, auto KSK = nullptr>
struct TileKern {
  using Cfg = C;
  static constexpr auto kernel = K;
  static constexpr auto sk_kernel = KSK;
  static constexpr bool tile_arg = TILE_ARG;
  static constexpr bool balanced = !std::is_same_v<decltype(KSK), std::nullptr_t> && PD_BALANCED;
};

// Whether configuration C's kernel takes the cache's tensor map (C::KV_MAP).
template <class C, class = void>
struct takes_kv_map : std::false_type {};
template <class C>
struct takes_kv_map<C, std::void_t<decltype(C::KV_MAP)>> : std::bool_constant<C::KV_MAP> {};

// Calls f(TileKern<...>{}) with the kernel that runs a `tile`-row tile of a problem with
// `rows` (q_len x group) rows on the current device: the one decision behind both the
// launch and the occupancy the cost model plans with. `mma_only`: the mma.sync kernel
// whatever the device (its occupancy is the cost model's built-in mirror, GCfg).
//
// On an sm_90 GPU a 128-row tile, or a full 64-row one, runs the wgmma kernels
// (grouped_wg.cuh), faster than mma.sync there on H100: 8-16 % for fp8 KV, 3-8 % for bf16
// (kernels/NOTES.md). A part-filled 64-row tile with 16-bit KV (Qwen3 q_len 4: 48 rows)
// stays on mma.sync: the lockstep wgmma kernel's serial per-stage phases lost 12 % in a
// one-CTA-per-SM tail.
template <typename T, bool KV8, typename F>
static cudaError_t with_tile_kernel(int tile, int rows, bool mma_only, F&& f) {
  constexpr int D = PD_HEAD_DIM;
  if constexpr (D <= 128) {
    if (!mma_only && wg_supported()) {
      // fp8 KV at head_dim 128 with 65-96 rows in a 128-row tile (Qwen3 q_len 8) or 33-48 in
      // a 64-row one (Qwen3 q_len 4): swapped operands (grouped_sw.cuh), 17-20 % faster than
      // grouped_ws_kernel on q_len 8 (fp16 MMAs; an e4m3 S^T was faster but inaccurate at
      // large scores, kernels/NOTES.md). A head_dim-64 form (GPT-OSS q_len 8) lost 16 % to
      // grouped_wg_kernel at batch 64 and was removed.
      if constexpr (KV8 && D == 128) {
        const int fill = rows < tile ? rows : tile;
        if (sw_enabled()) {
          if (tile == 128 && fill > 64 && fill <= 96)
            return f(TileKern<SwCfg<128, 96>, grouped_sw_kernel<128, 96, T>, true>{});
          if (tile == 64 && fill > 32 && fill <= 48)
            return f(TileKern<SwCfg<128, 48>, grouped_sw_kernel<128, 48, T>, true>{});
        }
      }
      if (tile == 128 || (tile == 64 && rows >= 64)) {
        if constexpr (D == 128)  // warp-specialized (grouped_ws.cuh): 15-22 % faster
          if (tile == 128 && ws_enabled()) return f(TileKern<WsCfg<D, KV8>, grouped_ws_kernel<D, T, KV8>>{});
        if constexpr (KV8)
          return tile == 64
                     ? f(TileKern<WCfg<D, 1>, grouped_wg_kernel<D, T, 1>, false, grouped_wg_kernel<D, T, 1, true>>{})
                     : f(TileKern<WCfg<D, 2>, grouped_wg_kernel<D, T, 2>, false, grouped_wg_kernel<D, T, 2, true>>{});
        else
          return tile == 64 ? f(TileKern<WCfg<D, 1, false>, grouped_wg16_kernel<D, T, 1>>{})
                            : f(TileKern<WCfg<D, 2, false>, grouped_wg16_kernel<D, T, 2>>{});
      }
    }
  }
  switch (tile) {
    case 16: return f(TileKern<GCfg<D, KV8, 1>, grouped_kernel<D, T, KV8, 1>, false, grouped_kernel<D, T, KV8, 1, true>>{});
    case 32: return f(TileKern<GCfg<D, KV8, 2>, grouped_kernel<D, T, KV8, 2>, false, grouped_kernel<D, T, KV8, 2, true>>{});
    case 64: return f(TileKern<GCfg<D, KV8, 4>, grouped_kernel<D, T, KV8, 4>, false, grouped_kernel<D, T, KV8, 4, true>>{});
    case 128: return f(TileKern<GCfg<D, KV8, 8>, grouped_kernel<D, T, KV8, 8>, false, grouped_kernel<D, T, KV8, 8, true>>{});
    default: return cudaErrorInvalidValue;
  }
}

struct LaunchTile {
  const Params& p;
  int tile;
  cudaStream_t st;
  template <class TK>
  cudaError_t operator()(TK) const {
    if (p.sk_units == 0) return launch<TK::kernel>(TK{});
    if constexpr (TK::balanced) return launch<TK::sk_kernel>(TK{});
    return cudaErrorNotSupported;  // kernels.plan asks only kernels that run one
  }
  template <auto Kernel, class TK>
  cudaError_t launch(TK) const {
    using C = typename TK::Cfg;
    if constexpr (takes_kv_map<C>::value) {
      CUtensorMap map{};  // left empty for a configuration that reads by cp.async (C::TMA)
      if constexpr (C::TMA) {
        const cudaError_t e = encode_kv_map(&map, p, C::TMA_HEAD_BYTES, C::TMA_SW128);
        if (e != cudaSuccess) return e;
      }
      if constexpr (TK::tile_arg) return launch_tiles<C, Kernel>(p, st, tile, map);
      else return launch_tiles<C, Kernel>(p, st, map);
    } else {
      return launch_tiles<C, Kernel>(p, st);
    }
  }
};

// The fewer of the classic and the balanced instantiation's CTAs per SM: the cost model
// plans both grids with one number.
struct TileOccupancy {
  int* ctas;
  template <class TK>
  cudaError_t operator()(TK) const {
    cudaError_t e = tiles_occupancy<typename TK::Cfg, TK::kernel>(ctas);
    if constexpr (TK::balanced) {
      int sk = 0;
      if (e == cudaSuccess) e = tiles_occupancy<typename TK::Cfg, TK::sk_kernel>(&sk);
      if (e == cudaSuccess && sk < *ctas) *ctas = sk;
    }
    return e;
  }
};

struct TileBalanced {
  int* ok;
  template <class TK>
  cudaError_t operator()(TK) const {
    *ok = TK::balanced ? 1 : 0;
    return cudaSuccess;
  }
};

// Calls f<T, KV8>(...) for the run-time dtype codes.
template <template <typename, bool> class Fn, typename... A>
static cudaError_t by_dtype(int q_dtype, int kv_dtype, A&&... a) {
  const bool kv8 = kv_dtype == kE4M3;
  if (q_dtype == kF16) return kv8 ? Fn<__half, true>::run(a...) : Fn<__half, false>::run(a...);
  return kv8 ? Fn<__nv_bfloat16, true>::run(a...) : Fn<__nv_bfloat16, false>::run(a...);
}

template <typename T, bool KV8>
struct LaunchFn {
  static cudaError_t run(const Params& p, int tile, cudaStream_t st) {
    return with_tile_kernel<T, KV8>(tile, p.q_len * p.group, false, LaunchTile{p, tile, st});
  }
};

template <typename T, bool KV8>
struct OccupancyFn {
  static cudaError_t run(int tile, int rows, bool mma_only, int* ctas) {
    return with_tile_kernel<T, KV8>(tile, rows, mma_only, TileOccupancy{ctas});
  }
};

template <typename T, bool KV8>
struct BalancedFn {
  static cudaError_t run(int tile, int rows, int* ok) {
    return with_tile_kernel<T, KV8>(tile, rows, false, TileBalanced{ok});
  }
};

cudaError_t PD_CAT(launch_grouped_d, PD_HEAD_DIM)(const Params& p, int q_dtype, int kv_dtype, int tile, cudaStream_t st) {
  return by_dtype<LaunchFn>(q_dtype, kv_dtype, p, tile, st);
}

cudaError_t PD_CAT(occupancy_grouped_d, PD_HEAD_DIM)(int q_dtype, int kv_dtype, int tile, int rows, bool mma_only,
                                                    int* ctas) {
  return by_dtype<OccupancyFn>(q_dtype, kv_dtype, tile, rows, mma_only, ctas);
}

cudaError_t PD_CAT(balanced_grouped_d, PD_HEAD_DIM)(int q_dtype, int kv_dtype, int tile, int rows, int* ok) {
  return by_dtype<BalancedFn>(q_dtype, kv_dtype, tile, rows, ok);
}

}  // namespace pd

#ifdef PD_TIMELINE
// DIAGNOSTIC ONLY: the CTA marks of this head_dim's last launch (common.cuh), PD_TL_CTAS x
// PD_TL_SLOTS 64-bit words, copied into dst (bench/cta_timeline.py).
extern "C" __attribute__((visibility("default"))) int PD_CAT(pd_timeline_d, PD_HEAD_DIM)(void* dst) {
  return (int)cudaMemcpyFromSymbol(dst, pd::pd_tl, sizeof(pd::pd_tl));
}
#endif
