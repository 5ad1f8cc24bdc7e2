"""Peer backends (harness/backends/peers.py) on the CPU: torch_sdpa against the reference,
the flashinfer peers' skip reasons, the pure conversions to FlashInfer's layouts (checked
against hand-computed values), the `--peers` selection, and the report columns."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from harness.backends import all_backends, get
from harness.backends import peers as P
from harness.backends.base import PEERS_ENV
from harness.checks import check_output, passed
from harness.cli import backends_for_run, build_parser, pytest_command
from harness.inputs import make_inputs
from harness.matrix import Case, load_matrix
from harness.reference import gather_kv, reference_attention

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
H100 = (9, 0)


def case(
    *,
    qo: int = 8,
    kv: int = 2,
    d: int = 32,
    batch: int = 3,
    q_len: int = 1,
    kv_len: int = 40,
    page: int = 16,
    kv_dtype: str = "bf16",
    q_dtype: str = "bf16",
    ragged: bool = False,
    seed: int = 11,
) -> Case:
    return Case(
        model="M",
        kv_dtype=kv_dtype,
        batch=batch,
        q_len=q_len,
        kv_len=kv_len,
        page_size=page,
        q_dtype=q_dtype,
        ragged=ragged,
        num_qo_heads=qo,
        num_kv_heads=kv,
        head_dim=d,
        seed=seed,
        id=f"M-{kv_dtype}-q{q_dtype}-b{batch}-q{q_len}-kv{kv_len}-g{qo // kv}-{ragged}",
    )


# ------------------------------------------------------------------------- torch_sdpa

SDPA_CASES = {
    "bf16-q1-g1-uniform": case(qo=4, kv=4, q_len=1),
    "bf16-q1-g4-ragged": case(q_len=1, ragged=True, batch=4, kv_len=70),
    "bf16-q4-g4-ragged": case(q_len=4, ragged=True, batch=4, kv_len=53),
    "bf16-q3-g1-uniform": case(qo=2, kv=2, q_len=3, kv_len=35),
    "fp16-q2-g8-ragged": case(qo=16, kv=2, q_len=2, kv_dtype="fp16", q_dtype="fp16", ragged=True),
    "fp8-q1-g4-ragged": case(q_len=1, kv_dtype="fp8_e4m3", ragged=True, batch=4, kv_len=90),
    "fp8-q4-g2-uniform": case(qo=4, q_len=4, kv_dtype="fp8_e4m3", page=8, kv_len=33),
    "fp8-q2-g4-fp16q": case(q_len=2, kv_dtype="fp8_e4m3", q_dtype="fp16", ragged=True),
    "kv_len==q_len": case(q_len=5, kv_len=5, batch=2),
}


@pytest.mark.parametrize("name", sorted(SDPA_CASES))
def test_torch_sdpa_matches_the_reference_with_a_nan_poisoned_output(name: str) -> None:
    c = SDPA_CASES[name]
    inputs = make_inputs(c, CPU)
    backend = get("torch_sdpa")
    assert backend.role == "peer"
    assert backend.supports(c, CPU) is None
    out = torch.full_like(inputs.q, float("nan"))
    backend.prepare(inputs)(out)
    assert int(torch.isnan(out).sum()) == 0, "SDPA left elements unwritten"
    ref = reference_attention(inputs, torch.float64)
    corr = check_output(out, ref, c)
    assert passed(corr), corr
    assert corr["mismatches"] == 0, corr
    assert corr["max_abs_err"] < corr["atol"]


def test_torch_sdpa_is_wrong_when_the_causal_rule_is_dropped() -> None:
    """The mask is what makes q_len > 1 right: without it the check fails."""
    c = SDPA_CASES["bf16-q4-g4-ragged"]
    inputs = make_inputs(c, CPU)
    q, k, v, mask = P.sdpa_operands(inputs)
    assert mask is not None
    res = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, scale=inputs.sm_scale, enable_gqa=True
    )
    out = res.transpose(1, 2).reshape(inputs.q.shape)
    assert not passed(check_output(out, reference_attention(inputs), c))


def test_sdpa_operands_are_contiguous_dequantised_and_masked_only_when_needed() -> None:
    uniform = make_inputs(replace(SDPA_CASES["bf16-q1-g4-ragged"], ragged=False), CPU)
    q, k, v, mask = P.sdpa_operands(uniform)
    assert mask is None  # q_len 1, equal lengths: every position is visible
    c = uniform.case
    assert q.shape == (c.batch, c.num_qo_heads, 1, c.head_dim) and q.is_contiguous()
    assert k.shape == (c.batch, c.num_kv_heads, c.kv_len, c.head_dim) and k.is_contiguous()

    fp8 = make_inputs(SDPA_CASES["fp8-q1-g4-ragged"], CPU)
    q, k, v, mask = P.sdpa_operands(fp8)
    assert k.dtype == v.dtype == torch.bfloat16  # dequantised to q's dtype
    assert mask is not None and mask.shape == (4, 1, 1, max(fp8.kv_lens_host))
    for b, length in enumerate(fp8.kv_lens_host):
        want = gather_kv(fp8.kv_cache, fp8.page_table[b], length, 1).float() * fp8.v_scale
        got = v[b].permute(1, 0, 2)[:length].float()
        assert torch.allclose(got, want, rtol=1e-2, atol=1e-2)
        assert int(mask[b, 0, 0].sum()) == length
        assert bool((v[b][:, length:] == 0).all()), "dead slots must be zero"


def test_torch_sdpa_describes_what_it_times() -> None:
    text = get("torch_sdpa").describe(make_inputs(SDPA_CASES["fp8-q1-g4-ragged"], CPU))
    assert "dequantised" in text and "bool mask" in text


# ------------------------------------------------------------------ flashinfer: skips

FLASHINFER = ("flashinfer_fa2", "flashinfer_xqa", "flashinfer_trtllm_gen")


@pytest.mark.parametrize("name", FLASHINFER)
def test_flashinfer_peers_skip_when_flashinfer_is_missing(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(P, "flashinfer_problem", lambda: "flashinfer not installed")
    assert get(name).role == "peer"
    assert get(name).supports(case(), CPU) == "flashinfer not installed"


@pytest.mark.parametrize("name", FLASHINFER)
def test_flashinfer_peers_skip_without_a_gpu(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "flashinfer_problem", lambda: None)
    assert get(name).supports(case(), CPU) == "no CUDA device"


@pytest.mark.skipif(importlib.util.find_spec("flashinfer") is not None, reason="installed here")
def test_flashinfer_problem_says_not_installed() -> None:
    assert P.flashinfer_problem() == "flashinfer not installed"
    assert get("flashinfer_xqa").supports(case(), CPU) == "flashinfer not installed"


@pytest.mark.parametrize("name", FLASHINFER)
def test_flashinfer_peers_on_a_gpu_ask_the_case_rules(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a (pretend) H100: fa2 and xqa take the seed's shapes, trtllm-gen refuses the arch."""
    monkeypatch.setattr(P, "flashinfer_problem", lambda: None)
    monkeypatch.setattr(P, "capability", lambda device: H100)
    gpu = torch.device("cuda", 0)
    qwen = case(qo=96, kv=8, d=128, q_len=4, kv_dtype="fp8_e4m3")
    reason = get(name).supports(qwen, gpu)
    if name == "flashinfer_trtllm_gen":
        assert reason == "trtllm-gen kernels exist for SM100/SM103 only (this GPU is sm_90)"
    else:
        assert reason is None


