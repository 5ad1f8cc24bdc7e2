"""Would the harness's checks pass if P (the softmax numerators) went through an MMA in a
narrower type? A CPU emulation on the matrices' own cases, no GPU.

Why: an fp8 P V (e4m3 P times the cache's e4m3 V) would halve that MMA's tensor time and
drop V's conversion, the lever left for the fp8 q_len 8 targets (kernels/NOTES.md). Whether
it can be correct is a property of the numbers, so it is settled here: every case's output
is computed exactly as the reference does, except that P = exp(s - rowmax) is rounded
first, and checked with the harness's own tolerances (harness.checks). The row maximum is
the whole row's, the most favourable case (a kernel's running maximum only makes P larger).

Modes: exact (no rounding: must equal the reference), fp16 and bf16 (what the kernels'
16-bit MMAs take), e4m3 (P x 448 rounded to e4m3, the normaliser summed from the rounded
values, as fp8 attention kernels scale it), e4m3x2 (P as the sum of two e4m3 parts, i.e.
two fp8 MMAs: the same tensor time as one 16-bit MMA).

    python3 bench/p_precision.py                      # smoke and large_scores, fp8 KV cases
    python3 bench/p_precision.py matrices/spec_decode.toml --max-cases 4 --kv all
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.checks import check_output, passed, tolerances
from harness.inputs import CaseInputs, make_inputs
from harness.matrix import Case, MatrixError, load_matrix
from harness.reference import reference_attention, request_scores

E4M3_MAX = 448.0


def _e4m3(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float8_e4m3fn).float()


def _e4m3x2(x: torch.Tensor) -> torch.Tensor:
    hi = _e4m3(x * E4M3_MAX)
    return (hi + _e4m3(x * E4M3_MAX - hi)) / E4M3_MAX


# mode -> P rounded (float32 in, float32 out, same shape)
MODES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "exact": lambda p: p,
    "fp16": lambda p: p.half().float(),
    "bf16": lambda p: p.bfloat16().float(),
    "e4m3": lambda p: _e4m3(p * E4M3_MAX) / E4M3_MAX,
    "e4m3x2": _e4m3x2,
}


def attention_with_rounded_p(inputs: CaseInputs, mode: str) -> torch.Tensor:
    """The reference's output with P rounded by MODES[mode] before P V and the normaliser."""
    c = inputs.case
    rnd = MODES[mode]
    out = torch.empty(inputs.q.shape, dtype=torch.float32)
    for b in range(len(inputs.kv_lens_host)):
        scores, v = request_scores(inputs, b)
        p = rnd(torch.exp(scores - scores.amax(dim=-1, keepdim=True)))
        out[b * c.q_len : (b + 1) * c.q_len] = torch.einsum(
            "hqk,khd->qhd", p / p.sum(dim=-1, keepdim=True), v
        )
    return out


def check_modes(case: Case, modes: list[str]) -> dict[str, dict]:
    """harness.checks' figures for each mode on one case."""
    inputs = make_inputs(case, "cpu")
    ref = reference_attention(inputs)
    return {m: check_output(attention_with_rounded_p(inputs, m), ref, case) for m in modes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "matrices", nargs="*", default=["matrices/smoke.toml", "matrices/large_scores.toml"]
    )
    ap.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}"
    )
    ap.add_argument("--kv", default="fp8_e4m3", help="the KV dtype of the cases to run, or 'all'")
    ap.add_argument("--max-cases", type=int, default=0, help="per matrix (0: all)")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        print(
            f"p_precision: unknown mode(s) {unknown or args.modes!r}; use {', '.join(MODES)}",
            file=sys.stderr,
        )
        return 2
    for path in args.matrices:
        try:
            matrix = load_matrix(path)
        except (MatrixError, OSError) as exc:
            print(f"p_precision: {exc}", file=sys.stderr)
            return 2
        cases = [c for c in matrix.cases if args.kv == "all" or c.kv_dtype == args.kv]
        cases = cases[: args.max_cases] if args.max_cases > 0 else cases
        if not cases:
            print(f"{path}: no case with kv_dtype {args.kv}")
            continue
        fails: dict[str, list[str]] = {m: [] for m in modes}
        worst: dict[str, float] = dict.fromkeys(modes, 0.0)
        for i, case in enumerate(cases, 1):
            print(f"\r{path}: case {i}/{len(cases)}", end="", file=sys.stderr, flush=True)
            for m, fig in check_modes(case, modes).items():
                worst[m] = max(worst[m], fig["max_abs_err"] or 0.0)
                if not passed(fig):
                    fails[m].append(
                        f"{case.id} ({fig['mismatches']} off, max |err| {fig['max_abs_err']:.3g})"
                    )
        print(file=sys.stderr)
        tols = sorted({tolerances(c)[1] for c in cases})
        print(f"{path}: {len(cases)} cases, atol = rtol {' / '.join(f'{t:g}' for t in tols)}")
        for m in modes:
            line = f"  {m:7s} {len(fails[m])}/{len(cases)} fail, worst max |err| {worst[m]:.3g}"
            print(line + (f"; first: {fails[m][0]}" if fails[m] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
