"""Across-run comparison: harness.report.compare.compare_runs, NoiseProfile, fingerprint
labels, cross-machine refusal, and `python -m harness compare BASE HEAD` exit codes
(0 no regression, 1 regression(s), 2 error) on synthetic result files."""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.report.compare import (
    ACROSS_RUN_DEFAULT_THRESHOLD,
    NoiseProfile,
    compare_runs,
    fingerprint,
)
from harness.results import ResultRow, ResultWriter, read_results

REPO = Path(__file__).resolve().parent.parent
H100 = "NVIDIA H100 80GB HBM3"
H200 = "NVIDIA H200"
ENV = {"driver": "550.54", "cuda": "12.4", "torch": "2.4.0", "git_commit": "a" * 40}
CASES = ("M-bf16-batchSize16-seqLenQ1", "M-bf16-batchSize64-seqLenQ2")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def samples(seed: int, median: float, sigma: float = 0.003, n: int = 200) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(math.log(median), sigma) for _ in range(n)]


def row(
    case_id: str,
    backend: str = "cuda_grouped",
    *,
    median: float = 0.1,
    seed: int = 0,
    sigma: float = 0.003,
    gpu: str = H100,
    env: dict | None = None,
    run_id: str = "run",
    status: str = "passed",
    role: str = "grouped",
) -> ResultRow:
    xs = samples(seed, median, sigma)
    return ResultRow(
        run_id=run_id,
        matrix="m",
        case_id=case_id,
        case={"batch": 16},
        backend=backend,
        role=role,
        status=status,
        device={"name": gpu},
        env=dict(ENV if env is None else env),
        timing={"median_ms": sorted(xs)[len(xs) // 2], "samples_ms": xs, "n": len(xs)},
        timestamp=1.0,
    )


def side(
    tmp: Path, name: str, scale: float = 1.0, seed0: int = 0, **kw
) -> tuple[Path, list[ResultRow]]:
    """A results folder with one timed row per case; head rows may be `scale` slower."""
    rows = [
        row(c, median=0.1 * (i + 1) * scale, seed=seed0 + i, run_id=name, **kw)
        for i, c in enumerate(CASES)
    ]
    d = tmp / name
    w = ResultWriter(d / f"{name}-main.jsonl")
    for r in rows:
        w.write(r)
    return d, rows


def by_case(outcome) -> dict[str, ResultRow]:
    return {r.case_id: r for r in outcome.rows}


# ------------------------------------------------------------------------ compare_runs


def test_no_change_is_same(tmp_path: Path) -> None:
    _, base = side(tmp_path, "base", seed0=0)
    _, head = side(tmp_path, "head", seed0=100)
    out = compare_runs(base, head, threshold=0.01)
    assert len(out.rows) == 2
    assert out.regressions == []
    assert out.unmatched_base == out.unmatched_head == out.refused == ()
    for r in out.rows:
        c = r.comparison
        assert c["verdict"] == "same", r.message
        assert c["threshold"] == 0.01 and c["threshold_source"] == "given"
        assert c["ci_low"] <= 1.0 <= c["ci_high"]
        assert c["labels"] == ["across runs"]
        assert r.role == "comparison" and r.status == "passed"
        assert r.backend == "cuda_grouped:base-vs-head"


def test_five_percent_slower_is_a_regression(tmp_path: Path) -> None:
    _, base = side(tmp_path, "base", seed0=0)
    _, head = side(tmp_path, "head", scale=1.05, seed0=100)
    out = compare_runs(base, head, threshold=0.01)
    assert len(out.regressions) == 2
    for r in out.rows:
        c = r.comparison
        assert c["verdict"] == "slower" and r.status == "failed"
        assert c["ratio"] == pytest.approx(1.05, abs=0.002)
        assert c["ci_low"] > 1.01
        assert f"{c['ratio']:.4f}" in r.message and f"{c['ci_low']:.4f}" in r.message


def test_five_percent_faster(tmp_path: Path) -> None:
    _, base = side(tmp_path, "base", seed0=0)
    _, head = side(tmp_path, "head", scale=1 / 1.05, seed0=100)
    out = compare_runs(base, head, threshold=0.01)
    assert {r.comparison["verdict"] for r in out.rows} == {"faster"}
    assert out.regressions == []


def test_uncalibrated_default_threshold_is_wide_and_says_so(tmp_path: Path) -> None:
    _, base = side(tmp_path, "base", seed0=0)
    _, head = side(tmp_path, "head", scale=1.03, seed0=100)
    out = compare_runs(base, head)
    for r in out.rows:
        c = r.comparison
        assert c["threshold"] == ACROSS_RUN_DEFAULT_THRESHOLD
        assert c["threshold_source"] == "uncalibrated default"
        assert c["verdict"] == "same"  # 3 % is inside the uncalibrated 5 %
        assert "uncalibrated default" in r.message


def test_only_timed_passed_non_comparison_rows_are_compared(tmp_path: Path) -> None:
    _, base = side(tmp_path, "base")
    _, head = side(tmp_path, "head", seed0=100)
    extra_head = [
        row("X-failed", status="failed"),
        row("X-comparison", role="comparison"),
        row("X-only-head"),
    ]
    extra_head.append(
        ResultRow(**{**row("X-untimed").__dict__, "timing": {}})  # no samples
    )
    out = compare_runs([*base, row("X-only-base")], head + extra_head, threshold=0.01)
    assert sorted(by_case(out)) == sorted(CASES)
    assert out.unmatched_head == (f"X-only-head[cuda_grouped] on {H100}",)
    assert out.unmatched_base == (f"X-only-base[cuda_grouped] on {H100}",)


def test_different_gpu_is_refused(tmp_path: Path) -> None:
    _, base = side(tmp_path, "base", gpu=H100)
    _, head = side(tmp_path, "head", seed0=100, gpu=H200)
    out = compare_runs(base, head, threshold=0.01)
    assert out.rows == ()
    assert len(out.refused) == 2
    assert all(H200 in x and H100 in x for x in out.refused)
    assert out.unmatched_base == ()  # refused, not silently "only in base"


def test_different_gpu_allowed_is_labelled_cross_machine(tmp_path: Path) -> None:
    _, base = side(tmp_path, "base", gpu=H100)
    _, head = side(tmp_path, "head", seed0=100, gpu=H200)
    out = compare_runs(base, head, threshold=0.01, allow_cross_machine=True)
    assert len(out.rows) == 2 and out.refused == ()
    for r in out.rows:
        labels = r.comparison["labels"]
        assert any(
            lbl.startswith("cross-machine") and H100 in lbl and H200 in lbl for lbl in labels
        )
        assert "cross-machine" in r.message


def test_same_gpu_found_first_even_when_base_has_several(tmp_path: Path) -> None:
    _, base = side(tmp_path, "b1", gpu=H200)
    _, base2 = side(tmp_path, "b2", gpu=H100, seed0=50)
    _, head = side(tmp_path, "head", seed0=100, gpu=H100)
    out = compare_runs(base + base2, head, threshold=0.01)
    assert len(out.rows) == 2
    assert all(len(r.comparison["labels"]) == 1 for r in out.rows)  # not cross-machine
    assert len(out.unmatched_base) == 2 and all(H200 in x for x in out.unmatched_base)


def test_different_driver_is_labelled_environment_differs(tmp_path: Path) -> None:
    _, base = side(tmp_path, "base")
    _, head = side(tmp_path, "head", seed0=100, env={**ENV, "driver": "560.28"})
    out = compare_runs(base, head, threshold=0.01)
    for r in out.rows:
        labels = r.comparison["labels"]
        env = [lbl for lbl in labels if lbl.startswith("environment differs")]
        assert env == ["environment differs: driver 550.54->560.28"], labels
        assert "environment differs" in r.message


def test_a_different_commit_is_not_an_environment_difference(tmp_path: Path) -> None:
    _, base = side(tmp_path, "base")
    _, head = side(tmp_path, "head", seed0=100, env={**ENV, "git_commit": "b" * 40})
    out = compare_runs(base, head, threshold=0.01)
    for r in out.rows:
        assert r.comparison["labels"] == ["across runs"]
        assert r.comparison["a"] == "cuda_grouped@" + "a" * 10
        assert r.comparison["b"] == "cuda_grouped@" + "b" * 10


def test_fingerprint_keys() -> None:
    fp = fingerprint(row("c", env={"driver": "1", "cuda": "2", "torch": "3", "hostname": "x"}))
    assert fp == {"driver": "1", "cuda": "2", "torch": "3"}
    assert fingerprint(row("c", env={})) == {"driver": "", "cuda": "", "torch": ""}


def write_profile(path: Path, device: str = H100, across: float = 0.03, cases=None) -> Path:
    path.write_text(
        json.dumps(
            {
                "device": device,
                "backend": "cuda_grouped",
                "in_process": {"threshold": 0.005},
                "across_runs": {"threshold": across},
                "cases": cases or {},
            }
        )
    )
    return path


def test_noise_profile_sets_the_threshold(tmp_path: Path) -> None:
    prof = NoiseProfile.load(
        write_profile(tmp_path / "p.json", cases={f"{CASES[1]}|cuda_grouped": 0.08})
    )
    assert prof.threshold_for(CASES[0], "cuda_grouped") == 0.03
    assert prof.threshold_for(CASES[1], "cuda_grouped") == 0.08
    assert prof.in_process == 0.005
    _, base = side(tmp_path, "base")
    _, head = side(tmp_path, "head", scale=1.05, seed0=100)
    out = by_case(compare_runs(base, head, profile=prof))
    c0, c1 = out[CASES[0]].comparison, out[CASES[1]].comparison
    assert c0["threshold"] == 0.03 and c0["threshold_source"] == "calibrated profile"
    assert c0["verdict"] == "slower"
    assert c1["threshold"] == 0.08 and c1["threshold_source"] == "calibrated profile"
    assert c1["verdict"] == "same"
    # a given threshold wins over the profile
    out = compare_runs(base, head, profile=prof, threshold=0.2)
    assert {r.comparison["threshold_source"] for r in out.rows} == {"given"}


def test_noise_profile_of_another_gpu_is_not_used(tmp_path: Path) -> None:
    prof = NoiseProfile.load(write_profile(tmp_path / "p.json", device=H200, across=0.001))
    _, base = side(tmp_path, "base")
    _, head = side(tmp_path, "head", seed0=100)
    for r in compare_runs(base, head, profile=prof).rows:
        assert r.comparison["threshold_source"] == "uncalibrated default"


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        json.dumps({"device": "x"}),
        json.dumps({"device": "x", "across_runs": {}, "in_process": {"threshold": 0.1}}),
        json.dumps(
            {"device": "x", "across_runs": {"threshold": "wide"}, "in_process": {"threshold": 1}}
        ),
    ],
)
def test_corrupt_noise_profile_is_a_value_error(tmp_path: Path, text: str) -> None:
    p = tmp_path / "p.json"
    p.write_text(text)
    with pytest.raises(ValueError, match="not a readable noise profile"):
        NoiseProfile.load(p)
    with pytest.raises(ValueError, match="not a readable noise profile"):
        NoiseProfile.load(tmp_path / "missing.json")


