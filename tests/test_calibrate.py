"""harness.calibrate.summarize / Calibration.profile on synthetic A/A run rows: verdict
counts, false-verdict rate, interval half-widths, across-run drift and the noise profile
thresholds (in-process = max(0.005, 4 * p95 half-width), across runs = max(0.01, 2 * max
drift)); the profile it writes is one `compare` can load."""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from pathlib import Path

import pytest

from harness.calibrate import MIN_ACROSS_RUNS, MIN_IN_PROCESS, _markdown, summarize
from harness.report.compare import NoiseProfile
from harness.results import ResultRow

GPU = "NVIDIA H100 80GB HBM3"
BACKEND = "cuda_grouped"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def comparison_row(case_id: str, ratio: float, half: float, v: str, run: int) -> ResultRow:
    return ResultRow(
        run_id=f"run{run}",
        matrix="spec_decode",
        case_id=case_id,
        case={},
        backend=f"{BACKEND}-vs-{BACKEND}",
        role="comparison",
        status="failed" if v == "slower" else "passed",
        device={"name": GPU},
        env={"driver": "550", "cuda": "12.4", "torch": "2.4"},
        # an A/B row also carries B's timing: it must not count as a standalone row
        timing={"median_ms": 9.0, "samples_ms": [9.0] * 40},
        comparison={
            "a": BACKEND,
            "b": BACKEND,
            "ratio": ratio,
            "ci_low": ratio - half,
            "ci_high": ratio + half,
            "verdict": v,
            "threshold": 0.01,
        },
    )


def timed_row(case_id: str, median: float, run: int, seed: int) -> ResultRow:
    rng = random.Random(seed)
    xs = [rng.lognormvariate(math.log(median), 0.0005) for _ in range(101)]
    return ResultRow(
        run_id=f"run{run}",
        matrix="spec_decode",
        case_id=case_id,
        case={},
        backend=BACKEND,
        role="grouped",
        status="passed",
        device={"name": GPU},
        env={"driver": "550", "cuda": "12.4", "torch": "2.4"},
        timing={"median_ms": statistics.median(xs), "samples_ms": xs},
    )


CASES = ["c1", "c2", "c3"]
# in-process A/A results per run and case: (ratio, half-width, verdict)
AA = [
    {"c1": (1.000, 0.0010, "same"), "c2": (1.002, 0.0012, "same"), "c3": (0.990, 0.0020, "same")},
    {
        "c1": (1.001, 0.0008, "same"),
        "c2": (1.011, 0.0009, "slower"),
        "c3": (1.0, 0.02, "inconclusive"),
    },
    {"c1": (0.999, 0.0011, "same"), "c2": (1.000, 0.0010, "same"), "c3": (0.985, 0.0014, "faster")},
]
# standalone medians per run and case: the across-run drift
MEDIANS = [
    {"c1": 0.100, "c2": 0.200, "c3": 0.300},
    {"c1": 0.101, "c2": 0.200, "c3": 0.300},
    {"c1": 0.100, "c2": 0.206, "c3": 0.3003},
]


def runs() -> list[list[ResultRow]]:
    out = []
    for i, (aa, med) in enumerate(zip(AA, MEDIANS, strict=True)):
        rows = [comparison_row(c, *aa[c], run=i) for c in CASES]
        rows += [timed_row(c, med[c], run=i, seed=100 * i + j) for j, c in enumerate(CASES)]
        out.append(rows)
    return out


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.95 * len(xs)))]


def test_verdict_counts_and_false_verdict_rate() -> None:
    cal = summarize(runs(), BACKEND, 0.01)
    assert cal.aa_verdicts == {"same": 6, "slower": 1, "inconclusive": 1, "faster": 1}
    assert cal.false_verdict_rate == pytest.approx(2 / 9)
    assert cal.runs == 3 and cal.backend == BACKEND and cal.threshold == 0.01
    assert cal.device == GPU


def test_halfwidths() -> None:
    cal = summarize(runs(), BACKEND, 0.01)
    halves = [aa[c][1] for aa in AA for c in CASES]
    assert cal.median_halfwidth == pytest.approx(statistics.median(halves))
    assert cal.p95_halfwidth == pytest.approx(p95(halves))
    assert cal.p95_halfwidth == pytest.approx(0.02)


def test_across_run_drift_from_standalone_rows_only() -> None:
    cal = summarize(runs(), BACKEND, 0.01)
    # three runs: three pairs per case, drift = |median ratio - 1|
    assert len(cal.across_abs_diffs) == 3 * len(CASES)
    expected = sorted(
        abs(MEDIANS[j][c] / MEDIANS[i][c] - 1) for c in CASES for i, j in [(0, 1), (0, 2), (1, 2)]
    )
    assert sorted(cal.across_abs_diffs) == pytest.approx(expected, abs=2e-4)
    assert max(cal.across_abs_diffs) == pytest.approx(0.03, abs=2e-4)  # c2: 0.200 -> 0.206
    # per-case thresholds: max(0.01, 2 * that case's max drift)
    t = cal.case_thresholds
    assert set(t) == {f"{c}|{BACKEND}" for c in CASES}
    assert t[f"c1|{BACKEND}"] == pytest.approx(0.02, abs=4e-4)
    assert t[f"c2|{BACKEND}"] == pytest.approx(0.06, abs=4e-4)
    assert t[f"c3|{BACKEND}"] == MIN_ACROSS_RUNS  # 0.1 % drift: the floor


