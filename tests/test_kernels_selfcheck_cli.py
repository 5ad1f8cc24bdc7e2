"""`python -m kernels.selfcheck`'s grid options: a bad list is one usage line and exit 2,
before anything asks for a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from kernels import selfcheck


@pytest.mark.parametrize(
    "argv", [["--batches", "x"], ["--batches", ""], ["--splits", "0,2"], ["--splits", "4,-1"]]
)
def test_bad_grid_lists_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        selfcheck.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m kernels.selfcheck: error: argument")
    assert "comma list of positive integers" in err[-1]


def test_bad_filter_regex_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        selfcheck.main(["--only-bench", "--filter", "seqLenQ(8"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m kernels.selfcheck: error: argument --filter")
    assert "not a regular expression" in err[-1] and "'seqLenQ(8'" in err[-1]


def test_filter_regex_parses() -> None:
    assert (
        selfcheck._regex("fp8_e4m3-batchSize(16|64)-seqLenQ[48]")
        == "fp8_e4m3-batchSize(16|64)-seqLenQ[48]"
    )


def test_grid_lists_parse() -> None:
    assert selfcheck._ints("1, 8,16") == (1, 8, 16)


def test_unowned_cache_slots_are_nan_and_the_reference_ignores_them() -> None:
    """The self-check's cache: NaN exactly where no request's tokens live (the last pages'
    tails, the spare pages), finite everywhere else, and a finite reference output."""
    import torch

    c = selfcheck.Case(3, 2, 8, 2, 64, 16, "bf16", "bf16", 70)
    x = selfcheck.make_inputs(c, torch.Generator().manual_seed(5), torch.device("cpu"))
    kv, table, lens = x["kv"].float(), x["table"], x["lens_list"]
    owned_slots = 0
    for b, n in enumerate(lens):
        for t in range(n):
            page, slot = int(table[b, t // c.page_size]), t % c.page_size
            assert torch.isfinite(kv[page, :, slot]).all(), (b, t)
        owned_slots += n
        tail = n % c.page_size
        if tail:
            last = int(table[b, (n - 1) // c.page_size])
            assert torch.isnan(kv[last, :, tail:]).all(), b
    nan_slots = int(torch.isnan(kv[:, 0, :, 0, 0]).sum())
    assert nan_slots == kv.shape[0] * c.page_size - owned_slots
    assert torch.isfinite(selfcheck.reference(c, x)).all()


def test_bench_start_without_cuda_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The bench scripts' shared start (bench/*.py): arguments parsed first (so --help and
    bad arguments work anywhere), then no CUDA device is one stderr line naming the script
    and exit 2, never a traceback."""
    import argparse

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ap = argparse.ArgumentParser(prog="shared_pages.py")
    ap.add_argument("--reps", type=int, default=25)
    with pytest.raises(SystemExit) as e:
        selfcheck.bench_start(ap, ["--reps", "3"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["shared_pages needs a CUDA device"]
    with pytest.raises(SystemExit) as e:
        selfcheck.bench_start(ap, ["--reps", "three"])
    assert e.value.code == 2 and "invalid int value" in capsys.readouterr().err


BENCH_SCRIPTS = sorted(
    p.name
    for p in (Path(__file__).resolve().parents[1] / "bench").glob("*.py")
    if "bench_start(" in p.read_text()
)


ARGV = {"power_probe.py": ["Qwen3"]}  # its required patterns


def test_every_bench_script_starts_through_bench_start() -> None:
    assert len(BENCH_SCRIPTS) >= 12, BENCH_SCRIPTS


@pytest.mark.parametrize("script", BENCH_SCRIPTS)
def test_bench_scripts_exit_2_without_cuda(script: str) -> None:
    """Run as a user would on a machine without a GPU: exit 2 and one line."""
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    path = Path(__file__).resolve().parents[1] / "bench" / script
    argv = ARGV.get(script, [])
    r = subprocess.run([sys.executable, str(path), *argv], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"{script[:-3]} needs a CUDA device"]


def _takes(*takes: list[float]):
    """A take() that hands out `takes` in turn, and the list of those it handed out."""
    given: list[list[float]] = []

    def take() -> list[float]:
        given.append(list(takes[len(given)]))
        return given[-1]

    return take, given


CLEAN = [71.0, 72.0, 71.5, 72.2, 71.8, 72.0, 71.9, 72.1, 71.7]
EPISODE = [1700.0, 900.0, 500.0, 300.0, 200.0, 150.0, 120.0, 100.0, 90.0]


def test_steady_median_retakes_a_slow_episode() -> None:
    """A take inside one of the machine's slow episodes (every call slow, decaying) is
    retaken: the bench's fixed takes otherwise reported 362 for a 72 µs case."""
    take, given = _takes(EPISODE, CLEAN)
    assert selfcheck.steady_median(take, pause_s=0) == pytest.approx(71.9)
    assert len(given) == 2


def test_steady_median_takes_once_when_steady() -> None:
    take, given = _takes(CLEAN, EPISODE)
    assert selfcheck.steady_median(take, pause_s=0) == pytest.approx(71.9)
    assert len(given) == 1


def test_steady_median_gives_the_steadiest_take_when_none_is_steady() -> None:
    wide = [100.0, 100.0, 100.0, 100.0, 130.0, 130.0, 130.0, 130.0]  # upper quartile 1.3x
    wider = [50.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0]  # 2x
    take, given = _takes(wider, wide, wider)
    assert selfcheck.steady_median(take, tries=3, pause_s=0) == pytest.approx(115.0)
    assert len(given) == 3
