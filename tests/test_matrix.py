"""harness.matrix: shipped matrices, expansion rules, ids, order, and one-line errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.matrix import AXIS_DEFAULTS, Case, MatrixError, case_id, load_matrix

REPO = Path(__file__).resolve().parent.parent
MATRICES = REPO / "matrices"

# A valid matrix that the error tests mutate. Lines are referred to by content, never by
# number, so the expected line is computed from the text the test writes.
BASE = """\
[matrix]
name = "t"
seed = 3

[models.A]
num_qo_heads = 8
num_kv_heads = 2
head_dim = 16

[models.B]
num_qo_heads = 4
num_kv_heads = 4
head_dim = 32

[axes]
kv_dtype = "bf16"
q_dtype = "bf16"
batch = [1, 2]
q_len = [1, 2]
kv_len = 4
page_size = 16
ragged = false
"""


def _write(tmp_path: Path, text: str, name: str = "m.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _line_of(path: Path, marker: str, nth: int = 1) -> int:
    """1-based line of the nth line whose text contains `marker`."""
    seen = 0
    for no, line in enumerate(path.read_text().splitlines(), start=1):
        if marker in line:
            seen += 1
            if seen == nth:
                return no
    raise AssertionError(f"marker {marker!r} not in {path}")


def _error(path: Path) -> str:
    with pytest.raises(MatrixError) as info:
        load_matrix(path)
    msg = str(info.value)
    # One clear message: a single line, no chained traceback context to wade through.
    assert "\n" not in msg, msg
    assert info.value.__cause__ is None
    assert msg.count(str(path)) == 1, msg
    return msg


def _assert_error(path: Path, line: int, key: str | None, *fragments: str) -> str:
    msg = _error(path)
    prefix = f"{path}:{line}: " + (f"key '{key}': " if key else "")
    assert msg.startswith(prefix), f"expected prefix {prefix!r}, got {msg!r}"
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


# --------------------------------------------------------------------- shipped matrices


@pytest.mark.parametrize("path", sorted(MATRICES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_matrix_loads(path: Path) -> None:
    m = load_matrix(path)
    assert m.cases, path
    ids = [c.id for c in m.cases]
    assert len(ids) == len(set(ids))
    assert list(m.cases) == sorted(m.cases)
    for c in m.cases:
        assert c.kv_len >= c.q_len
        assert c.num_qo_heads % c.num_kv_heads == 0
        assert c.id.startswith(f"{c.model}-{c.kv_dtype}-batchSize{c.batch}-seqLenQ{c.q_len}")


def test_smoke_has_eight_cases() -> None:
    m = load_matrix(MATRICES / "smoke.toml")
    assert m.name == "smoke"
    assert len(m.cases) == 8
    assert {c.kv_dtype for c in m.cases} == {"bf16", "fp8_e4m3"}
    assert {c.q_len for c in m.cases} == {1, 4}
    assert all(c.ragged for c in m.cases)
    assert all(c.kv_len % c.page_size for c in m.cases)  # the last page is partial
    assert all(c.seed == 1234 for c in m.cases)
    assert m.settings.budget_ms == 300


def test_spec_decode_is_the_seed_table() -> None:
    m = load_matrix(MATRICES / "spec_decode.toml")
    assert len(m.cases) == 30
    want = {
        f"{model}-fp8_e4m3-batchSize{b}-seqLenQ{q}"
        for model in ("Qwen3-480B", "GPT-OSS")
        for b in (8, 16, 32, 40, 64)
        for q in (2, 4, 8)
    }
    assert {c.id for c in m.cases} == want
    shapes = {"Qwen3-480B": (96, 8, 128), "GPT-OSS": (64, 8, 64)}
    for c in m.cases:
        assert (c.num_qo_heads, c.num_kv_heads, c.head_dim) == shapes[c.model]
        assert (c.kv_len, c.page_size, c.kv_dtype, c.q_dtype) == (16384, 16, "fp8_e4m3", "bf16")
        assert c.ragged is False
    assert m.cases[0].id == "GPT-OSS-fp8_e4m3-batchSize8-seqLenQ2"


def test_coverage_matrix_covers_what_the_issue_lists() -> None:
    cases = load_matrix(MATRICES / "coverage.toml").cases
    assert {c.head_dim for c in cases} >= {64, 128, 256}
    assert any(c.head_dim == 256 and c.batch == 32 for c in cases)
    assert {c.page_size for c in cases} >= {16, 32, 64}
    assert {c.q_len for c in cases} >= set(range(1, 17))
    assert {c.group for c in cases} >= {1, 4, 8, 16}
    assert {c.kv_dtype for c in cases} == {"bf16", "fp16", "fp8_e4m3"}
    assert any(c.ragged for c in cases)
    assert any(c.kv_len == c.q_len for c in cases)
    assert any(c.kv_len % c.page_size for c in cases)


# ------------------------------------------------------------------ expansion rules


def test_cross_product_defaults_and_ids(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        [matrix]
        seed = 11
        [models.A]
        num_qo_heads = 8
        num_kv_heads = 2
        head_dim = 16
        [models.B]
        num_qo_heads = 4
        num_kv_heads = 4
        head_dim = 32
        [axes]
        batch = [2, 1]
        q_len = [1, 2]
        kv_len = 4
        """,
    )
    m = load_matrix(path)
    assert m.name == "m"  # defaults to the file stem
    # model defaults to every model; the other axes to AXIS_DEFAULTS
    assert len(m.cases) == 2 * 2 * 2
    for c in m.cases:
        assert c.kv_dtype == AXIS_DEFAULTS["kv_dtype"]
        assert c.q_dtype == AXIS_DEFAULTS["q_dtype"]
        assert c.page_size == AXIS_DEFAULTS["page_size"]
        assert c.ragged == AXIS_DEFAULTS["ragged"]
        assert c.seed == 11
    a = next(c for c in m.cases if c.model == "A")
    assert (a.num_qo_heads, a.num_kv_heads, a.head_dim, a.group) == (8, 2, 16, 4)
    assert a.rows == a.q_len * 4
    # only the seed's axes appear when nothing else varies
    assert [c.id for c in m.cases] == [
        "A-bf16-batchSize1-seqLenQ1",
        "A-bf16-batchSize1-seqLenQ2",
        "A-bf16-batchSize2-seqLenQ1",
        "A-bf16-batchSize2-seqLenQ2",
        "B-bf16-batchSize1-seqLenQ1",
        "B-bf16-batchSize1-seqLenQ2",
        "B-bf16-batchSize2-seqLenQ1",
        "B-bf16-batchSize2-seqLenQ2",
    ]
    assert m.settings.min_reps == 10  # default settings


