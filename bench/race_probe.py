"""The self-check's case N alone, one run (kernel and plan) at a time, each followed by a
device synchronize and a marker line, under whatever tool runs this (compute-sanitizer
racecheck --racecheck-report hazard): a hazard's report then follows the marker of the run
that caused it. The draws are check()'s (kernels.selfcheck.case_runs), so N and the runs
are the self-check's own. Run from a tree's root: python3 bench/race_probe.py N [SEED]."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path.cwd()))

from kernels.selfcheck import case_runs, reference, run_case

index = int(sys.argv[1])
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
for i, (c, x, runs) in enumerate(case_runs(False, seed, index + 1)):
    if i < index:
        continue
    ref = reference(c, x)
    print(f"case {index}: {c}, kv_lens {x['lens'].tolist()}", flush=True)
    for kern, p in runs:
        out = run_case(c, x, kern, p)
        torch.cuda.synchronize()
        err = float((out.float() - ref).abs().max())
        print(f"--- done: {kern} {p or 'auto'}: max abs error {err:.2e}", flush=True)
