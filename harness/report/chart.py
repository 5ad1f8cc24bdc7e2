"""Speedup per case as a PNG (reports/speedup.png), one panel per device and backend
pair, for people who would rather look than read; kept as a CI artifact beside the
markdown, which links it.

matplotlib is optional: without it the report is still written and says the PNG was
skipped. We draw with the object API on an Agg canvas (never pyplot), so nothing global
(backend, open figures) changes in the process that called us.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.report.figures import (
    by_device,
    case_order_key,
    commit_of,
    device_label,
    family,
    short_commit,
    timing_of,
)
from harness.results import ResultRow

CHART_NAME = "speedup.png"
INSTALL_HINT = "pip install 'decode-attn-harness[report]' (matplotlib)"


@dataclass(frozen=True)
class Bar:
    """speedup = baseline median / opt median; low/high from the two 95% intervals
    (baseline low / opt high, baseline high / opt low: conservative)."""

    case_id: str
    speedup: float
    low: float
    high: float


@dataclass(frozen=True)
class Series:
    title: str
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class ChartResult:
    """`path` is None when no PNG was written; `message` says why, or what was drawn."""

    path: Path | None
    message: str
    skipped: bool = False  # there was something to draw, but no PNG could be made


def _bar(case_id: str, base: ResultRow, opt: ResultRow) -> Bar | None:
    tb, to = timing_of(base), timing_of(opt)
    if tb is None or to is None:
        return None
    low = tb.ci_low_ms / to.ci_high_ms if to.ci_high_ms > 0 else math.nan
    high = tb.ci_high_ms / to.ci_low_ms if to.ci_low_ms > 0 else math.nan
    s = tb.median_ms / to.median_ms
    return Bar(case_id, s, min(low, s), max(high, s))


def speedup_series(rows: Iterable[ResultRow]) -> list[Series]:
    """The same pairs as the markdown tables: per device, commit and backend family,
    every baseline-role backend against every grouped-role one, cases in matrix order."""
    out: list[Series] = []
    for _, group in by_device(rows):
        commits = sorted({commit_of(r) for r in group})
        for commit in commits:
            crow = [
                r for r in group if commit_of(r) == commit and r.role in ("baseline", "grouped")
            ]
            for fam in sorted({family(r.backend) for r in crow}):
                frows = [r for r in crow if family(r.backend) == fam]
                by_case: dict[str, dict[str, ResultRow]] = defaultdict(dict)
                order: dict[str, tuple] = {}
                for r in frows:
                    by_case[r.case_id][r.backend] = r
                    order.setdefault(r.case_id, case_order_key(r))
                bases = sorted({r.backend for r in frows if r.role == "baseline"})
                opts = sorted({r.backend for r in frows if r.role == "grouped"})
                for b in bases:
                    for o in opts:
                        bars = [
                            bar
                            for cid in sorted(by_case, key=order.__getitem__)
                            if b in by_case[cid]
                            and o in by_case[cid]
                            and (bar := _bar(cid, by_case[cid][b], by_case[cid][o]))
                        ]
                        if bars:
                            title = f"{device_label(frows[0])}: {b} → {o}"
                            if len(commits) > 1:
                                title += f" @ {short_commit(commit)}"
                            out.append(Series(title, tuple(bars)))
    return out


def _colour(bar: Bar) -> str:
    """Green when the whole interval says faster, red when it says slower, else grey."""
    if bar.low > 1.0:
        return "#2e7d32"
    if bar.high < 1.0:
        return "#c62828"
    return "#9e9e9e"


def render_png(series: list[Series], path: Path) -> Path:
    """Horizontal bars (case ids are long), a dashed line at 1x, the value at each bar.
    Raises ImportError when matplotlib is missing."""
    import matplotlib  # noqa: F401  (a missing matplotlib fails here, before any drawing)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    heights = [0.9 + 0.32 * len(s.bars) for s in series]
    fig = Figure(figsize=(11, sum(heights) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(series), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, s in zip(axes, series, strict=True):
        y = list(range(len(s.bars)))
        values = [b.speedup for b in s.bars]
        err_lo = [max(0.0, b.speedup - b.low) if math.isfinite(b.low) else 0.0 for b in s.bars]
        err_hi = [max(0.0, b.high - b.speedup) if math.isfinite(b.high) else 0.0 for b in s.bars]
        ax.barh(
            y,
            values,
            xerr=[err_lo, err_hi],
            color=[_colour(b) for b in s.bars],
            error_kw={"ecolor": "#424242", "capsize": 2, "linewidth": 0.8},
            height=0.6,
        )
        for yi, b in zip(y, s.bars, strict=True):
            end = b.high if math.isfinite(b.high) else b.speedup  # right of the whisker
            ax.text(end, yi, f"  {b.speedup:.2f}x", va="center", ha="left", fontsize=8)
        ax.axvline(1.0, color="#000000", linestyle="--", linewidth=0.9)
        ax.set_yticks(y, [b.case_id for b in s.bars], fontsize=8)
        ax.set_ylim(len(y) - 0.2, -0.8)  # first case on top, as in the table
        top = max([1.0, *values, *(b.high for b in s.bars if math.isfinite(b.high))])
        ax.set_xlim(0, top * 1.18)
        ax.set_xlabel("speedup (baseline median / opt median); > 1 = opt faster", fontsize=8)
        ax.set_title(s.title, fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(
        "Speedup per case (whiskers: from the two 95% intervals; green/red: "
        "whole interval faster/slower)",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def write_chart(rows: Iterable[ResultRow], path: str | Path) -> ChartResult:
    """Write the PNG when there is something to draw and matplotlib is importable; a
    stale PNG from an earlier report is removed either way, so a link never shows old
    numbers."""
    path = Path(path)
    series = speedup_series(rows)
    if not series:
        path.unlink(missing_ok=True)
        return ChartResult(None, "no case was timed on both sides of a pair; no PNG")
    try:
        render_png(series, path)
    except ImportError:
        path.unlink(missing_ok=True)
        msg = f"PNG skipped: matplotlib is not installed ({INSTALL_HINT})"
        return ChartResult(None, msg, skipped=True)
    except Exception as exc:  # a drawing bug must never cost the report itself
        path.unlink(missing_ok=True)
        msg = f"PNG skipped: drawing failed ({type(exc).__name__}: {exc})"
        return ChartResult(None, msg, skipped=True)
    bars = sum(len(s.bars) for s in series)
    return ChartResult(path, f"{bars} bars in {len(series)} panel(s)")
