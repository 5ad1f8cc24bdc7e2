"""Fault handling and GPU pinning, end to end through `python -m harness run` on the CPU:
real worker crashes (SIGSEGV), real hangs (a sleeping launcher ended by the watchdog),
real allocation failures, and the per-worker CUDA_VISIBLE_DEVICES choice. No GPU needed:
pinning only edits the environment, and the CPU analogues take the same recovery paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.matrix import load_matrix
from harness.results import read_results, run_statuses

REPO = Path(__file__).resolve().parent.parent
FAULTS20 = REPO / "tests" / "data" / "faults20.toml"


def _run(tmp: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 240):
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "run",
        "--results-dir",
        str(tmp / "results"),
        "--out",
        str(tmp / "out"),
        *args,
    ]
    return subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("workers", "picks"),
    [
        ("2", (3, 11, 17)),  # xdist: dead workers are replaced
        ("1", (1, 9, 15)),  # the single-GPU default: one process, resumed after a death
    ],
)
def test_twenty_cases_with_crash_hang_and_oom_lose_nothing(
    tmp_path: Path, workers: str, picks: tuple[int, int, int]
) -> None:
    ids = [c.id for c in load_matrix(FAULTS20).cases]
    assert len(ids) == 20
    crash, hang, oom = (ids[i] for i in picks)
    proc = _run(
        tmp_path,
        "--matrix",
        str(FAULTS20),
        "--backends",
        "fault_injector",
        "--inject-faults",
        f"crash@{crash},hang@{hang},oom@{oom}",
        "--case-timeout",
        "8",
        "-n",
        workers,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    if workers == "1":  # nothing runs twice: exactly one resume per death
        assert proc.stdout.count("resuming the run") == 2
    rows, problems = read_results([tmp_path / "results"])
    assert not problems
    by_case = {r.case_id: r for r in rows}
    assert sorted(by_case) == sorted(ids), "every case has exactly one recorded outcome"
    assert len(rows) == 20, "no duplicate rows for crashed items"
    assert by_case[crash].status == "error" and "died" in by_case[crash].message
    assert by_case[hang].status == "error" and by_case[hang].message == "timeout after 8 s"
    assert by_case[oom].status == "skipped"
    assert by_case[oom].message.startswith("does not fit: tried to allocate")
    passed = [r for r in rows if r.status == "passed"]
    assert len(passed) == 17
    # the dead process's row is filed under the run's device, not an "unknown" one
    assert by_case[crash].device and by_case[crash].device["name"] == passed[0].device["name"]
    junit = (tmp_path / "out" / "junit.xml").read_text()
    assert junit.count("<testcase") == 20
    [status] = run_statuses([tmp_path / "results"], rows)
    assert status.complete
    assert not list((tmp_path / "results").glob("inflight-*"))


def test_workers_pin_the_callers_visible_devices(tmp_path: Path) -> None:
    """Given CUDA_VISIBLE_DEVICES=5,7, gw0 runs on 5 and gw1 on 7 (never physical ids)."""
    proc = _run(
        tmp_path,
        "--matrix",
        str(FAULTS20),
        "--backends",
        "torch_grouped",
        "-n",
        "2",
        "--no-timing",
        env={"CUDA_VISIBLE_DEVICES": "5,7"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows, _ = read_results([tmp_path / "results"])
    seen = {(r.worker, r.device.get("visible_devices")) for r in rows}
    assert seen == {("gw0", "5"), ("gw1", "7")}


def test_a_crashed_xdist_worker_is_replaced_on_the_callers_gpus(tmp_path: Path) -> None:
    ids = [c.id for c in load_matrix(FAULTS20).cases]
    proc = _run(
        tmp_path,
        "--matrix",
        str(FAULTS20),
        "--backends",
        "fault_injector",
        "--inject-faults",
        f"crash@{ids[2]}",
        "-n",
        "2",
        "--no-timing",
        env={"CUDA_VISIBLE_DEVICES": "5,7"},
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "replacing crashed worker" in proc.stdout
    rows, _ = read_results([tmp_path / "results"])
    assert sorted(r.case_id for r in rows) == sorted(ids)
    seen = {(r.worker, r.device.get("visible_devices")) for r in rows if r.worker != "controller"}
    assert {d for _, d in seen} <= {"5", "7"}
    assert ("gw0", "7") not in seen and ("gw1", "5") not in seen


def test_gpu_slot_locks_never_give_one_gpu_to_two_live_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replacement worker (new gwN) skips GPUs whose lock a live worker holds."""
    import fcntl

    from harness import gpu

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    monkeypatch.setattr(gpu, "_slot_lock", None)
    held = open(tmp_path / "gpu-5.lock", "w")  # noqa: SIM115 - a live worker holding GPU 5
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert gpu.pin_worker_gpu(2, lock_dir=tmp_path) == "7"  # gw2 would prefer 5
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"
    finally:
        held.close()
        if gpu._slot_lock is not None:
            gpu._slot_lock.close()


def test_sigterm_keeps_written_results_and_report_says_incomplete(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "run",
        "--matrix",
        str(FAULTS20),
        "--backends",
        "fault_injector",
        "--inject-faults",
        "hang@Tiny-fp8_e4m3",
        "--case-timeout",
        "120",
        "--results-dir",
        str(tmp_path / "results"),
        "--out",
        str(tmp_path / "out"),
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 120
    # wait until the bf16 cases are done and the first fp8 case hangs
    while time.time() < deadline:
        rows, _ = (
            read_results([tmp_path / "results"]) if (tmp_path / "results").exists() else ([], [])
        )
        if len(rows) >= 10:
            break
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out[-3000:]
    rows, _ = read_results([tmp_path / "results"])
    assert len(rows) >= 10
    [status] = run_statuses([tmp_path / "results"], rows)
    assert status.interrupted and not status.complete
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "INCOMPLETE RUN" in summary
    # `report` on what is on disk gives the same verdict
    rep = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "report",
            str(tmp_path / "results"),
            "--out",
            str(tmp_path / "again"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rep.returncode == 0, rep.stderr
    assert "INCOMPLETE RUN" in (tmp_path / "again" / "summary.md").read_text()
    done = json.loads(next((tmp_path / "results").glob("done-*.json")).read_text())
    assert done["interrupted"] is True


@pytest.mark.parametrize("spec", ["crash", "explode@X", "crash@"])
def test_bad_fault_spec_is_one_line(tmp_path: Path, spec: str) -> None:
    proc = _run(
        tmp_path, "--matrix", str(FAULTS20), "--backends", "fault_injector", "--inject-faults", spec
    )
    assert proc.returncode == 2
    assert "--inject-faults entry" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
