"""Host-side cost model of the `grouped` kernel: which row tile, how many KV splits.

In the spirit of TensorRT-LLM's selectTileSizeQForGqaGeneration: for every candidate
(row tile, splits) the modelled time is

    mainloop cost (per CTA: KV tokens x per-token cost of that tile)
  x reduction cost (1 + merge-kernel time / mainloop time when the KV is split)
  x waves (the busiest SM's CTAs, in rounds of co-resident CTAs, each round weighted by
           how well its warps hide memory/MMA latency)

and, while the unsplit grid fits on the GPU at once, splits whose CTA count exceeds what
it holds are skipped (splitting is only worth it while the extra CTAs run concurrently);
once the unsplit grid is itself more than one wave, splits are weighed like any other
choice: they can shorten its last, part-filled wave (4-22 % faster on the H100's batch-40
rows and GPT-OSS bf16 batch 64, kernels/NOTES.md). Tiles whose modelled MMA time exceeds
their memory time are latency-bound: a part-filled tail round behind full rounds costs as
much as a full one, and splits past the capacity are weighed too (GPT-OSS fp8 q_len 8 batch
40: 3 splits measured 0.905x of 1); a grid that is one part-filled round keeps the
efficiency weighting (batch 8: 6 splits, a round of 3 CTAs per SM, beat 8 splits, a full
round). Pure Python: no torch, no GPU.

The per-configuration threads and shared memory mirror csrc/grouped.cuh (GCfg); the
library exports the same numbers (pd_grouped_config) and a test checks they agree. That
mirror is the mma.sync kernel's; on sm_90 some tiles run other kernels (the wgmma ones)
with other occupancies, which `occupancy` passes in (kernels.device_plan reads them from
the library on the current device).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

TILES: tuple[int, ...] = (16, 32, 64, 128)  # rows per CTA; the MMA fragment is 16 rows
BLOCK_N = 64  # KV tokens per pipeline stage; every split is a multiple of it
MAX_SPLITS = 64

# Rough H100 rates per SM, used only to weigh memory against tensor-core time.
_BW_PER_SM = 3.0e12 / 132  # bytes/s (measured copy bandwidth / SMs)
_MMA_PER_SM = 450e12 / 132  # flop/s a mma.sync loop sustains (well under wgmma's ~790)
_CONV_PER_SM = 1.0e11  # fp8 -> 16-bit elements/s through the shared-memory convert pass
_CTA_FIXED_S = 1.5e-6  # per-CTA prologue/epilogue (Q load, pipeline fill, output write)
_MERGE_LAUNCH_S = 3.0e-6  # the second (merge) kernel's launch and tail
_SMEM_PER_SM = 228 * 1024
_SMEM_RESERVED_PER_CTA = 1024
_REGS_PER_SM = 65536
_MAX_THREADS_PER_SM = 2048
# Registers per thread reported by ptxas for sm_90a (by head_dim, tile); used for occupancy.
_REGS = {  # (head_dim, fp8 KV) -> tile -> registers
    (64, False): {16: 112, 32: 136, 64: 154, 128: 148},
    (64, True): {16: 103, 32: 122, 64: 143, 128: 145},
    (128, False): {16: 194, 32: 218, 64: 229, 128: 217},
    (128, True): {16: 165, 32: 186, 64: 202, 128: 196},
    (256, False): {16: 252, 32: 255, 64: 255, 128: 255},
    (256, True): {16: 226, 32: 248, 64: 246, 128: 247},
}
# Latency hiding: an SM with w resident warps streams at w / (w + _W_HALF) of its share
# (fitted on H100: one 4-warp CTA per SM ran ~1.3x slower than two).
_W_HALF = 3.0

_KV_BYTES = {"bf16": 2, "fp16": 2, "fp8": 1}
_KV_ALIASES = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "fp8": "fp8",
    "fp8_e4m3": "fp8",
    "e4m3": "fp8",
    "float8_e4m3fn": "fp8",
}


def kv_kind(kv_dtype: str) -> str:
    """Normalise a KV dtype name ('bf16', 'fp16', 'fp8_e4m3', torch-style names)."""
    key = str(kv_dtype).removeprefix("torch.").lower()
    if key not in _KV_ALIASES:
        raise ValueError(f"unsupported kv dtype {kv_dtype!r}: use bf16, fp16 or fp8_e4m3")
    return _KV_ALIASES[key]


@dataclass(frozen=True)
class KernelShape:
    """Threads and dynamic shared memory of one grouped configuration (mirrors GCfg)."""

    threads: int
    smem_bytes: int


def kernel_shape(tile_rows: int, head_dim: int, kv_dtype: str = "bf16") -> KernelShape:
    """Mirror of csrc/grouped.cuh GCfg<D, KV8, WM>::{NT, SMEM}."""
    if tile_rows not in TILES:
        raise ValueError(f"tile_rows must be one of {TILES}, got {tile_rows}")
    if head_dim not in (64, 128, 256):
        raise ValueError(f"head_dim must be 64, 128 or 256, got {head_dim}")
    kv8 = kv_kind(kv_dtype) == "fp8"
    wm = tile_rows // 16
    nw = max(wm, 4)
    wn = nw // wm
    es = 1 if kv8 else 2
    ns = {64: 4, 128: 4, 256: 3}[head_dim] if kv8 else {64: 4, 128: 3, 256: 2}[head_dim]
    stage = 2 * BLOCK_N * head_dim * es
    qb = 0 if head_dim <= 128 else tile_rows * head_dim * 2
    pipe = ns * stage + qb
    red = wn * tile_rows * (head_dim + 8) * 4 + wn * tile_rows * 2 * 4
    return KernelShape(threads=nw * 32, smem_bytes=max(pipe, red))


def ctas_per_sm(tile_rows: int, head_dim: int, kv_dtype: str = "bf16") -> int:
    """Resident CTAs per SM, limited by shared memory, registers and threads."""
    shape = kernel_shape(tile_rows, head_dim, kv_dtype)
    by_smem = _SMEM_PER_SM // (shape.smem_bytes + _SMEM_RESERVED_PER_CTA)
    regs = _REGS[(head_dim, kv_kind(kv_dtype) == "fp8")][tile_rows]
    regs_per_warp = math.ceil(regs * 32 / 256) * 256
    by_regs = _REGS_PER_SM // (regs_per_warp * shape.threads // 32)
    by_threads = _MAX_THREADS_PER_SM // shape.threads
    return max(1, min(by_smem, by_regs, by_threads))


@dataclass(frozen=True)
class Plan:
    """The grouped kernel's launch choice for one problem shape."""

    tile_rows: int
    num_row_tiles: int
    num_splits: int
    kv_tokens_per_split: int
    ctas: int
    ctas_per_sm: int
    waves: float  # CTAs / (SMs x resident CTAs per SM)
    modelled_cost: float  # modelled microseconds (relative use only)
    rows: int  # q_len x group, the rows one (request, KV head) needs
    compute_bound: bool = False  # the tile's MMA time per token exceeds its memory time

    @property
    def threads(self) -> int:
        return 32 * max(4, self.tile_rows // 16)

    def __str__(self) -> str:
        return f"tile{self.tile_rows}x{self.num_row_tiles}/split{self.num_splits}"


def _split_options(max_kv_len: int, max_splits: int) -> list[tuple[int, int]]:
    """Distinct (splits, tokens per split) with tokens a multiple of BLOCK_N."""
    blocks = max(1, math.ceil(max_kv_len / BLOCK_N))
    seen: dict[int, int] = {}
    for s in range(1, min(max_splits, blocks) + 1):
        tokens = math.ceil(blocks / s) * BLOCK_N
        eff = math.ceil(max_kv_len / tokens) if max_kv_len > 0 else 1
        seen.setdefault(max(1, eff), tokens)
    return sorted(seen.items())


def _token_costs_s(tile_rows: int, rows: int, head_dim: int, kv: str) -> tuple[float, float]:
    """Seconds one SM spends per KV token of one CTA on memory and on the tensor cores (+ the
    fp8 convert)."""
    active = min(tile_rows, math.ceil(rows / 16) * 16)
    mem = 2 * head_dim * _KV_BYTES[kv] / _BW_PER_SM
    mma = 4 * active * head_dim / _MMA_PER_SM
    if kv == "fp8":
        mma += 2 * head_dim / _CONV_PER_SM
    return mem, mma


def plan(
    batch: int,
    q_len: int,
    num_qo_heads: int,
    num_kv_heads: int,
    head_dim: int,
    max_kv_len: int,
    sm_count: int,
    kv_dtype: str = "bf16",
    *,
    tile_rows: int | None = None,
    num_splits: int | None = None,
    max_splits: int = MAX_SPLITS,
    occupancy: Mapping[int, int] | None = None,
) -> Plan:
    """Pick (row tile, KV splits) minimising mainloop x reduction x waves.

    `occupancy` (tile rows -> resident CTAs per SM) replaces the mma.sync mirror for the
    tiles it names: the device's own numbers for the kernels it runs.

    `tile_rows` / `num_splits` force a choice (for experiments); forced splits may exceed
    the resident-CTA capacity, modelled ones only when the unsplit grid already does.
    """
    for name, val in (
        ("batch", batch),
        ("q_len", q_len),
        ("num_qo_heads", num_qo_heads),
        ("num_kv_heads", num_kv_heads),
        ("max_kv_len", max_kv_len),
        ("sm_count", sm_count),
    ):
        if int(val) < 1:
            raise ValueError(f"{name} must be >= 1, got {val}")
    if num_qo_heads % num_kv_heads:
        raise ValueError(
            f"num_qo_heads {num_qo_heads} is not a multiple of num_kv_heads {num_kv_heads}"
        )
    kv = kv_kind(kv_dtype)
    rows = q_len * (num_qo_heads // num_kv_heads)
    cover = next((t for t in TILES if t >= rows), TILES[-1])
    tiles = [t for t in TILES if t <= cover] if tile_rows is None else [tile_rows]
    options = _split_options(max_kv_len, max_splits)
    if num_splits is not None:
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        tokens = math.ceil(math.ceil(max_kv_len / num_splits) / BLOCK_N) * BLOCK_N
        options = [(num_splits, tokens)]

    best: Plan | None = None
    for tile in sorted(tiles, reverse=True):
        row_tiles = math.ceil(rows / tile)
        per_sm = (occupancy or {}).get(tile) or ctas_per_sm(tile, head_dim, kv)
        capacity = sm_count * per_sm
        base = batch * num_kv_heads * row_tiles
        mem, mma = _token_costs_s(tile, rows, head_dim, kv)
        per_token = max(mem, mma) + 0.1 * min(mem, mma)
        # Compute-bound tiles run each CTA at its own latency-bound pace: a round of
        # co-resident CTAs takes about as long part-filled as full (H100 sweep, GPT-OSS fp8
        # q_len 8 batch 40: one round of 3 CTAs 396 µs, a round of 4 plus one of 1 at half
        # the tokens 462 µs, kernels/NOTES.md), so splits are weighed by the rounds they
        # make, past the capacity too. A lone part-filled round is not a tail: it runs faster
        # per CTA than a full one (batch 8: 3 CTAs per SM, 86 µs, against 4 at 88 µs).
        compute_bound = mma > mem
        warps = kernel_shape(tile, head_dim, kv).threads // 32
        for splits, tokens in options:
            ctas = base * splits
            fits = base <= capacity and not compute_bound
            if splits > 1 and ctas > capacity and fits and num_splits is None:
                break  # the unsplit grid fits: more splits only add CTAs it cannot hold at once
            # Waves of CTAs over the SMs: the busiest SM runs `load` CTAs, `per_sm` at a time;
            # a round of k co-resident CTAs streams at efficiency w / (w + _W_HALF).
            load = math.ceil(ctas / sm_count)
            mainloop = tokens * per_token + _CTA_FIXED_S
            waves = 0.0
            for k in [per_sm] * (load // per_sm) + ([load % per_sm] if load % per_sm else []):
                k = per_sm if compute_bound and load > per_sm else k
                w = k * warps
                waves += k * (w + _W_HALF) / w
            main_s = mainloop * waves
            merge_s = 0.0
            if splits > 1:
                merge_bytes = 2 * splits * batch * q_len * num_qo_heads * head_dim * 4
                merge_s = merge_bytes / (_BW_PER_SM * sm_count) + _MERGE_LAUNCH_S
            reduction = 1.0 + merge_s / main_s
            cost_us = main_s * reduction * 1e6
            cand = Plan(
                tile,
                row_tiles,
                splits,
                tokens,
                ctas,
                per_sm,
                ctas / capacity,
                cost_us,
                rows,
                compute_bound,
            )
            if best is None or cand.modelled_cost < best.modelled_cost * 0.98:
                best = cand
    assert best is not None
    return best