def test_include_exclude_and_varying_axes_in_ids(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        BASE
        + """
        [[include]]
        model = "A"
        kv_dtype = "fp8_e4m3"
        batch = 3
        q_len = 1
        kv_len = 9
        page_size = 32
        ragged = true

        [[include]]   # duplicates an [axes] point: must not make a second case
        model = "A"
        batch = 1
        q_len = 1
        kv_len = 4

        [[exclude]]
        model = "B"
        q_len = 2

        [[exclude]]   # exclude applies to [[include]] points as well
        model = "A"
        batch = 3
        kv_dtype = "bf16"
        """,
    )
    m = load_matrix(path)
    ids = [c.id for c in m.cases]
    assert len(ids) == 8 - 2 + 1
    assert "A-fp8_e4m3-batchSize3-seqLenQ1-kvLen9-page32-ragged" in ids
    assert "A-bf16-batchSize1-seqLenQ1-kvLen4-page16-uniform" in ids
    assert not any(i.startswith("B-") and "seqLenQ2" in i for i in ids)
    inc = next(c for c in m.cases if c.kv_dtype == "fp8_e4m3")
    assert (inc.batch, inc.kv_len, inc.page_size, inc.ragged, inc.q_dtype) == (
        3,
        9,
        32,
        True,
        "bf16",
    )


