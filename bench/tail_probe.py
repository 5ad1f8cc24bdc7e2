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

Run on a GPU machine: python3 bench/tail_probe.py [--rows REGEX] [--batches 40]
[--splits 2,3,4]
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
from kernels.selfcheck import MODELS, SEED_KV_LEN, bench_start, grouped_call, seed_tensors, time_us

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="", help="only rows whose name matches this regex")
    ap.add_argument("--batches", default="40", help="comma-separated batches")
    ap.add_argument("--splits", default="2,3,4", help="comma-separated split counts of the rest")
    args, gen, flush = bench_start(ap)
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
