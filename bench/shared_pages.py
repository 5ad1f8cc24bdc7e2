"""Three questions about the fp8 seed rows, answered with today's kernels (no kernel change):

1. `--rows`: would Qwen3 fp8 q_len 8 (96 rows per KV head) be faster as two CTAs of 48 rows
   that read the same pages through L2? Simulated with q_len 4 at twice the batch, where
   requests 2i and 2i+1 share one page-table row (the 48-row kernel's grid, the cache's
   DRAM bytes of batch B). Also "all": every request reads request 0's pages (mostly L2
   hits: the kernels' compute-bound time), for the GPT-OSS fp8 rows too.
2. `--profile`: what the split-KV merge costs: per-kernel GPU times (torch.profiler) of the
   split seed rows beside the CUDA-event time of the whole call.
3. `--flush`: whether the cold-L2 flush itself costs the timed call: the same call behind a
   flush that writes the buffer (zero_, as the harness and triton's do_bench do: L2 left
   full of dirty lines), one that only reads it (L2 left clean), and none.
4. `--order`: how much the page table's layout costs: the seed's pages shuffled over the
   whole cache (every page a different 2 MiB region: an address translation per page),
   against each request's pages in order, and against 2 MiB blocks of consecutive pages
   shuffled (the translations of the in-order table, the shuffled table's spread).

Run on a GPU machine: python3 bench/shared_pages.py [--rows] [--profile] [--flush] [--order]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels import device_plan
from kernels.selfcheck import (
    MODELS,
    SEED_KV_LEN,
    bench_start,
    grouped_call,
    kernel_times,
    seed_tensors,
    time_us,
)


def _time(q, kv, table, lens, q_len, flush, p) -> float:  # flush: as time_us takes it
    return time_us(grouped_call(q, kv, table, lens, q_len, p), flush, 25)


def rows(flush: torch.Tensor, gen: torch.Generator) -> None:
    print(f"{'case':<40} {'µs':>8}  plan")
    for model, q_len, batch, share in (
        ("Qwen3-480B", 4, 64, "none"),
        ("Qwen3-480B", 4, 128, "pairs"),
        ("Qwen3-480B", 4, 128, "none"),
        ("Qwen3-480B", 4, 128, "all"),
        ("Qwen3-480B", 8, 64, "none"),
        ("Qwen3-480B", 8, 64, "all"),
        ("Qwen3-480B", 4, 80, "pairs"),
        ("Qwen3-480B", 8, 40, "none"),
        ("Qwen3-480B", 4, 32, "pairs"),
        ("Qwen3-480B", 8, 16, "none"),
        # The GPT-OSS kernels' compute-bound time beside their own reads (64-byte rows).
        ("GPT-OSS", 2, 64, "none"),
        ("GPT-OSS", 2, 64, "all"),
        ("GPT-OSS", 4, 64, "none"),
        ("GPT-OSS", 4, 64, "all"),
        ("GPT-OSS", 8, 64, "none"),
        ("GPT-OSS", 8, 64, "all"),
    ):
        hq, hkv, d = MODELS[model]
        q, kv, table, lens = seed_tensors(batch, q_len, hq, hkv, d, "fp8", gen)
        if share == "pairs":
            table = table[0::2].repeat_interleave(2, dim=0).contiguous()
        elif share == "all":
            table = table[:1].expand_as(table).contiguous()
        p = device_plan(batch, q_len, hq, hkv, d, SEED_KV_LEN, kv_dtype="fp8")
        t = _time(q, kv, table, lens, q_len, flush, p)
        print(f"{model} fp8 q{q_len} B{batch} share={share:<6} {t:8.1f}  {p}", flush=True)


def profile(flush: torch.Tensor, gen: torch.Generator) -> None:
    for model, q_len, batch in (
        ("GPT-OSS", 2, 16),
        ("GPT-OSS", 4, 16),
        ("GPT-OSS", 8, 16),
        ("GPT-OSS", 8, 32),
        ("GPT-OSS", 8, 40),
        ("GPT-OSS", 8, 64),
        ("Qwen3-480B", 4, 16),
        ("Qwen3-480B", 4, 40),
        ("Qwen3-480B", 8, 40),
    ):
        hq, hkv, d = MODELS[model]
        q, kv, table, lens = seed_tensors(batch, q_len, hq, hkv, d, "fp8", gen)
        p = device_plan(batch, q_len, hq, hkv, d, SEED_KV_LEN, kv_dtype="fp8")
        fn = grouped_call(q, kv, table, lens, q_len, p)
        t = time_us(fn, flush, 25)
        parts = ", ".join(f"{k} {v:.1f}" for k, v in kernel_times(fn, flush).items())
        print(
            f"{model} fp8 q{q_len} B{batch} {p}: call {t:.1f} µs; kernels (µs, median): {parts}",
            flush=True,
        )


def flush_modes(flush: torch.Tensor, gen: torch.Generator) -> None:
    words = flush.view(torch.int32)
    modes = {"write": flush.zero_, "read": lambda: words.sum(), "none": lambda: None}
    for model, q_len, batch in (("GPT-OSS", 8, 64), ("GPT-OSS", 2, 64), ("Qwen3-480B", 4, 64)):
        hq, hkv, d = MODELS[model]
        q, kv, table, lens = seed_tensors(batch, q_len, hq, hkv, d, "fp8", gen)
        p = device_plan(batch, q_len, hq, hkv, d, SEED_KV_LEN, kv_dtype="fp8")
        res = ", ".join(
            f"{name} {_time(q, kv, table, lens, q_len, pre, p):.1f}" for name, pre in modes.items()
        )
        print(f"{model} fp8 q{q_len} B{batch} {p}, flush by: {res} µs", flush=True)


def _table(kind: str, batch: int, npg: int, page_bytes: int, gen: torch.Generator) -> torch.Tensor:
    """A page table of `kind` (shuffled, in order, or shuffled 2 MiB blocks) over
    batch x npg pages."""
    dev = gen.device
    n = batch * npg
    if kind == "in order":
        ids = torch.arange(n, device=dev)
    else:
        per = max(1, (2 << 20) // page_bytes) if kind == "2 MiB blocks" else 1
        blocks = torch.randperm(n // per, device=dev, generator=gen)
        ids = (blocks[:, None] * per + torch.arange(per, device=dev)[None, :]).reshape(-1)
    return ids.to(torch.int32).view(batch, npg)


def page_order(flush: torch.Tensor, gen: torch.Generator) -> None:
    for model, kvname, q_len, batch in (
        ("GPT-OSS", "fp8", 2, 16),
        ("GPT-OSS", "fp8", 4, 16),
        ("GPT-OSS", "fp8", 8, 16),
        ("GPT-OSS", "fp8", 2, 64),
        ("GPT-OSS", "fp8", 8, 64),
        ("Qwen3-480B", "fp8", 2, 16),
        ("Qwen3-480B", "fp8", 8, 64),
        ("GPT-OSS", "bf16", 2, 64),
    ):
        hq, hkv, d = MODELS[model]
        q, kv, table, lens = seed_tensors(batch, q_len, hq, hkv, d, kvname, gen)
        page_bytes = kv[0].numel() * kv.element_size()
        p = device_plan(batch, q_len, hq, hkv, d, SEED_KV_LEN, kv_dtype=kvname)
        res = []
        for kind in ("shuffled", "in order", "2 MiB blocks"):
            t = _table(kind, batch, table.shape[1], page_bytes, gen)
            res.append(f"{kind} {_time(q, kv, t, lens, q_len, flush, p):.1f}")
        print(f"{model} {kvname} q{q_len} B{batch} {p}: {', '.join(res)} µs", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", action="store_true", help="question 1")
    ap.add_argument("--profile", action="store_true", help="question 2")
    ap.add_argument("--flush", action="store_true", help="question 3")
    ap.add_argument("--order", action="store_true", help="question 4")
    args, gen, flush = bench_start(ap)
    if args.rows:
        rows(flush, gen)
    if args.profile:
        profile(flush, gen)
    if args.flush:
        flush_modes(flush, gen)
    if args.order:
        page_order(flush, gen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