def test_order_is_deterministic_and_independent_of_file_order(tmp_path: Path) -> None:
    one = _write(tmp_path, BASE, "one.toml")
    two = _write(
        tmp_path,
        BASE.replace("batch = [1, 2]", "batch = [2, 1]").replace(
            "q_len = [1, 2]", "q_len = [2, 1]"
        ),
        "two.toml",
    )
    a, b = load_matrix(one).cases, load_matrix(one).cases
    assert a == b
    assert [c.id for c in a] == [c.id for c in load_matrix(two).cases]
    assert list(a) == sorted(a)
    # numeric, not lexicographic: batchSize2 before batchSize10
    three = _write(tmp_path, BASE.replace("batch = [1, 2]", "batch = [10, 2]"), "three.toml")
    batches = [c.batch for c in load_matrix(three).cases if c.model == "A" and c.q_len == 1]
    assert batches == [2, 10]


def test_case_is_frozen_and_axes_round_trip() -> None:
    point = {
        "model": "A",
        "kv_dtype": "bf16",
        "q_dtype": "bf16",
        "batch": 2,
        "q_len": 3,
        "kv_len": 9,
        "page_size": 16,
        "ragged": True,
    }
    c = Case(num_qo_heads=8, num_kv_heads=2, head_dim=16, id=case_id(point, ["ragged"]), **point)
    assert c.id == "A-bf16-batchSize2-seqLenQ3-ragged"
    with pytest.raises(AttributeError):
        c.batch = 4  # type: ignore[misc]
    axes = c.axes()
    assert "id" not in axes
    assert Case(id=c.id, **axes) == c


def test_settings_are_read(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        BASE
        + """
        [settings]
        timing = false
        budget_ms = 50
        warmup_ms = 2.5
        min_reps = 3
        max_reps = 7
        """,
    )
    s = load_matrix(path).settings
    assert (s.timing, s.budget_ms, s.warmup_ms, s.min_reps, s.max_reps) == (False, 50, 2.5, 3, 7)


# ------------------------------------------------------------------------ bad input


def _mutate(tmp_path: Path, old: str, new: str) -> Path:
    assert old in BASE
    return _write(tmp_path, BASE.replace(old, new, 1))


def test_malformed_toml(tmp_path: Path) -> None:
    path = _mutate(tmp_path, "q_len = [1, 2]", "q_len = = 2")
    _assert_error(path, _line_of(path, "q_len = = 2"), None, "invalid TOML")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "colour = 1\n" + BASE)
    _assert_error(path, 1, "colour", "unknown key", "allowed:", "axes")


def test_unknown_top_level_table_points_at_its_header(tmp_path: Path) -> None:
    # Bug: the locator only finds `key =` lines, so a table-valued key reports line 1.
    path = _write(tmp_path, BASE + "\n[axis]\nbatch = 1\n")
    _assert_error(path, _line_of(path, "[axis]"), "axis", "unknown key")


def test_unknown_axis_key(tmp_path: Path) -> None:
    path = _mutate(tmp_path, "page_size = 16", "pagesize = 16")
    _assert_error(path, _line_of(path, "pagesize"), "pagesize", "unknown key", "page_size")


def test_unknown_model_key(tmp_path: Path) -> None:
    path = _mutate(tmp_path, "head_dim = 32", "head_dim = 32\nhead_size = 32")
    _assert_error(path, _line_of(path, "head_size"), "head_size", "unknown key")


def test_model_missing_a_key(tmp_path: Path) -> None:
    path = _mutate(tmp_path, "num_kv_heads = 4\n", "")
    _assert_error(path, _line_of(path, "[models.B]"), None, "lacks key 'num_kv_heads'")


