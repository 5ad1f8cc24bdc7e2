"""How much of a seed row's time does not scale with the KV length: the fixed cost per call.

For each row, the plan chosen at kv_len 16384 (tile and splits kept) is timed at kv_len
16384, 8192, 4096 and 2048, behind the harness's writing L2 flush and behind none; a least-
squares line t = a + b L gives the fixed part a (prologue, ramp-up, tail, merge, flush
write-back) and the rate b. Then one call per row under torch.profiler: the kernels' own
GPU times beside the CUDA-event time. Why: the batch-16 and batch-32 rows sit further below
the copy rate than batch 64 on the same kernels (a GPT-OSS fp8 q_len 8 fit over batch
gives ~30 µs that no batch pays for), and a fixed cost shows there.

Run on a GPU machine: python3 bench/fixed_cost.py [--rows REGEX]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

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

ROWS = (
    ("GPT-OSS", "fp8", 8, 64),
    ("GPT-OSS", "fp8", 8, 16),
    ("GPT-OSS", "fp8", 2, 64),
    ("GPT-OSS", "fp8", 4, 64),
    ("Qwen3-480B", "fp8", 8, 64),
    ("Qwen3-480B", "fp8", 4, 64),
    ("Qwen3-480B", "fp8", 4, 16),
    ("Qwen3-480B", "bf16", 8, 64),
)
LENS = (16384, 8192, 4096, 2048)


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return my - b * mx, b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="", help="only rows whose name matches this regex")
    args, gen, flush = bench_start(ap)
    none = lambda: None  # noqa: E731
    print(
        "row | plan | µs at kv_len " + " / ".join(map(str, LENS)) + " (write flush; no flush) | fit"
    )
    for model, kvname, q_len, batch in ROWS:
        name = f"{model} {kvname} q{q_len} B{batch}"
        if args.rows and not re.search(args.rows, name):
            continue
        hq, hkv, d = MODELS[model]
        p0 = device_plan(batch, q_len, hq, hkv, d, SEED_KV_LEN, kv_dtype=kvname)
        tw, tn = [], []
        for kv_len in LENS:
            q, kv, table, lens = seed_tensors(batch, q_len, hq, hkv, d, kvname, gen, kv_len)
            p = device_plan(
                batch,
                q_len,
                hq,
                hkv,
                d,
                kv_len,
                kv_dtype=kvname,
                tile_rows=p0.tile_rows,
                num_splits=p0.num_splits,
            )
            fn = grouped_call(q, kv, table, lens, q_len, p)
            tw.append(time_us(fn, flush, 25))
            tn.append(time_us(fn, none, 25))
            if kv_len == SEED_KV_LEN:
                kt = ", ".join(f"{k} {v:.1f}" for k, v in kernel_times(fn, flush).items())
            del q, kv, table, lens, fn
        aw, bw = fit(list(LENS), tw)
        an, bn = fit(list(LENS), tn)
        print(
            f"{name} | {p0} | "
            + " / ".join(f"{t:.1f}" for t in tw)
            + "; "
            + " / ".join(f"{t:.1f}" for t in tn)
            + f" | fixed {aw:.1f} µs (no flush {an:.1f}), {bw * 1024:.2f} µs per 1024 tokens"
            f" (no flush {bn * 1024:.2f}); profiler at 16384: {kt}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
