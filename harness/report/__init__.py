"""The report stage: result files (any number of shards, hosts and GPU types) -> merged
rows -> `junit.xml` for the CI's test view and `summary.md` for the PR comment.

Corrupt result lines never stop the report: they are listed in both outputs (an error
test case in the JUnit, a section in the markdown) and the rest is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.report.artifacts import artifact_link
from harness.report.chart import CHART_NAME, ChartResult, write_chart
from harness.report.figures import count_statuses
from harness.report.junit import write_junit
from harness.report.markdown import GITHUB_COMMENT_LIMIT, render_markdown, write_markdown
from harness.results import ReadProblem, ResultRow, merge, read_results, run_statuses

JUNIT_NAME = "junit.xml"
MARKDOWN_NAME = "summary.md"

__all__ = [
    "GITHUB_COMMENT_LIMIT",
    "ReportOutcome",
    "generate",
    "render_markdown",
    "write_junit",
    "write_markdown",
]


@dataclass(frozen=True)
class ReportOutcome:
    """What one report run produced; `counts` is {status: n} over the merged rows."""

    counts: dict[str, int]
    problems: tuple[ReadProblem, ...]
    junit_path: Path
    markdown_path: Path
    rows: tuple[ResultRow, ...]
    duplicates: int = 0
    full_markdown_path: Path | None = None  # written only when summary.md had to be folded
    incomplete: tuple[str, ...] = ()  # runs that were interrupted or lack results
    chart: ChartResult | None = None  # the PNG (or why there is none); None: not asked for


def generate(
    paths: Iterable[str | Path],
    out_dir: str | Path,
    meta: Mapping[str, str] | None = None,
    max_chars: int = GITHUB_COMMENT_LIMIT,
    *,
    png: bool = True,
    artifact_url: str = "",
) -> ReportOutcome:
    """Read result files (directories are searched for *.jsonl), merge duplicates with
    `results.merge`, write out_dir/junit.xml and out_dir/summary.md.

    summary.md is kept under `max_chars` (GitHub's comment limit by default) by leaving
    out the largest tables; the full page then goes to summary-full.md beside it.

    With `png`, out_dir/speedup.png is drawn when matplotlib is importable (the page links
    it, or says it was skipped); `artifact_url` (harness.report.artifacts) turns the
    page's references to the PNG and to summary-full.md into links a PR comment can use.

    Raises FileNotFoundError for a path that does not exist (the CLI turns it into one
    line); corrupt lines are returned as `problems`, never raised."""
    paths = list(paths)
    rows, problems = read_results(paths)
    merged, dropped = merge(rows)
    incomplete = [st.describe() for st in run_statuses(paths, rows) if not st.complete]
    if incomplete:
        # A killed or cancelled run still reports what finished, and says loudly it is partial.
        meta = {**(meta or {}), "incomplete": "; ".join(incomplete)}
        problems = [*problems, *(ReadProblem("run", 0, text) for text in incomplete)]
    out = Path(out_dir)
    chart = write_chart(merged, out / CHART_NAME) if png else None
    if chart is not None and chart.path is not None:
        where = artifact_link(CHART_NAME, artifact_url) or CHART_NAME
        beside = "" if artifact_url else " (beside this report in the CI artifacts)"
        meta = {**(meta or {}), "chart": f"[{CHART_NAME}]({where}): speedup per case{beside}"}
    elif chart is not None and chart.skipped:
        meta = {**(meta or {}), "chart": chart.message}
    junit_path = write_junit(merged, out / JUNIT_NAME, problems=problems)
    md_path, full_path = write_markdown(
        merged,
        out / MARKDOWN_NAME,
        problems=problems,
        meta=meta,
        duplicates=dropped,
        max_chars=max_chars,
        artifact_url=artifact_url,
    )
    return ReportOutcome(
        counts=count_statuses(merged),
        problems=tuple(problems),
        junit_path=junit_path,
        markdown_path=md_path,
        rows=tuple(merged),
        duplicates=dropped,
        full_markdown_path=full_path,
        incomplete=tuple(incomplete),
        chart=chart,
    )
