"""Where a CTA's time goes beyond its stages: %globaltimer marks per CTA of grouped_sw_kernel
(Qwen3 fp8 q_len 4 and 8), from a library built with PD_TIMELINE=1.

Why: bench/fixed_cost.py fits Qwen3 fp8 q_len 8 batch 64 as ~100 µs that do not scale with
kv_len (25 µs per wave of CTAs), and the per-stage rate alone would put batch 64 under 0.8
ms. The marks (common.cuh, PD_TL) split each CTA into: start -> Q loaded (2), -> first stage
landed (3), the stage loop (-> 4), the epilogue (-> 5); in the 96-row form also the
producer's first and ring-filling issues (6, 7), warpgroup 1's loop end (8), the epilogue's
barriers (9, 10), and per SM the gap from one CTA's end to the next one's start.

Run on a GPU machine (the define builds a separate library):
    HARNESS_KERNEL_DEFINES=PD_TIMELINE=1 python3 bench/cta_timeline.py
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import itertools
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels import binding, device_plan
from kernels.selfcheck import MODELS, bench_start, grouped_call, seed_tensors, time_us

SLOTS, CTAS = 16, 4096
ROWS = ((8, 64, 16384), (8, 64, 2048), (8, 16, 16384), (4, 64, 16384), (4, 64, 2048))


def marks(lib: ctypes.CDLL) -> list[list[int]]:
    buf = (ctypes.c_uint64 * (SLOTS * CTAS))()
    rc = lib.pd_timeline_d128(buf)
    if rc:
        raise SystemExit(f"pd_timeline_d128 failed: CUDA error {rc}")
    return [list(buf[i * SLOTS : (i + 1) * SLOTS]) for i in range(CTAS)]


def spans(m: list[list[int]], a: int, b: int) -> list[float]:
    """Mark b minus mark a of every CTA, µs."""
    return [(r[b] - r[a]) / 1e3 for r in m]


def med(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"{statistics.median(xs):7.2f} (p10 {xs[len(xs) // 10]:.2f}, p90 {xs[9 * len(xs) // 10]:.2f})"


def main() -> int:
    _, gen, flush = bench_start(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    if "PD_TIMELINE=1" not in os.environ.get("HARNESS_KERNEL_DEFINES", ""):
        print("cta_timeline: set HARNESS_KERNEL_DEFINES=PD_TIMELINE=1", file=sys.stderr)
        return 2
    lib, _ = binding._load()
    hq, hkv, d = MODELS["Qwen3-480B"]
    for q_len, batch, kv_len in ROWS:
        q, kv, table, lens = seed_tensors(batch, q_len, hq, hkv, d, "fp8", gen, kv_len)
        p = device_plan(batch, q_len, hq, hkv, d, kv_len, kv_dtype="fp8")
        fn = grouped_call(q, kv, table, lens, q_len, p)
        t = time_us(fn, flush, 10)  # the last timed launch leaves its marks
        torch.cuda.synchronize()
        n = p.ctas
        m = marks(lib)[:n]
        t0 = min(r[0] for r in m)
        us = functools.partial(spans, m)
        stages = -(-kv_len // p.num_splits // 64)
        span = (max(r[5] for r in m) - t0) / 1e3
        print(
            f"\nQwen3 fp8 q{q_len} B{batch} kv{kv_len} {p}: {n} CTAs, call {t:.1f} µs, CTA span {span:.1f} µs"
        )
        print(f"  start -> Q loaded      {med(us(0, 2))}")
        print(f"  start -> stage 0 landed {med(us(0, 3))}")
        # The 96-row form (tile 128): TMA producer, two warpgroups, one CTA per SM. The 48-row
        # form writes no marks 6-10 (cp.async producer, one warpgroup), and its two CTAs per
        # SM have no gap between them to measure.
        full = p.tile_rows == 128
        if full:
            print(
                f"  producer: start -> first issue {med(us(0, 6))}; -> ring full issue {med(us(0, 7))}"
            )
        loop = us(3, 4)
        print(
            f"  stage loop {med(loop)} µs = {statistics.median(loop) / stages:.3f} µs per stage ({stages})"
        )
        print(f"  epilogue   {med(us(4, 5))}")
        if full:
            print(f"    warpgroup 1's loop end after warpgroup 0's {med(us(4, 8))}")
            print(
                f"    -> first barrier {med(us(4, 9))}, -> second {med(us(4, 10))}, -> stores issued {med(us(4, 5))}"
            )
        whole = us(0, 5)
        print(
            f"  whole CTA  {med(whole)}; outside the loop {statistics.median(whole) - statistics.median(loop):.2f}"
        )
        by_sm: dict[int, list[list[int]]] = {}
        for r in m:
            by_sm.setdefault(r[1], []).append(r)
        gaps, firsts, lasts = [], [], []
        for rs in by_sm.values():
            rs.sort(key=lambda r: r[0])
            firsts.append((rs[0][0] - t0) / 1e3)
            lasts.append((rs[-1][5] - t0) / 1e3)
            gaps += [(b[0] - a[5]) / 1e3 for a, b in itertools.pairwise(rs)]
        print(
            f"  SMs {len(by_sm)}, CTAs per SM {min(map(len, by_sm.values()))}-{max(map(len, by_sm.values()))}; "
            f"first start {med(firsts)}; last end {med(lasts)}"
        )
        if gaps and full:
            print(f"  gap between CTAs on an SM {med(gaps)}")
        del q, kv, table, lens, fn
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
