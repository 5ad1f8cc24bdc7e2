"""Matrix files (TOML) -> a sorted list of `Case`s.

A matrix names model shapes and axes; the cases are the cross product of the axes,
plus `[[include]]` tables, minus `[[exclude]]` tables. Every problem is reported as
one `MatrixError` naming file, line and key, because a CI log is read by people who
did not write the matrix.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KV_DTYPES = ("bf16", "fp16", "fp8_e4m3")
Q_DTYPES = ("bf16", "fp16")
AXES = (
    "model",
    "kv_dtype",
    "q_dtype",
    "batch",
    "q_len",
    "kv_len",
    "page_size",
    "ragged",
    "score_scale",
)
AXIS_DEFAULTS: dict[str, Any] = {
    "kv_dtype": "bf16",
    "q_dtype": "bf16",
    "page_size": 16,
    "ragged": False,
    "score_scale": 1.0,
}
MAX_SCORE_SCALE = 1000.0
MODEL_KEYS = ("num_qo_heads", "num_kv_heads", "head_dim")
TOP_KEYS = ("matrix", "models", "axes", "include", "exclude", "settings")
MATRIX_KEYS = ("name", "description", "seed")
SETTINGS_KEYS = (
    "timing",
    "warmup_ms",
    "budget_ms",
    "min_reps",
    "max_reps",
    "threshold",
    "max_reruns",
    "target_rel_ci",
    "flush_l2",
    "use_graphs",
    "timeout_s",
)


class MatrixError(Exception):
    """A matrix problem, already phrased as `file:line: key 'k': what is wrong`."""


@dataclass(frozen=True, order=True)
class Model:
    """A named attention shape (the part of a case that comes from the LLM)."""

    name: str
    num_qo_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def group(self) -> int:
        return self.num_qo_heads // self.num_kv_heads


@dataclass(frozen=True)
class Settings:
    """Per-matrix run settings; the timing fields feed `harness.timing`."""

    timing: bool = True
    warmup_ms: float = 25.0
    budget_ms: float = 400.0
    min_reps: int = 10
    max_reps: int = 2000
    threshold: float = 0.02  # A/B verdict threshold in one process (2 %)
    max_reruns: int = 2  # automatic reruns of an inconclusive A/B verdict
    target_rel_ci: float = 0.0025
    flush_l2: bool = True
    use_graphs: bool = False
    timeout_s: float = 300.0  # per item; a hung kernel is recorded and its worker replaced


@dataclass(frozen=True, order=True)
class Case:
    """One decode-attention problem. Field order is the sort order of a matrix's cases."""

    model: str
    kv_dtype: str
    batch: int
    q_len: int
    kv_len: int
    page_size: int
    q_dtype: str
    ragged: bool
    num_qo_heads: int
    num_kv_heads: int
    head_dim: int
    # K is drawn this much larger, so the attention logits are too (std ~ score_scale):
    # large scores are where low-precision score math breaks (kernels/NOTES.md).
    score_scale: float = 1.0
    seed: int = 0
    id: str = ""
    threshold: float | None = field(default=None, compare=False)  # per-case verdict threshold

    @property
    def group(self) -> int:
        return self.num_qo_heads // self.num_kv_heads

    @property
    def rows(self) -> int:
        """Rows a grouped kernel handles per (request, KV head): q_len x group."""
        return self.q_len * self.group

    def axes(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("id",)}


@dataclass(frozen=True)
class Matrix:
    """A loaded matrix file: where it came from, its settings and its cases."""

    path: Path
    name: str
    description: str
    settings: Settings
    cases: tuple[Case, ...]


class _Locator:
    """Finds the line of a key in TOML text, since tomllib reports no positions."""

    _header = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def _sections(self) -> Iterable[tuple[str, int, int]]:
        """Yield (header, index among same-named array tables, line number)."""
        counts: dict[str, int] = {}
        for no, line in enumerate(self.lines, start=1):
            m = self._header.match(line)
            if m:
                name = m.group(2).replace('"', "").replace("'", "")
                idx = counts.get(name, 0)
                counts[name] = idx + 1
                yield name, idx, no

    def line_of(self, section: str | None, key: str | None = None, index: int = 0) -> int:
        start, end = 1, len(self.lines) + 1
        if section is not None:
            found = [(no) for name, idx, no in self._sections() if name == section and idx == index]
            if not found:
                return 1
            start = found[0]
            later = [no for _, _, no in self._sections() if no > start]
            end = later[0] if later else len(self.lines) + 1
        if key is None:
            return start
        pat = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for no in range(start, end):
            if pat.match(self.lines[no - 1]):
                return no
        full = f"{section}.{key}" if section else key
        for name, _, no in self._sections():
            if name == full or name.startswith(full + "."):
                return no
        return start

    def error(self, section: str | None, key: str | None, msg: str, index: int = 0) -> MatrixError:
        where = f"{self.path}:{self.line_of(section, key, index)}"
        what = f"key '{key}': " if key else ""
        return MatrixError(f"{where}: {what}{msg}")