def test_case_rules() -> None:
    ok = case(d=128, q_len=4, kv_dtype="fp8_e4m3")
    assert P.fa2_case_problem(ok, H100) is None
    assert P.fa2_case_problem(replace(ok, head_dim=96), H100) == (
        "head_dim 96 not in fa2's (64, 128, 256)"
    )
    assert "sm_80+" in P.fa2_case_problem(ok, (7, 5))
    assert P.xqa_case_problem(ok, H100) is None
    assert P.xqa_case_problem(ok, (10, 0)) is None
    assert "SM90/SM100/SM120 only (this GPU is sm_80)" in P.xqa_case_problem(ok, (8, 0))
    assert "page_size 8" in P.xqa_case_problem(replace(ok, page_size=8), H100)
    assert P.xqa_case_problem(replace(ok, head_dim=256), H100) is None
    assert "no speculative" in P.xqa_case_problem(replace(ok, head_dim=512), H100)
    assert P.xqa_case_problem(replace(ok, head_dim=512, q_len=1), H100) is None
    assert "multiple of 16" in P.xqa_case_problem(replace(ok, head_dim=72), H100)
    assert P.trtllm_gen_case_problem(ok, (10, 0)) is None
    assert "sm_120" in P.trtllm_gen_case_problem(ok, (12, 0))
    mixed = replace(ok, kv_dtype="fp16", q_dtype="bf16")
    assert "kv dtype fp16 with q dtype bf16" in P.xqa_case_problem(mixed, H100)


