"""The report stage: result files (any number of shards, hosts and GPU types) -> merged
rows -> `junit.xml` for the CI's test view and `summary.md` for the PR comment.

Corrupt result lines never stop the report: they are listed in both outputs (an error
test case in the JUnit, a section in the markdown) and the rest is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.report.figures import count_statuses
from harness.report.junit import write_junit
from harness.report.markdown import render_markdown, write_markdown
from harness.results import ReadProblem, ResultRow, merge, read_results

JUNIT_NAME = "junit.xml"
MARKDOWN_NAME = "summary.md"

__all__ = ["ReportOutcome", "generate", "render_markdown", "write_junit", "write_markdown"]


@dataclass(frozen=True)
class ReportOutcome:
    """What one report run produced; `counts` is {status: n} over the merged rows."""

    counts: dict[str, int]
    problems: tuple[ReadProblem, ...]
    junit_path: Path
    markdown_path: Path
    rows: tuple[ResultRow, ...]
    duplicates: int = 0


def generate(
    paths: Iterable[str | Path], out_dir: str | Path, meta: Mapping[str, str] | None = None
) -> ReportOutcome:
    """Read result files (directories are searched for *.jsonl), merge duplicates with
    `results.merge`, write out_dir/junit.xml and out_dir/summary.md.

    Raises FileNotFoundError for a path that does not exist (the CLI turns it into one
    line); corrupt lines are returned as `problems`, never raised."""
    rows, problems = read_results(paths)
    merged, dropped = merge(rows)
    out = Path(out_dir)
    junit_path = write_junit(merged, out / JUNIT_NAME, problems=problems)
    md_path = write_markdown(
        merged, out / MARKDOWN_NAME, problems=problems, meta=meta, duplicates=dropped
    )
    return ReportOutcome(
        counts=count_statuses(merged),
        problems=tuple(problems),
        junit_path=junit_path,
        markdown_path=md_path,
        rows=tuple(merged),
        duplicates=dropped,
    )
