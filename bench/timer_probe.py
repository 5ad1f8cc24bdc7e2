"""Why the harness and the self-check bench disagree on a case: each data set (the
harness's inputs, fp8 K/V scaled into e4m3's range, or the self-check's, randn cast
straight to e4m3) timed by each method (the harness's `time_fn`: batches of launches
behind a 2x-L2 writing flush, each behind a 200 µs GPU lead since bcba031, none when call 8
of the fourteenth session measured it; the self-check's `time_us`: a spin kernel before each
launch behind a 256 MB writing flush). One line per case x data x timer, µs.

    python3 bench/timer_probe.py [--cases REGEX] [--reps N]
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.inputs import make_inputs
from harness.matrix import load_matrix
from harness.timing import TimingConfig, time_fn
from kernels import device_plan, paged_decode
from kernels.selfcheck import bench_start, time_us


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=r"fp8_e4m3-batchSize64-seqLenQ8$")
    ap.add_argument("--matrix", default="matrices/spec_decode.toml")
    ap.add_argument("--reps", type=int, default=40)
    a, gen, flush = bench_start(ap)
    dev = torch.device("cuda")
    for case in load_matrix(a.matrix).cases:
        if not re.search(a.cases, case.id):
            continue
        inp = make_inputs(case, dev)
        c = case
        shape = (
            c.batch,
            c.q_len,
            c.num_qo_heads,
            c.num_kv_heads,
            c.head_dim,
            max(inp.kv_lens_host),
        )
        plan = device_plan(*shape, kv_dtype=c.kv_dtype, q_dtype=str(inp.q.dtype))
        # The self-check's data: the same shapes, randn cast straight to e4m3, scales 1.
        raw = torch.randn(inp.kv_cache.shape, device=dev, generator=gen, dtype=torch.bfloat16)
        sets = {
            "harness data": (inp.kv_cache, inp.k_scale, inp.v_scale),
            "selfcheck data": (raw.to(inp.kv_cache.dtype), 1.0, 1.0),
        }
        del raw
        for label, (kv, ks, vs) in sets.items():
            fn = functools.partial(
                paged_decode, inp.q, kv, inp.page_table, inp.kv_lens, c.q_len,
                sm_scale=inp.sm_scale, k_scale=ks, v_scale=vs, out=torch.empty_like(inp.q), plan=plan,
            )  # fmt: skip
            h = time_fn(fn, dev, TimingConfig())
            s = time_us(fn, flush, a.reps)
            mhz = f"{h.clocks.sm_clock_mhz_min}-{h.clocks.sm_clock_mhz_max} MHz"
            print(
                f"{case.id:<44} {label:<15} harness time_fn {h.median_ms * 1e3:8.1f} µs "
                f"(n={h.n}, {mhz})  selfcheck time_us {s:8.1f} µs",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