def _check_keys(
    loc: _Locator,
    section: str | None,
    table: Mapping[str, Any],
    allowed: Iterable[str],
    index: int = 0,
) -> None:
    allowed = tuple(allowed)
    for key in table:
        if key not in allowed:
            raise loc.error(section, key, f"unknown key (allowed: {', '.join(allowed)})", index)


def _positive_int(loc: _Locator, section: str | None, key: str, value: Any, index: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise loc.error(section, key, f"must be a positive integer, got {value!r}", index)
    return value


def _axis_value(
    loc: _Locator, section: str, key: str, value: Any, models: Mapping[str, Model], index: int = 0
) -> Any:
    """Validate one scalar axis value."""
    if key == "model":
        if value not in models:
            known = ", ".join(sorted(models)) or "none defined"
            raise loc.error(section, key, f"unknown model {value!r} (models: {known})", index)
        return value
    if key == "kv_dtype":
        if value not in KV_DTYPES:
            raise loc.error(
                section, key, f"must be one of {', '.join(KV_DTYPES)}, got {value!r}", index
            )
        return value
    if key == "q_dtype":
        if value not in Q_DTYPES:
            raise loc.error(
                section, key, f"must be one of {', '.join(Q_DTYPES)}, got {value!r}", index
            )
        return value
    if key == "ragged":
        if not isinstance(value, bool):
            raise loc.error(section, key, f"must be true or false, got {value!r}", index)
        return value
    if key == "score_scale":
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 < value <= MAX_SCORE_SCALE
        ):
            raise loc.error(
                section, key, f"must be a number in (0, {MAX_SCORE_SCALE:g}], got {value!r}", index
            )
        return float(value)
    return _positive_int(loc, section, key, value, index)


def _axis_values(
    loc: _Locator, section: str, key: str, raw: Any, models: Mapping[str, Model], index: int = 0
) -> list[Any]:
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise loc.error(section, key, "must not be an empty list", index)
    return [_axis_value(loc, section, key, v, models, index) for v in values]


def _parse_models(loc: _Locator, raw: Any) -> dict[str, Model]:
    if not isinstance(raw, dict) or not raw:
        raise loc.error(None, "models", "must be a table with at least one model")
    models: dict[str, Model] = {}
    for name, spec in raw.items():
        section = f"models.{name}"
        if not isinstance(spec, dict):
            raise loc.error(None, name, "a model must be a table of " + ", ".join(MODEL_KEYS))
        _check_keys(loc, section, spec, MODEL_KEYS)
        for key in MODEL_KEYS:
            if key not in spec:
                raise loc.error(section, None, f"model '{name}' lacks key '{key}'")
        vals = {k: _positive_int(loc, section, k, spec[k]) for k in MODEL_KEYS}
        if vals["num_qo_heads"] % vals["num_kv_heads"]:
            raise loc.error(
                section,
                "num_qo_heads",
                f"{vals['num_qo_heads']} query heads are not a multiple of "
                f"{vals['num_kv_heads']} KV heads (GQA group must be integral)",
            )
        models[name] = Model(name=name, **vals)
    return models


