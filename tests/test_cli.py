"""`python -m harness` as a user meets it: every bad input is one `error:` line and exit
code 2, never a traceback; a CPU run says so at the top of its output and its report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = """\
[matrix]
name = "tiny"
seed = 3

[models.T]
num_qo_heads = 4
num_kv_heads = 2
head_dim = 16

[axes]
batch = 2
q_len = [1, 2]
kv_len = 19

[settings]
warmup_ms = 1
budget_ms = 10
"""


def harness(*args: str, cwd: Path = REPO, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_help_explains_every_command() -> None:
    top = harness("--help")
    assert top.returncode == 0
    for command in ("list", "run", "report", "compare", "calibrate", "env", "post"):
        assert command in top.stdout
        sub = harness(command, "--help")
        assert sub.returncode == 0, command
        assert "usage:" in sub.stdout


def test_list_prints_the_seed_ids() -> None:
    proc = harness("list", "--matrix", "matrices/spec_decode.toml")
    assert proc.returncode == 0
    assert "Qwen3-480B-fp8_e4m3-batchSize8-seqLenQ2" in proc.stdout
    assert "GPT-OSS-fp8_e4m3-batchSize64-seqLenQ8" in proc.stdout
    assert "30 case(s)" in proc.stdout


@pytest.mark.parametrize("command", ["list", "run"])
def test_malformed_matrix_is_one_line_with_file_line_and_key(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace("kv_len = 19", "kv_len = 1"))
    line = one_error_line(harness(command, "--matrix", str(bad)))
    assert f"{bad}:" in line and "key 'kv_len'" in line and "kv_len 1 < q_len 2" in line


def test_missing_matrix_file_is_one_line(tmp_path: Path) -> None:
    line = one_error_line(harness("run", "--matrix", str(tmp_path / "nope.toml")))
    assert "nope.toml" in line and "cannot read" in line


def test_forcing_cuda_without_a_gpu_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(TINY)
    line = one_error_line(harness("run", "--matrix", str(tmp_path / "m.toml"), "--device", "cuda"))
    assert "no CUDA device" in line


def test_selecting_nothing_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(TINY)
    line = one_error_line(
        harness(
            "run",
            "--matrix",
            str(tmp_path / "m.toml"),
            "-k",
            "NoSuchCase",
            "--results-dir",
            str(tmp_path / "r"),
            "--out",
            str(tmp_path),
        )
    )
    assert "no case selected" in line


def test_unknown_baseline_revision_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(TINY)
    line = one_error_line(
        harness(
            "run",
            "--matrix",
            str(tmp_path / "m.toml"),
            "--baseline-rev",
            "no-such-branch-xyz",
            "--results-dir",
            str(tmp_path / "r"),
        )
    )
    assert "no-such-branch-xyz" in line and "no such commit" in line


def test_report_on_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    line = one_error_line(harness("report", str(tmp_path / "absent"), "--out", str(tmp_path)))
    assert "absent" in line


def test_cpu_run_says_so_and_a_corrupt_line_does_not_stop_the_report(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(TINY)
    results, out = tmp_path / "results", tmp_path / "out"
    proc = harness(
        "run",
        "--matrix",
        str(tmp_path / "m.toml"),
        "--backends",
        "torch_baseline,torch_grouped,cuda_grouped",
        "--results-dir",
        str(results),
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = next(line for line in proc.stdout.splitlines() if line.startswith("[harness]"))
    assert "NO GPU" in first and "CPU" in first
    summary = (out / "summary.md").read_text()
    assert "timed on CPU (no GPU)" in summary
    header = (
        r"\|\s*test case\s*\|\s*median_time_ms\s*\|\s*median_time_ms \(opt\)\s*\|\s*speedup\s*\|"
    )
    assert re.search(header, summary), summary
    rows = [json.loads(x) for f in results.glob("*.jsonl") for x in f.read_text().splitlines()]
    assert {r["status"] for r in rows} == {"passed", "skipped"}
    assert all(r["message"].endswith("no CUDA device") for r in rows if r["status"] == "skipped")
    # damage the results: a truncated line and garbage; the report still comes out
    worker_file = next(results.glob("*-main.jsonl"))  # one test process on a CPU
    worker_file.write_text(worker_file.read_text() + '{"schema": 1, "case_id": "trunc\ngarbage\n')
    rep = harness("report", str(results), "--out", str(tmp_path / "again"))
    assert rep.returncode == 0, rep.stderr
    assert f"{worker_file}:{len(rows) + 1}" in rep.stdout
    assert (tmp_path / "again" / "junit.xml").exists()
