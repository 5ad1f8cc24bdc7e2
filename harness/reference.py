"""The reference: exact causal decode attention over a paged KV cache, one request at a
time in fp32 (fp64 for tests), so its error is far below any kernel tolerance.

Causal rule: query token i of request b sits at position kv_lens[b] - q_len + i and
attends KV positions 0 ..= kv_lens[b] - q_len + i.
"""

from __future__ import annotations

import torch

from harness.inputs import CaseInputs


def gather_kv(
    kv_cache: torch.Tensor, page_row: torch.Tensor, length: int, part: int
) -> torch.Tensor:
    """One request's K (part 0) or V (part 1) as [length, num_kv_heads, head_dim]."""
    page_size = kv_cache.shape[2]
    n_pages = -(-length // page_size)
    pages = kv_cache[page_row[:n_pages].long(), part]  # [n_pages, page, kvh, d]
    return pages.reshape(n_pages * page_size, *kv_cache.shape[3:])[:length]


def causal_mask(q_len: int, length: int, device: torch.device) -> torch.Tensor:
    """[q_len, length] bool, True where token i may attend position j."""
    pos = torch.arange(length, device=device)
    last = length - q_len + torch.arange(q_len, device=device)
    return pos[None, :] <= last[:, None]


def request_scores(
    inputs: CaseInputs, b: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Request b's scaled, causally masked scores [qo_heads, q_len, length] and its
    dequantised V repeated over each KV head's group [length, qo_heads, head_dim]."""
    c = inputs.case
    length = inputs.kv_lens_host[b]
    row = inputs.page_table[b]
    k = gather_kv(inputs.kv_cache, row, length, 0).to(dtype) * inputs.k_scale
    v = gather_kv(inputs.kv_cache, row, length, 1).to(dtype) * inputs.v_scale
    k = k.repeat_interleave(c.group, dim=1)  # [len, qo_heads, d]
    v = v.repeat_interleave(c.group, dim=1)
    q = inputs.q[b * c.q_len : (b + 1) * c.q_len].to(dtype)  # [q_len, qo_heads, d]
    scores = torch.einsum("qhd,khd->hqk", q, k) * inputs.sm_scale
    scores.masked_fill_(~causal_mask(c.q_len, length, q.device)[None], float("-inf"))
    return scores, v


def reference_attention(inputs: CaseInputs, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Output [batch*q_len, num_qo_heads, head_dim] in `dtype`."""
    c = inputs.case
    out = torch.empty(inputs.q.shape, dtype=dtype, device=inputs.q.device)
    for b in range(len(inputs.kv_lens_host)):
        scores, v = request_scores(inputs, b, dtype)
        probs = torch.softmax(scores, dim=-1)
        out[b * c.q_len : (b + 1) * c.q_len] = torch.einsum("hqk,khd->qhd", probs, v)
    return out
