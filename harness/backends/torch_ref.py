"""torch stand-ins for the two CUDA kernels, with the same contract and the same
memory-traffic shape, so the speedup table means something on a CPU too:

- `torch_baseline` gathers the KV cache once per query token (q_len reads), like the
  per-token CUDA kernel;
- `torch_grouped` gathers it once and computes all q_len x group rows together.
"""

from __future__ import annotations

import torch

from harness.backends.base import Backend, Launcher, register
from harness.inputs import CaseInputs
from harness.matrix import Case


def _supports(case: Case, device: torch.device) -> str | None:
    return None


def _gather_padded(inputs: CaseInputs, part: int, dtype: torch.dtype) -> torch.Tensor:
    """All requests' K or V, padded to the longest: [batch, kvh, max_len, d] in `dtype`,
    without its fp8 scale (exact: e4m3 fits bf16 and fp16); _attend applies the scales."""
    c = inputs.case
    max_len = max(inputs.kv_lens_host)
    n_pages = -(-max_len // c.page_size)
    table = inputs.page_table[:, :n_pages].long()
    pages = inputs.kv_cache[:, part][table]  # [batch, n_pages, page, kvh, d]
    x = pages.reshape(c.batch, n_pages * c.page_size, c.num_kv_heads, c.head_dim)[:, :max_len]
    x = x.to(dtype)
    dead = torch.arange(max_len, device=x.device)[None, :] >= inputs.kv_lens.long()[:, None]
    x = x.masked_fill(dead[:, :, None, None], 0)
    return x.permute(0, 2, 1, 3)


def _mask(inputs: CaseInputs, tokens: torch.Tensor) -> torch.Tensor:
    """[batch, len(tokens), max_len] bool: may query token `t` of request b see position j?"""
    c = inputs.case
    max_len = max(inputs.kv_lens_host)
    pos = torch.arange(max_len, device=inputs.device)
    last = inputs.kv_lens.long()[:, None] - c.q_len + tokens[None, :]  # [batch, T]
    return pos[None, None, :] <= last[:, :, None]


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    inputs: CaseInputs,
) -> torch.Tensor:
    """q [b, kvh, rows, d], k/v [b, kvh, len, d] (unscaled), mask [b, 1|kvh, rows, len] ->
    [b, kvh, rows, d] in fp32.

    Scores in fp32 with the K scale folded into the softmax scale, as the CUDA kernels do: a
    16-bit matmul, or K scaled in 16 bits, rounds each score to 8-11 bits, which fails the
    reference once logits are large (matrices/large_scores.toml)."""
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * (inputs.sm_scale * inputs.k_scale)
    s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, dim=-1).to(v.dtype)
    return torch.matmul(p, v).float() * inputs.v_scale


def _prepare_baseline(inputs: CaseInputs) -> Launcher:
    c = inputs.case
    dt = inputs.q.dtype
    q = inputs.q.view(c.batch, c.q_len, c.num_kv_heads, c.group, c.head_dim)

    def launch(out: torch.Tensor) -> None:
        o = out.view(c.batch, c.q_len, c.num_kv_heads, c.group, c.head_dim)
        for t in range(c.q_len):  # the KV cache is gathered again for every token
            k = _gather_padded(inputs, 0, dt)
            v = _gather_padded(inputs, 1, dt)
            tok = torch.tensor([t], device=inputs.device)
            mask = _mask(inputs, tok)[:, None, :, :]  # [b, 1, 1, len]
            mask = mask.expand(-1, 1, c.group, -1)
            res = _attend(q[:, t], k, v, mask, inputs)  # [b, kvh, group, d]
            o[:, t].copy_(res)

    return launch


def _prepare_grouped(inputs: CaseInputs) -> Launcher:
    c = inputs.case
    dt = inputs.q.dtype
    # rows ordered (token, group member) within each KV head
    q = inputs.q.view(c.batch, c.q_len, c.num_kv_heads, c.group, c.head_dim)
    q = q.permute(0, 2, 1, 3, 4).reshape(c.batch, c.num_kv_heads, c.rows, c.head_dim)
    tokens = torch.arange(c.q_len, device=inputs.device)
    mask = _mask(inputs, tokens).repeat_interleave(c.group, dim=1)[:, None]  # [b,1,rows,len]

    def launch(out: torch.Tensor) -> None:
        k = _gather_padded(inputs, 0, dt)  # the KV cache is gathered once
        v = _gather_padded(inputs, 1, dt)
        res = _attend(q, k, v, mask, inputs)  # [b, kvh, rows, d]
        res = res.view(c.batch, c.num_kv_heads, c.q_len, c.group, c.head_dim)
        out.view(c.batch, c.q_len, c.num_kv_heads, c.group, c.head_dim).copy_(
            res.permute(0, 2, 1, 3, 4)
        )

    return launch


TORCH_BASELINE = register(
    Backend(name="torch_baseline", role="baseline", supports=_supports, prepare=_prepare_baseline)
)
TORCH_GROUPED = register(
    Backend(name="torch_grouped", role="grouped", supports=_supports, prepare=_prepare_grouped)
)
