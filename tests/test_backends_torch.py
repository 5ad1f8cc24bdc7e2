"""torch_baseline / torch_grouped: same answers as the reference, every element written."""

from __future__ import annotations

from dataclasses import replace

import factories
import pytest
import torch

from harness.backends import all_backends, get
from harness.checks import check_output, tolerances
from harness.inputs import CaseInputs, make_inputs
from harness.matrix import Case
from harness.reference import reference_attention

CPU = torch.device("cpu")
TORCH_BACKENDS = ("torch_baseline", "torch_grouped")


DEFAULTS = dict(
    model="M",
    kv_dtype="bf16",
    q_dtype="bf16",
    batch=4,
    q_len=3,
    kv_len=77,
    page_size=16,
    ragged=True,
    num_qo_heads=8,
    num_kv_heads=2,
    head_dim=32,
    seed=99,
)


def make_case(**kw) -> Case:
    return factories.make_case(DEFAULTS, **kw)


CASES = {
    "bf16-q1-g4": make_case(q_len=1),
    "bf16-q4-g4-p32": make_case(q_len=4, page_size=32, kv_len=100),
    "fp16-q3-g1": make_case(kv_dtype="fp16", q_dtype="fp16", num_qo_heads=4, num_kv_heads=4),
    "fp16-q5-g8-uniform": make_case(
        kv_dtype="fp16",
        q_dtype="fp16",
        q_len=5,
        ragged=False,
        num_qo_heads=16,
        num_kv_heads=2,
        kv_len=40,
    ),
    "fp8-bf16q-q2": make_case(kv_dtype="fp8_e4m3", q_len=2),
    "fp8-fp16q-q4-p32": make_case(kv_dtype="fp8_e4m3", q_dtype="fp16", q_len=4, page_size=32),
    "kv-eq-q": make_case(q_len=6, kv_len=6, batch=3),
    "fp8-kv-eq-q1": make_case(kv_dtype="fp8_e4m3", q_len=1, kv_len=1, batch=2),
    # logits of std ~16: 16-bit score math (or K scaled in 16 bits) fails these
    "fp8-scores16": make_case(kv_dtype="fp8_e4m3", q_len=4, score_scale=16.0),
    "bf16-scores16": make_case(q_len=2, score_scale=16.0),
}


def _run(name: str, inp: CaseInputs) -> torch.Tensor:
    launch = get(name).prepare(inp)
    out = torch.full_like(inp.q, float("nan"))
    launch(out)
    return out


@pytest.fixture(scope="module")
def prepared() -> dict[str, tuple[CaseInputs, torch.Tensor]]:
    result = {}
    for key, case in CASES.items():
        inp = make_inputs(case)
        result[key] = (inp, reference_attention(inp, torch.float64))
    return result


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
@pytest.mark.parametrize("key", list(CASES))
def test_matches_reference(prepared, backend: str, key: str) -> None:
    inp, ref = prepared[key]
    out = _run(backend, inp)
    assert out.dtype == inp.q.dtype and out.shape == inp.q.shape
    assert not torch.isnan(out).any(), "elements left unwritten (still NaN)"
    corr = check_output(out, ref, inp.case)
    assert corr["nan_count"] == 0
    assert corr["mismatches"] <= corr["allowed_mismatches"], corr
    rtol, atol = tolerances(inp.case)
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=atol)


@pytest.mark.parametrize("key", ["bf16-q4-g4-p32", "fp8-fp16q-q4-p32"])
def test_baseline_and_grouped_agree(prepared, key: str) -> None:
    inp, _ = prepared[key]
    a, b = _run("torch_baseline", inp), _run("torch_grouped", inp)
    torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
def test_launch_is_repeatable_into_the_same_tensor(prepared, backend: str) -> None:
    inp, _ = prepared["bf16-q4-g4-p32"]
    launch = get(backend).prepare(inp)
    out = torch.full_like(inp.q, float("nan"))
    launch(out)
    first = out.clone()
    out.fill_(float("nan"))
    launch(out)
    assert torch.equal(out, first)


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
def test_wrong_page_table_is_detected(prepared, backend: str) -> None:
    """The check has teeth: an unshuffled table (a kernel assuming contiguous pages)
    gives a different answer, so it must be reading through the table."""
    inp, ref = prepared["bf16-q4-g4-p32"]
    table = inp.page_table.clone()
    table[[0, 1]] = table[[1, 0]]
    out = _run(backend, replace(inp, page_table=table))
    corr = check_output(out, ref, inp.case)
    assert corr["mismatches"] > corr["allowed_mismatches"]


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
def test_kv_beyond_length_does_not_leak(prepared, backend: str) -> None:
    """Stale KV past each request's length (the tail of its last page, the spare page)
    may hold anything, NaN included, and must not change the output."""
    inp, _ = prepared["bf16-q4-g4-p32"]
    c = inp.case
    live = torch.zeros(inp.kv_cache.shape[0], c.page_size, dtype=torch.bool)
    for b, n in enumerate(inp.kv_lens_host):
        for j in range(n):
            live[int(inp.page_table[b, j // c.page_size]), j % c.page_size] = True
    pages, slots = (~live).nonzero(as_tuple=True)
    clean = _run(backend, inp)
    big = inp.kv_cache.clone()
    big[pages, :, slots] = 1e4
    assert torch.equal(_run(backend, replace(inp, kv_cache=big)), clean)
    nan = inp.kv_cache.clone()
    nan[pages, :, slots] = float("nan")
    out = _run(backend, replace(inp, kv_cache=nan))
    assert int(torch.isnan(out).sum()) == 0, "NaN in dead KV slots leaked into the output"
    assert torch.equal(out, clean)


def test_registry_and_supports() -> None:
    names = [b.name for b in all_backends()]
    assert names == sorted(names)
    assert {"torch_baseline", "torch_grouped", "cuda_baseline", "cuda_grouped"} <= set(names)
    assert get("torch_baseline").role == "baseline"
    assert get("torch_grouped").role == "grouped"
    case = CASES["bf16-q1-g4"]
    for name in TORCH_BACKENDS:
        assert get(name).supports(case, CPU) is None
    for name in ("cuda_baseline", "cuda_grouped"):
        assert get(name).supports(case, CPU) == "no CUDA device"
    with pytest.raises(KeyError, match="unknown backend 'nope'"):
        get("nope")


def test_a_module_run_again_registers_its_backends_again() -> None:
    """pytester's in-process sessions drop the modules a session imported, so the next
    session imports harness.backends.cuda_kernels again while the registry lives on: its
    backends must register again rather than fail as duplicates (they did: "backend
    'cuda_baseline' registered twice" in a worker that ran the plugin tests in that order).
    A different definition under a taken name is still refused."""
    import importlib

    import harness.backends.cuda_kernels as cuda_kernels
    from harness.backends import base

    before = get("cuda_grouped")
    importlib.reload(cuda_kernels)  # runs its module-level register() calls again
    again = get("cuda_grouped")
    assert again is not before and again.name == before.name
    impostor = replace(again, prepare=lambda inputs: lambda out: None)
    with pytest.raises(ValueError, match="'cuda_grouped' registered twice"):
        base.register(impostor)
    assert get("cuda_grouped") is again
