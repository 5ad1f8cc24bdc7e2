"""bench/p_precision.py on a CPU: the emulation without rounding is the reference, and the
harness's own checks tell a 16-bit P from an e4m3 one on the smoke matrix's fp8 cases (the
fact that rules an fp8 P V out for the kernels, kernels/NOTES.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from harness.checks import passed
from harness.inputs import make_inputs
from harness.matrix import load_matrix
from harness.reference import reference_attention

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("p_precision", ROOT / "bench" / "p_precision.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pp = _load()
FP8 = [c for c in load_matrix(ROOT / "matrices" / "smoke.toml").cases if c.kv_dtype == "fp8_e4m3"]


def test_without_rounding_the_emulation_is_the_reference() -> None:
    inputs = make_inputs(FP8[-1], "cpu")
    out = pp.attention_with_rounded_p(inputs, "exact")
    torch.testing.assert_close(out, reference_attention(inputs), rtol=1e-5, atol=1e-6)
    # ... and rounding P changes it: the modes are applied, not ignored
    assert not torch.allclose(pp.attention_with_rounded_p(inputs, "e4m3"), out, atol=1e-3)


def test_the_harness_checks_pass_16_bit_p_and_fail_e4m3_p() -> None:
    by_case = {c: pp.check_modes(c, ["fp16", "bf16", "e4m3", "e4m3x2"]) for c in FP8}
    assert len(by_case) == 4
    for figs in by_case.values():
        assert passed(figs["fp16"]) and passed(figs["bf16"]) and passed(figs["e4m3x2"])
        assert figs["fp16"]["max_abs_err"] < 2e-3
        # an e4m3 P is an order of magnitude further off than a 16-bit or two-part one
        assert figs["e4m3"]["max_abs_err"] > 10 * figs["e4m3x2"]["max_abs_err"]
    # GPT-OSS at q_len 1, where the tolerance is tightest, fails with an e4m3 P
    assert [c.id for c, f in by_case.items() if not passed(f["e4m3"])] == [
        "GPT-OSS-fp8_e4m3-batchSize4-seqLenQ1"
    ]


def test_the_cli_reports_and_refuses_bad_input(capsys: pytest.CaptureFixture) -> None:
    assert pp.main([str(ROOT / "matrices" / "smoke.toml"), "--modes", "fp16,e4m3"]) == 0
    out = capsys.readouterr().out
    assert "4 cases" in out and "fp16    0/4 fail" in out and "e4m3    1/4 fail" in out
    assert pp.main(["--modes", "fp4"]) == 2
    assert "unknown mode" in capsys.readouterr().err
    assert pp.main([str(ROOT / "matrices" / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err
