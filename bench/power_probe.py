"""Clocks and power while one seed row's grouped kernel runs back to back (L2 flushed before
each launch, as the bench does): whether a kernel variant is slower because the GPU pulled
its SM clock down (power cap) rather than because of its instructions. Samples nvidia-smi
every 20 ms during ~3 s of launches; prints the median event time, SM clock and power and
the clock-event reasons seen. Select the library build with HARNESS_KERNEL_DEFINES.

Run on a GPU machine: python3 bench/power_probe.py REGEX [REGEX ...]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels import device_plan, paged_decode
from kernels.selfcheck import MODELS, SEED_BATCHES, SEED_KV_LEN, bench_start, seed_tensors

QUERY = "clocks.sm,power.draw,clocks_event_reasons.active"


def probe(name: str, hq: int, hkv: int, d: int, batch: int, q_len: int, gen, flush) -> str:
    q, kv, table, lens = seed_tensors(batch, q_len, hq, hkv, d, "fp8", gen)
    out = torch.empty_like(q)
    p = device_plan(batch, q_len, hq, hkv, d, SEED_KV_LEN, kv_dtype="fp8")
    smi = subprocess.Popen(
        ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits", "-lms", "20"],
        stdout=subprocess.PIPE,
        text=True,
    )
    times = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 3.0:
        evs = []
        for _ in range(20):
            flush.zero_()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            paged_decode(q, kv, table, lens, q_len, "grouped", out=out, plan=p)
            e.record()
            evs.append((s, e))
        torch.cuda.synchronize()
        times += [s.elapsed_time(e) * 1e3 for s, e in evs]
    smi.terminate()
    rows = [r.split(", ") for r in smi.communicate()[0].splitlines() if r.count(",") == 2]
    clk = [float(r[0]) for r in rows[5:]]
    pw = [float(r[1]) for r in rows[5:]]
    reasons = sorted({r[2] for r in rows[5:]})
    return (
        f"{name}: {statistics.median(times):7.1f} µs, SM clock median {statistics.median(clk):.0f} "
        f"(min {min(clk):.0f}) MHz, power median {statistics.median(pw):.0f} (max {max(pw):.0f}) W, "
        f"reasons {reasons}, {len(clk)} samples"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("patterns", nargs="+", help="regular expressions over seed row names")
    args, gen, flush = bench_start(ap)
    for model, (hq, hkv, d) in MODELS.items():
        for q_len in (2, 4, 8):
            for batch in SEED_BATCHES:
                name = f"{model}-fp8_e4m3-batchSize{batch}-seqLenQ{q_len}"
                if any(re.search(pat, name) for pat in args.patterns):
                    print(probe(name, hq, hkv, d, batch, q_len, gen, flush), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
