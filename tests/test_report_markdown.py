"""The markdown summary (the seed's table, headline, failures, skips, problems) and the
end-to-end `generate` over result files from two devices with a corrupt line."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from factories import seed_row
from junitparser import JUnitXml

from harness.report import generate
from harness.report.figures import fmt_ms, fmt_pct, fmt_tbps
from harness.report.markdown import FOLD_ROWS, SEED_COLUMNS, render_markdown
from harness.results import ReadProblem, ResultRow, ResultWriter

H100 = {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "sm_count": 132}
CPU = {"kind": "cpu", "name": "Test Xeon CPU", "sm_count": 16}
COMMIT = "0123456789abcdef0123456789abcdef01234567"
QWEN = "Qwen3-480B-fp8_e4m3"


def make_row(
    batch: int, q_len: int, backend: str, status: str = "passed", *, device: dict = H100, **kw
) -> ResultRow:
    return seed_row(
        batch,
        q_len,
        backend,
        status,
        device=device,
        commit=kw.pop("commit", COMMIT),
        ci_rel=0.02,
        n=150,
        duration=0.5,
        **kw,
    )


def sample_rows() -> list[ResultRow]:
    return [
        make_row(8, 2, "cuda_baseline", median=0.057, tbps=1.9),
        make_row(8, 2, "cuda_grouped", median=0.046, tbps=2.4, plan="tile=32 splits=4"),
        make_row(16, 2, "cuda_baseline", median=0.110),
        make_row(
            16,
            2,
            "cuda_grouped",
            "failed",
            message="40 of 32768 elements outside rtol=0.04 atol=0.04 (allowed 1); "
            "max abs err 0.5; 3 NaN (unwritten or invalid)",
        ),
        make_row(8, 4, "cuda_baseline", median=0.100),
        make_row(8, 4, "cuda_grouped", "error", message="RuntimeError: illegal memory access"),
        make_row(8, 2, "torch_baseline", median=0.200),
        make_row(8, 2, "torch_grouped", median=0.100),
        make_row(16, 2, "torch_baseline", "skipped", message="too large for the stand-in"),
        make_row(16, 2, "torch_grouped", "skipped", message="too large for the stand-in"),
        make_row(8, 2, "torch_baseline", device=CPU, median=12.0, tbps=0.004),
        make_row(8, 2, "torch_grouped", device=CPU, median=4.0, tbps=0.012),
        make_row(8, 2, "cuda_baseline", "skipped", device=CPU, message="no CUDA device"),
        make_row(8, 2, "cuda_grouped", "skipped", device=CPU, message="no CUDA device"),
    ]


PROBLEMS = [ReadProblem("reports/results/run1-gw1.jsonl", 3, "not valid JSON: truncated")]


def _section(md: str, heading_start: str) -> str:
    """The text from a heading line starting with `heading_start` up to the next heading of
    the same or a higher level."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading_start))
    level = len(heading_start) - len(heading_start.lstrip("#"))
    end = next(
        (
            j
            for j in range(start + 1, len(lines))
            if lines[j].startswith("#") and len(lines[j]) - len(lines[j].lstrip("#")) <= level
        ),
        len(lines),
    )
    return "\n".join(lines[start:end])


