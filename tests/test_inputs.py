"""harness.inputs: deterministic, shuffled, ragged, fp8-scaled inputs."""

from __future__ import annotations

import math
from dataclasses import replace

import factories
import pytest
import torch

from harness.dtypes import FP8_MAX
from harness.inputs import CaseInputs, kv_lengths, make_inputs
from harness.matrix import Case

DEFAULTS = dict(
    model="M",
    kv_dtype="bf16",
    q_dtype="bf16",
    batch=6,
    q_len=3,
    kv_len=70,
    page_size=16,
    ragged=True,
    num_qo_heads=8,
    num_kv_heads=2,
    head_dim=16,
    seed=5,
)


def make_case(**kw) -> Case:
    return factories.make_case(DEFAULTS, **kw)


def _tensors(inp: CaseInputs) -> dict[str, torch.Tensor]:
    kv = inp.kv_cache
    if kv.dtype == torch.float8_e4m3fn:
        kv = kv.view(torch.uint8)  # bitwise comparison
    return {"q": inp.q, "kv": kv, "table": inp.page_table, "lens": inp.kv_lens}


def _live_pages(inp: CaseInputs) -> list[list[int]]:
    ps = inp.case.page_size
    return [inp.page_table[b, : math.ceil(n / ps)].tolist() for b, n in enumerate(inp.kv_lens_host)]


@pytest.mark.parametrize("kv_dtype", ["bf16", "fp8_e4m3"])
def test_same_case_gives_identical_inputs(kv_dtype: str) -> None:
    case = make_case(kv_dtype=kv_dtype)
    a, b = make_inputs(case), make_inputs(case)
    for name, t in _tensors(a).items():
        assert torch.equal(t, _tensors(b)[name]), name
    assert (a.k_scale, a.v_scale, a.sm_scale, a.kv_lens_host) == (
        b.k_scale,
        b.v_scale,
        b.sm_scale,
        b.kv_lens_host,
    )


def test_different_seed_or_case_gives_different_data() -> None:
    base = make_inputs(make_case())
    other_seed = make_inputs(make_case(seed=6))
    other_case = make_inputs(make_case(batch=5))
    assert not torch.equal(base.q, other_seed.q)
    assert not torch.equal(base.q[:3], other_case.q[:3])


def test_shapes_and_dtypes() -> None:
    case = make_case(
        q_dtype="fp16",
        kv_dtype="fp16",
        batch=3,
        q_len=2,
        kv_len=33,
        page_size=32,
        num_qo_heads=12,
        num_kv_heads=4,
        head_dim=32,
    )
    inp = make_inputs(case)
    assert inp.q.shape == (3 * 2, 12, 32)
    assert inp.q.dtype == torch.float16
    _, two, ps, kvh, d = inp.kv_cache.shape
    assert (two, ps, kvh, d) == (2, 32, 4, 32)
    assert inp.kv_cache.dtype == torch.float16
    assert inp.page_table.dtype == torch.int32 and inp.kv_lens.dtype == torch.int32
    assert inp.page_table.shape == (3, max(math.ceil(n / 32) for n in inp.kv_lens_host))
    assert inp.kv_lens.tolist() == list(inp.kv_lens_host)
    assert inp.sm_scale == pytest.approx(32**-0.5)
    assert inp.device == torch.device("cpu")
    assert (inp.k_scale, inp.v_scale) == (1.0, 1.0)


@pytest.mark.parametrize("page_size", [16, 32])
def test_page_table_is_a_shuffled_permutation(page_size: int) -> None:
    inp = make_inputs(make_case(batch=8, kv_len=200, page_size=page_size))
    n_pages = inp.kv_cache.shape[0]
    live = [p for row in _live_pages(inp) for p in row]
    assert len(live) == len(set(live)), "a page is shared by two live slots"
    assert all(0 <= p < n_pages for p in inp.page_table.flatten().tolist())
    # every live page is used once; the only other page is the one spare page
    assert len(live) == n_pages - 1
    spare = set(range(n_pages)) - set(live)
    assert len(spare) == 1
    # slots past a request's pages point at real memory that holds no live data
    for b, row in enumerate(_live_pages(inp)):
        assert set(inp.page_table[b, len(row) :].tolist()) <= spare
    # shuffled: live pages are neither in order nor contiguous
    assert live != sorted(live)


