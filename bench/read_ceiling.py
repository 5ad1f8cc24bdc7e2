"""What a kernel that only reads a seed row's bytes reaches under the harness's timing.

The issue's bar is 85 % of the copy rate (1 GiB copied, no flush) on every spec_decode row
with batch >= 16. A row's stream is 134 MB to 2.1 GB, timed behind a 256 MB writing L2
flush, so part of each call is fixed (launch, ramp-up, tail, the flush's write-back) and
weighs more on the small streams. This times, behind the same flush and spin lead
(`kernels.selfcheck.time_us`), for each distinct stream of the seed grid (model, KV dtype,
batch):
- `read`: torch's float sum over exactly the KV bytes (contiguous: no page table), a
  reduction that does no more than read them;
- `copy`: a device copy moving as many bytes (half read, half written);
- `grouped`: our kernel on the seed row (shuffled pages), for each q_len;
and prints each as TB/s and as % of the 1 GiB copy rate, so a row's figure can be read
against what pure data movement of its size achieves on the same GPU in the same run.

Run on a GPU machine: python3 bench/read_ceiling.py [--rows REGEX] [--reps N]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels import device_plan
from kernels.selfcheck import (
    MODELS,
    SEED_BATCHES,
    SEED_KV_LEN,
    bench_start,
    copy_bandwidth,
    grouped_call,
    seed_tensors,
    time_us,
)


def stream_times(kv: torch.Tensor, flush: torch.Tensor, reps: int) -> tuple[float, float]:
    """(read µs, copy µs) for kv's bytes: a float sum over them, and a copy moving as many."""
    flat = kv.view(torch.uint8).reshape(-1)
    words = flat[: flat.numel() // 4 * 4].view(torch.float32)
    acc = torch.empty((), dtype=torch.float32, device=kv.device)
    read = time_us(lambda: torch.sum(words, dim=0, out=acc), flush, reps)
    half = words.numel() // 2
    src, dst = words[:half], torch.empty(half, dtype=torch.float32, device=kv.device)
    copy = time_us(lambda: dst.copy_(src), flush, reps)
    return read, copy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="", help="only streams whose name matches this regex")
    ap.add_argument("--reps", type=int, default=25, help="timed calls per figure (median)")
    args, gen, flush = bench_start(ap)
    bw = copy_bandwidth(torch.device("cuda"))
    print(f"copy bandwidth (1 GiB, no flush): {bw / 1e12:.2f} TB/s; {torch.cuda.get_device_name()}")
    print("stream | MB | read µs (TB/s, % of copy) | copy µs (%) | grouped q_len 2 / 4 / 8 µs (%)")
    for kvname in ("fp8", "bf16"):
        for model, (hq, hkv, d) in MODELS.items():
            for batch in SEED_BATCHES:
                name = f"{model}-{'fp8_e4m3' if kvname == 'fp8' else 'bf16'}-batchSize{batch}"
                if args.rows and not re.search(args.rows, name):
                    continue
                cells, kvb, tr, tc = [], 0, 0.0, 0.0
                for q_len in (2, 4, 8):
                    q, kv, table, lens = seed_tensors(batch, q_len, hq, hkv, d, kvname, gen)
                    p = device_plan(batch, q_len, hq, hkv, d, SEED_KV_LEN, kv_dtype=kvname)
                    tg = time_us(grouped_call(q, kv, table, lens, q_len, p), flush, args.reps)
                    kvb = kv.numel() * kv.element_size()
                    nbytes = kvb + 2 * q.numel() * q.element_size()
                    cells.append(f"{tg:.1f} ({100 * nbytes / (tg * 1e-6) / bw:.0f})")
                    if q_len == 8:
                        tr, tc = stream_times(kv, flush, args.reps)
                    del q, kv, table, lens
                print(
                    f"{name} | {kvb / 1e6:.0f} | {tr:.1f} ({kvb / (tr * 1e-6) / 1e12:.2f},"
                    f" {100 * kvb / (tr * 1e-6) / bw:.0f}) | {tc:.1f}"
                    f" ({100 * kvb / (tc * 1e-6) / bw:.0f}) | " + " / ".join(cells),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
