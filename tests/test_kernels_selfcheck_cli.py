"""`python -m kernels.selfcheck`'s grid options: a bad list is one usage line and exit 2,
before anything asks for a GPU."""

from __future__ import annotations

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
