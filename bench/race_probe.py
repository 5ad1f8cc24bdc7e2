"""The self-check's case N alone, one run (kernel and plan) at a time, each followed by a
device synchronize and a marker line, under whatever tool runs this (compute-sanitizer
racecheck --racecheck-report hazard): a hazard's report then follows the marker of the run
that caused it. The draws are check()'s (kernels.selfcheck.case_runs), so N and the runs
are the self-check's own. Run from a tree's root: python3 bench/race_probe.py N [SEED]."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path.cwd()))

from kernels.selfcheck import case_runs, has_cuda, reference, run_case

ap = argparse.ArgumentParser(description="one self-check case, run by run, for a sanitizer")
ap.add_argument("index", type=int, help="the case's index in the self-check's order (from 0)")
ap.add_argument("seed", type=int, nargs="?", default=0, help="the self-check's seed (default 0)")
args = ap.parse_args()
if args.index < 0:
    ap.error("index must be 0 or more")
if not has_cuda("race_probe"):
    sys.exit(2)
found = False
for i, (c, x, runs) in enumerate(case_runs(False, args.seed, args.index + 1)):
    if i < args.index:
        continue
    found = True
    ref = reference(c, x)
    print(f"case {args.index}: {c}, kv_lens {x['lens'].tolist()}", flush=True)
    for kern, p in runs:
        out = run_case(c, x, kern, p)
        torch.cuda.synchronize()
        err = float((out.float() - ref).abs().max())
        print(f"--- done: {kern} {p or 'auto'}: max abs error {err:.2e}", flush=True)
if not found:
    sys.exit(f"race_probe: no case {args.index}: the self-check has fewer cases")
