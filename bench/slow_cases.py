"""Why a whole bench case sometimes runs 1.3-25x slow, and whether the harness's timing is
hit by it.

A/B runs (bench/h100_ab_base.sh) show, once in a few dozen cases, a median of 25 timed calls
several times the same case's other runs, in any build (GPT-OSS fp8 batch 8 q_len 4: 362
against 72 µs). This cycles through seed rows with fresh tensors, as the bench does, for
`--seconds`, timing each case with one fixed take of 9 calls (`--timer raw`, the bench's
timer before it retook unsteady takes), the self-check bench's `time_us` (`--timer bench`,
which retakes them: steady_median) or the harness's adaptive `time_fn` (`--timer
harness`), and reports the slow cases (over `--slow` x the row's best): their share, the
gaps between them (a period says something outside the kernel), and with `--probe`, for
each, the same tensors timed again three times in raw takes (does it last?), the cache copied to a new allocation (is it the allocation?), a contiguous
read of the cache (is it the page-table reads?) and nvidia-smi's clocks and throttle
reasons. `--smi-every S` runs nvidia-smi every S seconds meanwhile (does polling the GPU
cause it?).

Run on a GPU machine: python3 bench/slow_cases.py [--seconds S] [--timer raw|bench|harness]
[--probe] [--smi-every S] [--rows REGEX]
"""

from __future__ import annotations

import argparse
import itertools
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.timing import TimingConfig, time_fn
from kernels import device_plan
from kernels.selfcheck import (
    MODELS,
    SEED_KV_LEN,
    bench_start,
    event_times,
    flush_lead,
    grouped_call,
    seed_tensors,
    time_us,
)

ROWS = (
    ("GPT-OSS", "fp8", 4, 8),
    ("GPT-OSS", "fp8", 8, 32),
    ("GPT-OSS", "bf16", 2, 8),
    ("GPT-OSS", "bf16", 4, 16),
    ("Qwen3-480B", "bf16", 2, 40),
    ("Qwen3-480B", "bf16", 8, 40),
)


def smi() -> str:
    """SM and memory clocks, power, the active clock-event reasons and the temperature."""
    q = "clocks.sm,clocks.mem,power.draw,clocks_event_reasons.active,temperature.gpu"
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True
    )
    return out.stdout.strip()


def poll(every: float, stop: threading.Event) -> None:
    """nvidia-smi every `every` seconds until stop is set."""
    while not stop.wait(every):
        smi()


def raw_us(fn, flush: torch.Tensor) -> float:
    """Median µs of one fixed take of 9 calls, never retaken: what an episode does to it."""
    fn()
    return statistics.median(event_times(fn, 9, flush_lead(flush)))


def probe(run, q, kv, table, lens, q_len, out, p, flush) -> str:
    """What a slow case looks like on a second look (see the module docstring)."""
    again = [raw_us(run, flush) for _ in range(3)]
    kv2 = kv.clone()
    moved = raw_us(grouped_call(q, kv2, table, lens, q_len, p, out), flush)
    words = kv.view(torch.uint8).reshape(-1).view(torch.float32)
    rd = raw_us(lambda: words.sum(), flush)
    return (
        f"again {', '.join(f'{x:.1f}' for x in again)}; in a new allocation {moved:.1f};"
        f" contiguous read {rd:.1f}; {smi()}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="stop starting cases after this")
    ap.add_argument("--slow", type=float, default=1.25, help="a case this x its row's best is slow")
    ap.add_argument("--timer", choices=("raw", "bench", "harness"), default="raw")
    ap.add_argument("--probe", action="store_true", help="look at each slow case again")
    ap.add_argument("--smi-every", type=float, default=0.0, help="poll nvidia-smi meanwhile")
    ap.add_argument("--rows", default="", help="only rows whose name matches this regex")
    args, gen, flush = bench_start(ap)
    rows = [r for r in ROWS if re.search(args.rows, f"{r[0]} {r[1]} q{r[2]} B{r[3]}")]
    cfg = TimingConfig()
    stop = threading.Event()
    if args.smi_every > 0:
        threading.Thread(target=poll, args=(args.smi_every, stop), daemon=True).start()
    times: dict[str, list[float]] = {}
    starts: list[tuple[float, str, float]] = []  # (case start, row, µs)
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.seconds:
        for model, kvname, q_len, batch in rows:
            hq, hkv, d = MODELS[model]
            name = f"{model} {kvname} q{q_len} B{batch}"
            q, kv, table, lens = seed_tensors(batch, q_len, hq, hkv, d, kvname, gen)
            out = torch.empty_like(q)
            p = device_plan(batch, q_len, hq, hkv, d, SEED_KV_LEN, kv_dtype=kvname)
            run = grouped_call(q, kv, table, lens, q_len, p, out)
            ts = time.monotonic() - t0
            if args.timer == "raw":
                t = raw_us(run, flush)
            elif args.timer == "bench":
                t = time_us(run, flush, 9)
            else:
                t = time_fn(run, torch.device("cuda"), cfg).median_ms * 1e3
            times.setdefault(name, []).append(t)
            starts.append((ts, name, t))
            if args.probe and t > args.slow * min(times[name]):
                print(
                    f"slow at {ts:.2f} s {name}: {t:.1f} µs (best {min(times[name]):.1f}); "
                    + probe(run, q, kv, table, lens, q_len, out, p, flush),
                    flush=True,
                )
            del q, kv, table, lens, out, run
    stop.set()
    best = {k: min(v) for k, v in times.items()}
    slow = [(ts, n, t) for ts, n, t in starts if t > args.slow * best[n]]
    print(
        f"{len(starts)} cases in {time.monotonic() - t0:.0f} s ({args.timer} timer, nvidia-smi"
        f" every {args.smi_every or 'never'} s): {len(slow)} over {args.slow}x their row's best"
    )
    for name, v in times.items():
        off = sorted(t / best[name] for t in v)
        print(
            f"  {name}: best {best[name]:.1f} µs, median {statistics.median(v):.1f}, "
            f"worst {max(v):.1f}; share over 1.02x {sum(x > 1.02 for x in off) / len(off):.3f}, "
            f"over 1.25x {sum(x > 1.25 for x in off) / len(off):.3f}"
        )
    # Slow runs of consecutive cases are one episode: its start and length.
    episodes: list[list[float]] = []
    for ts, _, _ in slow:
        if episodes and ts - episodes[-1][1] < 0.1:
            episodes[-1][1] = ts
        else:
            episodes.append([ts, ts])
    if len(episodes) > 2:
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(episodes)]
        q1, q2, q3 = statistics.quantiles(gaps, n=4)
        print(
            f"{len(episodes)} episodes; gaps between their starts (s): quartiles {q1:.2f} / "
            f"{q2:.2f} / {q3:.2f}, min {min(gaps):.2f}, max {max(gaps):.2f}; first starts: "
            + ", ".join(f"{e[0]:.2f}" for e in episodes[:12])
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
