"""The planner's grid forms off the seed grid, timed against what it would run without them.

The seed grid (kv_len 16384, five batches, q_len 2/4/8, two models) is where the two-launch
plans (kernels.plan.tail_plan) and the balanced grids (balanced_shape) were measured before
the planner took them. Elsewhere the planner takes them on its model alone. This lists every
shape of a wider grid (four head layouts, fp8 and bf16 KV, q_len 1-16, batch 12-128 in
steps of 4, kv_len 4096 and 16384) whose device plan has the form (`--form tail`,
`balanced`, or `split`: a classic grid of KV splits), times N of them spread over the list,
each against the device plan with that form ruled out (`tail=False`, `balanced=False`,
`num_splits=1`), and compares their outputs. `--rows`
filters the list by "NAME KV qQ BB kvL".

Run on a GPU machine: python3 bench/plan_scan.py [--form tail] [-n 28] [--rows REGEX]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels import device_plan
from kernels.plan import Plan
from kernels.selfcheck import SEED_KV_LEN, bench_start, grouped_call, seed_tensors, time_us

# (name, q heads, KV heads, head_dim): the two seed models and two other layouts.
HEADS = (
    ("Qwen3-480B", 96, 8, 128),
    ("GPT-OSS", 64, 8, 64),
    ("h64/8 d128", 64, 8, 128),
    ("h32/4 d256", 32, 4, 256),
)
# How to tell a plan has the form, and the keyword that rules it out.
FORMS = {
    "tail": (lambda p: p.tail is not None, {"tail": False}),
    "balanced": (lambda p: p.balanced_ctas > 0, {"balanced": False}),
    "split": (
        lambda p: p.num_splits > 1 and not p.balanced_ctas and p.tail is None,
        {"num_splits": 1},
    ),
}


def grid() -> list[tuple]:
    """Every (name, hq, hkv, d, kv, q_len, batch, kv_len) of the grid."""
    return [
        (name, hq, hkv, d, kvname, q_len, batch, kv_len)
        for name, hq, hkv, d in HEADS
        for kvname in ("fp8", "bf16")
        for q_len in (1, 2, 4, 8, 12, 16)
        for batch in range(12, 129, 4)
        for kv_len in (4096, SEED_KV_LEN)
    ]


def matches(case: tuple, rows: str) -> bool:
    """Whether a shape's "NAME KV qQ BB kvL" matches the regex `rows` (empty: every one)."""
    name, _, _, _, kv, q_len, batch, kv_len = case
    return not rows or re.search(rows, f"{name} {kv} q{q_len} B{batch} kv{kv_len}") is not None


def shapes(form: str, rows: str) -> list[tuple]:
    """The shapes of the grid whose device plan has `form` (and whose name matches `rows`)."""
    has = FORMS[form][0]
    out = []
    for case in grid():
        _, hq, hkv, d, kvname, q_len, batch, kv_len = case
        if matches(case, rows) and has(
            device_plan(batch, q_len, hq, hkv, d, kv_len, kv_dtype=kvname)
        ):
            out.append(case)
    return out


def timed(
    gen, flush, case: tuple, plans: Sequence[Plan], takes: int = 2
) -> tuple[list[float], float]:
    """Each plan's time on one shape (µs, the best of `takes` medians of 25 calls) and the
    largest difference of any plan's output from the first plan's (NaN if any has one)."""
    _, hq, hkv, d, kvname, q_len, batch, kv_len = case
    q, kv, table, lens = seed_tensors(batch, q_len, hq, hkv, d, kvname, gen, kv_len)
    out = torch.empty_like(q)
    times, first, err = [], None, torch.zeros((), device=q.device)
    for p in plans:
        out.fill_(float("nan"))
        fn = grouped_call(q, kv, table, lens, q_len, p, out)
        times.append(min(time_us(fn, flush, 25) for _ in range(takes)))
        if first is None:
            first = out.clone()
        else:
            err = torch.maximum(err, (out.float() - first.float()).abs().max())
    return times, err.item()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--form", choices=sorted(FORMS), default="tail", help="which plan form")
    ap.add_argument("-n", type=int, default=28, help="how many of the listed shapes to time")
    ap.add_argument("--rows", default="", help="only shapes whose name matches this regex")
    args, gen, flush = bench_start(ap)
    cases = shapes(args.form, args.rows)
    step = max(1, len(cases) // max(1, args.n))
    print(f"{len(cases)} shapes of the grid plan {args.form}; timing every {step}th", flush=True)
    ratios = []
    for case in cases[::step][: args.n]:
        name, hq, hkv, d, kvname, q_len, batch, kv_len = case
        shape = (batch, q_len, hq, hkv, d, kv_len)
        plans = (
            device_plan(*shape, kv_dtype=kvname),
            device_plan(*shape, kv_dtype=kvname, **FORMS[args.form][1]),
        )
        times, err = timed(gen, flush, case, plans)
        ratios.append(times[0] / times[1])
        print(
            f"  {name} {kvname} q{q_len} B{batch} kv{kv_len}: {plans[0]} {times[0]:.1f} µs, "
            f"without {plans[1]} {times[1]:.1f} µs: {ratios[-1]:.3f}; max |diff| {err:.2e}",
            flush=True,
        )
    if ratios:
        print(
            f"{args.form} / without: {min(ratios):.3f} / {statistics.median(ratios):.3f} / "
            f"{max(ratios):.3f} (min / median / max) over {len(ratios)} shapes"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
