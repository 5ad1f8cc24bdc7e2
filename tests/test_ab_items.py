"""A/B items of harness.pytest_plugin and the rerun rule, without timing anything real.

A conftest next to a one-case matrix registers cheap CPU backends and replaces
harness.timing.time_ab (ABItem imports it from harness.timing inside execute()) with a
fake that returns scripted PairedTiming objects per B backend, so each verdict is known
in advance: inconclusive, inconclusive, same -> 3 attempts and `same`; max_reruns = 0 ->
1 attempt; `slower` -> a failed row with the ratio and interval, pytest exit code 1.
Also: time_ab itself on CPU never stops on the budget below MIN_SAMPLES_FOR_VERDICT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.results import ResultRow, read_results
from harness.stats import MIN_SAMPLES_FOR_VERDICT, verdict
from harness.timing import TimingConfig, time_ab

REPO = Path(__file__).resolve().parent.parent
CASE = "T-bf16-batchSize3-seqLenQ1"

MATRIX = """\
[matrix]
name = "tiny"
seed = 42

[models.T]
num_qo_heads = 4
num_kv_heads = 2
head_dim = 16

[axes]
batch = 3
q_len = 1
kv_len = 21
page_size = 16

[settings]
warmup_ms = 1
budget_ms = 10
min_reps = 5
max_reps = 50
"""

CONFTEST = """\
import json
from pathlib import Path

import harness.timing
from harness.backends import Backend, get, register
from harness.stats import RatioEstimate
from harness.timing import PairedTiming, summarize

LOG = Path(__file__).parent / "time_ab_calls.jsonl"
LAST = []
INC = (1.02, 1.01, 1.03)  # straddles +2 %
SCRIPTS = {
    "rerun": [INC, INC, (1.0, 0.995, 1.005)],
    "never": [INC] * 10,
    "slow": [(1.05, 1.04, 1.06)],
    "fast": [(0.95, 0.94, 0.96)],
}
CALLS = {}


def _ok(case, device):
    return None


def _backend(name):
    good = get("torch_grouped").prepare

    def prepare(inputs):
        inner = good(inputs)

        def launch(out):
            LAST.append(name)
            inner(out)

        return launch

    register(Backend(name=name, role="peer", supports=_ok, prepare=prepare))


for _name in ["ref", *SCRIPTS]:
    _backend(_name)


def fake_time_ab(fn_a, fn_b, device, cfg=None):
    fn_a()
    a = LAST[-1]
    fn_b()
    b = LAST[-1]
    k = CALLS.get(b, 0)
    CALLS[b] = k + 1
    ratio, lo, hi = SCRIPTS[b][k]
    with open(LOG, "a") as fh:
        fh.write(json.dumps({"a": a, "b": b, "budget_ms": cfg.budget_ms,
                             "max_reps": cfg.max_reps, "seed": cfg.seed}) + "\\n")
    sa = [0.1 + 0.0001 * i for i in range(40)]
    sb = [x * ratio for x in sa]
    est = RatioEstimate(ratio, lo, hi, 40, 40, True, 0.95)
    return PairedTiming(summarize(sa, "fake", False, "budget"),
                        summarize(sb, "fake", False, "budget"), est, "budget")