# ------------------------------------------------------------- conversions (pure, CPU)


def test_fa2_page_metadata_hand_computed() -> None:
    table = torch.tensor(
        [[7, 2, 9, 9], [3, 9, 9, 9], [5, 9, 9, 9], [1, 6, 4, 9]], dtype=torch.int32
    )
    lens = torch.tensor([5, 4, 1, 9], dtype=torch.int32)
    indptr, indices, last = P.fa2_page_metadata(table, lens, page_size=4)
    assert indptr.dtype == indices.dtype == last.dtype == torch.int32
    assert indptr.tolist() == [0, 2, 3, 4, 7]
    assert indices.tolist() == [7, 2, 3, 5, 1, 6, 4]
    assert last.tolist() == [1, 4, 1, 1]
    assert P.pages_per_request(lens, 4).tolist() == [2, 1, 1, 3]
    with pytest.raises(ValueError, match="at least one"):
        P.fa2_page_metadata(table, torch.tensor([0, 1, 1, 1]), 4)


def test_fa2_page_metadata_rebuilds_every_request_of_real_inputs() -> None:
    c = case(batch=5, q_len=2, kv_len=77, ragged=True, page=16)
    inputs = make_inputs(c, CPU)
    indptr, indices, last = P.fa2_page_metadata(inputs.page_table, inputs.kv_lens, c.page_size)
    for b, length in enumerate(inputs.kv_lens_host):
        pages = indices[indptr[b] : indptr[b + 1]].long()
        k = inputs.kv_cache[pages, 0].reshape(-1, c.num_kv_heads, c.head_dim)
        n = (len(pages) - 1) * c.page_size + int(last[b])
        assert n == length
        assert torch.equal(k[:n], gather_kv(inputs.kv_cache, inputs.page_table[b], length, 0))


def test_qo_indptr_and_block_tables() -> None:
    assert P.qo_indptr(3, 4).tolist() == [0, 4, 8, 12]
    assert P.qo_indptr(2, 1).dtype == torch.int32
    table = torch.arange(12, dtype=torch.int64).view(3, 4)
    bt = P.block_tables(table, torch.tensor([3, 17, 9]), page_size=8)
    assert bt.dtype == torch.int32 and bt.is_contiguous()
    assert bt.tolist() == [[0, 1, 2], [4, 5, 6], [8, 9, 10]]  # 17 tokens need 3 pages


def test_xqa_seq_lens_are_uint32_bits_of_the_lengths() -> None:
    s = P.xqa_seq_lens(torch.tensor([1, 16384, 77], dtype=torch.int32))
    assert s.dtype == torch.uint32 and s.is_contiguous()
    assert s.view(torch.int32).tolist() == [1, 16384, 77]


def test_spec_dec_causal_mask_hand_computed() -> None:
    m = P.spec_dec_causal_mask(2, 4)
    assert m.dtype == torch.uint16 and m.shape == (2, 4, 2)  # ceil(4/32) words of 2 halves
    assert m.view(torch.int32)[0, :, 0].tolist() == [0b1, 0b11, 0b111, 0b1111]
    assert torch.equal(m[0], m[1])
    m32 = P.spec_dec_causal_mask(1, 32)
    assert m32.shape == (1, 32, 2)
    assert m32[0, 31].view(torch.int32).item() == -1  # all 32 bits set
    assert m32[0, 15].to(torch.int32).tolist() == [0xFFFF, 0]  # low half first
    m33 = P.spec_dec_causal_mask(1, 33)
    assert m33.shape == (1, 33, 4)
    tril = torch.tril(torch.ones(33, 33, dtype=torch.bool))
    assert torch.equal(P.unpack_spec_dec_mask(m33, 33)[0], tril)


def test_scales() -> None:
    assert P.fp8_scales(0.5, 0.25, 0.125) == (0.0625, 0.25)
    assert P.fp8_scales(1.0, 1.0, 128**-0.5) == (128**-0.5, 1.0)
    bf16 = make_inputs(case(), CPU)
    assert P.wrapper_run_scales(bf16) == {}
    fp8 = make_inputs(case(kv_dtype="fp8_e4m3"), CPU)
    scales = P.wrapper_run_scales(fp8)
    assert scales == {"k_scale": fp8.k_scale, "v_scale": fp8.v_scale}
    assert scales["k_scale"] != 1.0


