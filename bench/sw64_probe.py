"""GPT-OSS fp8 q_len 8 on whichever head_dim-64 kernel this build dispatches (PD_SW64=1 in
HARNESS_KERNEL_DEFINES: the swapped form; unset: grouped_wg_kernel), unsplit, at batches
that fill one wave of either (48: 384 CTAs) and beyond, with each request's own pages and
with every request reading request 0's (L2 hits: the kernel's compute-bound time).

Run on a GPU machine: python3 bench/sw64_probe.py
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels import device_plan, paged_decode
from kernels.selfcheck import MODELS, SEED_KV_LEN, bench_device, seed_tensors, time_us


def main() -> int:
    setup = bench_device("sw64_probe")
    if setup is None:
        return 2
    gen, flush = setup
    hq, hkv, d = MODELS["GPT-OSS"]
    for batch in (24, 48, 64):
        q, kv, table, lens = seed_tensors(batch, 8, hq, hkv, d, "fp8", gen)
        p = device_plan(
            batch, 8, hq, hkv, d, SEED_KV_LEN, kv_dtype="fp8", tile_rows=64, num_splits=1
        )
        for share in ("none", "all"):
            t = table if share == "none" else table[:1].expand_as(table).contiguous()
            out = torch.empty_like(q)
            fn = functools.partial(paged_decode, q, kv, t, lens, 8, "grouped", out=out, plan=p)
            print(
                f"GPT-OSS fp8 q8 B{batch} share={share:<5} {time_us(fn, flush, 25):8.1f} us  {p}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