harness.timing.time_ab = fake_time_ab
"""


class Run:
    def __init__(self, where: Path, proc: subprocess.CompletedProcess) -> None:
        self.where = where
        self.rc = proc.returncode
        self.out = proc.stdout + proc.stderr

    def rows(self) -> dict[str, ResultRow]:
        rows, problems = read_results([self.where / "results"])
        assert problems == [], problems
        assert all(r.case_id == CASE for r in rows)
        return {r.backend: r for r in rows}

    def calls(self) -> list[dict]:
        log = self.where / "time_ab_calls.jsonl"
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def run_matrix(where: Path, pairs: list[str], settings: str = "", *args: str) -> Run:
    where.mkdir(parents=True, exist_ok=True)
    (where / "tiny.toml").write_text(MATRIX + settings)
    (where / "conftest.py").write_text(CONFTEST)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["HARNESS_COMMIT"] = "test-commit"
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "harness.pytest_plugin", "-p", "no:cacheprovider"]
    cmd += ["tiny.toml", "--results-dir", str(where / "results"), "--harness-device", "cpu"]
    cmd += ["-k=vs", "-v", "-o", "addopts=", *args]
    for p in pairs:
        cmd += ["--ab", p]
    proc = subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True, timeout=300)
    return Run(where, proc)


@pytest.fixture(scope="module")
def reruns(tmp_path_factory) -> Run:
    """Default settings (max_reruns = 2, threshold 2 %)."""
    return run_matrix(
        tmp_path_factory.mktemp("reruns"), ["ref:rerun", "ref:never", "ref:slow", "ref:fast"]
    )


@pytest.fixture(scope="module")
def no_reruns(tmp_path_factory) -> Run:
    return run_matrix(tmp_path_factory.mktemp("noreruns"), ["ref:rerun"], "max_reruns = 0\n")


def test_only_ab_items_ran(reruns: Run) -> None:
    assert set(reruns.rows()) == {"ref-vs-rerun", "ref-vs-never", "ref-vs-slow", "ref-vs-fast"}
    assert all(r.role == "comparison" for r in reruns.rows().values())


def test_inconclusive_twice_then_same_is_three_attempts(reruns: Run) -> None:
    r = reruns.rows()["ref-vs-rerun"]
    c = r.comparison
    assert r.status == "passed", reruns.out
    assert [a["verdict"] for a in c["attempts"]] == ["inconclusive", "inconclusive", "same"]
    assert c["verdict"] == "same"
    assert (c["ratio"], c["ci_low"], c["ci_high"]) == (1.0, 0.995, 1.005)
    assert c["attempts"][0]["ci_low"] == 1.01 and c["attempts"][0]["ci_high"] == 1.03
    assert c["threshold"] == 0.02 and (c["a"], c["b"]) == ("ref", "rerun")
    assert "3 attempt(s)): same at threshold ±2.0%" in r.message


def test_each_rerun_doubles_the_budget_with_a_new_seed(reruns: Run) -> None:
    calls = [x for x in reruns.calls() if x["b"] == "rerun"]
    assert [x["a"] for x in calls] == ["ref"] * 3
    assert [x["budget_ms"] for x in calls] == [10, 20, 40]
    assert [x["max_reps"] for x in calls] == [50, 100, 200]
    assert [x["seed"] for x in calls] == [0, 1, 2]


def test_always_inconclusive_stops_after_max_reruns(reruns: Run) -> None:
    r = reruns.rows()["ref-vs-never"]
    assert len(r.comparison["attempts"]) == 3  # 1 + max_reruns (2)
    assert r.comparison["verdict"] == "inconclusive"
    assert r.status == "passed"
    assert len([x for x in reruns.calls() if x["b"] == "never"]) == 3


def test_slower_is_a_failed_row_with_ratio_and_interval(reruns: Run) -> None:
    r = reruns.rows()["ref-vs-slow"]
    assert r.status == "failed"
    assert r.comparison["verdict"] == "slower"
    assert len(r.comparison["attempts"]) == 1  # a clear verdict is never rerun
    assert "slow / ref = 1.0500 [1.0400, 1.0600]" in r.message
    assert "slower at threshold ±2.0%" in r.message
    assert r.timing["median_ms"] == pytest.approx(r.comparison["a_timing"]["median_ms"] * 1.05)
    # pytest reports it as the item's failure, with the same figures
    assert f"{CASE} [ref-vs-slow]: regression: slow / ref = 1.0500 [1.0400, 1.0600]" in reruns.out
    assert "FAILED" in reruns.out


def test_faster_passes(reruns: Run) -> None:
    r = reruns.rows()["ref-vs-fast"]
    assert r.status == "passed" and r.comparison["verdict"] == "faster"
    assert len(r.comparison["attempts"]) == 1


def test_a_regression_is_pytest_exit_code_1(reruns: Run) -> None:
    assert reruns.rc == 1, reruns.out
    assert "1 failed, 3 passed" in reruns.out


def test_max_reruns_0_is_one_attempt(no_reruns: Run) -> None:
    assert no_reruns.rc == 0, no_reruns.out
    r = no_reruns.rows()["ref-vs-rerun"]
    assert len(r.comparison["attempts"]) == 1
    assert r.comparison["verdict"] == "inconclusive"
    assert r.status == "passed"
    assert len(no_reruns.calls()) == 1


# ------------------------------------------------------- time_ab on the CPU, no speed


def _noop() -> None:
    pass


def test_time_ab_never_stops_on_budget_below_the_verdict_floor() -> None:
    """A zero budget would stop after the first batch of 10 pairs; time_ab keeps going
    until a verdict is possible (MIN_SAMPLES_FOR_VERDICT pairs)."""
    cfg = TimingConfig(warmup_ms=0, budget_ms=0, min_reps=5, check_every=10, sample_clocks=False)
    pt = time_ab(_noop, _noop, torch.device("cpu"), cfg)
    assert pt.stop_reason in ("budget", "converged")
    assert pt.ratio.n_a == pt.ratio.n_b == pt.a.n == pt.b.n >= MIN_SAMPLES_FOR_VERDICT
    assert pt.ratio.paired
    assert verdict(pt.ratio, 1e9) == "same"  # enough samples: a verdict, not "inconclusive"


def test_time_ab_max_reps_below_the_floor_is_inconclusive() -> None:
    cfg = TimingConfig(warmup_ms=0, budget_ms=1e6, max_reps=20, check_every=10, sample_clocks=False)
    pt = time_ab(_noop, _noop, torch.device("cpu"), cfg)
    assert pt.stop_reason == "max_reps" and pt.ratio.n_a == 20
    assert verdict(pt.ratio, 1e9) == "inconclusive"


def test_time_ab_never_exceeds_max_reps() -> None:
    cfg = TimingConfig(
        warmup_ms=0,
        budget_ms=1e6,
        max_reps=35,
        check_every=10,
        target_rel_ci=-1.0,  # never converges: only max_reps can stop it
        sample_clocks=False,
    )
    pt = time_ab(_noop, _noop, torch.device("cpu"), cfg)
    assert pt.stop_reason == "max_reps"
    assert pt.ratio.n_a == 35


# ----------------------------------- time_ab end to end with a scripted clock (no speed)


class ScriptedClock:
    """Replaces the CPU runner's measurement: each unit returns its own synthetic time
    (seeded lognormal), so time_ab's loop, pairing and stopping rule run for real."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import harness.timing

        monkeypatch.setattr(
            harness.timing._Runner, "measure", lambda self, units: [u() for u in units]
        )


