"""The results schema: one JSON line per case x backend, appended and flushed as each
case ends (so a crash loses nothing already measured), one file per worker.

Reading is forgiving: a corrupt or truncated line is reported with file and line and
skipped; a line from a newer schema is reported, never misread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("passed", "failed", "skipped", "error")


@dataclass(frozen=True)
class ResultRow:
    """One case x backend outcome with everything a report needs to explain it."""

    run_id: str
    matrix: str
    case_id: str
    case: dict[str, Any]
    backend: str
    role: str
    status: str
    message: str = ""
    device: dict[str, Any] = field(default_factory=dict)
    correctness: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    bytes: int = 0
    tbps: float | None = None
    plan: str = ""
    comparison: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    worker: str = ""
    timestamp: float = 0.0
    duration_s: float = 0.0
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False, default=str)

    @property
    def device_name(self) -> str:
        return str(self.device.get("name", "unknown"))

    @property
    def median_ms(self) -> float | None:
        return self.timing.get("median_ms") if self.timing else None


class ResultWriter:
    """Appends rows to one JSON-lines file, flushing and fsyncing each line."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: ResultRow) -> None:
        if row.status not in STATUSES:
            raise ValueError(f"status {row.status!r} not in {STATUSES}")
        line = row.to_json() + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


@dataclass(frozen=True)
class ReadProblem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


_FIELDS = {f for f in ResultRow.__dataclass_fields__}
_REQUIRED = ("run_id", "matrix", "case_id", "case", "backend", "role", "status", "schema")


def parse_line(text: str) -> ResultRow:
    """One JSON line -> ResultRow; raises ValueError saying what is wrong."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"not valid JSON ({exc.msg}, column {exc.colno}): truncated or corrupt"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    schema = obj.get("schema")
    if not isinstance(schema, int):
        raise ValueError("no schema version")
    if schema > SCHEMA_VERSION:
        raise ValueError(
            f"schema version {schema} is newer than this harness reads "
            f"({SCHEMA_VERSION}); upgrade the harness"
        )
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    if obj["status"] not in STATUSES:
        raise ValueError(f"unknown status {obj['status']!r}")
    return ResultRow(**{k: v for k, v in obj.items() if k in _FIELDS})


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories into their *.jsonl files (recursively), keep files as given."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.jsonl"))
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such results file or directory")
    return files


def read_results(paths: Iterable[str | Path]) -> tuple[list[ResultRow], list[ReadProblem]]:
    rows: list[ResultRow] = []
    problems: list[ReadProblem] = []
    for path in result_files(paths):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for no, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                try:
                    rows.append(parse_line(text))
                except (ValueError, TypeError) as exc:
                    problems.append(ReadProblem(str(path), no, str(exc)))
    return rows, problems


def row_key(row: ResultRow) -> tuple[str, str, str, str, str]:
    """Rows with the same key describe the same measurement: matrix, case, backend,
    device, commit."""
    return (
        row.matrix,
        row.case_id,
        row.backend,
        str(row.device.get("name", "")),
        str(row.env.get("git_commit", "")),
    )


# Worst outcome first: a rerun that passes never hides a failure of the same code.
STATUS_RANK = {"failed": 3, "error": 2, "passed": 1, "skipped": 0}


def merge(rows: Iterable[ResultRow]) -> tuple[list[ResultRow], int]:
    """Resolve duplicates (same matrix, case, backend, device, commit: e.g. two shards
    that overlapped, or results appended with --keep-results). Documented rule: keep the
    worst outcome (failed > error > passed > skipped); among equals, the latest row.
    Returns (rows, duplicates dropped)."""
    best: dict[tuple[str, str, str, str, str], ResultRow] = {}
    dropped = 0
    for row in rows:
        key = row_key(row)
        old = best.get(key)
        if old is None:
            best[key] = row
            continue
        dropped += 1
        if (STATUS_RANK[row.status], row.timestamp) > (STATUS_RANK[old.status], old.timestamp):
            best[key] = row
    return sorted(best.values(), key=lambda r: (r.device_name, r.case_id, r.backend)), dropped


# --- run bookkeeping: what was planned, whether the run ended, so partial runs show ---


def _atomic_write(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, sort_keys=True))
    os.replace(tmp, path)


def write_manifest(results_dir: Path, run_id: str, nodeids: list[str]) -> None:
    """The items a run planned (every xdist worker collects the same list)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"manifest-{run_id}.json"
    if not path.exists():
        _atomic_write(path, {"run_id": run_id, "items": nodeids, "schema": SCHEMA_VERSION})


def write_done(results_dir: Path, run_id: str, exitstatus: int) -> None:
    """Written when pytest ends: 2 (interrupted) marks the run incomplete."""
    _atomic_write(
        results_dir / f"done-{run_id}.json",
        {"run_id": run_id, "exitstatus": exitstatus, "interrupted": exitstatus == 2},
    )


def run_rows(results_dir: Path, run_id: str) -> list[ResultRow]:
    """Every readable row of one run in a results folder (none when it does not exist)."""
    rows, _ = read_results([results_dir]) if results_dir.exists() else ([], [])
    return [r for r in rows if r.run_id == run_id]


@dataclass(frozen=True)
class RunStatus:
    """Whether one run finished: planned items, results present, how it ended."""

    run_id: str
    planned: int
    recorded: int
    ended: bool
    interrupted: bool

    @property
    def complete(self) -> bool:
        return self.ended and not self.interrupted and self.recorded >= self.planned

    def describe(self) -> str:
        if self.complete:
            return f"run {self.run_id}: complete ({self.recorded} results)"
        why = (
            "interrupted"
            if self.interrupted
            else "never finished (killed or still running)"
            if not self.ended
            else "results missing"
        )
        return (
            f"run {self.run_id}: INCOMPLETE ({why}): {self.recorded} of {self.planned} "
            "planned items have a result"
        )


def run_statuses(paths: Iterable[str | Path], rows: Iterable[ResultRow]) -> list[RunStatus]:
    """One RunStatus per manifest found in the given folders."""
    recorded: dict[str, set[tuple[str, str]]] = {}
    for r in rows:
        recorded.setdefault(r.run_id, set()).add((r.case_id, r.backend))
    out = []
    for p in map(Path, paths):
        if not p.is_dir():
            continue
        for manifest in sorted(p.rglob("manifest-*.json")):
            try:
                obj = json.loads(manifest.read_text())
                run_id, planned = str(obj["run_id"]), len(obj["items"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            done_path = manifest.with_name(f"done-{run_id}.json")
            done: dict[str, Any] = {}
            if done_path.exists():
                try:
                    done = json.loads(done_path.read_text())
                except (OSError, ValueError):
                    done = {}
            out.append(
                RunStatus(
                    run_id=run_id,
                    planned=planned,
                    recorded=len(recorded.get(run_id, ())),
                    ended=bool(done),
                    interrupted=bool(done.get("interrupted", False)),
                )
            )
    return out
