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
            f"not valid JSON ({exc.msg} at column {exc.colno}): truncated or corrupt"
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


def row_key(row: ResultRow) -> tuple[str, str, str, str]:
    """Rows with the same key describe the same measurement (case, backend, device, commit)."""
    return (
        row.case_id,
        row.backend,
        str(row.device.get("name", "")),
        str(row.env.get("git_commit", "")),
    )


STATUS_RANK = {"passed": 3, "failed": 2, "error": 1, "skipped": 0}


def merge(rows: Iterable[ResultRow]) -> tuple[list[ResultRow], int]:
    """Resolve duplicates: per key keep the most informative row (passed > failed > error
    > skipped), and among equals the latest timestamp. Returns (rows, duplicates dropped)."""
    best: dict[tuple[str, str, str, str], ResultRow] = {}
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
