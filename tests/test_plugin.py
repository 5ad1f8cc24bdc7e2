"""harness.pytest_plugin end to end: matrix files run as pytest items in a subprocess.

Each scenario runs `python -m pytest -p harness.pytest_plugin FILE.toml` once (module-scoped
fixtures) and several tests inspect its output and result rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch  # noqa: F401  (imported once here: pytester's in-process runs must not re-import it)

import harness.pytest_plugin  # noqa: F401
from harness.results import ResultRow, read_results

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent

TINY = """\
[matrix]
name = "tiny"
seed = 42

[models.T]
num_qo_heads = 4
num_kv_heads = 2
head_dim = 16

[axes]
batch = 3
q_len = [1, 2]
kv_len = 21
page_size = 16
ragged = true

[settings]
warmup_ms = 1
budget_ms = 10
min_reps = 5
max_reps = 50
"""
CASE_IDS = ["T-bf16-batchSize3-seqLenQ1", "T-bf16-batchSize3-seqLenQ2"]
BUILTIN = ["cuda_baseline", "cuda_grouped", "torch_baseline", "torch_grouped"]

# Test backends, registered by a conftest next to the matrix file.
BAD_CONFTEST = """\
import torch

from harness.backends import Backend, get, register


def _ok(case, device):
    return None


def _garbage(inputs):
    def launch(out):
        g = torch.Generator().manual_seed(0)
        out.copy_(torch.randn(out.shape, generator=g))
    return launch


def _holes(inputs):
    good = get("torch_grouped").prepare(inputs)
    def launch(out):
        tmp = torch.empty_like(out)
        good(tmp)
        out[1:].copy_(tmp[1:])  # the first query row (all heads) is never written
    return launch


def _nothing(inputs):
    def launch(out):
        pass
    return launch


register(Backend(name="garbage", role="peer", supports=_ok, prepare=_garbage))
register(Backend(name="holes", role="peer", supports=_ok, prepare=_holes))
def _boom(inputs):
    raise RuntimeError("boom while preparing")


def _picky(case, device):
    return None if case.q_len == 1 else "q_len > 1 not supported"


