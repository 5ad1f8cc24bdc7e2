"""Deterministic inputs for a `Case`: q, a paged KV cache with a shuffled page table,
ragged lengths, and per-tensor fp8 scales.

Pages are assigned in a random order so a kernel that assumes contiguous pages fails,
and unused page-table slots point at a real page so an overrun reads plausible data
instead of crashing: the reference comparison catches it either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.dtypes import FP8_MAX, torch_dtype
from harness.matrix import Case


@dataclass(frozen=True)
class CaseInputs:
    """Everything a backend needs for one launch (tensors live on `device`)."""

    case: Case
    q: torch.Tensor  # [batch*q_len, num_qo_heads, head_dim]
    kv_cache: torch.Tensor  # [num_pages, 2, page_size, num_kv_heads, head_dim]
    page_table: torch.Tensor  # int32 [batch, max_pages]
    kv_lens: torch.Tensor  # int32 [batch]
    kv_lens_host: tuple[int, ...]
    k_scale: float
    v_scale: float
    sm_scale: float

    @property
    def device(self) -> torch.device:
        return self.q.device

    def kv_bytes(self) -> int:
        """KV bytes a kernel must read once: only the live tokens, K and V."""
        c = self.case
        per_token = 2 * c.num_kv_heads * c.head_dim * self.kv_cache.element_size()
        return sum(self.kv_lens_host) * per_token

    def io_bytes(self) -> int:
        """The fewest bytes one launch moves: KV once, q in, out back."""
        return self.kv_bytes() + 2 * self.q.numel() * self.q.element_size()


def kv_lengths(case: Case, gen: torch.Generator) -> list[int]:
    """Per-request KV lengths; ragged cases span q_len..kv_len and hit both ends."""
    if not case.ragged or case.batch == 1:
        return [case.kv_len] * case.batch
    lens = torch.randint(case.q_len, case.kv_len + 1, (case.batch,), generator=gen).tolist()
    lens[0] = case.kv_len
    lens[-1] = case.q_len
    return lens


def make_inputs(case: Case, device: torch.device | str = "cpu") -> CaseInputs:
    """Build the inputs of `case` from its seed; the same case always gives the same data."""
    device = torch.device(device)
    cpu_gen = torch.Generator().manual_seed(case.seed * 1_000_003 + _case_salt(case))
    lens = kv_lengths(case, cpu_gen)
    pages_per_req = [math.ceil(n / case.page_size) for n in lens]
    max_pages = max(pages_per_req)
    num_pages = sum(pages_per_req) + 1  # one spare page so the table is never "all pages"
    order = torch.randperm(num_pages, generator=cpu_gen).to(torch.int32)
    table = torch.empty(case.batch, max_pages, dtype=torch.int32)
    cursor = 0
    for b, n in enumerate(pages_per_req):
        table[b, :n] = order[cursor : cursor + n]
        table[b, n:] = order[-1]  # the spare page: valid memory, never live data
        cursor += n

    dev_gen = torch.Generator(device=device).manual_seed(int(cpu_gen.initial_seed()) + 1)
    q_dtype = torch_dtype(case.q_dtype)
    q = torch.randn(
        case.batch * case.q_len,
        case.num_qo_heads,
        case.head_dim,
        generator=dev_gen,
        device=device,
        dtype=torch.float32,
    ).to(q_dtype)
    shape = (num_pages, 2, case.page_size, case.num_kv_heads, case.head_dim)
    kv = torch.randn(shape, generator=dev_gen, device=device, dtype=torch.float32)
    if case.score_scale != 1.0:
        kv[:, 0].mul_(case.score_scale)  # logits scale with K (fp8: k_scale absorbs it)
    k_scale = v_scale = 1.0
    if case.kv_dtype == "fp8_e4m3":
        # Real-valued K/V scaled into e4m3's range with one scale per tensor, as serving
        # stacks do; the kernels multiply the scale back in.
        k_amax = kv[:, 0].abs().amax().item()
        v_amax = kv[:, 1].abs().amax().item()
        k_scale, v_scale = k_amax / FP8_MAX, v_amax / FP8_MAX
        kv[:, 0].div_(k_scale)
        kv[:, 1].div_(v_scale)
    kv_cache = kv.to(torch_dtype(case.kv_dtype))
    del kv
    return CaseInputs(
        case=case,
        q=q,
        kv_cache=kv_cache,
        page_table=table.to(device),
        kv_lens=torch.tensor(lens, dtype=torch.int32, device=device),
        kv_lens_host=tuple(lens),
        k_scale=float(k_scale),
        v_scale=float(v_scale),
        sm_scale=case.head_dim**-0.5,
    )


def _case_salt(case: Case) -> int:
    """A stable per-case number (Python's hash() is salted per process)."""
    return sum((i + 1) * ord(ch) for i, ch in enumerate(case.id)) % 1_000_003
