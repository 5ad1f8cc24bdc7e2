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
round).

A balanced grid (stream-K, `balanced_shape`) is the other kind of plan: each KV head's
(request, row tile) items are laid end to end and cut into equal CTAs, whole rounds of the
GPU's capacity, so no SM holds a CTA more than another (batch 40: 320 items on 132 SMs
leave 56 SMs a third CTA). A CTA then meets at most two items, writes a partial per item
and the merge kernel combines them as it does splits. It is taken where modelled clearly
faster and where each SM's own work, not DRAM, sets the pace (_BALANCED_MIN_COMPUTE); the
kernels that run one say so (kernels.device_plan asks the library).

A two-launch plan (`tail_plan`) is the third kind: for a grid that is over a round but not
whole rounds, the requests that fill whole rounds run unsplit and only the rest is split,
within one round, in a second launch (Qwen3 batch 40: 2.4 rounds of one-per-SM CTAs;
0.95-0.99x of the one-launch split on H100). It is weighed against whichever one-launch plan
won.

The constants are H100 figures, checked against a calibration set: the H100 times of every
plan around the model's choice on 862 shapes (bench/plan_calibrate.py,
tests/data/plan_calibration_h100.jsonl), on which tests/test_kernels_plan_calibration.py
replays the model (mean regret 0.7 % against the fastest timed plan; it was 1.7 % before
the twenty-fourth session's per-row CTA cost, second-segment cost and two-launch rule, and
0.9 % before the twenty-fifth session's 8-warp head_dim-256 64-row tile).
Pure Python: no torch, no GPU.

The per-configuration threads and shared memory mirror csrc/grouped.cuh (GCfg); the
library exports the same numbers (pd_grouped_config) and a test checks they agree. That
mirror is the mma.sync kernel's; on sm_90 some tiles run other kernels (the wgmma ones)
with other occupancies, which `occupancy` passes in (kernels.device_plan reads them from
the library on the current device).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace

TILES: tuple[int, ...] = (16, 32, 64, 128)  # rows per CTA; the MMA fragment is 16 rows
BLOCK_N = 64  # KV tokens per pipeline stage; every split is a multiple of it
MAX_SPLITS = 64

# Rough H100 rates per SM, used only to weigh memory against tensor-core time.
_BW_PER_SM = 3.0e12 / 132  # bytes/s (measured copy bandwidth / SMs)
_MMA_PER_SM = 450e12 / 132  # flop/s a mma.sync loop sustains (well under wgmma's ~790)
_CONV_PER_SM = 1.0e11  # fp8 -> 16-bit elements/s through the shared-memory convert pass
_CTA_FIXED_S = 1.5e-6  # per-CTA prologue/epilogue (Q load, pipeline fill, output write)
_MERGE_LAUNCH_S = 3.0e-6  # the second (merge) kernel's launch and tail
# ... plus this per 128 x 128 of (rows, head_dim): the tile's Q load, output write and, in
# the wgmma kernels, the warpgroups' merge (the 96-row fp8 kernel's start and end measured
# ~10.5 µs, fifteenth session). Fitted with _SEGMENT_S on the calibration set (below).
_CTA_FIXED_ROWS_S = 2.0e-6
# A balanced CTA's second segment (a pipeline refill, Q again, a partial write): ~5-10 µs
# measured at GPT-OSS fp8 batch 40 (nineteenth session); 4.5 µs is the calibration set's fit.
_SEGMENT_S = 4.5e-6
_SMEM_PER_SM = 228 * 1024
_SMEM_RESERVED_PER_CTA = 1024
_REGS_PER_SM = 65536
_MAX_THREADS_PER_SM = 2048
# Registers per thread reported by ptxas for sm_90a (by head_dim, tile); used for occupancy.
_REGS = {  # (head_dim, fp8 KV) -> tile -> registers
    (64, False): {16: 120, 32: 132, 64: 152, 128: 150},
    (64, True): {16: 108, 32: 123, 64: 147, 128: 146},
    (128, False): {16: 179, 32: 210, 64: 224, 128: 220},
    (128, True): {16: 168, 32: 184, 64: 203, 128: 201},
    (256, False): {16: 243, 32: 255, 64: 244, 128: 253},
    (256, True): {16: 218, 32: 238, 64: 228, 128: 245},
}
# A balanced grid replaces the best classic plan only when modelled this much faster: it
# adds a merge and a second pipeline fill per CTA that the model prices roughly (modelled /
# measured balanced-over-classic at batch 40 on H100: GPT-OSS fp8 q_len 2 0.81 / 0.95, q_len
# 4 0.82 / 0.89, q_len 8 0.91 / 0.98, Qwen3 fp8 q_len 2 0.97 / 0.98).
_BALANCED_GAIN = 0.97
# ... and only for tiles whose tensor-core (+ fp8 convert) time per token is at least this
# share of its memory time: evening out the CTAs per SM pays where each SM's own work sets
# the pace, not where DRAM does. H100, batch 40, balanced / classic (kernels/NOTES.md,
# nineteenth session): GPT-OSS fp8 q_len 2 / 4 / 8 (modelled shares 0.44 / 0.65 / over 1)
# 0.95 / 0.89 / 0.98, Qwen3 fp8 q_len 2 (0.65) 0.98; GPT-OSS bf16 q_len 2 / 4 (0.11 / 0.21,
# already at 99 % of copy) 1.02 / 1.01, Qwen3 bf16 q_len 2 / 4 (0.21 / 0.32) 1.00.
_BALANCED_MIN_COMPUTE = 0.4
# A two-launch plan (tail_plan: whole rounds unsplit, the remainder split) replaces the best
# one-launch plan only when modelled this much faster, and pays this much for its second
# launch. H100, Qwen3-480B batch 40 (2.4 rounds of one-per-SM or two-per-SM CTAs),
# two-launch / one-launch (bench/tail_probe.py, kernels/NOTES.md, twenty-third session):
# fp8 q_len 8 0.950, q_len 4 0.959, bf16 q_len 8 / 4 0.984 / 0.983; at batch 32 and 64
# (1.94 and 3.9 rounds) 1.02-1.15, where the remainder, split, still takes a whole round.
# Off the seed grid (bench/plan_scan.py, twenty-fourth session) the model's two-launch
# choices ran 0.76-1.02x of its best one-launch plan on 113 shapes, median 0.96.
_TAIL_GAIN = 0.99
_TAIL_LAUNCH_S = 2.0e-6
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
    nw = 8 if head_dim == 256 and wm == 4 else max(wm, 4)
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
    # > 0: a balanced (stream-K) grid of this many CTAs (= ctas), each taking
    # kv_tokens_per_split tokens' worth of stages of its KV head's items laid end to end
    # (balanced_segments); num_splits is then the partial slots per item.
    balanced_ctas: int = 0
    # > 0: the last tail_batch requests run `tail` in a second launch (with its own merge)
    # and the fields above describe the first launch, over the other requests: whole rounds
    # of the GPU unsplit, then the remainder split (tail_plan). ctas and modelled_cost are
    # both launches'.
    tail_batch: int = 0
    tail: Plan | None = None

    def __str__(self) -> str:
        if self.balanced_ctas:
            return f"tile{self.tile_rows}x{self.num_row_tiles}/balanced{self.balanced_ctas}"
        head = f"tile{self.tile_rows}x{self.num_row_tiles}/split{self.num_splits}"
        if self.tail is not None:
            return f"{head}+last{self.tail_batch}/split{self.tail.num_splits}"
        return head


@dataclass(frozen=True)
class Segment:
    """One CTA's share of one item in a balanced grid."""

    cta: int  # the KV head's CTA index (grid y; the head is grid x)
    item: int  # request x row tiles + row tile
    stage_begin: int  # stages [stage_begin, stage_end) of the item
    stage_end: int
    slot: int  # the item's partial slot this CTA writes
    fill_to: int  # slots slot+1..fill_to-1 it marks unused (the item's last CTA only)


def balanced_shape(items: int, stages: int, capacity: int) -> tuple[int, int, int] | None:
    """(CTAs, stages per CTA, partial slots per item) of one KV head's share of a balanced
    grid: `items` (request, row tile) items of `stages` stages each on `capacity` CTAs that
    the GPU holds at once for this head. Whole rounds of the capacity, the fewest with more
    CTAs than items (so every CTA takes less than an item and meets at most two), or None
    when that still leaves a CTA a whole item."""
    if items < 1 or stages < 2 or capacity < 1:
        return None
    ctas = capacity * (items // capacity + 1)
    units = math.ceil(items * stages / ctas)
    if units >= stages:
        return None
    ctas = math.ceil(items * stages / units)  # no CTA without work
    return ctas, units, (stages - 1) // units + 2


def balanced_segments(items: int, stages: int, units: int, slots: int) -> list[Segment]:
    """One KV head's CTAs' segments, as csrc/grouped_parts.cuh's cta_segment computes them:
    CTA c takes stages [c units, (c + 1) units) of the head's items laid end to end (every
    head is cut the same way)."""
    work = items * stages
    out: list[Segment] = []
    for c in range(math.ceil(work / units)):
        lo, hi = c * units, min((c + 1) * units, work)
        for seg in range(2):
            j = lo // stages + seg
            s0, s1 = max(lo, j * stages), min(hi, (j + 1) * stages)
            if s0 >= s1:
                break
            slot = c - (j * stages) // units
            fill_to = slots if s1 == (j + 1) * stages else slot + 1
            out.append(Segment(c, j, s0 - j * stages, s1 - j * stages, slot, fill_to))
    return out


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
    balanced: bool | None = None,
    balanced_tiles: Collection[int] | None = None,
    tail: bool | None = None,
) -> Plan:
    """Pick (row tile, KV splits) minimising mainloop x reduction x waves.

    `occupancy` (tile rows -> resident CTAs per SM) replaces the mma.sync mirror for the
    tiles it names: the device's own numbers for the kernels it runs.

    A balanced grid (stream-K: balanced_shape) is weighed too, for the tiles whose kernel
    runs one (`balanced_tiles`; None: every tile, as the mma.sync kernel does), and taken
    only when modelled clearly faster (_BALANCED_GAIN): it evens out a grid whose items
    leave some SMs a CTA more than others (batch 40: 320 items on 132 SMs).

    `tile_rows` / `num_splits` force a choice (for experiments); forced splits may exceed
    the resident-CTA capacity, modelled ones only when the unsplit grid already does.
    `balanced` True forces a balanced grid (for the forced or the modelled tile), False
    rules it out. A two-launch plan (tail_plan) is weighed after the one-launch choice, for
    its tile, and taken when modelled faster by _TAIL_GAIN; `tail` True forces it where the
    grid has one, False rules it out.
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

    def merge_s(partials: int, main_s: float) -> float:
        """The merge kernel's reduction factor over `partials` slots per row."""
        if partials <= 1:
            return 1.0
        merge_bytes = 2 * partials * batch * q_len * num_qo_heads * head_dim * 4
        return 1.0 + (merge_bytes / (_BW_PER_SM * sm_count) + _MERGE_LAUNCH_S) / main_s

    best: Plan | None = None
    balanced_cands: list[Plan] = []
    for tile in sorted(tiles, reverse=True):
        row_tiles = math.ceil(rows / tile)
        per_sm = (occupancy or {}).get(tile) or ctas_per_sm(tile, head_dim, kv)
        capacity = sm_count * per_sm
        base = batch * num_kv_heads * row_tiles
        mem, mma = _token_costs_s(tile, rows, head_dim, kv)
        fixed = _CTA_FIXED_S + _CTA_FIXED_ROWS_S * min(tile, rows) * head_dim / (128 * 128)
        per_token = max(mem, mma) + 0.1 * min(mem, mma)
        warps = kernel_shape(tile, head_dim, kv).threads // 32
        # Compute-bound tiles run each CTA at its own latency-bound pace: a round of
        # co-resident CTAs takes about as long part-filled as full (H100 sweep, GPT-OSS fp8
        # q_len 8 batch 40: one round of 3 CTAs 396 µs, a round of 4 plus one of 1 at half
        # the tokens 462 µs, kernels/NOTES.md), so splits are weighed by the rounds they
        # make, past the capacity too. A lone part-filled round is not a tail: it runs faster
        # per CTA than a full one (batch 8: 3 CTAs per SM, 86 µs, against 4 at 88 µs).
        compute_bound = mma > mem

        per_head = batch * row_tiles
        shape = balanced_shape(per_head, math.ceil(max_kv_len / BLOCK_N), capacity // num_kv_heads)
        if (
            shape is not None
            and balanced is not False
            and num_splits is None
            and (balanced_tiles is None or tile in balanced_tiles)
            and (balanced or mma >= _BALANCED_MIN_COMPUTE * mem)
        ):
            ctas, units, slots = shape
            ctas *= num_kv_heads
            # Every SM runs the same whole rounds of equal CTAs, each with a CTA's fixed cost
            # and a second segment's (where it meets two items).
            k = ctas / sm_count
            w = per_sm * warps
            main_s = (units * BLOCK_N * per_token + fixed + _SEGMENT_S) * k * (w + _W_HALF) / w
            balanced_cands.append(
                Plan(
                    tile,
                    row_tiles,
                    slots,
                    units * BLOCK_N,
                    ctas,
                    per_sm,
                    ctas / capacity,
                    main_s * merge_s(slots, main_s) * 1e6,
                    rows,
                    compute_bound,
                    ctas,
                )
            )
        for splits, tokens in options:
            ctas = base * splits
            fits = base <= capacity and not compute_bound
            if splits > 1 and ctas > capacity and fits and num_splits is None:
                break  # the unsplit grid fits: more splits only add CTAs it cannot hold at once
            # Waves of CTAs over the SMs: the busiest SM runs `load` CTAs, `per_sm` at a time;
            # a round of k co-resident CTAs streams at efficiency w / (w + _W_HALF).
            load = math.ceil(ctas / sm_count)
            mainloop = tokens * per_token + fixed
            waves = 0.0
            for k in [per_sm] * (load // per_sm) + ([load % per_sm] if load % per_sm else []):
                k = per_sm if compute_bound and load > per_sm else k
                w = k * warps
                waves += k * (w + _W_HALF) / w
            main_s = mainloop * waves
            cost_us = main_s * merge_s(splits, main_s) * 1e6
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
    if balanced:
        same = [c for c in balanced_cands if tile_rows is not None or c.tile_rows == best.tile_rows]
        if not same:
            raise ValueError(
                f"no balanced grid for {best}: its kernel runs none here, or no CTA could"
                " take less than a whole item"
            )
        return same[0]
    for cand in balanced_cands:
        if cand.modelled_cost < best.modelled_cost * _BALANCED_GAIN:
            best = cand
    # The two-launch form is weighed against whichever one-launch plan won, on its tile: a
    # grid that splits every item, a balanced one, or an unsplit grid whose last round is
    # part-filled. Weighed against split grids only (the twenty-third session's rule) it
    # left the calibration set's mean regret at 1.4 %, where this gives 0.9 %.
    if tail is not False and num_splits is None and balanced is None:
        two = tail_plan(
            batch,
            q_len,
            num_qo_heads,
            num_kv_heads,
            head_dim,
            max_kv_len,
            sm_count,
            kv,
            tile_rows=best.tile_rows,
            max_splits=max_splits,
            occupancy=occupancy,
        )
        if tail and two is None:
            raise ValueError(
                f"no two-launch plan for {best}: the grid is under a round of the GPU or whole rounds"
            )
        if two is not None and (tail or two.modelled_cost < best.modelled_cost * _TAIL_GAIN):
            best = two
    elif tail:
        raise ValueError("a two-launch plan cannot be combined with forced splits or grids")
    return best


def plan_for_occupancy(
    batch: int,
    q_len: int,
    num_qo_heads: int,
    num_kv_heads: int,
    head_dim: int,
    max_kv_len: int,
    sm_count: int,
    kv_dtype: str,
    table: Iterable[tuple[int, int, bool]],
    **forced,
) -> Plan:
    """plan() on one device's table of (tile rows, resident CTAs per SM, whether its kernel
    runs a balanced grid): how kernels.device_plan calls it with the library's answers, and
    how tests/test_kernels_plan_calibration.py replays it on a recorded table. `forced`:
    plan's tile_rows / num_splits / balanced / tail."""
    table = tuple(table)
    return plan(
        batch,
        q_len,
        num_qo_heads,
        num_kv_heads,
        head_dim,
        max_kv_len,
        sm_count,
        kv_dtype,
        occupancy={t: n for t, n, _ in table},
        balanced_tiles=frozenset(t for t, _, ok in table if ok),
        **forced,
    )


def tail_plan(
    batch: int,
    q_len: int,
    num_qo_heads: int,
    num_kv_heads: int,
    head_dim: int,
    max_kv_len: int,
    sm_count: int,
    kv_dtype: str,
    *,
    tile_rows: int,
    max_splits: int = MAX_SPLITS,
    occupancy: Mapping[int, int] | None = None,
) -> Plan | None:
    """The two-launch form of a grid that is more than a round of the GPU but not a whole
    number of rounds: the first requests, as many as fill whole rounds of `tile_rows` CTAs,
    unsplit, then the rest split as many ways as one round holds in a second launch (None
    where the grid is under a round or already whole rounds, or the rest cannot be split
    within one). A one-launch grid either leaves its last
    round part-filled or splits every item, and each split CTA pays its own start and end
    and every row the merge; here only the remainder does."""
    kv = kv_kind(kv_dtype)
    rows = q_len * (num_qo_heads // num_kv_heads)
    per_request = num_kv_heads * math.ceil(rows / tile_rows)
    per_sm = (occupancy or {}).get(tile_rows) or ctas_per_sm(tile_rows, head_dim, kv)
    capacity = sm_count * per_sm
    head_batch = (batch * per_request // capacity) * capacity // per_request
    # The remainder split as many ways as one round holds: more splits would make it more
    # than a round again (measured: Qwen3 fp8 q_len 8 batch 40, 8 requests left, split 2 /
    # 3 / 4: 0.950 / 1.023 / 0.973 of the one-launch plan; one round holds 2).
    splits = min(max_splits, capacity // max(1, (batch - head_batch) * per_request))
    if head_batch < 1 or head_batch >= batch or splits < 2:
        return None
    shape = (q_len, num_qo_heads, num_kv_heads, head_dim, max_kv_len, sm_count, kv)
    one = {"tile_rows": tile_rows, "occupancy": occupancy, "balanced": False, "tail": False}
    head = plan(head_batch, *shape, num_splits=1, **one)
    rest = plan(batch - head_batch, *shape, num_splits=splits, **one)
    return two_launch(head, rest, batch - head_batch)


def two_launch(head: Plan, rest: Plan, tail_batch: int) -> Plan:
    """One plan of two launches: `head` over the first requests, `rest` over the last
    tail_batch (kernels.paged_decode runs them in turn), with both launches' CTAs and cost."""
    return replace(
        head,
        ctas=head.ctas + rest.ctas,
        waves=head.waves + rest.waves,
        modelled_cost=head.modelled_cost + rest.modelled_cost + _TAIL_LAUNCH_S * 1e6,
        tail_batch=tail_batch,
        tail=rest,
    )
