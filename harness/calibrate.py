"""A/A calibration: time the same kernel against itself, several runs over a matrix, and
measure how often the verdict rule cries wolf and how far separate runs drift.

Each run is a normal `python -m harness run` with `--ab B:B`, so the numbers come from
exactly the code path that judges PRs. The noise profile it writes sets the across-run
threshold that `compare` uses on this runner type.
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from harness.report.compare import compare_runs
from harness.results import ResultRow, read_results

MIN_IN_PROCESS = 0.005
MIN_ACROSS_RUNS = 0.01


@dataclass(frozen=True)
class Calibration:
    device: str
    backend: str
    runs: int
    threshold: float
    aa_verdicts: dict[str, int]  # in-process A/A verdict counts over all runs and cases
    false_verdict_rate: float
    median_halfwidth: float
    p95_halfwidth: float
    across_abs_diffs: tuple[float, ...]
    case_thresholds: dict[str, float]
    table: str

    def profile(self) -> dict:
        across = max(MIN_ACROSS_RUNS, 2 * max(self.across_abs_diffs, default=0.0))
        return {
            "device": self.device,
            "backend": self.backend,
            "runs": self.runs,
            "in_process": {
                "threshold": max(MIN_IN_PROCESS, 4 * self.p95_halfwidth),
                "false_verdict_rate": self.false_verdict_rate,
                "median_halfwidth": self.median_halfwidth,
                "p95_halfwidth": self.p95_halfwidth,
            },
            "across_runs": {
                "threshold": across,
                "median_abs_diff": statistics.median(self.across_abs_diffs or [0.0]),
                "max_abs_diff": max(self.across_abs_diffs, default=0.0),
            },
            "cases": self.case_thresholds,
        }


def run_once(
    matrices: Sequence[str], backend: str, threshold: float, out: Path, extra: Sequence[str]
) -> int:
    cmd = [sys.executable, "-m", "harness", "run", "--backends", backend]
    for m in matrices:
        cmd += ["--matrix", m]
    cmd += ["--ab", f"{backend}:{backend}", "--threshold", str(threshold)]
    cmd += ["--results-dir", str(out / "results"), "--out", str(out), *extra]
    return subprocess.run(cmd).returncode


def _p95(xs: Sequence[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.95 * len(xs)))] if xs else 0.0


def summarize(runs: Sequence[Sequence[ResultRow]], backend: str, threshold: float) -> Calibration:
    verdicts: dict[str, int] = {}
    halfwidths: list[float] = []
    per_case: dict[str, list[str]] = {}
    device = ""
    for i, rows in enumerate(runs):
        for r in rows:
            if r.role != "comparison" or not r.comparison:
                continue
            device = r.device_name
            c = r.comparison
            verdicts[c["verdict"]] = verdicts.get(c["verdict"], 0) + 1
            halfwidths.append((c["ci_high"] - c["ci_low"]) / 2)
            per_case.setdefault(r.case_id, [""] * len(runs))[i] = (
                f"{c['ratio']:.4f} [{c['ci_low']:.4f}, {c['ci_high']:.4f}] {c['verdict']}"
            )
    diffs: dict[str, list[float]] = {}
    for a, b in itertools.combinations(runs, 2):
        for r in compare_runs(a, b, threshold=threshold).rows:
            diffs.setdefault(r.case_id, []).append(abs(r.comparison["ratio"] - 1))
    total = sum(verdicts.values())
    false = verdicts.get("faster", 0) + verdicts.get("slower", 0)
    case_thr = {
        f"{cid}|{backend}": max(MIN_ACROSS_RUNS, 2 * max(d)) for cid, d in sorted(diffs.items())
    }
    body = [
        [cid, *cells, f"{max(diffs.get(cid, [0.0])):.2%}"]
        for cid, cells in sorted(per_case.items())
    ]
    headers = ["case", *[f"run {i + 1}: A/A ratio [95% CI] verdict" for i in range(len(runs))]]
    table = tabulate(body, headers=[*headers, "max drift across runs"], tablefmt="github")
    return Calibration(
        device=device,
        backend=backend,
        runs=len(runs),
        threshold=threshold,
        aa_verdicts=verdicts,
        false_verdict_rate=false / total if total else 0.0,
        median_halfwidth=statistics.median(halfwidths) if halfwidths else 0.0,
        p95_halfwidth=_p95(halfwidths),
        across_abs_diffs=tuple(x for d in diffs.values() for x in d),
        case_thresholds=case_thr,
        table=table,
    )


def calibrate(
    matrices: Sequence[str],
    backend: str,
    runs: int,
    threshold: float,
    out: Path,
    extra: Sequence[str] = (),
) -> Calibration:
    """Run the A/A matrix `runs` times and summarise; raises RuntimeError if a run broke."""
    run_rows = []
    for i in range(runs):
        run_dir = out / f"run{i + 1}"
        rc = run_once(matrices, backend, threshold, run_dir, extra)
        if rc not in (0, 1):
            raise RuntimeError(f"calibration run {i + 1} failed with exit code {rc}")
        rows, _ = read_results([run_dir / "results"])
        run_rows.append(rows)
    cal = summarize(run_rows, backend, threshold)
    (out / "noise-profile.json").write_text(json.dumps(cal.profile(), indent=2) + "\n")
    (out / "calibration.md").write_text(_markdown(cal))
    return cal


def _markdown(cal: Calibration) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in sorted(cal.aa_verdicts.items()))
    return (
        f"# A/A calibration: {cal.backend} on {cal.device}\n\n"
        f"{cal.runs} run(s), in-process threshold ±{cal.threshold:.1%}: {counts}; "
        f"false-verdict rate {cal.false_verdict_rate:.1%}; CI half-width median "
        f"{cal.median_halfwidth:.3%}, p95 {cal.p95_halfwidth:.3%}; max drift between runs "
        f"{max(cal.across_abs_diffs, default=0.0):.2%}.\n\n{cal.table}\n"
    )