def test_tensor_core_choice_and_jit_families() -> None:
    groups = {g: P.use_tensor_cores_for_decode(case(qo=g, kv=1)) for g in (1, 2, 3, 4, 5, 8, 12)}
    assert groups == {1: False, 2: False, 3: False, 4: True, 5: True, 8: True, 12: True}
    a, b = case(q_len=2), case(q_len=4, batch=9, kv_len=999)
    assert P.family_key("flashinfer_fa2", a) == P.family_key("flashinfer_fa2", b)
    assert P.family_key("flashinfer_xqa", a) != P.family_key("flashinfer_xqa", b)
    assert "xqa for head_dim 32" in P.family_text("flashinfer_xqa", a)


def test_warmup_plan_for_the_seed_matrix_on_an_h100(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "flashinfer_problem", lambda: None)
    monkeypatch.setattr(P, "capability", lambda device: H100)
    cases = load_matrix(REPO / "matrices" / "spec_decode.toml").cases
    plan = P.warmup_plan(cases, torch.device("cuda", 0))
    kinds = sorted(
        (name, c.head_dim, c.q_len if name == "flashinfer_xqa" else 0) for name, c in plan
    )
    # fa2 prefill: one module per head_dim; xqa: per head_dim/group x q_len; no trtllm-gen
    assert kinds == [
        ("flashinfer_fa2", 64, 0),
        ("flashinfer_fa2", 128, 0),
        *[("flashinfer_xqa", d, q) for d in (64, 128) for q in (2, 4, 8)],
    ]
    assert all(c.batch == 2 and not c.ragged for _, c in plan)
    assert P.warmup_plan(cases, CPU) == []


# ----------------------------------------------------------------- --peers selection


def test_default_selection_excludes_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PEERS_ENV, raising=False)
    names = [b.name for b in all_backends()]
    assert not set(P.PEER_NAMES) & set(names)
    assert {"torch_baseline", "torch_grouped"} <= set(names)
    monkeypatch.setenv(PEERS_ENV, "1")
    assert set(P.PEER_NAMES) <= {b.name for b in all_backends()}
    assert set(P.PEER_NAMES) <= {b.name for b in all_backends(include_peers=True)}
    monkeypatch.setenv(PEERS_ENV, "0")
    assert not set(P.PEER_NAMES) & {b.name for b in all_backends()}
    for name in P.PEER_NAMES:  # named explicitly, a peer is always found
        assert get(name).name == name


def test_backends_for_run() -> None:
    assert backends_for_run("", False) == ""
    assert backends_for_run("", True) == ""  # default list + HARNESS_PEERS=1
    assert backends_for_run("cuda_grouped", False) == "cuda_grouped"
    assert backends_for_run("cuda_grouped, torch_sdpa", True) == (
        "cuda_grouped,torch_sdpa,flashinfer_fa2,flashinfer_trtllm_gen,flashinfer_xqa"
    )


def test_run_parser_and_pytest_command() -> None:
    args = build_parser().parse_args(["run", "--peers", "--backends", "cuda_grouped"])
    assert args.peers
    args.matrix = ["matrices/smoke.toml"]
    cmd = pytest_command(args, "rid", 0)
    assert cmd[cmd.index("--backends") + 1].startswith("cuda_grouped,flashinfer_fa2")
    args = build_parser().parse_args(["run"])
    args.matrix = ["matrices/smoke.toml"]
    assert not args.peers and "--backends" not in pytest_command(args, "rid", 0)


TINY = """\
[matrix]
name = "tinypeers"
seed = 5

[models.T]
num_qo_heads = 8
num_kv_heads = 2
head_dim = 16

[axes]
kv_dtype = ["bf16", "fp8_e4m3"]
batch = 3
q_len = [1, 3]
kv_len = 40
ragged = true

[settings]
warmup_ms = 1
budget_ms = 5
min_reps = 3
max_reps = 10
"""