def side(seed: int, median: float, sigma: float):
    import math
    import random

    rng = random.Random(seed)
    return lambda: rng.lognormvariate(math.log(median), sigma)


@pytest.mark.parametrize("seed", range(5))
def test_time_ab_catches_a_planted_2_percent_slowdown(monkeypatch, seed: int) -> None:
    ScriptedClock(monkeypatch)
    cfg = TimingConfig(warmup_ms=0, budget_ms=1e9, max_reps=4000, sample_clocks=False, seed=seed)
    pt = time_ab(side(seed, 0.05, 0.01), side(seed + 100, 0.051, 0.01), torch.device("cpu"), cfg)
    assert pt.stop_reason == "converged"
    assert pt.ratio.halfwidth / pt.ratio.ratio <= cfg.target_rel_ci
    assert pt.ratio.ci_low <= 1.02 <= pt.ratio.ci_high
    assert verdict(pt.ratio, 0.01) == "slower"


@pytest.mark.parametrize("seed", range(5))
def test_time_ab_aa_is_same(monkeypatch, seed: int) -> None:
    ScriptedClock(monkeypatch)
    cfg = TimingConfig(warmup_ms=0, budget_ms=1e9, max_reps=4000, sample_clocks=False, seed=seed)
    pt = time_ab(side(seed, 0.05, 0.003), side(seed + 100, 0.05, 0.003), torch.device("cpu"), cfg)
    assert pt.stop_reason == "converged"
    assert verdict(pt.ratio, 0.01) == "same"


def test_time_ab_pairs_cancel_a_shared_drift(monkeypatch) -> None:
    """Both sides drift 20 % together over the run: the interleaved pairs still give a
    tight interval around the planted 2 %."""
    ScriptedClock(monkeypatch)
    import math
    import random

    rng = random.Random(3)
    t = [0]

    def drifting(scale: float):
        def unit() -> float:
            t[0] += 1
            return scale * (1 + 0.2 * math.sin(t[0] / 200)) * rng.lognormvariate(0, 0.002)

        return unit

    cfg = TimingConfig(warmup_ms=0, budget_ms=1e9, max_reps=3000, sample_clocks=False)
    pt = time_ab(drifting(1.0), drifting(1.02), torch.device("cpu"), cfg)
    assert pt.ratio.paired
    assert pt.ratio.ci_low <= 1.02 <= pt.ratio.ci_high
    assert verdict(pt.ratio, 0.01) == "slower"
