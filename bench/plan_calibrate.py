"""Every plan the planner could pick, timed, on a spread of shapes: the cost model's
calibration set.

For each shape (the 60 seed rows, then `-n` shapes spread over bench/plan_scan.py's wider
grid) this times the candidate plans around the planner's choice: the chosen tile and its
halves and doubles (within the tiles the rows need), each unsplit and split 2, 3, 4, 6 and
8 ways, as a balanced grid where its kernel runs one, and as two launches where the grid
has them. One JSON line per shape goes to `--out` as it is timed (a cut-off run keeps what
it has), with the device's occupancy table at the top, so the planner's choices can be
replayed and scored on a machine without a GPU (tests/test_kernels_plan_calibration.py).
`--rows REGEX` keeps the shapes whose "NAME KV qQ BB kvL" matches (before the spread);
`--shapes FILE` re-times the shapes of an earlier set instead (after a kernel change: merge
the new lines into the set with bench/plan_calibrate_merge.py).

Run on a GPU machine: python3 bench/plan_calibrate.py [-n 80] [--spread-seed K] [--no-seed]
[--rows REGEX] [--shapes FILE] [--out FILE] [--budget S]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.plan_calibrate_merge import read as read_set
from bench.plan_scan import HEADS, grid, matches, timed
from kernels import binding, device_plan
from kernels.plan import TILES, Plan
from kernels.selfcheck import (
    MODELS,
    SEED_BATCHES,
    SEED_KV_LEN,
    bench_start,
)

SPLITS = (1, 2, 3, 4, 6, 8)


def candidates(shape: tuple[int, ...], kv: str) -> dict[str, Plan]:
    """The planner's choice (first) and the plans around it (see the module text), by name."""
    _, q_len, hq, hkv, _, _ = shape
    auto = device_plan(*shape, kv_dtype=kv)
    rows = q_len * (hq // hkv)
    cover = next((t for t in TILES if t >= rows), TILES[-1])
    tiles = [t for t in TILES if t <= cover and auto.tile_rows // 2 <= t <= auto.tile_rows * 2]
    out = {str(auto): auto}
    for t in tiles:
        for s in SPLITS:
            p = device_plan(*shape, kv_dtype=kv, tile_rows=t, num_splits=s)
            out.setdefault(str(p), p)
        for form in ({"balanced": True}, {"tail": True}):
            try:
                p = device_plan(*shape, kv_dtype=kv, tile_rows=t, **form)
            except ValueError:  # this tile's kernel runs no balanced grid / no two-launch form
                continue
            out.setdefault(str(p), p)
    return out


def spread(cases: list[tuple], n: int, seed: int) -> list[tuple]:
    """n of `cases`, one drawn at random from each of n equal stretches of the list: as even
    as a fixed stride, without locking onto the grid's period (a stride of 6 over a list that
    alternates kv_len took only kv_len 4096, twenty-fifth session)."""
    n = min(n, len(cases))
    rng = random.Random(seed)
    return [cases[rng.randrange(i * len(cases) // n, (i + 1) * len(cases) // n)] for i in range(n)]


def todo_shapes(
    shapes: str | None, rows: str, n: int, spread_seed: int, with_seed: bool
) -> list[tuple[tuple, bool]]:
    """(shape, is a seed row) of every shape to time: those of the calibration file `shapes`,
    or the seed rows (`with_seed`) and `n` spread over the grid; only those matching `rows`.
    ValueError naming the file if `shapes` is not a calibration file."""
    if shapes:
        _, earlier = read_set(Path(shapes))
        return [(tuple(r["shape"]), r["seed"]) for r in earlier if matches(r["shape"], rows)]
    seed = [
        (model, *MODELS[model], kv, q_len, batch, SEED_KV_LEN)
        for model in MODELS
        for kv in ("fp8", "bf16")
        for q_len in (2, 4, 8)
        for batch in SEED_BATCHES
    ]
    wide = spread([c for c in grid() if matches(c, rows)], n, spread_seed)
    todo = [(c, False) for c in wide]
    return [(c, True) for c in seed if with_seed and matches(c, rows)] + todo


def occupancy_table() -> dict[str, list]:
    """(tile, CTAs per SM, balanced) per head_dim / KV dtype / rows of every shape timed."""
    table = {}
    for _, hq, hkv, d in HEADS:
        for kv in ("fp8", "bf16"):
            for q_len in range(1, 17):
                rows = q_len * (hq // hkv)
                table[f"{d}/{kv}/{rows}"] = binding._device_occupancy(0, d, "bf16", kv, rows)
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "-n", type=int, default=80, help="shapes from the wider grid, after the seed rows"
    )
    ap.add_argument(
        "--spread-seed", type=int, default=0, help="which shape of each stretch of the grid"
    )
    ap.add_argument("--no-seed", action="store_true", help="leave out the 60 seed rows")
    ap.add_argument("--rows", default="", help='only shapes whose "NAME KV qQ BB kvL" matches')
    ap.add_argument("--shapes", help="re-time the shapes of this calibration file instead")
    ap.add_argument("--out", default="plan_calibration.jsonl", help="JSON lines written here")
    ap.add_argument("--budget", type=float, default=480.0, help="stop starting shapes after S s")
    args, gen, flush = bench_start(ap)
    try:
        todo = todo_shapes(args.shapes, args.rows, args.n, args.spread_seed, not args.no_seed)
    except ValueError as e:
        print(f"plan_calibrate: {e}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    dev = torch.cuda.get_device_properties(0)
    with open(args.out, "w") as f:
        head = {
            "device": dev.name,
            "sms": dev.multi_processor_count,
            "occupancy": occupancy_table(),
        }
        f.write(json.dumps(head) + "\n")
        for i, ((name, hq, hkv, d, kv, q_len, batch, kv_len), is_seed) in enumerate(todo):
            if time.monotonic() - t0 > args.budget:
                print(f"budget spent after {i} shapes", flush=True)
                break
            case = (name, hq, hkv, d, kv, q_len, batch, kv_len)
            plans = candidates((batch, q_len, hq, hkv, d, kv_len), kv)
            took, err = timed(gen, flush, case, list(plans.values()), takes=1)
            times = {k: round(t, 2) for k, t in zip(plans, took, strict=True)}
            auto = next(iter(plans))  # candidates() puts the planner's choice first
            best = min(times, key=times.get)
            rec = {"shape": list(case), "seed": is_seed, "auto": auto, "times": times}
            f.write(json.dumps(rec) + "\n")
            f.flush()
            print(
                f"{i} {name} {kv} q{q_len} B{batch} kv{kv_len}: {len(times)} plans, auto {auto} "
                f"{times[auto]:.1f} µs, best {best} {times[best]:.1f} "
                f"({times[auto] / times[best]:.3f}); outputs within {err:.2e}; "
                f"{time.monotonic() - t0:.0f} s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
