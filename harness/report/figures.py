"""What a report says about a result row: its device, backend family, case order and
printed figures.

Both writers (JUnit and markdown) take their facts from here, so a number never reads
differently in the CI test view and in the PR comment.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from harness.matrix import Case
from harness.results import STATUSES, ResultRow

CPU_NOTE = "timed on CPU (no GPU)"

_CASE_FIELDS = tuple(f.name for f in fields(Case) if f.name != "id")
# Characters XML 1.0 cannot carry at all (control bytes from a crashed kernel's message).
_XML_ILLEGAL = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def family(backend: str) -> str:
    """`cuda_grouped` -> `cuda`: backends of one family are compared with each other."""
    return backend.split("_", 1)[0]


def is_cpu(row: ResultRow) -> bool:
    return str(row.device.get("kind", "")) == "cpu"


def device_label(row: ResultRow) -> str:
    """The device name as a reader needs it: a CPU run says so plainly."""
    return f"{row.device_name} — {CPU_NOTE}" if is_cpu(row) else f"{row.device_name} (GPU)"


def commit_of(row: ResultRow) -> str:
    return str(row.env.get("git_commit") or "unknown")


def short_commit(commit: str) -> str:
    """First 12 characters of a hash, keeping a `-dirty` mark visible."""
    dirty = commit.endswith("-dirty")
    base = commit.removesuffix("-dirty")
    return base[:12] + ("-dirty" if dirty else "")


def copy_tbps(row: ResultRow) -> float | None:
    """The measured copy bandwidth of the row's device, or None when not measured."""
    value = row.env.get("copy_tbps")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def case_order_key(row: ResultRow) -> tuple[Any, ...]:
    """The matrix's own case order (Case's field order), not the lexical order of ids,
    so batchSize8 comes before batchSize16 as in the seed's table."""
    case = row.case if isinstance(row.case, dict) else {}
    key: list[Any] = [row.matrix]
    for name in _CASE_FIELDS:
        value = case.get(name)
        key.append((value is None, type(value).__name__, 0 if value is None else value))
    key.append(row.case_id)
    return tuple(key)


def row_order_key(row: ResultRow) -> tuple[Any, ...]:
    return (*case_order_key(row), row.backend, commit_of(row))


def by_device(rows: Iterable[ResultRow]) -> list[tuple[str, list[ResultRow]]]:
    """Rows grouped per device name (one GPU type = one group), GPUs first, each group in
    case order."""
    groups: dict[str, list[ResultRow]] = defaultdict(list)
    for row in rows:
        groups[row.device_name].append(row)
    ordered = sorted(groups.items(), key=lambda kv: (is_cpu(kv[1][0]), kv[0]))
    return [(name, sorted(group, key=row_order_key)) for name, group in ordered]


@dataclass(frozen=True)
class GpuUse:
    """One physical GPU of a device group: which worker(s) ran on it and how many results."""

    uuid: str
    visible: str  # the CUDA_VISIBLE_DEVICES its worker(s) had
    workers: tuple[str, ...]
    results: int


def gpus_used(rows: Iterable[ResultRow]) -> list[GpuUse]:
    """The GPUs (by uuid) the rows ran on, in uuid order: a sharded run shows each GPU's
    share, so a reader can see that both cards of a 2-GPU host were used."""
    groups: dict[str, list[ResultRow]] = defaultdict(list)
    for row in rows:
        uuid = str(row.device.get("uuid") or "")
        if uuid and not is_cpu(row):
            groups[uuid].append(row)
    return [
        GpuUse(
            uuid,
            ",".join(sorted({str(r.device.get("visible_devices") or "") for r in group})),
            tuple(sorted({r.worker or "main" for r in group})),
            len(group),
        )
        for uuid, group in sorted(groups.items())
    ]


def gpus_text(rows: Iterable[ResultRow]) -> str | None:
    """`ran on 2 GPUs: GPU-c2db4247 (CUDA_VISIBLE_DEVICES=0, gw0): 35 results; ...`, or None
    when the rows ran on one GPU (or none)."""
    uses = gpus_used(rows)
    if len(uses) < 2:
        return None
    parts = [
        f"{u.uuid[:12]} (CUDA_VISIBLE_DEVICES={u.visible or 'unset'}, {', '.join(u.workers)}): "
        f"{u.results} results"
        for u in uses
    ]
    return f"ran on {len(uses)} GPUs: " + "; ".join(parts)


def count_statuses(rows: Iterable[ResultRow]) -> dict[str, int]:
    """{status: count} for every status, in the schema's order (zeros included)."""
    counts = dict.fromkeys(STATUSES, 0)
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts


