"""Across-run comparison: two result sets (base = target branch, head = this PR) matched
case by case, each pair judged with a bootstrap ratio of medians from the stored samples.

Two separate runs differ by more than one interleaved run does (the GPU, its clocks and
its neighbours change), so the threshold here comes from a calibrated noise profile
(`python -m harness calibrate`), else a wide default, and every verdict says so. Runs
on different GPUs are refused unless explicitly allowed, then labelled cross-machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.results import ResultRow, merge
from harness.stats import ratio_of_medians, verdict

ACROSS_RUN_DEFAULT_THRESHOLD = 0.05  # uncalibrated: separate runs drift by up to ~5 %
FINGERPRINT_KEYS = ("driver", "cuda", "torch")


@dataclass(frozen=True)
class NoiseProfile:
    """Thresholds measured by A/A calibration on one runner type."""

    device: str
    across_runs: float
    in_process: float
    cases: Mapping[str, float]

    def threshold_for(self, case_id: str, backend: str) -> float:
        return float(self.cases.get(f"{case_id}|{backend}", self.across_runs))

    @classmethod
    def load(cls, path: Path) -> NoiseProfile:
        try:
            obj = json.loads(Path(path).read_text())
            cases = obj.get("cases", {})
            if not isinstance(cases, dict):
                raise ValueError("'cases' must be an object of case|backend -> threshold")
            return cls(
                device=str(obj["device"]),
                across_runs=_fraction(obj["across_runs"]["threshold"], "across_runs.threshold"),
                in_process=_fraction(obj["in_process"]["threshold"], "in_process.threshold"),
                cases={str(k): _fraction(v, f"cases[{k}]") for k, v in cases.items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: not a readable noise profile ({exc})") from None


def _fraction(value: Any, what: str) -> float:
    """A threshold is a finite fraction in (0, 1): a negative one would call identical
    runs regressions, NaN would make every verdict inconclusive."""
    x = float(value)
    if not (0 < x < 1) or math.isnan(x):
        raise ValueError(f"{what} = {value!r} is not a fraction in (0, 1)")
    return x


@dataclass(frozen=True)
class CompareOutcome:
    rows: tuple[ResultRow, ...]  # role "comparison", one per matched case x backend x device
    unmatched_base: tuple[str, ...]
    unmatched_head: tuple[str, ...]
    refused: tuple[str, ...]  # pairs on different GPUs (without --allow-cross-machine)

    @property
    def regressions(self) -> list[ResultRow]:
        return [r for r in self.rows if r.comparison.get("verdict") == "slower"]


def fingerprint(row: ResultRow) -> dict[str, str]:
    return {k: str(row.env.get(k, "")) for k in FINGERPRINT_KEYS}


def _label(row: ResultRow) -> str:
    return f"{row.case_id}[{row.backend}] on {row.device_name}"


def _timed(rows: Iterable[ResultRow]) -> dict[tuple[str, str, str, str], ResultRow]:
    """Timed rows by (matrix, case, backend, device): two matrices may share a case id."""
    out = {}
    for r in rows:
        if r.role != "comparison" and r.status == "passed" and r.timing.get("samples_ms"):
            out[(r.matrix, r.case_id, r.backend, r.device_name)] = r
    return out


def compare_runs(
    base: Iterable[ResultRow],
    head: Iterable[ResultRow],
    *,
    threshold: float | None = None,
    profile: NoiseProfile | None = None,
    allow_cross_machine: bool = False,
) -> CompareOutcome:
    """Judge head against base for every timed row both sides have."""
    b_rows = _timed(merge(base)[0])
    h_rows = _timed(merge(head)[0])
    by_case_backend = {k[:3]: v for k, v in b_rows.items()}
    out: list[ResultRow] = []
    refused: list[str] = []
    matched_base: set[tuple[str, str, str, str]] = set()
    unmatched_head: list[str] = []
    for key, h in sorted(h_rows.items()):
        b = b_rows.get(key)
        cross = False
        if b is None:
            other = by_case_backend.get(key[:3])
            if other is None:
                unmatched_head.append(_label(h))
                continue
            if not allow_cross_machine:
                refused.append(f"{_label(h)} vs {other.device_name}")
                matched_base.add((other.matrix, other.case_id, other.backend, other.device_name))
                continue
            b, cross = other, True
        matched_base.add((b.matrix, b.case_id, b.backend, b.device_name))
        out.append(_judge(b, h, threshold, profile, cross))
    unmatched_base = [_label(r) for k, r in sorted(b_rows.items()) if k not in matched_base]
    return CompareOutcome(tuple(out), tuple(unmatched_base), tuple(unmatched_head), tuple(refused))


def _judge(
    b: ResultRow,
    h: ResultRow,
    threshold: float | None,
    profile: NoiseProfile | None,
    cross: bool,
) -> ResultRow:
    est = ratio_of_medians(b.timing["samples_ms"], h.timing["samples_ms"], paired=False)
    if threshold is not None:
        thr, source = threshold, "given"
    elif profile is not None and profile.device == h.device_name:
        thr, source = profile.threshold_for(h.case_id, h.backend), "calibrated profile"
    else:
        thr, source = ACROSS_RUN_DEFAULT_THRESHOLD, "uncalibrated default"
    v = verdict(est, thr)
    env_diff = {
        k: (fingerprint(b)[k], fingerprint(h)[k])
        for k in FINGERPRINT_KEYS
        if fingerprint(b)[k] != fingerprint(h)[k]
    }
    labels = ["across runs"]
    if cross:
        labels.append(f"cross-machine ({b.device_name} vs {h.device_name})")
    if env_diff:
        labels.append(
            "environment differs: " + ", ".join(f"{k} {x}->{y}" for k, (x, y) in env_diff.items())
        )
    comparison: dict[str, Any] = {
        "a": f"{b.backend}@{_short(b.env.get('git_commit', ''))}",
        "b": f"{h.backend}@{_short(h.env.get('git_commit', ''))}",
        "ratio": est.ratio,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "confidence": est.confidence,
        "verdict": v,
        "threshold": thr,
        "threshold_source": source,
        "labels": labels,
        "a_median_ms": b.timing.get("median_ms"),
        "b_median_ms": h.timing.get("median_ms"),
    }
    msg = (
        f"head/base = {est.ratio:.4f} [{est.ci_low:.4f}, {est.ci_high:.4f}] "
        f"({est.confidence:.0%} CI): {v} at ±{thr:.1%} ({source}; {'; '.join(labels)})"
    )
    return replace(
        h,
        backend=f"{h.backend}:base-vs-head",
        role="comparison",
        status="failed" if v == "slower" else "passed",
        message=msg,
        comparison=comparison,
    )


def _short(commit: str) -> str:
    return commit[:10] if commit else "?"