def _expand(
    loc: _Locator,
    section: str,
    table: Mapping[str, Any],
    models: Mapping[str, Model],
    index: int,
    defaults: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Cross product of one axes-like table; missing axes come from `defaults`."""
    _check_keys(loc, section, table, AXES, index)
    merged: dict[str, list[Any]] = {}
    for key in AXES:
        if key in table:
            merged[key] = _axis_values(loc, section, key, table[key], models, index)
        elif key == "model" and not defaults.get("model"):
            merged[key] = sorted(models)
        elif key in defaults:
            d = defaults[key]
            merged[key] = list(d) if isinstance(d, list) else [d]
        else:
            raise loc.error(section, None, f"missing axis '{key}'", index)
    return [dict(zip(AXES, combo, strict=True)) for combo in itertools.product(*merged.values())]


def _matches(point: Mapping[str, Any], pattern: Mapping[str, Any]) -> bool:
    for key, want in pattern.items():
        wants = want if isinstance(want, list) else [want]
        if point[key] not in wants:
            return False
    return True


def _validate_point(
    loc: _Locator, section: str, point: Mapping[str, Any], model: Model, index: int
) -> None:
    if point["kv_len"] < point["q_len"]:
        raise loc.error(
            section,
            "kv_len",
            f"kv_len {point['kv_len']} < q_len {point['q_len']} for model {model.name}: "
            "each request's KV length includes its q_len new tokens",
            index,
        )
    if point["kv_dtype"] in ("bf16", "fp16") and point["q_dtype"] != point["kv_dtype"]:
        raise loc.error(
            section,
            "q_dtype",
            f"q_dtype {point['q_dtype']} with kv_dtype {point['kv_dtype']}: a 16-bit KV cache "
            "must have the same dtype as q",
            index,
        )


def case_id(point: Mapping[str, Any], varying: Iterable[str]) -> str:
    """The seed's id (`Qwen3-480B-fp8_e4m3-batchSize8-seqLenQ2`) plus axes that vary."""
    parts = [
        point["model"],
        point["kv_dtype"],
        f"batchSize{point['batch']}",
        f"seqLenQ{point['q_len']}",
    ]
    varying = set(varying)
    if "kv_len" in varying:
        parts.append(f"kvLen{point['kv_len']}")
    if "page_size" in varying:
        parts.append(f"page{point['page_size']}")
    if "q_dtype" in varying:
        parts.append(f"q{point['q_dtype']}")
    if "ragged" in varying:
        parts.append("ragged" if point["ragged"] else "uniform")
    if "score_scale" in varying:
        parts.append(f"scores{point['score_scale']:g}")
    return "-".join(parts)


def load_matrix(path: str | Path) -> Matrix:
    """Read, validate and expand one matrix file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MatrixError(f"{path}: cannot read matrix file: {exc.strerror or exc}") from None
    loc = _Locator(path, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"at line (\d+)", str(exc))
        line = m.group(1) if m else "1"
        raise MatrixError(f"{path}:{line}: invalid TOML: {exc}") from None

    _check_keys(loc, None, doc, TOP_KEYS)
    meta = doc.get("matrix", {})
    if not isinstance(meta, dict):
        raise loc.error(None, "matrix", "must be a table")
    _check_keys(loc, "matrix", meta, MATRIX_KEYS)
    seed = meta.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise loc.error("matrix", "seed", f"must be a non-negative integer, got {seed!r}")
    settings = _parse_settings(loc, doc.get("settings", {}))
    models = _parse_models(loc, doc.get("models"))

    points: list[tuple[dict[str, Any], str, int]] = []
    axes = doc.get("axes")
    if axes is not None:
        if not isinstance(axes, dict):
            raise loc.error(None, "axes", "must be a table")
        points += [(p, "axes", 0) for p in _expand(loc, "axes", axes, models, 0, AXIS_DEFAULTS)]
    thresholds: dict[int, float] = {}
    for i, inc in enumerate(_array_of_tables(loc, doc, "include")):
        inc = dict(inc)
        if "threshold" in inc:
            thresholds[i] = _threshold(loc, "include", inc.pop("threshold"), i)
        points += [
            (p, "include", i) for p in _expand(loc, "include", inc, models, i, AXIS_DEFAULTS)
        ]
    if not points:
        raise loc.error(None, None, "no cases: give an [axes] table or [[include]] tables")
    excludes = _array_of_tables(loc, doc, "exclude")
    for i, exc in enumerate(excludes):
        _check_keys(loc, "exclude", exc, AXES, i)
        for key, raw in exc.items():
            _axis_values(loc, "exclude", key, raw, models, i)
    points = [(p, s, i) for p, s, i in points if not any(_matches(p, e) for e in excludes)]
    if not points:
        raise loc.error(None, "exclude", "the exclude tables remove every case")

    for point, section, index in points:
        _validate_point(loc, section, point, models[point["model"]], index)
    varying = [k for k in AXES if len({p[k] for p, _, _ in points}) > 1]
    cases: dict[str, Case] = {}
    for point, section, index in points:
        model = models[point["model"]]
        cid = case_id(point, varying)
        cases[cid] = Case(
            num_qo_heads=model.num_qo_heads,
            num_kv_heads=model.num_kv_heads,
            head_dim=model.head_dim,
            seed=seed,
            id=cid,
            threshold=thresholds.get(index) if section == "include" else None,
            **point,
        )
    return Matrix(
        path=path,
        name=str(meta.get("name", path.stem)),
        description=str(meta.get("description", "")),
        settings=settings,
        cases=tuple(sorted(cases.values())),
    )


def _threshold(loc: _Locator, section: str, value: Any, index: int = 0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise loc.error(section, "threshold", f"must be a fraction in (0, 1), got {value!r}", index)
    return float(value)


def _array_of_tables(loc: _Locator, doc: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    raw = doc.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise loc.error(None, key, f"must be an array of tables ([[{key}]])")
    return raw


def _parse_settings(loc: _Locator, raw: Any) -> Settings:
    if not isinstance(raw, dict):
        raise loc.error(None, "settings", "must be a table")
    _check_keys(loc, "settings", raw, SETTINGS_KEYS)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        default = getattr(Settings, key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise loc.error("settings", key, f"must be true or false, got {value!r}")
        elif isinstance(default, int):
            zero_ok = key == "max_reruns" and value == 0 and not isinstance(value, bool)
            value = value if zero_ok else _positive_int(loc, "settings", key, value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise loc.error("settings", key, f"must be a positive number, got {value!r}")
        out[key] = value
    settings = Settings(**out)
    if settings.min_reps > settings.max_reps:
        raise loc.error("settings", "min_reps", "must not exceed max_reps")
    return settings


def load_matrices(paths: Iterable[str | Path]) -> list[Matrix]:
    return [load_matrix(p) for p in paths]