register(Backend(name="nothing", role="peer", supports=_ok, prepare=_nothing))
register(Backend(name="boom", role="peer", supports=_ok, prepare=_boom))
register(Backend(name="picky", role="peer", supports=_picky, prepare=get("torch_grouped").prepare))
"""


@dataclass
class Run:
    rc: int
    out: str
    results: Path

    def rows(self) -> list[ResultRow]:
        rows, problems = read_results([self.results])
        assert problems == [], problems
        return rows

    def row(self, case_id: str, backend: str) -> ResultRow:
        found = [r for r in self.rows() if r.case_id == case_id and r.backend == backend]
        assert len(found) == 1, (case_id, backend, found)
        return found[0]


def run_pytest(where: Path, *args: str, conftest: str | None = None, matrix: str = TINY) -> Run:
    where.mkdir(parents=True, exist_ok=True)
    (where / "tiny.toml").write_text(matrix)
    if conftest is not None:
        (where / "conftest.py").write_text(conftest)
    results = where / "results"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["HARNESS_COMMIT"] = "test-commit"
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU only, even on a GPU host
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "harness.pytest_plugin",
        "-p",
        "no:cacheprovider",
        "tiny.toml",
        "--results-dir",
        str(results),
        "-v",
        "-rs",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True, timeout=300)
    return Run(proc.returncode, proc.stdout + proc.stderr, results)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Run:
    where = tmp_path_factory.mktemp("good")
    # a .toml outside a `matrices` folder is collected only when named on the command line
    (where / "sub").mkdir()
    (where / "sub" / "other.toml").write_text(TINY)
    return run_pytest(where, "sub")


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory) -> Run:
    return run_pytest(
        tmp_path_factory.mktemp("bad"),
        "--backends",
        "garbage,holes,nothing,boom,picky,torch_grouped",
        "--no-timing",
        conftest=BAD_CONFTEST,
    )


# ------------------------------------------------------------------------- a good run


def test_items_are_case_x_backend(good_run: Run) -> None:
    assert good_run.rc == 0, good_run.out
    assert "other.toml" not in good_run.out
    for cid in CASE_IDS:
        for b in BUILTIN:
            assert f"tiny.toml::{cid}[{b}] " in good_run.out, (cid, b, good_run.out)
    assert "4 passed, 4 skipped" in good_run.out


def test_cuda_items_skip_without_a_gpu(good_run: Run) -> None:
    skip_lines = [ln for ln in good_run.out.splitlines() if ln.startswith("SKIPPED [")]
    assert sum(int(ln.split("[", 1)[1].split("]", 1)[0]) for ln in skip_lines) == 4, skip_lines
    assert all(ln.endswith("no CUDA device") for ln in skip_lines), skip_lines
    for cid in CASE_IDS:
        for b in ("cuda_baseline", "cuda_grouped"):
            assert f"{cid}[{b}] SKIPPED" in good_run.out


def test_a_row_per_item_with_timing(good_run: Run) -> None:
    rows = good_run.rows()
    assert sorted((r.case_id, r.backend) for r in rows) == sorted(
        (c, b) for c in CASE_IDS for b in BUILTIN
    )
    files = list(good_run.results.glob("*.jsonl"))
    assert len(files) == 1 and files[0].name.endswith("-main.jsonl")
    assert len({r.run_id for r in rows}) == 1
    for r in rows:
        assert r.matrix == "tiny"
        assert r.worker == "main"
        assert r.case["batch"] == 3 and r.case["num_qo_heads"] == 4
        assert r.device.get("kind") == "cpu"
        assert r.env["git_commit"] == "test-commit"
        assert r.timestamp > 0
        if r.backend.startswith("cuda_"):
            assert r.status == "skipped"
            assert "no CUDA device" in r.message
            continue
        assert r.status == "passed", r
        assert r.role == ("baseline" if r.backend == "torch_baseline" else "grouped")
        assert r.correctness["nan_count"] == 0
        assert r.correctness["mismatches"] <= r.correctness["allowed_mismatches"]
        t = r.timing
        assert t["n"] >= 5
        assert t["stop_reason"] in ("converged", "budget", "max_reps")
        assert t["ci_low_ms"] <= t["median_ms"] <= t["ci_high_ms"]
        assert r.bytes > 0 and r.tbps is not None and r.tbps > 0


# ----------------------------------------------------------------- wrong backends


def test_garbage_backend_fails_with_the_figures(bad_run: Run) -> None:
    assert bad_run.rc == 1, bad_run.out
    for cid in CASE_IDS:
        assert f"{cid}[garbage] FAILED" in bad_run.out
        row = bad_run.row(cid, "garbage")
        assert row.status == "failed"
        corr = row.correctness
        assert corr["mismatches"] > corr["allowed_mismatches"]
        assert corr["nan_count"] == 0
        assert f"{corr['mismatches']} of {corr['numel']} elements outside" in row.message
        assert row.message in bad_run.out or row.message.split(";")[0] in bad_run.out


def test_unwritten_elements_fail_with_nan_count(bad_run: Run) -> None:
    for cid, q_len in zip(CASE_IDS, (1, 2), strict=True):
        row = bad_run.row(cid, "holes")
        assert row.status == "failed", row
        unwritten = 4 * 16  # one query row: all heads x head_dim
        assert row.correctness["nan_count"] == unwritten
        assert row.correctness["mismatches"] == unwritten
        assert f"{unwritten} NaN" in row.message
        assert f"{unwritten} NaN" in bad_run.out
        assert row.correctness["numel"] == 3 * q_len * 4 * 16


def test_nothing_written_is_a_failure_not_an_error(bad_run: Run) -> None:
    """A backend that writes nothing leaves every element NaN. Bug: max_abs_err becomes
    inf, ResultRow.to_json(allow_nan=False) raises, and the item turns into an 'error'
    row with a ValueError instead of a 'failed' row with the NaN count."""
    for cid, q_len in zip(CASE_IDS, (1, 2), strict=True):
        numel = 3 * q_len * 4 * 16
        row = bad_run.row(cid, "nothing")
        assert row.status == "failed", row
        assert row.correctness["nan_count"] == numel
        assert f"{numel} NaN" in row.message
    assert "ValueError" not in bad_run.out


def test_good_backend_still_passes_next_to_bad_ones(bad_run: Run) -> None:
    for cid in CASE_IDS:
        row = bad_run.row(cid, "torch_grouped")
        assert row.status == "passed"
        assert row.timing == {}  # --no-timing
    assert len(bad_run.rows()) == 2 * 6


def test_crashing_backend_is_an_error_row_and_the_run_goes_on(bad_run: Run) -> None:
    for cid in CASE_IDS:
        row = bad_run.row(cid, "boom")
        assert row.status == "error"
        assert row.message == "RuntimeError: boom while preparing"
        assert f"{cid}[boom] FAILED" in bad_run.out
        # items after it in the same case still ran
        assert bad_run.row(cid, "torch_grouped").status == "passed"


def test_unsupported_case_is_a_skip_with_the_backends_reason(bad_run: Run) -> None:
    assert bad_run.row(CASE_IDS[0], "picky").status == "passed"
    row = bad_run.row(CASE_IDS[1], "picky")
    assert row.status == "skipped"
    assert "q_len > 1 not supported" in row.message
    assert f"{CASE_IDS[1]}[picky] SKIPPED" in bad_run.out
    assert "q_len > 1 not supported" in bad_run.out


# ------------------------------------------------------------- selection and sharding


# Same model and axes as TINY's last case but a longer KV: same case id, other contents.
TWIN = (
    TINY.replace('name = "tiny"', 'name = "twin"')
    .replace("kv_len = 21", "kv_len = 45")
    .replace("q_len = [1, 2]", "q_len = 2")
)


@pytest.fixture(scope="module")
def selected_run(tmp_path_factory) -> Run:
    """tiny.toml and twin.toml, two backends, narrowed with -k to the seqLenQ2 grouped items
    (tiny's, then twin's with the same case id)."""
    where = tmp_path_factory.mktemp("selected")
    (where / "twin.toml").write_text(TWIN)
    return run_pytest(
        where,
        "twin.toml",
        "--backends",
        "torch_baseline,torch_grouped",
        "-k",
        "seqLenQ2 and torch_grouped",
        "--no-timing",
    )


def test_k_selects_items(selected_run: Run) -> None:
    assert selected_run.rc == 0, selected_run.out
    assert "2 passed, 4 deselected" in selected_run.out
    rows = sorted((r.matrix, r.case_id, r.backend, r.status) for r in selected_run.rows())
    assert rows == [
        ("tiny", CASE_IDS[1], "torch_grouped", "passed"),
        ("twin", CASE_IDS[1], "torch_grouped", "passed"),
    ]


def test_same_case_id_in_two_matrices_uses_each_matrixs_inputs(selected_run: Run) -> None:
    """Two matrix files may share a case id with different contents (kv_len 21 vs 45).
    Bug: the plugin caches inputs and reference by (case.id, device), so twin.toml's item
    right after tiny.toml's same-id item reuses tiny's inputs: its row says kv_len 45 but
    the data (and bytes, timing) are kv_len 21's."""
    rows = {r.matrix: r for r in selected_run.rows()}
    short, long = rows["tiny"], rows["twin"]
    assert short.case_id == long.case_id
    assert (short.case["kv_len"], long.case["kv_len"]) == (21, 45)
    # one request of each ragged batch is exactly kv_len long: more KV bytes in twin
    assert long.bytes > short.bytes