def test_ragged_lengths_hit_both_ends() -> None:
    for seed in range(4):
        case = make_case(batch=7, q_len=4, kv_len=90, seed=seed)
        lens = make_inputs(case).kv_lens_host
        assert len(lens) == 7
        assert 90 in lens and 4 in lens
        assert all(4 <= n <= 90 for n in lens)
        assert len(set(lens)) > 2  # really ragged, not just the two ends


def test_uniform_and_single_request_lengths() -> None:
    assert make_inputs(make_case(ragged=False, kv_len=33)).kv_lens_host == (33,) * 6
    assert make_inputs(make_case(batch=1, kv_len=33)).kv_lens_host == (33,)
    gen = torch.Generator().manual_seed(0)
    assert kv_lengths(make_case(q_len=5, kv_len=5, batch=4), gen) == [5, 5, 5, 5]


def test_fp8_values_in_range_and_scales_recover_amax() -> None:
    case = make_case(kv_dtype="fp8_e4m3", batch=4, kv_len=100)
    inp = make_inputs(case)
    kv = inp.kv_cache
    assert kv.dtype == torch.float8_e4m3fn
    f = kv.float()
    assert torch.isfinite(f).all()
    assert f.abs().max() <= FP8_MAX
    for part, scale in ((0, inp.k_scale), (1, inp.v_scale)):
        x = f[:, part]
        # the per-tensor scale maps the tensor's amax exactly onto e4m3's largest value
        assert x.abs().max().item() == FP8_MAX
        assert scale > 0
        deq = x * scale
        assert deq.abs().max().item() == pytest.approx(FP8_MAX * scale, rel=1e-6)
        # the dequantised values are standard normal again (randn before scaling)
        assert deq.std().item() == pytest.approx(1.0, rel=0.05)
        assert abs(deq.mean().item()) < 0.05
    assert inp.k_scale != inp.v_scale


def test_fp8_cache_uses_the_e4m3_grid_without_nan() -> None:
    """fp8 inputs use e4m3's grid (many distinct codes, not a handful) and hold no NaN."""
    inp = make_inputs(make_case(kv_dtype="fp8_e4m3", q_dtype="fp16"))
    assert inp.q.dtype == torch.float16
    codes = inp.kv_cache.view(torch.uint8)
    assert len(torch.unique(codes)) > 150
    assert not ((codes & 0x7F) == 0x7F).any(), "NaN encodings in the fp8 cache"


def test_byte_counts() -> None:
    inp = make_inputs(make_case(batch=3, kv_len=40, q_len=2))
    c = inp.case
    per_token = 2 * c.num_kv_heads * c.head_dim * 2
    assert inp.kv_bytes() == sum(inp.kv_lens_host) * per_token
    assert inp.io_bytes() == inp.kv_bytes() + 2 * inp.q.numel() * 2
    fp8 = make_inputs(replace(c, kv_dtype="fp8_e4m3", id=c.id + "-fp8"))
    assert fp8.kv_bytes() == sum(fp8.kv_lens_host) * per_token // 2


@pytest.mark.parametrize("kv_dtype", ["bf16", "fp8_e4m3"])
def test_score_scale_scales_k_only(kv_dtype: str) -> None:
    def kv_std(inp: CaseInputs) -> tuple[float, float]:
        kv = inp.kv_cache.float()
        return (kv[:, 0] * inp.k_scale).std().item(), (kv[:, 1] * inp.v_scale).std().item()

    plain = make_inputs(make_case(kv_dtype=kv_dtype, q_dtype="bf16", kv_len=200))
    big = make_inputs(make_case(kv_dtype=kv_dtype, q_dtype="bf16", kv_len=200, score_scale=8.0))
    (k1, v1), (k8, v8) = kv_std(plain), kv_std(big)
    assert k8 / k1 == pytest.approx(8.0, rel=0.1)
    assert v8 / v1 == pytest.approx(1.0, rel=0.1)
    assert big.case.id.endswith("-scores8")
