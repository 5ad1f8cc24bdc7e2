"""Balanced (stream-K) grids against the classic one, and against a balanced proxy.

Batch 40 has 320 (request, KV head) items: on 132 SMs some SMs run 3 of them and others 2,
or, split, a part-filled last round. A balanced grid (kernels.plan's balanced_shape: every
CTA the same share of its KV head's items laid end to end) evens that out. For each row and
batch this times the classic plan (balanced=False), a balanced grid on the same tile
(balanced=True; "-" where that tile's kernel runs none), the planner's own choice, and
(--proxy) the same KV bytes in equal whole-item CTAs: batch B' = 132 x CTAs-per-SM / KV
heads at kv_len 16384 x batch / B', unsplit, i.e. balance with no merge and no second
pipeline fill per CTA.

Run on a GPU machine: python3 bench/balance_probe.py [--rows REGEX] [--batches 16,32,40]
[--proxy] [--diagnose]
"""

from __future__ import annotations

import argparse
import dataclasses
import re
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

ROWS = tuple(
    (model, kv, q_len)
    for kv in ("fp8", "bf16")
    for model in ("GPT-OSS", "Qwen3-480B")
    for q_len in (2, 4, 8)
)
BATCH = 40  # --diagnose: the bytes of this batch at kv_len 16384


def timed(gen, flush, model, kvname, q_len, batch, kv_len, **force) -> tuple[float, object]:
    """(µs, plan) of one shape under its auto plan or a forced one (device_plan's keywords);
    (nan, None) where no such plan exists."""
    hq, hkv, d = MODELS[model]
    try:
        p = device_plan(batch, q_len, hq, hkv, d, kv_len, kv_dtype=kvname, **force)
    except ValueError:
        return float("nan"), None
    q, kv, table, lens = seed_tensors(batch, q_len, hq, hkv, d, kvname, gen, kv_len)
    fn = grouped_call(q, kv, table, lens, q_len, p)
    t = min(time_us(fn, flush, 25) for _ in range(2))
    del q, kv, table, lens, fn
    return t, p


def diagnose(gen, flush, model: str, kvname: str, q_len: int, sms: int) -> None:
    """Where a balanced grid's time goes, on the proxy shape (whole-item CTAs, 4 rounds of
    the SMs' worth): the classic unsplit grid; the same CTAs through the balanced kernel
    with one segment each (stages per CTA = stages per item: its code, its fp32 partials
    and the merge, no second segment); and the kernels' own GPU times under the profiler."""
    hq, hkv, d = MODELS[model]
    pc = device_plan(64, q_len, hq, hkv, d, SEED_KV_LEN, kv_dtype=kvname, balanced=False)
    b2 = sms * pc.ctas_per_sm // hkv
    kv2 = BATCH * SEED_KV_LEN // b2 // 64 * 64
    q, kv, table, lens = seed_tensors(b2, q_len, hq, hkv, d, kvname, gen, kv2)
    out = torch.empty_like(q)
    classic = device_plan(
        b2, q_len, hq, hkv, d, kv2, kv_dtype=kvname, tile_rows=pc.tile_rows, num_splits=1
    )
    one_seg = dataclasses.replace(
        classic,
        num_splits=2,
        kv_tokens_per_split=kv2,
        ctas=classic.ctas,
        balanced_ctas=classic.ctas,
    )
    for label, p in (("classic", classic), ("balanced, one segment per CTA", one_seg)):
        fn = grouped_call(q, kv, table, lens, q_len, p, out)
        t = min(time_us(fn, flush, 25) for _ in range(2))
        kt = ", ".join(f"{k} {v:.1f}" for k, v in kernel_times(fn, flush).items())
        print(
            f"{model} {kvname} q{q_len} batch {b2} kv_len {kv2} {label} ({p}): {t:.1f} µs; {kt}",
            flush=True,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="", help="only rows whose name matches this regex")
    ap.add_argument("--batches", default="40", help="comma-separated batches")
    ap.add_argument("--proxy", action="store_true", help="also time the balanced proxy")
    ap.add_argument("--diagnose", action="store_true", help="where the balanced time goes")
    args, gen, flush = bench_start(ap)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    if args.diagnose:
        for model, kvname, q_len in ROWS:
            if not args.rows or re.search(args.rows, f"{model} {kvname} q{q_len}"):
                diagnose(gen, flush, model, kvname, q_len, sms)
        return 0
    print("row | classic µs (plan) | balanced µs (plan) | balanced / classic | auto plan | proxy")
    for model, kvname, q_len in ROWS:
        for batch in (int(b) for b in args.batches.split(",")):
            name = f"{model} {kvname} q{q_len} B{batch}"
            if args.rows and not re.search(args.rows, name):
                continue
            hkv = MODELS[model][1]
            shape = (gen, flush, model, kvname, q_len, batch, SEED_KV_LEN)
            tc, pc = timed(*shape, balanced=False)
            tb, pb = timed(*shape, balanced=True, tile_rows=pc.tile_rows)
            auto = device_plan(batch, q_len, *MODELS[model], SEED_KV_LEN, kv_dtype=kvname)
            proxy = ""
            if args.proxy and pc.num_row_tiles == 1 and sms * pc.ctas_per_sm % hkv == 0:
                b2 = sms * pc.ctas_per_sm // hkv
                kv2 = batch * SEED_KV_LEN // b2 // 64 * 64
                tp, _ = timed(*shape[:5], b2, kv2, tile_rows=pc.tile_rows, num_splits=1)
                proxy = f"{tp:.1f} (batch {b2}, kv_len {kv2})"
            print(
                f"{name} | {tc:.1f} ({pc}) | {tb:.1f} ({pb or '-'}) | {tb / tc:.3f} | {auto} | {proxy}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
