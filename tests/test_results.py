"""harness.results: JSON-lines round trip, forgiving reads, schema versions, merge rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.results import (
    SCHEMA_VERSION,
    ResultRow,
    ResultWriter,
    merge,
    parse_line,
    read_results,
    result_files,
)


def make_row(
    case_id: str = "A-bf16-batchSize1-seqLenQ1",
    backend: str = "torch_grouped",
    status: str = "passed",
    timestamp: float = 100.0,
    device: str = "cpu0",
    commit: str = "abc",
    **kw,
) -> ResultRow:
    return ResultRow(
        run_id=kw.pop("run_id", "run1"),
        matrix=kw.pop("matrix", "m"),
        case_id=case_id,
        case={"batch": 1, "q_len": 1, "kv_dtype": "bf16"},
        backend=backend,
        role="grouped" if backend.endswith("grouped") else "baseline",
        status=status,
        device={"name": device, "kind": "cpu"},
        env={"git_commit": commit, "hostname": "h"},
        timing=kw.pop("timing", {"median_ms": 1.5, "ci_low_ms": 1.4, "ci_high_ms": 1.6, "n": 10}),
        correctness={"max_abs_err": 0.001, "mismatches": 0},
        timestamp=timestamp,
        **kw,
    )


def test_write_read_round_trip(tmp_path: Path) -> None:
    rows = [
        make_row(),
        make_row(backend="torch_baseline", status="failed", message="bad"),
        make_row(case_id="B", status="skipped", message="no CUDA device", timing={}, tbps=None),
    ]
    path = tmp_path / "deep" / "dir" / "run1-gw0.jsonl"  # parents are created
    w = ResultWriter(path)
    for r in rows:
        w.write(r)
    text = path.read_text()
    assert text.count("\n") == 3 and text.endswith("\n")
    for line in text.splitlines():
        obj = json.loads(line)
        assert obj["schema"] == SCHEMA_VERSION
    got, problems = read_results([path])
    assert problems == []
    assert got == rows
    assert got[0].median_ms == 1.5 and got[2].median_ms is None
    assert got[0].device_name == "cpu0"
    # appending, never truncating: a second writer on the same file adds rows
    ResultWriter(path).write(make_row(case_id="C"))
    assert [r.case_id for r in read_results([path])[0]] == [r.case_id for r in rows] + ["C"]


def test_writer_rejects_unknown_status(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="status"):
        ResultWriter(tmp_path / "r.jsonl").write(make_row(status="ok"))
    assert not (tmp_path / "r.jsonl").exists() or (tmp_path / "r.jsonl").read_text() == ""


def test_truncated_last_line_and_garbage_are_reported_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    w = ResultWriter(path)
    w.write(make_row(case_id="one"))
    with open(path, "a") as fh:
        fh.write("this is not json\n")
        fh.write("\n")  # blank lines are ignored silently
    w.write(make_row(case_id="three"))
    whole = make_row(case_id="four").to_json()
    with open(path, "a") as fh:
        fh.write(whole[: len(whole) // 2])  # a crash mid-write: no newline
    rows, problems = read_results([tmp_path])
    assert [r.case_id for r in rows] == ["one", "three"]
    assert [(p.path, p.line) for p in problems] == [(str(path), 2), (str(path), 5)]
    assert str(problems[0]).startswith(f"{path}:2: ")
    assert str(problems[1]).startswith(f"{path}:5: ")
    assert all("not valid JSON" in p.message for p in problems)
    assert "truncated" in problems[1].message


def test_newer_schema_is_rejected_clearly(tmp_path: Path) -> None:
    obj = json.loads(make_row().to_json())
    obj["schema"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError) as info:
        parse_line(json.dumps(obj))
    msg = str(info.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in msg
    assert "newer" in msg and "upgrade" in msg
    path = tmp_path / "r.jsonl"
    path.write_text(make_row().to_json() + "\n" + json.dumps(obj) + "\n")
    rows, problems = read_results([path])
    assert len(rows) == 1
    assert len(problems) == 1 and problems[0].line == 2 and "newer" in problems[0].message


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda o: o.pop("schema"), "no schema version"),
        (lambda o: o.update(schema="1"), "no schema version"),
        (lambda o: o.pop("case_id"), "missing field(s): case_id"),
        (lambda o: o.update(status="great"), "unknown status 'great'"),
    ],
)
def test_parse_line_says_what_is_wrong(mutate, fragment: str) -> None:
    obj = json.loads(make_row().to_json())
    mutate(obj)
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_line(json.dumps(obj))
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_line("[1, 2]")


def test_unknown_fields_are_ignored() -> None:
    obj = json.loads(make_row().to_json())
    obj["added_later"] = {"x": 1}
    assert parse_line(json.dumps(obj)) == make_row()


def test_result_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jsonl").write_text("")
    (tmp_path / "b.jsonl").write_text("")
    (tmp_path / "notes.txt").write_text("")
    files = result_files([tmp_path])
    assert files == [tmp_path / "a" / "x.jsonl", tmp_path / "b.jsonl"]
    with pytest.raises(FileNotFoundError, match="nope"):
        result_files([tmp_path / "nope"])


def test_merge_error_beats_a_later_pass_so_failures_are_never_hidden() -> None:
    rows = [
        make_row(status="error", timestamp=1.0),
        make_row(status="passed", timestamp=9.0),
        make_row(status="skipped", timestamp=10.0),
    ]
    for order in (rows, rows[::-1]):
        merged, dropped = merge(order)
        assert dropped == 2
        assert [(r.status, r.timestamp) for r in merged] == [("error", 1.0)]


def test_merge_same_case_id_from_two_matrices_is_not_a_duplicate() -> None:
    merged, dropped = merge([make_row(matrix="m1"), make_row(matrix="m2")])
    assert dropped == 0
    assert sorted(r.matrix for r in merged) == ["m1", "m2"]


def test_merge_rank_order() -> None:
    merged, _ = merge(
        [make_row(status="error", timestamp=5.0), make_row(status="failed", timestamp=1.0)]
    )
    assert merged[0].status == "failed"
    merged, _ = merge(
        [make_row(status="skipped", timestamp=5.0), make_row(status="error", timestamp=1.0)]
    )
    assert merged[0].status == "error"
    merged, _ = merge(
        [make_row(status="passed", timestamp=5.0), make_row(status="failed", timestamp=1.0)]
    )
    assert merged[0].status == "failed"


def test_merge_later_timestamp_wins_among_equals() -> None:
    old = make_row(timestamp=1.0, run_id="old")
    new = make_row(timestamp=2.0, run_id="new")
    for order in ([old, new], [new, old]):
        merged, dropped = merge(order)
        assert dropped == 1
        assert [r.run_id for r in merged] == ["new"]


def test_merge_keeps_distinct_measurements_and_sorts() -> None:
    rows = [
        make_row(case_id="B"),
        make_row(case_id="A"),
        make_row(case_id="A", backend="torch_baseline"),
        make_row(case_id="A", device="gpu1"),  # another device: not a duplicate
        make_row(case_id="A", commit="def"),  # another commit: not a duplicate
        make_row(case_id="B", timestamp=200.0),  # the one duplicate
    ]
    merged, dropped = merge(rows)
    assert dropped == 1
    assert len(merged) == 5
    keys = [(r.device_name, r.case_id, r.backend) for r in merged]
    assert keys == sorted(keys)
    assert next(r for r in merged if r.case_id == "B").timestamp == 200.0