@dataclass(frozen=True)
class Timing:
    """The timing block of a row, validated: a report never prints a half-read number."""

    median_ms: float
    ci_low_ms: float
    ci_high_ms: float
    n: int
    method: str
    stop_reason: str
    l2_flush: bool

    @property
    def rel_halfwidth(self) -> float:
        return (self.ci_high_ms - self.ci_low_ms) / 2 / self.median_ms


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def timing_of(row: ResultRow) -> Timing | None:
    """The row's timing, or None when it was not timed (failed, skipped, --no-timing)."""
    t = row.timing if isinstance(row.timing, dict) else {}
    median = _number(t.get("median_ms"))
    if median is None or median <= 0:
        return None
    low = _number(t.get("ci_low_ms"))
    high = _number(t.get("ci_high_ms"))
    n = t.get("n")
    return Timing(
        median_ms=median,
        ci_low_ms=median if low is None else low,
        ci_high_ms=median if high is None else high,
        n=n if isinstance(n, int) else 0,
        method=str(t.get("method", "")),
        stop_reason=str(t.get("stop_reason", "")),
        l2_flush=bool(t.get("l2_flush", False)),
    )


VERDICT_ORDER = ("slower", "inconclusive", "same", "faster")  # regressions first


@dataclass(frozen=True)
class Comparison:
    """A verdict row's comparison block (in-run A/B or base-vs-head across runs):
    ratio = b / a of the medians, so > 1 means b is slower."""

    a: str
    b: str
    ratio: float
    ci_low: float
    ci_high: float
    confidence: float
    verdict: str
    threshold: float | None
    labels: tuple[str, ...]


def comparison_of(row: ResultRow) -> Comparison | None:
    """The row's comparison, or None for an ordinary case x backend row."""
    c = getattr(row, "comparison", None)
    if not isinstance(c, dict):
        return None
    ratio = _number(c.get("ratio"))
    if ratio is None or not c.get("verdict"):
        return None
    low, high = _number(c.get("ci_low")), _number(c.get("ci_high"))
    labels = c.get("labels")
    return Comparison(
        a=str(c.get("a", "")),
        b=str(c.get("b", "")),
        ratio=ratio,
        ci_low=ratio if low is None else low,
        ci_high=ratio if high is None else high,
        confidence=_number(c.get("confidence")) or 0.95,
        verdict=str(c["verdict"]),
        threshold=_number(c.get("threshold")),
        labels=tuple(str(x) for x in labels) if isinstance(labels, list) else (),
    )


def comparison_text(comp: Comparison) -> str:
    """`b / a = 1.0312 [1.0201, 1.0420] (95% CI): slower at ±2.0%`."""
    text = (
        f"{comp.b} / {comp.a} = {comp.ratio:.4f} [{comp.ci_low:.4f}, {comp.ci_high:.4f}] "
        f"({comp.confidence:.0%} CI): {comp.verdict}"
    )
    if comp.threshold is not None:
        text += f" at ±{comp.threshold:.1%}"
    return text


def tbps_of(row: ResultRow) -> float | None:
    value = _number(row.tbps)
    return value if value is not None and value > 0 else None


def pct_of_copy(row: ResultRow) -> float | None:
    """Achieved bandwidth as a percentage of the device's measured copy bandwidth."""
    achieved, ceiling = tbps_of(row), copy_tbps(row)
    return None if achieved is None or ceiling is None else 100.0 * achieved / ceiling


def fmt_ms(value: float) -> str:
    """Milliseconds like the seed's table (0.057): three decimals, three significant
    digits below 0.01 ms so a fast kernel never reads as 0.000."""
    if value >= 100:
        return f"{value:.1f}"
    if value >= 0.01:
        return f"{value:.3f}"
    return f"{value:.3g}"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}"


def _sig(value: float, digits: int = 3) -> str:
    """`digits` significant digits without exponent notation (CPU bandwidths are tiny)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_tbps(value: float) -> str:
    return _sig(value)


def fmt_pct(value: float) -> str:
    """A percentage: whole numbers from 10 %, two significant digits below."""
    return f"{value:.0f}%" if abs(value) >= 10 else f"{_sig(value, 2)}%"


def fmt_rel_ci(timing: Timing) -> str:
    """The CI half-width relative to the median, e.g. ±0.31% (±2900% on a noisy CPU)."""
    return "±" + fmt_pct(100 * timing.rel_halfwidth)


def failure_text(row: ResultRow) -> str:
    """Why a row did not pass, with the error figures when the plugin recorded them."""
    if row.message:
        return row.message
    c = row.correctness if isinstance(row.correctness, dict) else {}
    if row.status == "failed" and "mismatches" in c:
        return (
            f"{c.get('mismatches')} of {c.get('numel')} elements outside "
            f"rtol={c.get('rtol')} atol={c.get('atol')} (allowed "
            f"{c.get('allowed_mismatches')}); max abs err {c.get('max_abs_err')}; "
            f"{c.get('nan_count')} NaN"
        )
    return f"{row.status} (no message recorded)"


def clocks_of(row: ResultRow) -> dict[str, Any]:
    """The NVML summary stored with the row's timing ({} when none was sampled)."""
    t = row.timing if isinstance(row.timing, dict) else {}
    c = t.get("clocks")
    return (
        c if isinstance(c, dict) and isinstance(c.get("batches"), int) and c["batches"] > 0 else {}
    )