@pytest.mark.parametrize(
    ("old", "new", "key", "fragment"),
    [
        ("batch = [1, 2]", 'batch = "8"', "batch", "positive integer"),
        ("batch = [1, 2]", "batch = [1, '2']", "batch", "'2'"),
        ("q_len = [1, 2]", "q_len = -1", "q_len", "-1"),
        ("kv_len = 4", "kv_len = 0", "kv_len", "positive integer"),
        ("batch = [1, 2]", "batch = true", "batch", "True"),
        ("batch = [1, 2]", "batch = 2.5", "batch", "2.5"),
        ("batch = [1, 2]", "batch = []", "batch", "empty list"),
        ("ragged = false", "ragged = 1", "ragged", "true or false"),
        ("ragged = false", "score_scale = 0", "score_scale", "number in (0, 1000]"),
        ("ragged = false", "score_scale = 2000.0", "score_scale", "2000.0"),
        ("ragged = false", 'score_scale = "4"', "score_scale", "'4'"),
        ("ragged = false", "score_scale = true", "score_scale", "True"),
        ('kv_dtype = "bf16"', 'kv_dtype = "fp8_e5m2"', "kv_dtype", "fp8_e5m2"),
        ('q_dtype = "bf16"', 'q_dtype = "fp8_e4m3"', "q_dtype", "fp8_e4m3"),
        ("head_dim = 16", "head_dim = -16", "head_dim", "-16"),
        ("seed = 3", "seed = -3", "seed", "non-negative"),
    ],
)
def test_bad_values(tmp_path: Path, old: str, new: str, key: str, fragment: str) -> None:
    path = _mutate(tmp_path, old, new)
    _assert_error(path, _line_of(path, new), key, fragment)


def test_unknown_model_name_in_axes(tmp_path: Path) -> None:
    path = _mutate(tmp_path, "[axes]\n", '[axes]\nmodel = ["A", "Nope"]\n')
    _assert_error(path, _line_of(path, "Nope"), "model", "'Nope'", "A, B")


def test_kv_len_shorter_than_q_len(tmp_path: Path) -> None:
    path = _mutate(tmp_path, "q_len = [1, 2]", "q_len = [1, 8]")
    _assert_error(path, _line_of(path, "kv_len = 4"), "kv_len", "kv_len 4 < q_len 8")


def test_kv_len_shorter_than_q_len_in_second_include(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        BASE
        + """
        [[include]]
        model = "A"
        batch = 1
        q_len = 1
        kv_len = 1

        [[include]]
        model = "B"
        batch = 1
        q_len = 4
        kv_len = 3
        """,
    )
    _assert_error(path, _line_of(path, "kv_len = 3"), "kv_len", "< q_len 4")


def test_unknown_key_in_second_include(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        BASE
        + """
        [[include]]
        batch = 1
        q_len = 1
        kv_len = 1

        [[include]]
        batch = 1
        q_len = 1
        kv_len = 1
        heads = 3
        """,
    )
    _assert_error(path, _line_of(path, "heads = 3"), "heads", "unknown key")


def test_include_missing_an_axis(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "\n[[include]]\nbatch = 1\nq_len = 1\n")
    _assert_error(path, _line_of(path, "[[include]]"), None, "missing axis 'kv_len'")


def test_non_integral_group(tmp_path: Path) -> None:
    path = _mutate(tmp_path, "num_qo_heads = 8", "num_qo_heads = 9")
    _assert_error(path, _line_of(path, "num_qo_heads = 9"), "num_qo_heads", "integral")


def test_sixteen_bit_kv_with_other_q_dtype(tmp_path: Path) -> None:
    path = _mutate(tmp_path, 'q_dtype = "bf16"', 'q_dtype = "fp16"')
    _assert_error(path, _line_of(path, 'q_dtype = "fp16"'), "q_dtype", "same dtype")


def test_sixteen_bit_kv_with_default_q_dtype(tmp_path: Path) -> None:
    path = _mutate(tmp_path, 'kv_dtype = "bf16"\nq_dtype = "bf16"', 'kv_dtype = "fp16"')
    _assert_error(path, _line_of(path, "[axes]"), "q_dtype", "fp16")


