"""The calibration set's bench tools, on a CPU: bench/plan_calibrate_merge.py (re-timed shapes
replace their old lines, new ones are appended, a file from another GPU or not a calibration
file is refused with one message) and plan_calibrate.spread (which shapes get timed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest


def _load(name: str):
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


merge_mod = _load("plan_calibrate_merge")

H100 = {"device": "NVIDIA H100 80GB HBM3", "sms": 132}


def _write(path: Path, head: dict, recs: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(x) for x in [head, *recs]) + "\n")
    return path


def _rec(shape: list, t: float, seed: bool = False, **extra) -> dict:
    return {"shape": shape, "seed": seed, "times": {"tile64x1/split1": t}, **extra}


A = ["h32/4 d256", 32, 4, 256, "fp8", 8, 64, 16384]
B = ["GPT-OSS", 64, 8, 64, "fp8", 8, 64, 16384]
C = ["h32/4 d256", 32, 4, 256, "bf16", 8, 12, 4096]


def test_retimed_shapes_replace_their_lines_and_new_ones_are_appended(tmp_path: Path) -> None:
    occ_old = {"256/fp8/64": [[64, 1, True]], "64/fp8/64": [[64, 4, True]]}
    into = _write(
        tmp_path / "set.jsonl",
        {**H100, "occupancy": occ_old},
        [_rec(A, 1598.7), _rec(B, 418.9, seed=True)],
    )
    new = _write(
        tmp_path / "new.jsonl",
        {**H100, "occupancy": {"256/fp8/64": [[64, 2, True]]}},
        [_rec(A, 1283.8, auto="tile64x1/split1"), _rec(C, 99.8)],
    )
    assert merge_mod.merge(into, [new]) == (1, 1)
    lines = [json.loads(x) for x in into.read_text().splitlines()]
    head, recs = lines[0], lines[1:]
    assert head["occupancy"] == {"256/fp8/64": [[64, 2, True]], "64/fp8/64": [[64, 4, True]]}
    assert [r["shape"] for r in recs] == [A, B, C]  # order kept, the new shape last
    assert recs[0]["times"] == {"tile64x1/split1": 1283.8} and "auto" not in recs[0]
    assert recs[1] == _rec(B, 418.9, seed=True)
    # a seed row re-timed by a spread over the grid (seed false there) stays a seed row
    again = _write(tmp_path / "again.jsonl", {**H100, "occupancy": {}}, [_rec(B, 415.0)])
    assert merge_mod.merge(into, [again]) == (1, 0)
    assert json.loads(into.read_text().splitlines()[2]) == _rec(B, 415.0, seed=True)


def test_a_file_from_another_gpu_is_refused(tmp_path: Path) -> None:
    into = _write(tmp_path / "set.jsonl", {**H100, "occupancy": {}}, [_rec(A, 1.0)])
    other = _write(
        tmp_path / "h200.jsonl", {"device": "NVIDIA H200", "sms": 132, "occupancy": {}}, []
    )
    with pytest.raises(ValueError, match=r"h200\.jsonl: timed on NVIDIA H200"):
        merge_mod.merge(into, [other])
    assert json.loads(into.read_text().splitlines()[1])["shape"] == A  # left as it was


def test_a_broken_file_gets_one_message_and_exit_2(tmp_path: Path, capsys) -> None:
    into = _write(tmp_path / "set.jsonl", {**H100, "occupancy": {}}, [_rec(A, 1.0)])
    bad = tmp_path / "cut.jsonl"
    bad.write_text(json.dumps({**H100, "occupancy": {}}) + '\n{"shape": [1, 2')
    assert merge_mod.main([str(bad), "--into", str(into)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("plan_calibrate_merge: ") and "cut.jsonl: not a calibration file" in err
    lacking = _write(tmp_path / "lacking.jsonl", {**H100, "occupancy": {}}, [{"shape": A}])
    assert merge_mod.main([str(lacking), "--into", str(into)]) == 2
    assert "lacks one of" in capsys.readouterr().err


def test_the_spread_takes_one_shape_of_each_stretch_and_both_kv_lens() -> None:
    pytest.importorskip("torch")
    spread = _load("plan_calibrate").spread
    cases = [
        ("h32/4 d256", 32, 4, 256, "bf16", q, b, L)
        for q in (8, 12, 16)
        for b in range(12, 129, 4)
        for L in (4096, 16384)
    ]  # 180, kv_len alternating
    picked = spread(cases, 30, seed=0)
    idx = [cases.index(c) for c in picked]
    assert [i // 6 for i in idx] == list(range(30))  # one in each stretch of 6, in order
    assert {c[7] for c in picked} == {4096, 16384}  # a stride of 6 took 4096 only
    assert spread(cases, 30, seed=0) == picked and spread(cases, 30, seed=1) != picked
    assert spread(cases, 500, seed=3) == cases


def test_what_gets_timed(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    todo_shapes = _load("plan_calibrate").todo_shapes
    the_set = _write(
        tmp_path / "set.jsonl",
        {**H100, "occupancy": {}},
        [_rec(A, 1.0), _rec(B, 2.0, seed=True), _rec(C, 3.0)],
    )
    assert todo_shapes(str(the_set), r"d256 fp8 q8 ", 80, 0, True) == [(tuple(A), False)]
    assert todo_shapes(str(the_set), r"B64 kv16384", 80, 0, True) == [
        (tuple(A), False),
        (tuple(B), True),
    ]
    seeds = todo_shapes(None, r"^Qwen3-480B fp8 q8 ", 80, 0, True)
    assert [s[6] for s, seed in seeds if seed] == [8, 16, 32, 40, 64]
    fresh = todo_shapes(None, r"^GPT-OSS bf16 q4 ", 6, 0, True)
    assert [seed for _, seed in fresh] == [True] * 5 + [False] * 6
    assert all(s[0] == "GPT-OSS" and s[4] == "bf16" and s[5] == 4 for s, _ in fresh)
    assert [seed for _, seed in todo_shapes(None, "", 10, 0, False)] == [False] * 10
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"empty\.jsonl: not a calibration file"):
        todo_shapes(str(tmp_path / "empty.jsonl"), "", 80, 0, True)
