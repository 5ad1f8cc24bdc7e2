"""One self-check case and forced plan under whatever tool runs this (compute-sanitizer
racecheck): Qwen3-like fp8 q_len 4 (48 rows, grouped_sw_kernel's one-warpgroup form with its
cp.async producer), unsplit so the producer wraps the ring. Run from a tree's root: python3
bench/race_probe.py [splits]."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path.cwd()))

from kernels.plan import plan
from kernels.selfcheck import Case, make_inputs, reference, run_case

splits = int(sys.argv[1]) if len(sys.argv) > 1 else 1
c = Case(3, 4, 96, 8, 128, 32, "fp8", "fp16", 400, ramp=0.02)
gen = torch.Generator().manual_seed(0)
x = make_inputs(c, gen, torch.device("cuda"))
sms = torch.cuda.get_device_properties(0).multi_processor_count
p = plan(3, 4, 96, 8, 128, x["table"].shape[1] * 32, sms, "fp8", tile_rows=64, num_splits=splits)
out = run_case(c, x, "grouped", p)
err = float((out.float() - reference(c, x)).abs().max())
print(f"plan {p}: max abs error {err:.2e}, kv_lens {x['lens'].tolist()}")