# ------------------------------------------------------------- python -m harness compare


def cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["compare", *map(str, args)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def junit_failures(path: Path) -> list[ET.Element]:
    return ET.parse(path).getroot().findall(".//failure")


def test_cli_no_change_exits_0(tmp_path: Path, capsys) -> None:
    b, _ = side(tmp_path, "base")
    h, _ = side(tmp_path, "head", seed0=100)
    out = tmp_path / "out"
    rc, stdout, stderr = cli(capsys, b, h, "--threshold", "0.01", "--out", out)
    assert rc == 0, stdout + stderr
    assert "verdicts: 2 same" in stdout
    assert "REGRESSION" not in stdout
    assert junit_failures(out / "junit.xml") == []
    rows, problems = read_results([out / "compare-results"])
    assert problems == [] and {r.comparison["verdict"] for r in rows} == {"same"}


def test_cli_regression_exits_1_with_junit_failure(tmp_path: Path, capsys) -> None:
    b, _ = side(tmp_path, "base")
    h, _ = side(tmp_path, "head", scale=1.05, seed0=100)
    out = tmp_path / "out"
    rc, stdout, stderr = cli(capsys, b, h, "--threshold", "0.01", "--out", out)
    assert rc == 1, stdout + stderr
    regs = [ln for ln in stdout.splitlines() if "REGRESSION" in ln]
    assert len(regs) == 2, regs
    ratios = [float(re.search(r"head/base = (\d\.\d{4}) \[", ln).group(1)) for ln in regs]
    assert ratios == pytest.approx([1.05, 1.05], abs=0.002)
    fails = junit_failures(out / "junit.xml")
    assert len(fails) == 2
    for f in fails:
        assert f.get("type") == "regression"
        text = (f.get("message") or "") + (f.text or "")
        assert re.search(r"1\.0[45]\d\d \[1\.0[45]\d\d, 1\.0[45]\d\d\]", text), text
    assert (out / "summary.md").exists()


def test_cli_missing_dir_exits_2_one_line(tmp_path: Path, capsys) -> None:
    h, _ = side(tmp_path, "head")
    rc, _, stderr = cli(capsys, tmp_path / "nope", h, "--out", tmp_path / "out")
    assert rc == 2
    assert stderr.startswith("error: base:") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr


def test_cli_empty_dir_exits_2(tmp_path: Path, capsys) -> None:
    b, _ = side(tmp_path, "base")
    (tmp_path / "empty").mkdir()
    rc, _, stderr = cli(capsys, b, tmp_path / "empty", "--out", tmp_path / "out")
    assert rc == 2 and stderr.startswith("error: head: no results") and stderr.count("\n") == 1


def test_cli_no_overlap_exits_2(tmp_path: Path, capsys) -> None:
    b, _ = side(tmp_path, "base")
    h = tmp_path / "head"
    ResultWriter(h / "h.jsonl").write(row("Other-case"))
    rc, stdout, stderr = cli(capsys, b, h, "--out", tmp_path / "out")
    assert rc == 2
    assert stderr.startswith("error: no case was timed in both") and stderr.count("\n") == 1
    assert "only in head: Other-case" in stdout


def test_cli_cross_machine_refused_then_allowed(tmp_path: Path, capsys) -> None:
    b, _ = side(tmp_path, "base", gpu=H100)
    h, _ = side(tmp_path, "head", seed0=100, gpu=H200)
    out = tmp_path / "out"
    rc, stdout, stderr = cli(capsys, b, h, "--threshold", "0.01", "--out", out)
    assert rc == 2, stdout + stderr
    assert "refused, different GPU (use --allow-cross-machine)" in stdout
    rc, stdout, stderr = cli(
        capsys, b, h, "--threshold", "0.01", "--out", out, "--allow-cross-machine"
    )
    assert rc == 0, stdout + stderr
    rows, _ = read_results([out / "compare-results"])
    assert all(any("cross-machine" in x for x in r.comparison["labels"]) for r in rows)


def test_cli_profile_sets_threshold(tmp_path: Path, capsys) -> None:
    b, _ = side(tmp_path, "base")
    h, _ = side(tmp_path, "head", scale=1.05, seed0=100)
    out = tmp_path / "out"
    prof = write_profile(tmp_path / "profile.json", across=0.10)
    rc, stdout, stderr = cli(capsys, b, h, "--profile", prof, "--out", out)
    assert rc == 0, stdout + stderr  # 5 % is inside this runner's calibrated 10 %
    rows, _ = read_results([out / "compare-results"])
    for r in rows:
        assert r.comparison["threshold_source"] == "calibrated profile"
        assert r.comparison["threshold"] == 0.10
    prof = write_profile(tmp_path / "profile.json", across=0.01)
    rc, stdout, stderr = cli(capsys, b, h, "--profile", prof, "--out", out)
    assert rc == 1, stdout + stderr


def test_cli_corrupt_profile_exits_2_one_line(tmp_path: Path, capsys) -> None:
    b, _ = side(tmp_path, "base")
    h, _ = side(tmp_path, "head", seed0=100)
    prof = tmp_path / "profile.json"
    prof.write_text('{"device": "x", "across_runs": ')
    rc, _, stderr = cli(capsys, b, h, "--profile", prof, "--out", tmp_path / "out")
    assert rc == 2
    assert stderr.startswith("error: ") and "not a readable noise profile" in stderr
    assert stderr.count("\n") == 1, stderr


def test_cli_bad_lines_are_reported_and_skipped(tmp_path: Path, capsys) -> None:
    b, _ = side(tmp_path, "base")
    h, _ = side(tmp_path, "head", seed0=100)
    with open(h / "head-main.jsonl", "a") as fh:
        fh.write('{"truncated": \n')
    rc, stdout, _ = cli(capsys, b, h, "--threshold", "0.01", "--out", tmp_path / "out")
    assert rc == 0
    assert "head: skipped a bad results line" in stdout


def test_python_m_harness_compare_exit_codes(tmp_path: Path) -> None:
    """The real entry point, once: 1 on a regression, 2 on a missing folder."""
    b, _ = side(tmp_path, "base")
    h, _ = side(tmp_path, "head", scale=1.05, seed0=100)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["MPLBACKEND"] = "Agg"

    def run(*args: Path | str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "harness", "compare", *map(str, args)]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    p = run(b, h, "--threshold", "0.01", "--out", tmp_path / "out")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "REGRESSION" in p.stdout
    p = run(tmp_path / "missing", h, "--out", tmp_path / "out")
    assert p.returncode == 2
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr


# ------------------------------------------------------------------ regressions of fixed bugs


@pytest.mark.parametrize("cases", [[], "c1|cuda_grouped", 3])
def test_profile_with_non_object_cases_is_a_value_error(tmp_path: Path, cases) -> None:
    p = tmp_path / "p.json"
    p.write_text(
        json.dumps(
            {
                "device": H100,
                "across_runs": {"threshold": 0.02},
                "in_process": {"threshold": 0.01},
                "cases": cases,
            }
        )
    )
    with pytest.raises(ValueError, match="not a readable noise profile"):
        NoiseProfile.load(p)


def test_cli_profile_with_list_cases_exits_2(tmp_path: Path, capsys) -> None:
    b, _ = side(tmp_path, "base")
    h, _ = side(tmp_path, "head", seed0=100)
    prof = tmp_path / "profile.json"
    prof.write_text(
        json.dumps(
            {
                "device": H100,
                "across_runs": {"threshold": 0.02},
                "in_process": {"threshold": 0.01},
                "cases": [],
            }
        )
    )
    try:
        rc, _, stderr = cli(capsys, b, h, "--profile", prof, "--out", tmp_path / "out")
    except Exception as exc:  # what `python -m harness` turns into exit code 1
        pytest.fail(f"uncaught {type(exc).__name__}: {exc}")
    assert rc == 2 and stderr.startswith("error: ")


@pytest.mark.parametrize("bad", [-0.01, 0.0, 1.5, float("nan")])
def test_profile_threshold_must_be_a_fraction(tmp_path: Path, bad: float) -> None:
    p = tmp_path / "p.json"
    p.write_text(
        json.dumps(
            {"device": H100, "across_runs": {"threshold": bad}, "in_process": {"threshold": 0.01}}
        )
    )
    with pytest.raises(ValueError, match="not a readable noise profile"):
        NoiseProfile.load(p)


def test_cli_negative_threshold_is_an_error(tmp_path: Path, capsys) -> None:
    b, _ = side(tmp_path, "base")
    h, _ = side(tmp_path, "head", seed0=100)
    rc, stdout, _ = cli(capsys, b, h, "--threshold", "-0.01", "--out", tmp_path / "out")
    assert "REGRESSION" not in stdout
    assert rc == 2


def test_stable_kernel_rows_are_comparable_across_runs(monkeypatch) -> None:
    import harness.timing
    from harness.timing import TimingConfig, time_fn

    def measure(self, units):
        return [u() for u in units]

    monkeypatch.setattr(harness.timing._Runner, "measure", measure)

    def stable(median: float, seed: int):
        rng = random.Random(seed)
        return lambda: rng.lognormvariate(math.log(median), 0.0002)  # a very steady kernel

    cfg = TimingConfig(warmup_ms=0, budget_ms=1e9, sample_clocks=False)
    rows = []
    for name, median in (("base", 0.1), ("head", 0.11)):
        stats = time_fn(stable(median, len(name)), torch.device("cpu"), cfg)
        rows.append(
            ResultRow(
                run_id=name,
                matrix="m",
                case_id="c",
                case={},
                backend="cuda_grouped",
                role="grouped",
                status="passed",
                device={"name": H100},
                env=ENV,
                timing=stats.to_dict(),
            )
        )
    out = compare_runs([rows[0]], [rows[1]], threshold=0.01)
    assert out.rows[0].comparison["verdict"] == "slower", out.rows[0].message


def test_same_case_id_in_two_matrices_is_not_mixed_up() -> None:
    from dataclasses import replace

    short = {"matrix": "spec_decode"}
    long = {"matrix": "long_context"}  # same case id, 10x the work
    base = [replace(row("c", median=1.0, seed=1), **long), replace(row("c", seed=2), **short)]
    head = [replace(row("c", seed=3), **short), replace(row("c", median=1.0, seed=4), **long)]
    out = compare_runs(base, head, threshold=0.01)
    assert out.regressions == [], [r.message for r in out.regressions]
    assert len(out.rows) == 2
    assert {r.comparison["verdict"] for r in out.rows} == {"same"}
