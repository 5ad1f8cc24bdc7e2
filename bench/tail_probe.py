"""Whole rounds unsplit, then the rest split: a batch as two launches.

A grid that is not a whole number of rounds of the GPU's CTA slots (Qwen3 fp8 q_len 8 at
batch 40: 320 one-per-SM items on 132 SMs) either leaves its last round part-filled or
splits every item (split 2: 640 half CTAs, five half rounds), and then every CTA pays the
fixed start and end of a CTA and every row the merge. Here the first F requests, whose
items fill whole rounds, run unsplit in one launch (F x KV heads x row tiles = rounds x
slots) and the remaining requests, split k ways, in a second launch with its own merge
(kernels.plan.two_launch, run by paged_decode): the two launches cover the same rows, so the
output is the same. Times (µs, behind the bench's
flush and lead) the planner's one-launch plan against the two launches for each F, k.

`--scan N`: the model's own two-launch choices beyond the seed grid. Every shape of a grid
(four head layouts, fp8 and bf16, q_len 1-16, batch 12-128, kv_len 4096 and 16384) whose
device plan has two launches is listed; N of them, spread over the list, are timed against
the best one-launch plan (`tail=False`), with their outputs compared (`--rows` filters the
list by "NAME KV qQ BB kvL").

Run on a GPU machine: python3 bench/tail_probe.py [--rows REGEX] [--batches 40]
[--splits 2,3,4] [--scan N]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels import device_plan
from kernels.plan import Plan, two_launch
from kernels.selfcheck import MODELS, SEED_KV_LEN, bench_device, grouped_call, seed_tensors, time_us

ROWS = tuple(
    (model, kv, q_len)
    for kv in ("fp8", "bf16")
    for model in ("Qwen3-480B", "GPT-OSS")
    for q_len in (2, 4, 8)
)


def probe(gen, flush, sms: int, model: str, kvname: str, q_len: int, batch: int, splits) -> None:
    """The one-launch auto plan against the two-launch form of one row, and their outputs'
    largest difference."""
    hq, hkv, d = MODELS[model]
    q, kv, table, lens = seed_tensors(batch, q_len, hq, hkv, d, kvname, gen)
    out = torch.empty_like(q)
    auto = device_plan(batch, q_len, hq, hkv, d, SEED_KV_LEN, kv_dtype=kvname)
    one = grouped_call(q, kv, table, lens, q_len, auto, out)
    t_auto = min(time_us(one, flush, 25) for _ in range(2))
    ref = out.clone()
    tile = auto.tile_rows

    def forced(requests: int, splits: int) -> Plan:
        """The classic plan of `requests` requests on the auto plan's tile, split `splits` ways."""
        shape = (requests, q_len, hq, hkv, d, SEED_KV_LEN)
        return device_plan(
            *shape, kv_dtype=kvname, tile_rows=tile, num_splits=splits, balanced=False
        )

    full = forced(batch, 1)
    per_round = sms * full.ctas_per_sm // (hkv * full.num_row_tiles)  # requests a round holds
    name = f"{model} {kvname} q{q_len} B{batch}"
    print(f"{name}: auto {auto} {t_auto:.1f} µs; {per_round} requests a round", flush=True)
    for rounds in range(1, batch // max(per_round, 1) + 1):
        f = rounds * per_round
        if f >= batch:
            continue
        for k in splits:
            # paged_decode runs the two launches, on the first f requests and the rest
            p = two_launch(forced(f, 1), forced(batch - f, k), batch - f)
            out.fill_(float("nan"))
            fn = grouped_call(q, kv, table, lens, q_len, p, out)
            t = min(time_us(fn, flush, 25) for _ in range(2))
            err = (out.float() - ref.float()).abs().max().item()
            print(
                f"  {f} unsplit + {batch - f} split {k} ({p}): {t:.1f} µs, "
                f"{t / t_auto:.3f} of auto; max |diff| {err:.2e}",
                flush=True,
            )


# (name, q heads, KV heads, head_dim) of --scan: the two seed models and two other layouts.
SCAN_HEADS = (
    ("Qwen3-480B", 96, 8, 128),
    ("GPT-OSS", 64, 8, 64),
    ("h64/8 d128", 64, 8, 128),
    ("h32/4 d256", 32, 4, 256),
)


def scan(gen, flush, limit: int, rows: str = "") -> None:
    """Two launches where the planner takes them off the seed grid, against one launch."""
    hits = [
        (name, hq, hkv, d, kvname, q_len, batch, kv_len)
        for name, hq, hkv, d in SCAN_HEADS
        for kvname in ("fp8", "bf16")
        for q_len in (1, 2, 4, 8, 12, 16)
        for batch in range(12, 129, 4)
        for kv_len in (4096, SEED_KV_LEN)
        if not rows or re.search(rows, f"{name} {kvname} q{q_len} B{batch} kv{kv_len}")
        if device_plan(batch, q_len, hq, hkv, d, kv_len, kv_dtype=kvname).tail is not None
    ]
    step = max(1, len(hits) // max(1, limit))
    print(
        f"{len(hits)} shapes of the scan grid take two launches; timing every {step}th", flush=True
    )
    ratios = []
    for name, hq, hkv, d, kvname, q_len, batch, kv_len in hits[::step][:limit]:
        shape = (batch, q_len, hq, hkv, d, kv_len)
        q, kv, table, lens = seed_tensors(batch, q_len, hq, hkv, d, kvname, gen, kv_len)
        out = torch.empty_like(q)
        times, outs = [], []
        plans = (
            device_plan(*shape, kv_dtype=kvname),
            device_plan(*shape, kv_dtype=kvname, tail=False),
        )
        for p in plans:
            out.fill_(float("nan"))
            fn = grouped_call(q, kv, table, lens, q_len, p, out)
            times.append(min(time_us(fn, flush, 25) for _ in range(2)))
            outs.append(out.clone())
        err = (outs[0].float() - outs[1].float()).abs().max().item()
        ratios.append(times[0] / times[1])
        print(
            f"  {name} {kvname} q{q_len} B{batch} kv{kv_len}: {plans[0]} {times[0]:.1f} µs, "
            f"one launch {plans[1]} {times[1]:.1f} µs: {ratios[-1]:.3f}; max |diff| {err:.2e}",
            flush=True,
        )
        del q, kv, table, lens, out, outs
    if ratios:
        print(f"two / one launch: {min(ratios):.3f}-{max(ratios):.3f} over {len(ratios)} shapes")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="", help="only rows whose name matches this regex")
    ap.add_argument("--batches", default="40", help="comma-separated batches")
    ap.add_argument("--splits", default="2,3,4", help="comma-separated split counts of the rest")
    ap.add_argument(
        "--scan", type=int, default=0, help="time N two-launch shapes off the seed grid"
    )
    args = ap.parse_args()
    tools = bench_device("tail_probe.py")
    if tools is None:
        return 1
    gen, flush = tools
    if args.scan:
        scan(gen, flush, args.scan, args.rows)
        return 0
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    splits = tuple(int(s) for s in args.splits.split(","))
    for model, kvname, q_len in ROWS:
        for batch in (int(b) for b in args.batches.split(",")):
            if args.rows and not re.search(args.rows, f"{model} {kvname} q{q_len} B{batch}"):
                continue
            probe(gen, flush, sms, model, kvname, q_len, batch, splits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