def test_xdist_two_workers(tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    matrix = TINY.replace("q_len = [1, 2]", "q_len = [1, 2, 3, 4]")
    # --dist load, as `python -m harness run` uses (xdist 3.8's loadgroup deadlocks after
    # a worker restart); the per-process input cache makes any split of a case correct.
    run = run_pytest(tmp_path, "-n", "2", "--dist", "load", "--no-timing", matrix=matrix)
    assert run.rc == 0, run.out
    assert "8 passed, 8 skipped" in run.out
    files = sorted(p.name for p in run.results.glob("*.jsonl"))
    assert len(files) == 2, files
    assert files[0].endswith("-gw0.jsonl") and files[1].endswith("-gw1.jsonl")
    assert files[0].removesuffix("-gw0.jsonl") == files[1].removesuffix("-gw1.jsonl")
    rows = run.rows()
    assert len(rows) == 16
    assert len({(r.case_id, r.backend) for r in rows}) == 16
    assert len({r.run_id for r in rows}) == 1
    assert {r.worker for r in rows} == {"gw0", "gw1"}
    assert all(f.name.startswith(rows[0].run_id) for f in run.results.glob("*.jsonl"))


def test_bad_input_is_one_clear_collection_error_each(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(TINY.replace("kv_len = 21", "kv_len = 1"))
    run = run_pytest(tmp_path, "bad.toml", "--backends", "torch_grouped,nope")
    assert run.rc == 2, run.out  # collection errors interrupt the session
    assert "2 errors" in run.out
    # the malformed matrix: file, line, key
    line = TINY.splitlines().index("kv_len = 21") + 1
    assert f"{tmp_path / 'bad.toml'}:{line}: key 'kv_len': kv_len 1 < q_len 2" in run.out
    # a good matrix with an unknown backend: the name and the known ones
    assert "unknown backend 'nope' (known: " in run.out
    assert "torch_grouped" in run.out
    assert "Traceback" not in run.out
    assert not list(tmp_path.glob("results/*.jsonl"))


def test_in_process_sessions_write_their_own_results(
    pytester: pytest.Pytester, monkeypatch
) -> None:
    """Two pytest sessions in one process (pytester, IDEs, `pytest.main` from a script).
    Bug: the plugin's module-level result writer outlives the session, so the second
    session's rows are appended to the first session's file and --results-dir is ignored."""
    monkeypatch.setenv("HARNESS_COMMIT", "test-commit")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # when this suite runs under -n
    pytester.makefile(".toml", tiny=TINY)
    args = [
        "-p",
        "harness.pytest_plugin",
        "tiny.toml",
        "--no-timing",
        "--backends",
        "torch_grouped",
    ]
    pytester.runpytest_inprocess(*args, "--results-dir", "one").assert_outcomes(passed=2)
    pytester.runpytest_inprocess(*args, "--results-dir", "two").assert_outcomes(passed=2)
    one, _ = read_results([pytester.path / "one"])
    assert len(one) == 2
    two, _ = read_results([pytester.path / "two"]) if (pytester.path / "two").exists() else ([], [])
    assert len(two) == 2
    assert {r.run_id for r in one}.isdisjoint({r.run_id for r in two})
