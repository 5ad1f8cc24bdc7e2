"""The grouped kernel's cost model (kernels/plan.py): pure Python, runs anywhere."""

from __future__ import annotations

import math

import pytest

from kernels.plan import (
    BLOCK_N,
    TILES,
    Plan,
    balanced_segments,
    balanced_shape,
    ctas_per_sm,
    kernel_shape,
    plan,
)

H100_SMS = 132
SHAPES = {"qwen3-480b": (96, 8, 128), "gpt-oss": (64, 8, 64), "mha-d256": (16, 16, 256)}


def _plan(
    batch: int,
    q_len: int,
    model: str = "qwen3-480b",
    kv: str = "bf16",
    kv_len: int = 16384,
    sms: int = H100_SMS,
    **kw,
) -> Plan:
    hq, hkv, d = SHAPES[model]
    return plan(batch, q_len, hq, hkv, d, kv_len, sms, kv, **kw)


@pytest.mark.parametrize("model", sorted(SHAPES))
@pytest.mark.parametrize("kv", ["bf16", "fp8_e4m3"])
def test_small_batch_splits_more_than_big_batch(model: str, kv: str) -> None:
    small = _plan(1, 2, model, kv)
    big = _plan(256, 2, model, kv)
    assert small.num_splits > 1, small
    assert big.num_splits < small.num_splits, big
    # Non-increasing in batch while the unsplit grid fits on the GPU at once (past that a
    # split may pay for itself by shortening the last, part-filled wave).
    plans = [_plan(b, 2, model, kv) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256)]
    fits = [p.num_splits for p in plans if p.ctas // p.num_splits <= H100_SMS * p.ctas_per_sm]
    assert len(fits) >= 4 and fits == sorted(fits, reverse=True), fits


@pytest.mark.parametrize("batch", [1, 3, 8, 16, 40, 64, 256])
@pytest.mark.parametrize("q_len", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("model", sorted(SHAPES))
@pytest.mark.parametrize("kv", ["bf16", "fp16", "fp8"])
def test_invariants(batch: int, q_len: int, model: str, kv: str) -> None:
    hq, hkv, d = SHAPES[model]
    p = plan(batch, q_len, hq, hkv, d, 16384, H100_SMS, kv)
    rows = q_len * hq // hkv
    assert p.rows == rows
    assert p.tile_rows in TILES
    assert p.num_row_tiles == math.ceil(rows / p.tile_rows)
    assert p.tile_rows * p.num_row_tiles >= rows  # the tiles cover every row
    assert p.kv_tokens_per_split % BLOCK_N == 0
    capacity = H100_SMS * ctas_per_sm(p.tile_rows, d, kv)
    items = batch * hkv * p.num_row_tiles
    if p.tail is not None:
        # two launches: whole rounds of unsplit CTAs, then the rest within one round
        head = batch - p.tail_batch
        assert 1 <= head < batch and p.num_splits == 1 and not p.balanced_ctas
        head_items, per_request = head * hkv * p.num_row_tiles, hkv * p.num_row_tiles
        assert -head_items % capacity < per_request  # whole rounds, to whole requests
        assert p.tail.tile_rows == p.tile_rows and p.tail.num_splits >= 2 and p.tail.tail is None
        assert p.tail.ctas == p.tail_batch * hkv * p.num_row_tiles * p.tail.num_splits <= capacity
        assert p.ctas == head * hkv * p.num_row_tiles + p.tail.ctas
        return
    if p.balanced_ctas:
        # a balanced grid: every KV head cut alike into CTAs under one item's KV each, a
        # head's CTAs covering its items' KV with none idle, within whole rounds of the SMs
        per_head, head_items = p.ctas // hkv, batch * p.num_row_tiles
        assert p.ctas == p.balanced_ctas == per_head * hkv and per_head > head_items
        assert p.kv_tokens_per_split < 16384
        assert per_head * p.kv_tokens_per_split >= head_items * 16384
        assert (per_head - 1) * p.kv_tokens_per_split < head_items * 16384
        assert per_head <= capacity // hkv * math.ceil(per_head / (capacity // hkv))
        assert p.waves == pytest.approx(p.ctas / capacity)
        return
    assert p.num_splits * p.kv_tokens_per_split >= 16384  # the splits cover the KV
    assert (p.num_splits - 1) * p.kv_tokens_per_split < 16384  # and none is empty
    assert p.ctas == items * p.num_splits
    if p.num_splits > 1 and p.ctas > capacity and not p.compute_bound:
        # splitting asks for more CTAs than the GPU holds only if the unsplit grid did (or
        # the tile is latency-bound: test_latency_bound_tiles_count_rounds)
        assert p.ctas // p.num_splits > capacity
    assert p.waves == pytest.approx(p.ctas / capacity)
    assert p.modelled_cost > 0


def test_tile_grows_with_rows() -> None:
    tiles = [_plan(64, q).tile_rows for q in (1, 2, 4, 8)]  # rows 12, 24, 48, 96
    assert tiles == sorted(tiles)
    assert tiles[0] == 16 and tiles[-1] == 128


def test_str_is_short() -> None:
    p = _plan(8, 4)
    assert str(p) == f"tile{p.tile_rows}x{p.num_row_tiles}/split{p.num_splits}"


def test_forced_choices_are_honoured() -> None:
    p = _plan(64, 8, tile_rows=32, num_splits=3)
    assert (p.tile_rows, p.num_row_tiles, p.num_splits) == (32, 3, 3)
    assert p.kv_tokens_per_split == math.ceil(16384 / 3 / BLOCK_N) * BLOCK_N


def test_edge_cases() -> None:
    p = plan(1, 1, 1, 1, 64, 1, 1)  # one token, one SM
    assert (p.num_splits, p.kv_tokens_per_split, p.ctas) == (1, BLOCK_N, 1)
    p = plan(1, 16, 256, 16, 128, 16, H100_SMS)  # kv_len == q_len, 256 rows
    assert p.num_splits == 1 and p.tile_rows * p.num_row_tiles >= 256
    more_sms = _plan(4, 2, sms=264)
    assert more_sms.num_splits >= _plan(4, 2, sms=132).num_splits


def test_cost_monotone_in_kv_len_and_batch() -> None:
    costs = [_plan(16, 4, kv_len=n).modelled_cost for n in (1024, 4096, 16384, 65536)]
    assert costs == sorted(costs)
    costs = [_plan(b, 4).modelled_cost for b in (16, 32, 64, 128)]
    assert costs == sorted(costs)


def test_fp8_is_modelled_cheaper_when_memory_bound() -> None:
    assert _plan(64, 1, kv="fp8").modelled_cost < _plan(64, 1, kv="bf16").modelled_cost


@pytest.mark.parametrize(
    "args, msg",
    [
        ((0, 1, 8, 8, 64, 100, 132), "batch"),
        ((1, 1, 12, 8, 64, 100, 132), "multiple"),
        ((1, 1, 8, 8, 64, 100, 0), "sm_count"),
    ],
)
def test_bad_arguments(args: tuple, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        plan(*args)


def test_bad_kv_dtype() -> None:
    with pytest.raises(ValueError, match="kv dtype"):
        plan(1, 1, 8, 8, 64, 100, 132, "int4")


def test_kernel_shape_fits_hopper_shared_memory() -> None:
    for t in TILES:
        for d in (64, 128, 256):
            for kv in ("bf16", "fp8"):
                s = kernel_shape(t, d, kv)
                assert s.smem_bytes <= 227 * 1024
                assert s.threads in (128, 256)
                assert ctas_per_sm(t, d, kv) >= 1


def test_device_occupancy_replaces_the_mma_sync_mirror() -> None:
    """On sm_90 GPT-OSS fp8 q_len 8 tiles run grouped_wg_kernel, which holds 4 CTAs per SM
    where the mma.sync mirror says 3: batch 32 (256 CTAs unsplit) then splits in two (512
    CTAs, one full round over 528 slots), measured best on the H100; with the mirror's 3 it
    stays unsplit (256 CTAs in one part-filled round of 396 slots: splits 2 and 3 would
    make 1.3 and 2 rounds). Batch 64 (512 CTAs) stays whole."""
    mirror = ctas_per_sm(64, 64, "fp8")
    assert mirror == 3
    default = _plan(32, 8, "gpt-oss", "fp8")
    device = _plan(32, 8, "gpt-oss", "fp8", occupancy={64: 4})
    assert (default.tile_rows, default.num_splits, default.tail) == (64, 1, None)
    assert (device.tile_rows, device.num_splits) == (64, 2)
    assert device.ctas_per_sm == 4 and device.ctas <= H100_SMS * 4
    assert device.waves == pytest.approx(device.ctas / (H100_SMS * 4))
    assert _plan(64, 8, "gpt-oss", "fp8", occupancy={64: 4}).num_splits == 1
    # Tiles the mapping does not name keep the mirror.
    other = _plan(32, 8, "gpt-oss", "fp8", occupancy={128: 1}, tile_rows=64)
    assert other.ctas_per_sm == mirror


def test_a_grid_over_one_wave_may_split_to_shorten_its_tail() -> None:
    """Qwen3-480B q_len 8 at batch 40 on 132 SMs, one 128-row CTA per SM: 320 CTAs are 2.4
    waves. Two splits (640 CTAs) shorten the part-filled last wave; measured on the H100
    (kernels/NOTES.md) 0.90x for fp8 and 0.93x for bf16. At batch 64 (3.9 waves) the model
    keeps one split, as measured best there."""
    for kv in ("fp8", "bf16"):
        p = _plan(40, 8, "qwen3-480b", kv, occupancy={128: 1}, tail=False)
        assert (p.tile_rows, p.num_splits) == (128, 2), p
        assert p.ctas > H100_SMS  # past capacity, allowed because 320 unsplit CTAs are too
        assert _plan(64, 8, "qwen3-480b", kv, occupancy={128: 1}).num_splits == 1
    # A grid that fits in one wave never splits past capacity (GPT-OSS fp8 q_len 2, batch 40:
    # 320 CTAs over 528 slots; splitting it measured 1.2-1.4x slower); a balanced grid is
    # another matter (test_balanced_grid_evens_out_batch_40).
    p = _plan(40, 2, "gpt-oss", "fp8", occupancy={16: 4, 32: 4}, balanced=False)
    assert p.num_splits == 1, p


def test_latency_bound_tiles_count_rounds() -> None:
    """GPT-OSS fp8 q_len 8 (64-row tiles, 4 CTAs per SM on the H100) is compute-bound in the
    model. Measured at batch 40 (kernels/NOTES.md, ninth session): one split 396 µs (one
    round of 3 CTAs per SM), two 462 µs (a full round plus a round of 1: the tail costs
    nearly a full round), three 358 µs (two full rounds). The model now ranks splits by the
    rounds they make, past the capacity too; the memory-bound q_len 2 tile of the same
    batch keeps the capacity rule (splitting it measured 1.2-1.4x slower). (The classic
    grid's choices; a balanced grid beats both there: test_balanced_grid_evens_out_batch_40.)"""
    occ = {16: 4, 32: 4, 64: 4, 128: 2}
    p = _plan(40, 8, "gpt-oss", "fp8", occupancy=occ, balanced=False)
    assert p.compute_bound and (p.tile_rows, p.num_splits) == (64, 3), p
    assert p.ctas > H100_SMS * 4  # 960 CTAs over 528 slots: two full rounds
    two = _plan(40, 8, "gpt-oss", "fp8", occupancy=occ, tile_rows=64, num_splits=2)
    one = _plan(40, 8, "gpt-oss", "fp8", occupancy=occ, tile_rows=64, num_splits=1)
    assert p.modelled_cost < one.modelled_cost < two.modelled_cost
    # Batch 64 (512 CTAs: one full round) keeps one split, as measured best.
    assert _plan(64, 8, "gpt-oss", "fp8", occupancy=occ).num_splits == 1
    q2 = _plan(40, 2, "gpt-oss", "fp8", occupancy=occ, balanced=False)
    assert not q2.compute_bound and q2.num_splits == 1, q2


def test_a_lone_part_filled_round_keeps_its_efficiency() -> None:
    """Only a tail round behind full ones costs a full round. A grid that is one part-filled
    round runs faster per CTA than a full one: GPT-OSS fp8 q_len 8 batch 8 measured 86 µs
    with 6 splits (one round of 3 CTAs per SM) against 88 µs with 8 (a full round of 4,
    ninth session, call 21), so the model keeps 6 there and 3 at batch 40."""
    occ = {16: 4, 32: 4, 64: 4, 128: 2}
    p = _plan(8, 8, "gpt-oss", "fp8", occupancy=occ)
    assert p.compute_bound and (p.tile_rows, p.num_splits) == (64, 6), p
    assert p.ctas <= H100_SMS * 3  # one round, 3 CTAs per SM at most
    assert _plan(40, 8, "gpt-oss", "fp8", occupancy=occ, balanced=False).num_splits == 3


@pytest.mark.parametrize(
    "items, stages, capacity",
    [
        (320, 256, 528),
        (320, 256, 264),
        (320, 256, 132),
        (7, 9, 8),
        (3, 5, 4),
        (40, 3, 33),
        (1, 9, 4),
    ],
)
def test_balanced_segments_cover_every_stage_once(items: int, stages: int, capacity: int) -> None:
    """The balanced grid's CTAs (the mirror of cta_segment) take every stage of every item
    exactly once, each CTA at most two segments and `units` stages (the last one fewer),
    and each item's partial slots are 0..n-1 with only its last CTA marking the rest."""
    shape = balanced_shape(items, stages, capacity)
    assert shape is not None
    ctas, units, slots = shape
    assert items < ctas <= capacity * (items // capacity + 1) and units < stages
    segs = balanced_segments(items, stages, units, slots)
    seen = [[0] * stages for _ in range(items)]
    per_cta: dict[int, int] = {}
    for s in segs:
        per_cta[s.cta] = per_cta.get(s.cta, 0) + s.stage_end - s.stage_begin
        for k in range(s.stage_begin, s.stage_end):
            seen[s.item][k] += 1
    assert all(n == 1 for row in seen for n in row)
    assert sorted(per_cta) == list(range(ctas))
    assert all(n == units for c, n in per_cta.items() if c < ctas - 1)
    assert 0 < per_cta[ctas - 1] <= units
    assert max(sum(1 for s in segs if s.cta == c) for c in range(ctas)) <= 2
    for j in range(items):
        mine = sorted((s for s in segs if s.item == j), key=lambda s: s.stage_begin)
        assert [s.slot for s in mine] == list(range(len(mine))) and len(mine) <= slots
        assert [s.fill_to for s in mine] == [s.slot + 1 for s in mine[:-1]] + [slots]


def test_balanced_shape_refuses_what_it_cannot_even_out() -> None:
    assert balanced_shape(10, 1, 528) is None  # one stage per item: nothing to share
    assert balanced_shape(600, 256, 528) == (1053, 146, 3)  # two rounds
    assert balanced_shape(2, 2, 1) is None  # 3 CTAs would still each take a whole item


def test_balanced_grid_evens_out_batch_40() -> None:
    """GPT-OSS fp8 at batch 40: 320 items on 132 SMs leave 56 SMs a third CTA. A balanced
    grid of 528 CTAs (4 per SM; 66 per KV head, each 156 of a request's 256 stages) is what
    the same bytes take in 528 equal CTAs: 1.10x / 1.18x / 1.11x faster at q_len 2 / 4 / 8
    (bench/balance_probe.py, H100). The model takes it there, keeps batch 64 (512 items,
    nearly even) classic, and never takes it for a tile whose kernel cannot run one."""
    occ = {16: 4, 32: 4, 64: 4, 128: 2}
    for q_len in (2, 4, 8):
        p = _plan(40, q_len, "gpt-oss", "fp8", occupancy=occ)
        assert p.balanced_ctas == 528 and p.ctas == 528 and p.num_splits == 3, p
        assert p.kv_tokens_per_split == 156 * BLOCK_N
        assert str(p) == f"tile{p.tile_rows}x1/balanced528"
        assert not _plan(64, q_len, "gpt-oss", "fp8", occupancy=occ).balanced_ctas
        none = _plan(40, q_len, "gpt-oss", "fp8", occupancy=occ, balanced_tiles=frozenset())
        off = _plan(40, q_len, "gpt-oss", "fp8", occupancy=occ, balanced=False)
        assert none == off and not off.balanced_ctas
        assert p.modelled_cost < 0.97 * off.modelled_cost
    # Qwen3 fp8 q_len 2 (24 rows, tile 32 at 2 CTAs per SM): balanced, two rounds, measured
    # 0.98x of the classic split; two launches (33 requests unsplit, 7 split 4) measured
    # 0.988x / 0.994x of balanced (twenty-third session; the calibration set), and win.
    qocc = {16: 3, 32: 2, 64: 2, 128: 1}
    q2 = _plan(40, 2, "qwen3-480b", "fp8", occupancy=qocc)
    assert str(q2) == "tile32x1/split1+last7/split4", q2
    q2b = _plan(40, 2, "qwen3-480b", "fp8", occupancy=qocc, balanced=True)
    assert q2b.tile_rows == 32 and q2b.balanced_ctas == 528, q2b
    assert q2.modelled_cost < q2b.modelled_cost
    # bf16 KV: memory-bound (GPT-OSS bf16 batch 40 reads at 99 % of copy classic); balanced
    # measured 1.01-1.02x slower there, so only a forced plan gets one
    bf = {16: 3, 32: 3, 64: 3, 128: 2}
    for q_len in (2, 4):
        assert not _plan(40, q_len, "gpt-oss", "bf16", occupancy=bf).balanced_ctas
        assert _plan(40, q_len, "gpt-oss", "bf16", occupancy=bf, balanced=True).balanced_ctas


def test_forced_balanced_grid() -> None:
    p = _plan(3, 4, "gpt-oss", "fp8", tile_rows=16, balanced=True)
    assert p.tile_rows == 16 and p.num_row_tiles == 2 and p.balanced_ctas > 3 * 8 * 2
    assert p.balanced_ctas % 8 == 0  # every KV head cut alike
    with pytest.raises(ValueError, match="no balanced grid"):
        _plan(3, 4, "gpt-oss", "fp8", kv_len=64, balanced=True)
    with pytest.raises(ValueError, match="no balanced grid"):
        _plan(40, 2, "gpt-oss", "fp8", balanced=True, balanced_tiles=frozenset())


def test_two_launches_split_only_the_remainder() -> None:
    """Qwen3-480B at batch 40 on 132 SMs: 320 one-per-SM items are 2.4 rounds. Split 2 in one
    launch (the one-launch choice above) makes every CTA pay its start and end twice over;
    two launches run 33 requests (264 CTAs, two whole rounds) unsplit and the last 7 split 2
    (112 CTAs, one round), measured 0.950x (fp8 q_len 8) and 0.984x (bf16) of split 2 on the
    H100 (bench/tail_probe.py, kernels/NOTES.md)."""
    for kv in ("fp8", "bf16"):
        p = _plan(40, 8, "qwen3-480b", kv, occupancy={128: 1})
        assert p.tail is not None, p
        assert (p.tile_rows, p.num_splits, p.tail_batch, p.tail.num_splits) == (128, 1, 7, 2), p
        assert str(p) == "tile128x1/split1+last7/split2"
        one = _plan(40, 8, "qwen3-480b", kv, occupancy={128: 1}, tail=False)
        assert p.modelled_cost < one.modelled_cost
        head = _plan(33, 8, "qwen3-480b", kv, occupancy={128: 1}, tile_rows=128, num_splits=1)
        assert p.modelled_cost > head.modelled_cost + p.tail.modelled_cost  # + the launch
    # The remainder must fit one round split at least 2 ways: not at batch 64 (116 of 132
    # slots left) or 32 (124), where two launches measured 1.02-1.15x slower.
    for batch in (32, 64):
        assert _plan(batch, 8, "qwen3-480b", "fp8", occupancy={128: 1}).tail is None
        with pytest.raises(ValueError, match="no two-launch plan"):
            _plan(batch, 8, "qwen3-480b", "fp8", occupancy={128: 1}, tail=True)
    # Under a round (batch 8) or whole rounds (batch 33): one launch.
    assert _plan(8, 8, "qwen3-480b", "fp8", occupancy={128: 1}).tail is None
    with pytest.raises(ValueError, match="no two-launch plan"):
        _plan(33, 8, "qwen3-480b", "fp8", occupancy={128: 1}, tail=True)
    # An unsplit or balanced best keeps one launch unless forced; forced choices exclude it.
    assert _plan(40, 2, "gpt-oss", "fp8", occupancy={16: 4, 32: 4}).tail is None
    assert _plan(40, 8, "qwen3-480b", "fp8", occupancy={128: 1}, num_splits=2).tail is None
    with pytest.raises(ValueError, match="forced splits"):
        _plan(40, 8, "qwen3-480b", "fp8", occupancy={128: 1}, num_splits=2, tail=True)


def test_device_plan_passes_the_two_launch_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """kernels.device_plan plans with the device's SM count and occupancy and passes `tail`
    through (bench/tail_probe.py --scan times each two-launch plan against tail=False). The
    device queries are replaced by an H100's answers for Qwen3-480B fp8 q_len 8."""
    from kernels import binding

    monkeypatch.setattr(binding, "_sm_count", lambda dev: 132)
    occ = ((16, 3, True), (32, 2, True), (64, 1, False), (128, 1, False))
    monkeypatch.setattr(binding, "_device_occupancy", lambda *args: occ)
    binding.device_plan.cache_clear()
    try:
        shape = (40, 8, 96, 8, 128, 16384)
        auto = binding.device_plan(*shape, kv_dtype="fp8", device=0)
        one = binding.device_plan(*shape, kv_dtype="fp8", device=0, tail=False)
        assert str(auto) == "tile128x1/split1+last7/split2", auto
        assert one.tail is None and str(one) == "tile128x1/split2", one
        assert binding.device_plan(32, *shape[1:], kv_dtype="fp8", device=0).tail is None
        with pytest.raises(ValueError, match="no two-launch plan"):
            binding.device_plan(32, *shape[1:], kv_dtype="fp8", device=0, tail=True)
    finally:
        binding.device_plan.cache_clear()