def test_fp8_kv_accepts_either_q_dtype(tmp_path: Path) -> None:
    path = _mutate(
        tmp_path,
        'kv_dtype = "bf16"\nq_dtype = "bf16"',
        'kv_dtype = "fp8_e4m3"\nq_dtype = ["bf16", "fp16"]',
    )
    assert {c.q_dtype for c in load_matrix(path).cases} == {"bf16", "fp16"}


def test_unknown_key_in_exclude(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "\n[[exclude]]\nbatchsize = 1\n")
    _assert_error(path, _line_of(path, "batchsize"), "batchsize", "unknown key")


def test_bad_value_in_exclude(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + '\n[[exclude]]\nmodel = "C"\n')
    _assert_error(path, _line_of(path, 'model = "C"'), "model", "'C'")


def test_exclude_removing_everything(tmp_path: Path) -> None:
    # Bug: reported at line 1; the [[exclude]] header is where the problem is.
    path = _write(tmp_path, BASE + "\n[[exclude]]\nbatch = [1, 2]\n")
    _assert_error(path, _line_of(path, "[[exclude]]"), "exclude", "remove every case")


def test_unknown_settings_key_and_inconsistent_reps(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "\n[settings]\nbudget = 5\n")
    _assert_error(path, _line_of(path, "budget = 5"), "budget", "unknown key")
    path = _write(tmp_path, BASE + "\n[settings]\nmin_reps = 9\nmax_reps = 3\n", "r.toml")
    _assert_error(path, _line_of(path, "min_reps"), "min_reps", "max_reps")


def test_no_models_and_no_cases(tmp_path: Path) -> None:
    path = _write(tmp_path, '[matrix]\nname = "x"\n[axes]\nbatch = 1\n')
    assert "models" in _error(path)
    path = _write(
        tmp_path, "[models.A]\nnum_qo_heads = 2\nnum_kv_heads = 1\nhead_dim = 8\n", "n.toml"
    )
    assert "no cases" in _error(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    msg = _error(path)
    assert msg.startswith(f"{path}: ")
    assert "cannot read" in msg


def test_impossible_points_can_be_excluded(tmp_path: Path) -> None:
    # q_len 8 > kv_len 4 would be rejected, but the exclude removes it first
    path = _mutate(tmp_path, "q_len = [1, 2]", "q_len = [1, 8]")
    path.write_text(path.read_text() + "\n[[exclude]]\nq_len = 8\n")
    assert {c.q_len for c in load_matrix(path).cases} == {1}


def test_per_include_threshold(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        BASE + '\n[[include]]\nmodel = "A"\nbatch = 7\nq_len = 1\nkv_len = 4\nthreshold = 0.05\n',
    )
    cases = load_matrix(path).cases
    assert {c.batch: c.threshold for c in cases if c.model == "A" and c.q_len == 1} == {
        1: None,
        2: None,
        7: 0.05,
    }
    bad = _write(
        tmp_path,
        BASE + "\n[[include]]\nbatch = 7\nq_len = 1\nkv_len = 4\nthreshold = 1.5\n",
        "bad.toml",
    )
    _assert_error(bad, _line_of(bad, "threshold"), "threshold", "1.5")


def test_score_scale_axis(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        """
[models.A]
num_qo_heads = 8
num_kv_heads = 2
head_dim = 16
[axes]
batch = 2
q_len = 2
kv_len = 9
score_scale = [1, 2.5, 16]
"""
    )
    cases = load_matrix(path).cases
    assert [c.score_scale for c in cases] == [1.0, 2.5, 16.0]
    assert all(isinstance(c.score_scale, float) for c in cases)
    assert [c.id.rsplit("-", 1)[1] for c in cases] == ["scores1", "scores2.5", "scores16"]
    path.write_text(path.read_text().replace("score_scale = [1, 2.5, 16]\n", ""))
    (case,) = load_matrix(path).cases
    assert case.score_scale == AXIS_DEFAULTS["score_scale"] == 1.0
    assert "scores" not in case.id