def power_capped(row: ResultRow) -> tuple[int, int] | None:
    """(batches at the power cap, batches) of the row's timing, or None when none was."""
    c = clocks_of(row)
    capped = c.get("power_capped_batches")
    return (capped, c["batches"]) if isinstance(capped, int) and capped > 0 else None


def clock_text(row: ResultRow) -> str:
    """What NVML saw while the row was timed ("" when it was not read): the SM clock
    range and the batches the power cap or heat held back, so a reader can tell a slow
    number from a slow GPU."""
    c = clocks_of(row)
    lo, hi = c.get("sm_clock_mhz_min"), c.get("sm_clock_mhz_max")
    if lo is None:  # NVML never read (a CPU run, or no NVML): nothing it could have seen
        return ""
    parts = [f"SM {lo}-{hi} MHz"]
    limited = f"{c.get('power_capped_batches', 0)} of {c['batches']} batches at the power cap"
    power_ms = _number(c.get("power_limited_ms"))
    if power_ms is not None:
        limited += f" ({power_ms:g} ms held below the requested clock)"
    parts.append(limited)
    if c.get("throttled_batches"):
        parts.append(
            f"{c['throttled_batches']} throttled (excluded, {c.get('excluded_samples', 0)} samples)"
        )
    thermal_ms = _number(c.get("thermal_limited_ms"))
    if thermal_ms:
        parts.append(f"{thermal_ms:g} ms thermally limited")
    return "; ".join(parts)


def key_figures(row: ResultRow) -> str:
    """The lines a person needs to judge one case x backend, as plain text (for
    system-out, which GitLab shows while it ignores properties)."""
    lines = [
        f"device: {device_label(row)}; commit {short_commit(commit_of(row))}; "
        f"matrix {row.matrix}; run {row.run_id}"
    ]
    t = timing_of(row)
    if t is not None:
        lines.append(
            f"median {fmt_ms(t.median_ms)} ms, 95% CI [{fmt_ms(t.ci_low_ms)}, "
            f"{fmt_ms(t.ci_high_ms)}] ms ({fmt_rel_ci(t)}), n={t.n}, "
            f"{t.method or 'clock unknown'}, stop: {t.stop_reason or 'unknown'}, "
            f"L2 {'flushed' if t.l2_flush else 'warm'}"
        )
    elif row.status == "passed":
        lines.append("not timed")
    achieved, ceiling, pct = tbps_of(row), copy_tbps(row), pct_of_copy(row)
    if achieved is not None:
        bw = f"achieved {fmt_tbps(achieved)} TB/s"
        if pct is not None and ceiling is not None:
            bw += f" = {fmt_pct(pct)} of measured copy bandwidth {fmt_tbps(ceiling)} TB/s"
        lines.append(bw)
    clocks = clock_text(row)
    if clocks:
        lines.append(f"clocks: {clocks}")
    if row.plan:
        lines.append(f"plan: {row.plan}")
    comp = comparison_of(row)
    if comp is not None:
        lines.append(
            "comparison: " + comparison_text(comp) + "".join(f"; {label}" for label in comp.labels)
        )
    c = row.correctness if isinstance(row.correctness, dict) else {}
    if "mismatches" in c:
        lines.append(
            f"correctness: max abs err {c.get('max_abs_err')}, "
            f"{c.get('mismatches')} of {c.get('numel')} mismatches (allowed "
            f"{c.get('allowed_mismatches')}), {c.get('nan_count')} NaN, "
            f"rtol={c.get('rtol')} atol={c.get('atol')}"
        )
    if row.status != "passed":
        lines.append(f"{row.status}: {failure_text(row)}")
    return "\n".join(lines)


def xml_safe(text: str) -> str:
    """Drop characters XML 1.0 cannot hold; lxml refuses them and ElementTree would write
    a file no CI can parse."""
    return _XML_ILLEGAL.sub("\ufffd", text)