def test_run_with_peers_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    """`python -m harness run --peers`: torch_sdpa is checked and timed beside the torch
    stand-ins, the flashinfer peers skip with their reason, the markdown shows the best peer
    and opt / best-peer, and the JUnit carries the peer's figures as properties."""
    (tmp_path / "m.toml").write_text(TINY)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HARNESS_COMMIT="test-commit")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop(PEERS_ENV, None)
    out = tmp_path / "reports"
    cmd = [sys.executable, "-m", "harness", "run", "--matrix", str(tmp_path / "m.toml")]
    cmd += ["--peers", "-n", "0", "--results-dir", str(out / "results"), "--out", str(out)]
    cmd += ["--backends", "torch_baseline,torch_grouped"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "peers:" in log
    summary = (out / "summary.md").read_text()
    assert "best peer (µs, TB/s, which)" in summary and "opt / best peer" in summary
    assert "torch_sdpa" in summary
    root = ET.parse(out / "junit.xml").getroot()
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    sdpa = [k for k in props if "[torch_sdpa]" in k]
    assert any(k.endswith(".median_ms") for k in sdpa), sorted(props)[:40]
    assert any(k.endswith(".tbps") for k in sdpa)
    cases = {c.get("name"): c for c in root.iter("testcase")}
    sdpa_cases = [n for n in cases if n.endswith("[torch_sdpa]")]
    assert len(sdpa_cases) == 4
    assert all(cases[n].find("failure") is None for n in sdpa_cases)
    if importlib.util.find_spec("flashinfer") is None:
        for name in FLASHINFER:
            skipped = [c for n, c in cases.items() if n.endswith(f"[{name}]")]
            assert len(skipped) == 4
            assert all(
                "flashinfer not installed" in (c.find("skipped").get("message") or "")
                for c in skipped
            )


# --------------------------------------------- the glue against a fake flashinfer (CPU)
#
# FlashInfer needs a GPU, so here a stand-in implements the documented semantics of the
# exact calls the peers make (argument names, dtypes, shapes as the 0.7.2.post1 functions
# check them) with plain torch. It checks our glue -- CSR metadata, block tables, uint32
# lengths, the draft mask, the scales, xqa's 4-D output view -- end to end against the
# reference; what it cannot check is FlashInfer's kernels themselves (the device selfcheck).


def _fake_attend(q, k, v, sm_scale, visible):
    """q [rows, H, d], k/v [L, KVH, d] (float), visible [rows, L] -> [rows, H, d]."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    s = torch.einsum("qhd,khd->hqk", q.double(), k.double()) * sm_scale
    s = s.masked_fill(~visible[None], float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(s, -1), v.double())


def _fake_pages(kv, pages, length, part):
    n_kvh, d = kv.shape[-2:]
    return kv[pages.long(), part].reshape(-1, n_kvh, d)[:length].double()


class _FakeWrapper:
    calls: ClassVar[list] = []

    def __init__(self, ws, kv_layout="NHD", use_tensor_cores=False, backend="auto", **kw):
        assert kv_layout == "NHD" and ws.dtype == torch.uint8
        self.kind = "prefill" if type(self).__name__.startswith("Prefill") else "decode"
        self.calls.append((self.kind, backend, use_tensor_cores))

    def _plan(self, qo, indptr, indices, last, nqo, nkv, d, page, causal, **kw):
        for t in (indptr, indices, last):
            assert t.dtype == torch.int32
        assert nqo % nkv == 0
        self.qo, self.indptr, self.indices, self.last = qo, indptr, indices, last
        self.page, self.causal = page, causal
        self.sm = kw.get("sm_scale") or d**-0.5
        self.dtypes = (kw["q_data_type"], kw["kv_data_type"], kw["o_data_type"])

    def run(self, q, kv, out=None, k_scale=None, v_scale=None):
        assert (q.dtype, kv.dtype, out.dtype) == self.dtypes and out.shape == q.shape
        sm = self.sm * (1.0 if k_scale is None else k_scale)
        for b in range(len(self.last)):
            pages = self.indices[self.indptr[b] : self.indptr[b + 1]]
            length = (len(pages) - 1) * self.page + int(self.last[b])
            lo, hi = int(self.qo[b]), int(self.qo[b + 1])
            rows = hi - lo
            pos = torch.arange(length)
            last_pos = length - rows + torch.arange(rows)  # bottom-right causal
            visible = (
                pos[None] <= last_pos[:, None] if self.causal else torch.ones(rows, length).bool()
            )
            k, v = _fake_pages(kv, pages, length, 0), _fake_pages(kv, pages, length, 1)
            out[lo:hi] = _fake_attend(q[lo:hi], k, v, sm, visible).to(out.dtype)
        if v_scale is not None:
            out *= v_scale
        return out


class BatchDecodeWithPagedKVCacheWrapper(_FakeWrapper):
    def plan(self, indptr, indices, last, nqo, nkv, d, page, **kw):
        qo = torch.arange(len(last) + 1)
        self._plan(qo, indptr, indices, last, nqo, nkv, d, page, causal=False, **kw)


class PrefillWithPagedKVCacheWrapper(_FakeWrapper):
    def plan(self, qo_indptr, indptr, indices, last, nqo, nkv, d, page, causal=False, **kw):
        assert qo_indptr.dtype == torch.int32
        self._plan(qo_indptr, indptr, indices, last, nqo, nkv, d, page, causal=causal, **kw)


def _fake_paged_decode(query, kv, table, seq_lens, q_len, out, qk_scale, out_scale, mask=None):
    d = query.shape[-1]
    page = kv.shape[2]
    lens = seq_lens.view(torch.int32) if seq_lens.dtype == torch.uint32 else seq_lens
    for b, length in enumerate(lens.tolist()):
        pages = table[b, : -(-length // page)]
        k, v = _fake_pages(kv, pages, length, 0), _fake_pages(kv, pages, length, 1)
        pos = torch.arange(length)
        visible = torch.zeros(q_len, length, dtype=torch.bool)
        for i in range(q_len):
            visible[i] = pos < length - q_len  # the context before the draft block
            for j in range(q_len):
                if mask is None:
                    seen = j <= i  # trtllm-gen: causal within the block
                else:
                    words = mask[b, i].contiguous().view(torch.int32)
                    seen = bool((int(words[j // 32]) >> (j % 32)) & 1)
                visible[i, length - q_len + j] = seen
        rows = query.reshape(-1, *query.shape[-2:])[b * q_len : (b + 1) * q_len]
        res = _fake_attend(rows, k, v, qk_scale, visible) * out_scale
        out.reshape(-1, *query.shape[-2:])[b * q_len : (b + 1) * q_len] = res.to(out.dtype)
    assert d == out.shape[-1]


def xqa_batch_decode_with_kv_cache(
    query,
    kv_cache,
    workspace_buffer,
    block_tables,
    seq_lens,
    max_seq_len,
    bmm1_scale=1.0,
    bmm2_scale=1.0,
    window_left=-1,
    out=None,
    sinks=None,
    kv_layout="NHD",
    enable_pdl=None,
    q_len_per_req=1,
    o_scale=1.0,
    mask=None,
):
    assert kv_layout == "NHD" and workspace_buffer.dtype == torch.uint8
    assert bool((workspace_buffer[: 8 << 20] == 0).all()), "xqa semaphores must start at zero"
    assert seq_lens.dtype == torch.uint32 and block_tables.dtype == torch.int32
    assert block_tables.shape[1] * kv_cache.shape[2] >= max_seq_len
    # the shape handling of the real function: out must match q's 4-D view
    if q_len_per_req > 1:
        batch = query.shape[0] // q_len_per_req
        query = query.view(batch, q_len_per_req, *query.shape[1:])
        assert mask is not None and mask.dtype == torch.uint16
        assert mask.shape == (batch, q_len_per_req, ((q_len_per_req + 31) // 32) * 2)
    assert out.unsqueeze(1).shape == query.unsqueeze(1).shape and out.dtype == query.dtype
    head_dim = query.shape[-1]
    kv_scale = bmm2_scale * o_scale
    q_scale = bmm1_scale / kv_scale * head_dim**0.5
    # the kernel: softmax(q k^T * q_scale * kv_scale / sqrt(d)) v * kv_scale
    qk = q_scale * kv_scale / head_dim**0.5
    _fake_paged_decode(
        query, kv_cache, block_tables, seq_lens, q_len_per_req, out, qk, kv_scale, mask
    )
    return out


def trtllm_batch_decode_with_kv_cache(
    query,
    kv_cache,
    workspace_buffer,
    block_tables,
    seq_lens,
    max_seq_len,
    bmm1_scale=1.0,
    bmm2_scale=1.0,
    window_left=-1,
    out=None,
    kv_layout="HND",
    backend="auto",
    q_len_per_req=1,
    **kw,
):
    assert backend == "trtllm-gen" and kv_layout == "NHD" and seq_lens.dtype == torch.int32
    assert out.shape == query.shape
    _fake_paged_decode(
        query, kv_cache, block_tables, seq_lens, q_len_per_req, out, bmm1_scale, bmm2_scale
    )
    return out


@pytest.fixture
def fake_flashinfer(monkeypatch: pytest.MonkeyPatch):
    import types

    fi = types.ModuleType("flashinfer")
    decode = types.ModuleType("flashinfer.decode")
    fi.__version__ = "fake"
    fi.BatchDecodeWithPagedKVCacheWrapper = BatchDecodeWithPagedKVCacheWrapper
    fi.BatchPrefillWithPagedKVCacheWrapper = PrefillWithPagedKVCacheWrapper
    decode.xqa_batch_decode_with_kv_cache = xqa_batch_decode_with_kv_cache
    decode.trtllm_batch_decode_with_kv_cache = trtllm_batch_decode_with_kv_cache
    fi.decode = decode
    monkeypatch.setitem(sys.modules, "flashinfer", fi)
    monkeypatch.setitem(sys.modules, "flashinfer.decode", decode)
    monkeypatch.setattr(P, "flashinfer_problem", lambda: None)
    monkeypatch.setattr(P, "_workspaces", {})
    monkeypatch.setattr(P, "_warmed", set())
    _FakeWrapper.calls = []
    return _FakeWrapper.calls


GLUE_CASES = {
    "bf16-q1-g4-ragged": case(q_len=1, ragged=True, batch=4, kv_len=70),
    "bf16-q1-g1": case(qo=2, kv=2, q_len=1, kv_len=33),
    "fp16-q2-g8-ragged": case(qo=16, kv=2, q_len=2, kv_dtype="fp16", q_dtype="fp16", ragged=True),
    "fp8-q3-g2-ragged": case(qo=4, q_len=3, kv_dtype="fp8_e4m3", ragged=True, kv_len=50),
    "fp8-q1-g12": case(qo=24, kv=2, q_len=1, kv_dtype="fp8_e4m3", kv_len=41),
    "bf16-q4-page32": case(q_len=4, page=32, kv_len=100, ragged=True),
}


@pytest.mark.parametrize("name", FLASHINFER)
@pytest.mark.parametrize("which", sorted(GLUE_CASES))
def test_flashinfer_glue_against_the_documented_semantics(
    name: str, which: str, fake_flashinfer: list
) -> None:
    c = GLUE_CASES[which]
    inputs = make_inputs(c, CPU)
    launch = get(name).prepare(inputs)
    out = torch.full_like(inputs.q, float("nan"))
    launch(out)
    corr = check_output(out, reference_attention(inputs, torch.float64), c)
    assert passed(corr) and corr["nan_count"] == 0, corr
    if name == "flashinfer_fa2":
        kind = "decode" if c.q_len == 1 else "prefill"
        tc = P.use_tensor_cores_for_decode(c) if kind == "decode" else False
        assert fake_flashinfer[0] == (kind, "fa2", tc)
    assert get(name).describe(inputs).endswith("flashinfer fake")


def test_the_fake_catches_a_wrong_scale(fake_flashinfer: list, monkeypatch) -> None:
    """The fake is not vacuous: swapping the fp8 scales makes the check fail."""
    c = GLUE_CASES["fp8-q3-g2-ragged"]
    inputs = make_inputs(c, CPU)
    monkeypatch.setattr(P, "fp8_scales", lambda k, v, sm: (v * sm, k))
    out = torch.full_like(inputs.q, float("nan"))
    get("flashinfer_xqa").prepare(inputs)(out)
    assert not passed(check_output(out, reference_attention(inputs), c))


def test_warmup_summary_tells_build_failures_from_near_misses() -> None:
    clean = P.warmup_summary([0, 0, 0], 23.4)
    assert clean == "flashinfer warm-up done in 23 s"
    mixed = P.warmup_summary([0, P.WRONG_ANSWER_RC, 1, P.WRONG_ANSWER_RC], 40)
    assert "1 module(s) failed to build or launch (their cases will report the error)" in mixed
    assert "2 module(s) missed the tolerance on the small check case" in mixed
    only_wrong = P.warmup_summary([P.WRONG_ANSWER_RC], 5)
    assert "failed to build" not in only_wrong and "1 module(s) missed" in only_wrong