def test_profile_thresholds() -> None:
    cal = summarize(runs(), BACKEND, 0.01)
    prof = cal.profile()
    assert prof["device"] == GPU and prof["backend"] == BACKEND and prof["runs"] == 3
    ip = prof["in_process"]
    assert ip["threshold"] == pytest.approx(max(MIN_IN_PROCESS, 4 * cal.p95_halfwidth))
    assert ip["threshold"] == pytest.approx(0.08)
    assert ip["false_verdict_rate"] == pytest.approx(2 / 9)
    ar = prof["across_runs"]
    assert ar["threshold"] == pytest.approx(max(MIN_ACROSS_RUNS, 2 * max(cal.across_abs_diffs)))
    assert ar["threshold"] == pytest.approx(0.06, abs=4e-4)
    assert ar["max_abs_diff"] == max(cal.across_abs_diffs)
    assert ar["median_abs_diff"] == pytest.approx(statistics.median(cal.across_abs_diffs))
    assert prof["cases"] == cal.case_thresholds


def test_profile_floors_on_a_quiet_runner() -> None:
    quiet = [
        [comparison_row(c, 1.0, 0.0002, "same", run=i) for c in CASES]
        + [timed_row(c, 0.1, run=i, seed=10 * i + j) for j, c in enumerate(CASES)]
        for i in range(2)
    ]
    cal = summarize(quiet, BACKEND, 0.01)
    assert cal.aa_verdicts == {"same": 6} and cal.false_verdict_rate == 0.0
    prof = cal.profile()
    assert prof["in_process"]["threshold"] == MIN_IN_PROCESS == 0.005
    assert prof["across_runs"]["threshold"] == MIN_ACROSS_RUNS == 0.01
    assert set(prof["cases"].values()) == {MIN_ACROSS_RUNS}


def test_single_run_and_empty_runs() -> None:
    one = summarize(runs()[:1], BACKEND, 0.01)
    assert one.runs == 1 and one.across_abs_diffs == () and one.case_thresholds == {}
    assert one.profile()["across_runs"]["threshold"] == MIN_ACROSS_RUNS
    none = summarize([[], []], BACKEND, 0.01)
    assert none.aa_verdicts == {} and none.false_verdict_rate == 0.0
    assert none.median_halfwidth == none.p95_halfwidth == 0.0
    assert none.profile()["in_process"]["threshold"] == MIN_IN_PROCESS


def test_table_and_markdown() -> None:
    cal = summarize(runs(), BACKEND, 0.01)
    lines = cal.table.splitlines()
    assert len(lines) == 2 + len(CASES)
    assert "run 3: A/A ratio [95% CI] verdict" in lines[0]
    c2 = next(ln for ln in lines if ln.startswith("| c2"))
    assert "1.0110 [1.0101, 1.0119] slower" in c2
    assert re.search(r"\| 3\.0\d% ", c2), c2  # max drift across runs
    md = _markdown(cal)
    assert "false-verdict rate 22.2%" in md and "1 faster" in md and "1 slower" in md


def test_written_profile_is_loadable_by_compare(tmp_path: Path) -> None:
    cal = summarize(runs(), BACKEND, 0.01)
    path = tmp_path / "noise-profile.json"
    path.write_text(json.dumps(cal.profile(), indent=2))
    prof = NoiseProfile.load(path)
    assert prof.device == GPU
    assert prof.across_runs == pytest.approx(cal.profile()["across_runs"]["threshold"])
    assert prof.in_process == pytest.approx(0.08)
    assert prof.threshold_for("c2", BACKEND) == pytest.approx(0.06, abs=4e-4)
    assert prof.threshold_for("unknown", BACKEND) == prof.across_runs


# ------------------------------------------- calibrate() / `python -m harness calibrate`


def fake_runs(monkeypatch, scripted: list[list[ResultRow]], rcs: list[int] | None = None):
    """Replace the pytest subprocess of each calibration run with synthetic rows."""
    import harness.calibrate
    from harness.results import ResultWriter

    calls = []

    def run_once(matrices, backend, threshold, out, extra):
        i = len(calls)
        calls.append((list(matrices), backend, threshold, list(extra)))
        w = ResultWriter(out / "results" / "main.jsonl")
        for r in scripted[i]:
            w.write(r)
        return (rcs or [0] * len(scripted))[i]

    monkeypatch.setattr(harness.calibrate, "run_once", run_once)
    return calls


def test_cli_calibrate_writes_a_profile_and_exits_1_on_false_verdicts(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from harness.cli import main

    calls = fake_runs(monkeypatch, runs())
    out = tmp_path / "cal"
    rc = main(["calibrate", "--runs", "3", "--backend", BACKEND, "--out", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 1, stdout  # 2 false verdicts in 9
    assert len(calls) == 3 and all(c[1:3] == (BACKEND, 0.01) for c in calls)
    assert "false-verdict rate 22.2%" in stdout
    prof = json.loads((out / "noise-profile.json").read_text())
    assert prof["in_process"]["threshold"] == pytest.approx(0.08)
    assert NoiseProfile.load(out / "noise-profile.json").device == GPU
    assert "A/A calibration" in (out / "calibration.md").read_text()


def test_cli_calibrate_clean_aa_exits_0(tmp_path: Path, monkeypatch, capsys) -> None:
    from harness.cli import main

    quiet = [
        [comparison_row(c, 1.0, 0.0005, "same", run=i) for c in CASES]
        + [timed_row(c, 0.1, run=i, seed=10 * i + j) for j, c in enumerate(CASES)]
        for i in range(2)
    ]
    fake_runs(monkeypatch, quiet)
    rc = main(["calibrate", "--out", str(tmp_path / "cal")])
    assert rc == 0, capsys.readouterr().out


def test_cli_calibrate_broken_run_exits_2_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from harness.cli import main

    fake_runs(monkeypatch, runs()[:2], rcs=[0, 3])
    rc = main(["calibrate", "--out", str(tmp_path / "cal")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == "error: calibration run 2 failed with exit code 3\n"
    assert not (tmp_path / "cal" / "noise-profile.json").exists()
