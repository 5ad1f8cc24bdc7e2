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


def test_grid_lists_parse() -> None:
    assert selfcheck._ints("1, 8,16") == (1, 8, 16)
