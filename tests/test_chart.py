"""The PNG speedup chart: drawn from real result rows, linked from the markdown, and
optional (the report still works and says so when matplotlib is missing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from factories import seed_row

from harness.report import generate
from harness.report.chart import CHART_NAME, speedup_series, write_chart
from harness.results import ResultRow, ResultWriter

H100 = {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "sm_count": 132}
CPU = {"kind": "cpu", "name": "Test Xeon CPU", "sm_count": 16}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(batch: int, q_len: int, backend: str, median: float | None, device: dict) -> ResultRow:
    """A seed-table row timed at `median` ms (+-3 %), or skipped when `median` is None."""
    status = "passed" if median is not None else "skipped"
    return seed_row(
        batch,
        q_len,
        backend,
        status,
        device=device,
        commit="0123456789abcdef",
        median=median,
        ci_rel=0.03,
        n=50,
        env_extra={"copy_tbps": 3.0},
    )


def rows() -> list[ResultRow]:
    out = []
    for batch in (8, 16, 32, 64):
        for q_len in (2, 4, 8):
            base = 0.05 * batch / 8 * q_len
            out.append(row(batch, q_len, "cuda_baseline", base, H100))
            out.append(row(batch, q_len, "cuda_grouped", base / (0.8 + 0.2 * q_len), H100))
    out.append(row(8, 2, "torch_baseline", 12.0, CPU))
    out.append(row(8, 2, "torch_grouped", 4.0, CPU))
    out.append(row(8, 4, "torch_baseline", 20.0, CPU))
    out.append(row(8, 4, "torch_grouped", None, CPU))  # skipped: no bar for this case
    return out


def test_series_pair_baseline_and_grouped_per_device_in_case_order() -> None:
    series = speedup_series(rows())
    assert [s.title.split(":")[0] for s in series] == [
        "NVIDIA H100 80GB HBM3 (GPU)",
        "Test Xeon CPU — timed on CPU (no GPU)",
    ]
    gpu, cpu = series
    assert len(gpu.bars) == 12
    assert gpu.bars[0].case_id.endswith("batchSize8-seqLenQ2")  # matrix order, not lexical
    assert gpu.bars[3].case_id.endswith("batchSize16-seqLenQ2")
    assert gpu.bars[0].speedup == pytest.approx(1.2)
    assert gpu.bars[0].low < 1.2 < gpu.bars[0].high
    assert [b.case_id[-16:] for b in cpu.bars] == ["batchSize8-seqLenQ2"[-16:]]
    assert cpu.bars[0].speedup == pytest.approx(3.0)


def test_renders_a_real_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = write_chart(rows(), tmp_path / CHART_NAME)
    assert result.path == tmp_path / CHART_NAME
    data = result.path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 20_000  # two panels of bars and labels, not an empty canvas
    assert "13 bars in 2 panel(s)" in result.message


def test_generate_writes_and_links_the_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    writer = ResultWriter(tmp_path / "res" / "w.jsonl")
    for r in rows():
        writer.write(r)
    out = generate([tmp_path / "res"], tmp_path / "rep")
    png = tmp_path / "rep" / CHART_NAME
    assert out.chart is not None and out.chart.path == png
    assert png.read_bytes()[:8] == PNG_MAGIC
    md = out.markdown_path.read_text()
    assert f"**Chart** [{CHART_NAME}]({CHART_NAME})" in md
    url = "https://gitlab.example.com/g/p/-/jobs/7/artifacts/file/reports/"
    linked = generate([tmp_path / "res"], tmp_path / "rep", artifact_url=url)
    assert f"[{CHART_NAME}]({url}{CHART_NAME})" in linked.markdown_path.read_text()


def test_report_works_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = ResultWriter(tmp_path / "res" / "w.jsonl")
    for r in rows():
        writer.write(r)
    stale = tmp_path / "rep" / CHART_NAME
    stale.parent.mkdir(parents=True)
    stale.write_bytes(PNG_MAGIC + b"old numbers")
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` -> ImportError
    out = generate([tmp_path / "res"], tmp_path / "rep")
    assert out.chart is not None and out.chart.path is None
    assert "PNG skipped: matplotlib is not installed" in out.chart.message
    md = out.markdown_path.read_text()
    assert "**Chart** PNG skipped: matplotlib is not installed" in md
    assert "```mermaid" in md  # the chart that renders in the PR is still there
    assert out.junit_path.exists()
    assert not stale.exists()  # a link never shows an earlier run's numbers


def test_cli_report_says_the_png_was_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import main

    writer = ResultWriter(tmp_path / "res" / "w.jsonl")
    for r in rows():
        writer.write(r)
    monkeypatch.delenv("HARNESS_ARTIFACT_URL", raising=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "rep")]) == 0
    assert "chart: PNG skipped: matplotlib is not installed" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "r2"), "--no-png"]) == 0
    assert "**Chart**" not in (tmp_path / "r2" / "summary.md").read_text()
