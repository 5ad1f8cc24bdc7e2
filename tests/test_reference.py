"""harness.reference against a naive per-token, per-head loop in fp64, and its causal rule."""

from __future__ import annotations

import math
from dataclasses import replace

import factories
import pytest
import torch

from harness.inputs import CaseInputs, make_inputs
from harness.matrix import Case
from harness.reference import causal_mask, gather_kv, reference_attention

DEFAULTS = dict(
    model="M",
    kv_dtype="bf16",
    q_dtype="bf16",
    batch=3,
    q_len=2,
    kv_len=37,
    page_size=16,
    ragged=True,
    num_qo_heads=8,
    num_kv_heads=2,
    head_dim=16,
    seed=17,
)


def make_case(**kw) -> Case:
    return factories.make_case(DEFAULTS, **kw)


def naive_attention(inp: CaseInputs) -> torch.Tensor:
    """Textbook attention, one query token and one head at a time, in fp64.

    Every KV position is looked up through the page table on its own, and query token i of
    request b attends positions 0 ..= kv_len[b] - q_len + i (DESIGN.md's causal rule).
    """
    c = inp.case
    kv = inp.kv_cache.to(torch.float64)
    q = inp.q.to(torch.float64)
    out = torch.zeros(q.shape, dtype=torch.float64)
    group = c.num_qo_heads // c.num_kv_heads
    for b in range(c.batch):
        length = int(inp.kv_lens[b])
        for i in range(c.q_len):
            row = b * c.q_len + i
            last = length - c.q_len + i
            for h in range(c.num_qo_heads):
                kvh = h // group
                scores = []
                values = []
                for j in range(last + 1):
                    page = int(inp.page_table[b, j // c.page_size])
                    slot = j % c.page_size
                    k = kv[page, 0, slot, kvh] * inp.k_scale
                    v = kv[page, 1, slot, kvh] * inp.v_scale
                    scores.append(float(torch.dot(q[row, h], k)) * inp.sm_scale)
                    values.append(v)
                m = max(scores)
                weights = [math.exp(s - m) for s in scores]
                total = sum(weights)
                acc = torch.zeros(c.head_dim, dtype=torch.float64)
                for w, v in zip(weights, values, strict=True):
                    acc += (w / total) * v
                out[row, h] = acc
    return out


CASES = {
    # q_len 1, group 1, page 16, ragged lengths not a multiple of the page
    "q1-g1-p16-ragged": make_case(q_len=1, num_qo_heads=4, num_kv_heads=4, kv_len=37),
    # speculative decoding, group 4, fp16
    "q4-g4-p16-fp16": make_case(q_len=4, kv_dtype="fp16", q_dtype="fp16", kv_len=35),
    # kv_len == q_len: the whole cache is the new tokens
    "kv-eq-q": make_case(q_len=3, kv_len=3, batch=2, num_qo_heads=4, num_kv_heads=2),
    # page 32, uniform lengths spanning several pages
    "q2-g2-p32-uniform": make_case(
        q_len=2, page_size=32, kv_len=70, ragged=False, num_qo_heads=4, num_kv_heads=2
    ),
    # fp8 KV with per-tensor scales (bf16 q), ragged, page 32
    "fp8-bf16q-p32": make_case(kv_dtype="fp8_e4m3", q_len=3, page_size=32, kv_len=45),
    # fp8 KV, fp16 q, q_len 1, group 4
    "fp8-fp16q-q1": make_case(
        kv_dtype="fp8_e4m3", q_dtype="fp16", q_len=1, kv_len=33, num_qo_heads=4, num_kv_heads=1
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_reference_matches_naive_loop(name: str) -> None:
    inp = make_inputs(CASES[name])
    want = naive_attention(inp)
    got64 = reference_attention(inp, torch.float64)
    assert got64.dtype == torch.float64
    assert got64.shape == inp.q.shape
    torch.testing.assert_close(got64, want, rtol=1e-10, atol=1e-12)
    got32 = reference_attention(inp)  # the default: fp32
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), want, rtol=1e-5, atol=1e-5)


def test_fp8_scales_are_applied() -> None:
    inp = make_inputs(CASES["fp8-bf16q-p32"])
    assert inp.k_scale != 1.0 and inp.v_scale != 1.0
    ref = reference_attention(inp, torch.float64)
    # V scale is linear in the output; K scale changes the softmax temperature
    doubled_v = reference_attention(replace(inp, v_scale=2 * inp.v_scale), torch.float64)
    torch.testing.assert_close(doubled_v, 2 * ref)
    other_k = reference_attention(replace(inp, k_scale=3 * inp.k_scale), torch.float64)
    assert not torch.allclose(other_k, ref)
    torch.testing.assert_close(other_k, naive_attention(replace(inp, k_scale=3 * inp.k_scale)))


def test_first_token_of_full_prefill_sees_only_position_zero() -> None:
    inp = make_inputs(CASES["kv-eq-q"])
    c = inp.case
    ref = reference_attention(inp, torch.float64)
    group = c.num_qo_heads // c.num_kv_heads
    for b in range(c.batch):
        page = int(inp.page_table[b, 0])
        v0 = inp.kv_cache[page, 1, 0].double()  # [kv_heads, d]
        torch.testing.assert_close(ref[b * c.q_len], v0.repeat_interleave(group, dim=0))


def test_causal_mask_rule() -> None:
    m = causal_mask(3, 5, torch.device("cpu"))
    assert m.tolist() == [
        [True, True, True, False, False],
        [True, True, True, True, False],
        [True, True, True, True, True],
    ]
    assert causal_mask(2, 2, torch.device("cpu")).tolist() == [[True, False], [True, True]]


def test_gather_kv_follows_the_page_table() -> None:
    inp = make_inputs(make_case(page_size=16, kv_len=40, ragged=False, batch=2))
    k = gather_kv(inp.kv_cache, inp.page_table[1], 40, 0)
    assert k.shape == (40, 2, 16)
    for j in (0, 15, 16, 39):
        page = int(inp.page_table[1, j // 16])
        assert torch.equal(k[j], inp.kv_cache[page, 0, j % 16])


@pytest.mark.parametrize("part", [0, 1])
def test_causal_rule_with_perturbed_kv(part: int) -> None:
    """Changing KV at position p changes exactly the tokens that may see p."""
    case = make_case(batch=2, q_len=4, kv_len=21, ragged=False, page_size=16)
    inp = make_inputs(case)
    base = reference_attention(inp, torch.float64)
    length = 21
    b = 1
    for p in (length - 4, length - 2, length - 1, 3):
        kv = inp.kv_cache.clone()
        page = int(inp.page_table[b, p // case.page_size])
        kv[page, part, p % case.page_size] += 3.0
        out = reference_attention(replace(inp, kv_cache=kv), torch.float64)
        # request 0 shares no page with request 1: untouched
        assert torch.equal(out[: case.q_len], base[: case.q_len])
        for i in range(case.q_len):
            pos = length - case.q_len + i
            row = b * case.q_len + i
            if p > pos:
                assert torch.equal(out[row], base[row]), (p, i)
            else:
                assert (out[row] - base[row]).abs().max() > 1e-6, (p, i)


def test_kv_beyond_length_is_ignored() -> None:
    """Stale data in a request's last page and in unused page-table slots is never read."""
    case = make_case(batch=3, q_len=2, kv_len=20, ragged=True, page_size=16)
    inp = make_inputs(case)
    base = reference_attention(inp, torch.float64)
    kv = inp.kv_cache.clone()
    live = torch.zeros(kv.shape[0], case.page_size, dtype=torch.bool)
    for b, n in enumerate(inp.kv_lens_host):
        for j in range(n):
            live[int(inp.page_table[b, j // case.page_size]), j % case.page_size] = True
    pages, slots = (~live).nonzero(as_tuple=True)
    assert len(pages) > case.page_size  # the spare page and partial last pages
    kv[pages, :, slots] = float("nan")
    out = reference_attention(replace(inp, kv_cache=kv), torch.float64)
    assert torch.equal(out, base)