def _table(text: str) -> tuple[list[str], list[list[str]]]:
    """First markdown table in `text` as (header cells, body rows of cells)."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in rows]
    return cells[0], cells[2:]


def test_headline_names_commit_devices_counts_and_problems() -> None:
    md = render_markdown(sample_rows(), problems=PROBLEMS, meta={"target_branch": "main"})
    head = md.split("\n## ", 1)[0]
    assert "`0123456789ab`" in head and "target branch** `main`" in head
    assert "NVIDIA H100 80GB HBM3" in head
    assert "Test Xeon CPU — timed on CPU (no GPU)" in head
    assert "8 passed · 1 failed · 4 skipped · 1 error (14 case x backend results)" in head
    assert "1 corrupt or unreadable line(s) skipped" in head


def test_cpu_only_run_says_so_plainly() -> None:
    cpu_rows = [r for r in sample_rows() if r.device["kind"] == "cpu"]
    head = render_markdown(cpu_rows).split("\n## ", 1)[0]
    assert "timed on CPU (no GPU)" in head
    assert "GPUs" not in head
    assert "Result-file problems** none" in head


def test_seed_table_shape_order_and_numbers() -> None:
    md = render_markdown(sample_rows())
    cuda = _section(_section(md, "## NVIDIA H100"), "### cuda")
    header, body = _table(cuda)
    assert tuple(header[:4]) == SEED_COLUMNS
    assert header[4:8] == ["± CI (opt)", "TB/s (opt)", "% of copy BW (opt)", "plan"]
    # case order (batch 8 before 16, as in the matrix), not the lexical order of the ids
    assert [r[0] for r in body] == [
        f"{QWEN}-batchSize8-seqLenQ2",
        f"{QWEN}-batchSize8-seqLenQ4",
        f"{QWEN}-batchSize16-seqLenQ2",
    ]
    b8q2, b8q4, b16q2 = body
    assert b8q2[:4] == [f"{QWEN}-batchSize8-seqLenQ2", "0.057", "0.046", "1.24"]
    assert b8q2[4:8] == ["±2% n=150", "2.4", "80%", "tile=32 splits=4"]
    assert b8q4[1:4] == ["0.100", "error", "—"]
    assert b16q2[1:4] == ["0.110", "failed", "—"]


def test_each_family_and_device_gets_its_own_table() -> None:
    md = render_markdown(sample_rows())
    h100 = _section(md, "## NVIDIA H100")
    _, torch_body = _table(_section(h100, "### torch"))
    assert torch_body[0][1:4] == ["0.200", "0.100", "2.00"]
    assert torch_body[1][1:4] == ["skipped", "skipped", "—"]
    cpu = _section(md, "## Test Xeon CPU")
    assert "timed on CPU (no GPU)" in cpu.splitlines()[0]
    _, cpu_body = _table(_section(cpu, "### torch"))
    assert cpu_body[0][1:8] == ["12.000", "4.000", "3.00", "±2% n=150", "0.012", "60%", "—"]
    assert "0.057" not in cpu  # no figure leaks across devices
    # a family that only skipped here gets one line, not a table of "skipped"
    cuda_on_cpu = _section(cpu, "### cuda")
    assert "All 1 cases skipped" in cuda_on_cpu and "|" not in cuda_on_cpu


def test_failures_section_lists_failed_and_error_with_figures() -> None:
    md = render_markdown(sample_rows())
    header, body = _table(_section(md, "## Failures and errors"))
    assert header == ["device", "test case", "backend", "status", "message"]
    assert {(r[1], r[3]) for r in body} == {
        (f"{QWEN}-batchSize16-seqLenQ2", "failed"),
        (f"{QWEN}-batchSize8-seqLenQ4", "error"),
    }
    failed = next(r for r in body if r[3] == "failed")
    assert "40 of 32768 elements" in failed[4] and "max abs err 0.5" in failed[4]


def test_skips_are_summarised_per_reason() -> None:
    md = render_markdown(sample_rows())
    section = _section(md, "## Skipped")
    assert section.startswith("## Skipped (4)")
    _, body = _table(section)
    assert [(r[0], r[1]) for r in body] == [
        ("no CUDA device", "2"),
        ("too large for the stand-in", "2"),
    ]
    assert "batchSize" not in section  # a count per reason, not a line per skip


def test_problems_are_listed_with_file_and_line() -> None:
    md = render_markdown(sample_rows(), problems=PROBLEMS)
    assert "- `reports/results/run1-gw1.jsonl:3`: not valid JSON: truncated" in md
    assert "## Result-file problems" not in render_markdown(sample_rows())


def test_long_tables_fold_and_get_a_chart() -> None:
    rows = []
    for batch in range(1, FOLD_ROWS + 2):
        rows += [
            make_row(batch, 2, "cuda_baseline", median=0.01 * (batch + 1)),
            make_row(batch, 2, "cuda_grouped", median=0.01 * batch),
        ]
    md = render_markdown(rows)
    assert "<details><summary>" in md and "</details>" in md
    assert "```mermaid\nxychart-beta" in md
    assert "bar [2.00, 1.50, 1.33," in md
    short = render_markdown(sample_rows())
    assert "<details>" not in short


def test_pipes_in_cells_do_not_break_the_table() -> None:
    rows = [
        make_row(8, 2, "cuda_baseline", median=0.05),
        make_row(8, 2, "cuda_grouped", median=0.04, plan="tile=16|splits=2"),
    ]
    table = _section(render_markdown(rows), "### cuda")
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert len({len(re.findall(r"(?<!\\)\|", line)) for line in lines}) == 1
    assert "tile=16\\|splits=2" in table


def test_best_peer_column_when_a_peer_ran() -> None:
    rows = [*sample_rows(), make_row(8, 2, "flashinfer_decode", median=0.040, tbps=2.5)]
    header, body = _table(_section(render_markdown(rows), "### cuda"))
    assert header[-2:] == ["best peer (µs, TB/s, which)", "opt / best peer"]
    assert body[0][-2] == "40.0 µs, 2.5 TB/s, flashinfer_decode"
    assert "best peer" not in render_markdown(sample_rows())


def test_two_commits_on_one_device_are_not_mixed_in_one_table() -> None:
    rows = [
        make_row(8, 2, "cuda_baseline", median=0.06),
        make_row(8, 2, "cuda_grouped", median=0.05),
        make_row(8, 2, "cuda_baseline", median=0.06, commit="f" * 40),
        make_row(8, 2, "cuda_grouped", median=0.03, commit="f" * 40),
    ]
    md = render_markdown(rows)
    assert "### commit `0123456789ab`" in md and "### commit `ffffffffffff`" in md
    speedups = [
        _table(_section(md, f"### commit `{c}`"))[1][0][3] for c in ("0123456789ab", "ffffffffffff")
    ]
    assert speedups == ["1.20", "2.00"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0571, "0.057"),
        (0.0456, "0.046"),
        (12.34567, "12.346"),
        (0.00512, "0.00512"),
        (1234.5, "1234.5"),
    ],
)
def test_time_format_matches_the_seed(value: float, text: str) -> None:
    assert fmt_ms(value) == text


@pytest.mark.parametrize(
    ("value", "tbps", "pct"),
    [
        (2.4, "2.4", "2.4%"),
        (0.0000117, "0.0000117", "0.000012%"),
        (80.4, "80.4", "80%"),
        (3.44, "3.44", "3.4%"),
        (2900.4, "2900", "2900%"),
    ],
)
def test_bandwidth_and_percent_formats_never_use_exponents(
    value: float, tbps: str, pct: str
) -> None:
    assert (fmt_tbps(value), fmt_pct(value)) == (tbps, pct)


def _write(path: Path, rows: list[ResultRow]) -> None:
    writer = ResultWriter(path)
    for row in rows:
        writer.write(row)


def test_generate_merges_two_devices_and_reports_a_corrupt_line(tmp_path: Path) -> None:
    rows = sample_rows()
    gpu_rows = [r for r in rows if r.device["kind"] == "cuda"]
    cpu_rows = [r for r in rows if r.device["kind"] == "cpu"]
    _write(tmp_path / "h100" / "run1-gw0.jsonl", gpu_rows)
    # a re-run of one case on the same commit: a duplicate the merge must drop
    _write(tmp_path / "h100" / "run1-gw1.jsonl", [replace(gpu_rows[0], timestamp=1.6e9)])
    cpu_file = tmp_path / "cpu" / "run2-main.jsonl"
    _write(cpu_file, cpu_rows)
    with open(cpu_file, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"schema": 1, "case_id": "x"})[:20] + "\n")  # truncated line

    out = generate(
        [tmp_path / "h100", cpu_file],
        tmp_path / "reports",
        meta={"commit": COMMIT, "target_branch": "main"},
    )

    assert out.counts == {"passed": 8, "failed": 1, "skipped": 4, "error": 1}
    assert out.duplicates == 1 and len(out.rows) == len(rows)
    assert [(Path(p.path).name, p.line) for p in out.problems] == [("run2-main.jsonl", 5)]
    assert out.junit_path == tmp_path / "reports" / "junit.xml"
    md = out.markdown_path.read_text(encoding="utf-8")
    assert "run2-main.jsonl:5" in md and "**Duplicates merged** 1" in md
    _, body = _table(_section(_section(md, "## NVIDIA H100"), "### cuda"))
    assert body[0][1:4] == ["0.057", "0.046", "1.24"]
    suites = {s.name: s for s in JUnitXml.fromfile(str(out.junit_path))}
    assert set(suites) == {"NVIDIA H100 80GB HBM3", "Test Xeon CPU", "result files"}
    assert suites["result files"].errors == 1
    assert sum(s.tests for s in suites.values()) == len(rows) + 1


def test_generate_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such results file"):
        generate([tmp_path / "nope"], tmp_path / "out")


def _many_rows(n: int) -> list[ResultRow]:
    rows = []
    for batch in range(1, n + 1):
        rows += [
            make_row(batch, 2, "cuda_baseline", median=0.02 * batch, plan="x" * 40),
            make_row(batch, 2, "cuda_grouped", median=0.01 * batch, plan="y" * 40),
        ]
    return rows


def test_size_limit_leaves_out_the_largest_tables_and_says_so() -> None:
    rows = _many_rows(200) + sample_rows()
    full = render_markdown(rows)
    assert len(full) > 30_000
    small = render_markdown(rows, max_chars=30_000, artifact="summary-full.md")
    assert len(small) <= 30_000
    assert "**Folded**" in small and "`summary-full.md`" in small
    assert "left out to fit the comment size limit" in small
    assert "408 passed · 1 failed" in small  # the headline still counts every row
    assert f"{len(rows)} case x backend results" in small
    assert "## Failures and errors" in small  # small sections survive
    assert render_markdown(sample_rows(), max_chars=30_000) == render_markdown(sample_rows())


def test_generate_writes_the_full_page_beside_a_folded_summary(tmp_path: Path) -> None:
    _write(tmp_path / "res" / "a.jsonl", _many_rows(200))
    out = generate([tmp_path / "res"], tmp_path / "rep", max_chars=20_000, png=False)
    assert out.full_markdown_path == tmp_path / "rep" / "summary-full.md"
    assert len(out.markdown_path.read_text(encoding="utf-8")) <= 20_000
    full = out.full_markdown_path.read_text(encoding="utf-8")
    assert f"{QWEN}-batchSize200-seqLenQ2" in full and "**Folded**" not in full
    small = generate([tmp_path / "res"], tmp_path / "rep2", png=False)
    assert small.full_markdown_path is None
    assert not (tmp_path / "rep2" / "summary-full.md").exists()


def _verdict_row(batch: int, verdict: str, ratio: float) -> ResultRow:
    row = make_row(batch, 2, "cuda_baseline-vs-cuda_grouped", median=0.05)
    return replace(
        row,
        role="comparison",
        status="failed" if verdict == "slower" else "passed",
        message=f"cuda_grouped / cuda_baseline = {ratio}: {verdict}",
        comparison={
            "a": "cuda_baseline",
            "b": "cuda_grouped",
            "ratio": ratio,
            "ci_low": ratio - 0.01,
            "ci_high": ratio + 0.01,
            "confidence": 0.95,
            "verdict": verdict,
            "threshold": 0.02,
        },
    )


def test_comparisons_section_lists_regressions_first() -> None:
    rows = [*sample_rows(), _verdict_row(8, "faster", 0.81), _verdict_row(16, "slower", 1.07)]
    md = render_markdown(rows)
    head = md.split("\n## ", 1)[0]
    assert "**Regressions** 1 slower of 2 comparisons (1 slower, 1 faster" in head
    _, body = _table(_section(md, "## Comparisons"))
    assert [(r[1], r[4]) for r in body] == [
        (f"{QWEN}-batchSize16-seqLenQ2", "**slower**"),
        (f"{QWEN}-batchSize8-seqLenQ2", "faster"),
    ]
    assert body[0][3] == "1.070 [1.060, 1.080]" and body[0][5] == "±2.0%"
    # a slow verdict is a regression, not a wrong answer, and never enters the seed table
    assert "base-vs" not in _section(md, "## Failures and errors")
    assert "-vs-" not in _section(md, "## NVIDIA H100")
    assert "Regressions" not in render_markdown(sample_rows())


def test_device_section_lists_the_gpus_of_a_sharded_run() -> None:
    def on(row: ResultRow, uuid: str, visible: str, worker: str) -> ResultRow:
        return replace(
            row, device={**row.device, "uuid": uuid, "visible_devices": visible}, worker=worker
        )

    rows = [
        on(make_row(8, 2, "cuda_baseline", median=0.057), "GPU-c2db4247-4ef4", "0", "gw0"),
        on(make_row(8, 2, "cuda_grouped", median=0.046), "GPU-4b828b72-0b46", "1", "gw1"),
        on(make_row(16, 2, "cuda_baseline", median=0.11), "GPU-4b828b72-0b46", "1", "gw3"),
    ]
    section = _section(render_markdown(rows), "## NVIDIA H100")
    assert (
        "Ran on 2 GPUs: GPU-4b828b72 (CUDA_VISIBLE_DEVICES=1, gw1, gw3): 2 results; "
        "GPU-c2db4247 (CUDA_VISIBLE_DEVICES=0, gw0): 1 results"
    ) in section
    single = _section(render_markdown(rows[1:]), "## NVIDIA H100")
    assert "Ran on" not in single


def test_device_section_names_the_results_timed_at_the_power_cap() -> None:
    clocks = {"batches": 5, "power_capped_batches": 3, "power_limited_ms": 56.5}
    rows = sample_rows()
    capped = replace(rows[1], timing={**rows[1].timing, "clocks": clocks})
    clean = replace(
        rows[0], timing={**rows[0].timing, "clocks": {**clocks, "power_capped_batches": 0}}
    )
    md = render_markdown([clean, capped, *rows[2:]])
    timed = sum(1 for r in rows if r.timing and r.device["kind"] == "cuda")
    assert (
        f"**Power cap**: 1 of {timed} timed results had batches at the board's power cap, "
        f"which their medians include: `{QWEN}-batchSize8-seqLenQ2[cuda_grouped]` (3 of 5)."
    ) in md
    assert "Power cap" not in render_markdown(rows)
