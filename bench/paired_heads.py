"""Would reading two KV heads per CTA (128-byte rows) speed up GPT-OSS fp8? Measured with
today's kernels, no kernel change: merge KV heads pairwise into a virtual problem with half
the KV heads at head_dim 128 and twice the group. The KV cache is the same memory viewed as
[pages, 2, page, hkv/2, 128]; a q row of real head 2h' becomes [q, 0] and one of 2h'+1
[0, q], and each keeps its own half of the output (kernels/NOTES.md, tenth session).

Prints, per GPT-OSS fp8 seed row, the normal and the paired time (µs, same data, L2 flushed),
their ratio, the largest difference between the two outputs, and both plans.
Run on a GPU machine: python3 bench/paired_heads.py [--filter TEXT]
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels import device_plan, paged_decode
from kernels.selfcheck import SEED_BATCHES, SEED_KV_LEN, bench_start, seed_tensors, time_us


def paired_inputs(q: torch.Tensor, kv: torch.Tensor, hkv: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q padded to 128 dims in its head's half, the cache viewed with paired heads)."""
    tokens, hq, d = q.shape
    group = hq // hkv
    half = (torch.arange(hq, device=q.device) // group) % 2  # which half each q head owns
    qv = torch.zeros(tokens, hq, 2 * d, dtype=q.dtype, device=q.device)
    qv.view(tokens, hq, 2, d)[:, torch.arange(hq), half] = q
    pages, two, page, _, _ = kv.shape
    return qv, kv.view(pages, two, page, hkv // 2, 2 * d)


def paired_output(ov: torch.Tensor, hkv: int) -> torch.Tensor:
    """Each q head's own half of the paired output."""
    tokens, hq, d2 = ov.shape
    half = (torch.arange(hq, device=ov.device) // (hq // hkv)) % 2
    return ov.view(tokens, hq, 2, d2 // 2)[:, torch.arange(hq), half]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filter", default="", help="only rows whose name contains this")
    args, gen, flush = bench_start(ap)
    hq, hkv, d = 64, 8, 64
    scale = 1.0 / math.sqrt(d)
    print(f"{'case':<42} {'normal':>8} {'paired':>8} {'ratio':>6} {'max|diff|':>9}  plans")
    for q_len in (2, 4, 8):
        for batch in SEED_BATCHES:
            name = f"GPT-OSS-fp8_e4m3-batchSize{batch}-seqLenQ{q_len}"
            if args.filter not in name:
                continue
            q, kv, table, lens = seed_tensors(batch, q_len, hq, hkv, d, "fp8", gen)
            qv, kvv = paired_inputs(q, kv, hkv)
            p1 = device_plan(batch, q_len, hq, hkv, d, SEED_KV_LEN, kv_dtype="fp8")
            p2 = device_plan(batch, q_len, hq, hkv // 2, 2 * d, SEED_KV_LEN, kv_dtype="fp8")
            o1, o2 = torch.empty_like(q), torch.empty_like(qv)
            run1 = functools.partial(
                paged_decode, q, kv, table, lens, q_len, "grouped", sm_scale=scale, out=o1, plan=p1
            )
            run2 = functools.partial(
                paged_decode,
                qv,
                kvv,
                table,
                lens,
                q_len,
                "grouped",
                sm_scale=scale,
                out=o2,
                plan=p2,
            )
            t1, t2 = time_us(run1, flush, 25), time_us(run2, flush, 25)
            diff = (paired_output(o2, hkv).float() - o1.float()).abs().max().item()
            print(
                f"{name:<42} {t1:8.1f} {t2:8.1f} {t2 / t1:6.3f} {diff:9.2e}  {p1} | {p2}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
