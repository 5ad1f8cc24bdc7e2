"""Whether a row's time drifts while the harness times it, and with what: the harness's own
runner (100 MB writing flush, 200 µs GPU lead, CUDA events) timing one spec_decode case in
batches of 10 for `--seconds`, alternating the harness's inputs (fp8 K/V scaled into e4m3's
range) with the self-check's (randn cast straight to e4m3, scales 1) batch by batch, and
after each batch the harness's NVML snapshot (SM and memory clocks, GPU temperature, power,
clock-event reasons and the running total of time held back by the power cap). One line per
batch: elapsed s, data set, batch median µs, then NVML.

Why: the twenty-ninth session saw Qwen3 fp8 q_len 8 batch 64 step from ~850 to ~860 µs
halfway through one harness timing at a steady 1980 MHz, and the fourteenth session found
the harness's data 1-3 % slower than the self-check's; alternating the two in time tells a
data effect from a drift.

Run on a GPU machine: python3 bench/step_probe.py [--case ID] [--seconds S]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.gpu import nvml_snapshot
from harness.inputs import make_inputs
from harness.matrix import load_matrix
from harness.timing import TimingConfig, _CudaRunner
from kernels import device_plan, paged_decode
from kernels.selfcheck import bench_start


def nvml_text(dev: torch.device) -> str:
    """The harness's NVML snapshot (harness.gpu.nvml_snapshot) as a short line."""
    n = nvml_snapshot(dev)
    if n is None:
        return "NVML unreadable"
    capped = n.get("power_violation_ns")
    return (
        f"sm {n['sm_clock_mhz']} MHz  mem {n['mem_clock_mhz']} MHz  gpu {n['temperature_c']} C  "
        f"{n['power_w']:.0f} W  reasons {n['throttle_reasons']:#x}  power-limited "
        + ("n/a" if capped is None else f"{capped / 1e6:.1f} ms so far")
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="Qwen3-480B-fp8_e4m3-batchSize64-seqLenQ8")
    ap.add_argument("--matrix", default="matrices/spec_decode.toml")
    ap.add_argument("--seconds", type=float, default=30.0)
    a, gen, _ = bench_start(ap)
    dev = torch.device("cuda")
    case = next((c for c in load_matrix(a.matrix).cases if c.id == a.case), None)
    if case is None:
        ap.error(f"no case {a.case!r} in {a.matrix}")
    inp = make_inputs(case, dev)
    plan = device_plan(
        case.batch,
        case.q_len,
        case.num_qo_heads,
        case.num_kv_heads,
        case.head_dim,
        max(inp.kv_lens_host),
        kv_dtype=case.kv_dtype,
        q_dtype=str(inp.q.dtype),
    )
    raw = torch.randn(inp.kv_cache.shape, device=dev, generator=gen, dtype=torch.bfloat16)
    sets = {
        "harness": (inp.kv_cache, inp.k_scale, inp.v_scale),
        "selfcheck": (raw.to(inp.kv_cache.dtype), 1.0, 1.0),
    }
    del raw
    out = torch.empty_like(inp.q)
    fns = {
        label: functools.partial(
            paged_decode,
            inp.q,
            kv,
            inp.page_table,
            inp.kv_lens,
            case.q_len,
            "grouped",
            sm_scale=inp.sm_scale,
            k_scale=ks,
            v_scale=vs,
            out=out,
            plan=plan,
        )
        for label, (kv, ks, vs) in sets.items()
    }
    runner = _CudaRunner(dev, TimingConfig())
    read = functools.partial(nvml_text, dev)
    for fn in fns.values():
        runner.measure([fn] * 3)
    print(f"{case.id}  plan {plan}  {read()}")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < a.seconds:
        for label, fn in fns.items():
            med = statistics.median(runner.measure([fn] * 10)) * 1e3
            print(
                f"{time.perf_counter() - t0:7.2f} s  {label:<9} {med:7.1f} us  {read()}", flush=True
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
