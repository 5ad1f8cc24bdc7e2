"""Result rows -> the markdown summary a kernel engineer reads on the PR in thirty seconds.

Order of the page: a headline (commit, devices and whether they were GPUs, counts,
result-file problems), then per device and backend family the seed's table
`test case | median_time_ms | median_time_ms (opt) | speedup` (baseline role vs grouped
role) with its extra columns, then failures, a skipped summary and the problems.
Tables longer than FOLD_ROWS are folded into `<details>` so the comment stays short.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tabulate import tabulate

from harness.report.figures import (
    CPU_NOTE,
    by_device,
    case_order_key,
    commit_of,
    copy_tbps,
    count_statuses,
    device_label,
    failure_text,
    family,
    fmt_ms,
    fmt_pct,
    fmt_ratio,
    fmt_tbps,
    is_cpu,
    pct_of_copy,
    short_commit,
    tbps_of,
    timing_of,
)
from harness.results import ReadProblem, ResultRow

TITLE = "Decode-attention kernel report"
SEED_COLUMNS = ("test case", "median_time_ms", "median_time_ms (opt)", "speedup")
EXTRA_COLUMNS = ("± CI (opt)", "TB/s (opt)", "% of copy BW (opt)", "plan")
FOLD_ROWS = 12
MESSAGE_CHARS = 300
PROBLEMS_SHOWN = 50


def _cell(text: str) -> str:
    """One table cell: a single line, pipes escaped (tabulate does not escape them)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(headers: Sequence[str], body: list[list[str]], align: Sequence[str]) -> str:
    return tabulate(
        [[_cell(c) for c in r] for r in body],
        headers=list(headers),
        tablefmt="github",
        disable_numparse=True,
        colalign=list(align),
    )


def _fold(summary: str, content: str, rows: int) -> str:
    if rows <= FOLD_ROWS:
        return content
    return f"<details><summary>{summary}</summary>\n\n{content}\n\n</details>"


def _median_cell(row: ResultRow | None) -> str:
    if row is None:
        return "—"
    t = timing_of(row)
    if t is not None:
        return fmt_ms(t.median_ms)
    return row.status if row.status != "passed" else "not timed"


def _speedup(base: ResultRow | None, opt: ResultRow | None) -> float | None:
    tb = timing_of(base) if base is not None else None
    to = timing_of(opt) if opt is not None else None
    return None if tb is None or to is None else tb.median_ms / to.median_ms


def _best_peer(peers: list[ResultRow]) -> str:
    timed = [(t.median_ms, p.backend) for p in peers if (t := timing_of(p)) is not None]
    if not timed:
        return "—"
    ms, name = min(timed)
    return f"{name} {fmt_ms(ms)}"


def _pair_table(
    base_name: str,
    opt_name: str,
    rows: list[ResultRow],
    peers: dict[str, list[ResultRow]],
    title: str,
    level: str = "###",
) -> str:
    """The seed's four columns first, then CI, TB/s, % of copy bandwidth, plan (and the
    best peer backend when one ran on this device)."""
    by_case: dict[str, dict[str, ResultRow]] = defaultdict(dict)
    order: dict[str, tuple] = {}
    for r in rows:
        if r.backend in (base_name, opt_name):
            by_case[r.case_id][r.backend] = r
            order.setdefault(r.case_id, case_order_key(r))
    show_peer = any(peers.get(cid) for cid in by_case)
    headers = [*SEED_COLUMNS, *EXTRA_COLUMNS] + (["best peer (ms)"] if show_peer else [])
    body: list[list[str]] = []
    speedups: list[tuple[str, float]] = []
    for cid in sorted(by_case, key=order.__getitem__):
        base, opt = by_case[cid].get(base_name), by_case[cid].get(opt_name)
        s = _speedup(base, opt)
        if s is not None:
            speedups.append((cid, s))
        t = timing_of(opt) if opt is not None else None
        achieved = tbps_of(opt) if opt is not None else None
        pct = pct_of_copy(opt) if opt is not None else None
        line = [
            cid,
            _median_cell(base),
            _median_cell(opt),
            "—" if s is None else fmt_ratio(s),
            "—" if t is None else f"±{100 * t.rel_halfwidth:.2g}% n={t.n}",
            "—" if achieved is None else fmt_tbps(achieved),
            "—" if pct is None else fmt_pct(pct),
            (opt.plan if opt is not None and opt.plan else "—"),
        ]
        if show_peer:
            line.append(_best_peer(peers.get(cid, [])))
        body.append(line)
    table = _table(headers, body, ["left"] + ["right"] * 6 + ["left"] * (1 + show_peer))
    parts = [f"{level} {title}: `{base_name}` → `{opt_name}` (opt)", ""]
    if speedups:
        values = [s for _, s in speedups]
        geo = math.exp(sum(math.log(v) for v in values) / len(values))
        parts += [
            f"Speedup (baseline / opt median): geomean **{fmt_ratio(geo)}x** over "
            f"{len(values)} case(s), min {fmt_ratio(min(values))}x, "
            f"max {fmt_ratio(max(values))}x.",
            "",
        ]
    if len(speedups) >= 2:
        parts += [_chart(f"{opt_name} vs {base_name}", speedups), ""]
    parts.append(_fold(f"{len(body)} cases ({base_name} vs {opt_name})", table, len(body)))
    return "\n".join(parts)


def _chart(title: str, speedups: list[tuple[str, float]]) -> str:
    """Speedup per case as a mermaid bar chart (GitHub and GitLab render it)."""
    labels = ", ".join('"' + cid.replace('"', "'") + '"' for cid, _ in speedups)
    top = max(1.0, max(s for _, s in speedups))
    top = math.ceil(top * 1.1 * 2) / 2
    bars = ", ".join(fmt_ratio(s) for _, s in speedups)
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            f'    title "Speedup {title}"',
            f"    x-axis [{labels}]",
            f'    y-axis "speedup (x)" 0 --> {top:g}',
            f"    bar [{bars}]",
            "```",
        ]
    )


def _device_section(name: str, rows: list[ResultRow]) -> str:
    first = rows[0]
    facts = []
    sm = first.device.get("sm_count")
    if sm:
        facts.append(f"{sm} {'cores' if is_cpu(first) else 'SMs'}")
    bw = copy_tbps(first)
    facts.append(
        f"measured copy bandwidth {fmt_tbps(bw)} TB/s" if bw else "copy bandwidth not measured"
    )
    for key in ("driver", "cuda", "torch"):
        if first.env.get(key):
            facts.append(f"{key} {first.env[key]}")
    out = [f"## {device_label(first)}", "", " · ".join(facts), ""]
    commits = sorted({commit_of(r) for r in rows})
    level = "####" if len(commits) > 1 else "###"
    for commit in commits:
        crow = [r for r in rows if commit_of(r) == commit]
        if len(commits) > 1:
            out += [f"### commit `{short_commit(commit)}`", ""]
        peers: dict[str, list[ResultRow]] = defaultdict(list)
        for r in crow:
            if r.role == "peer":
                peers[r.case_id].append(r)
        families = sorted({family(r.backend) for r in crow if r.role in ("baseline", "grouped")})
        for fam in families:
            frows = [r for r in crow if family(r.backend) == fam]
            bases = sorted({r.backend for r in frows if r.role == "baseline"})
            opts = sorted({r.backend for r in frows if r.role == "grouped"})
            if not bases or not opts:
                only = ", ".join(f"`{b}`" for b in bases + opts)
                out += [f"{level} {fam}: only {only} ran here, no speedup to show", ""]
                continue
            for b in bases:
                for o in opts:
                    out += [_pair_table(b, o, frows, peers, fam, level), ""]
    return "\n".join(out)


def _headline(
    rows: list[ResultRow], problems: Sequence[ReadProblem], meta: Mapping[str, str], duplicates: int
) -> str:
    commits = sorted({commit_of(r) for r in rows})
    measured = ", ".join(f"`{short_commit(c)}`" for c in commits)
    if meta.get("commit"):
        commit_text = f"`{short_commit(meta['commit'])}`"
        if set(commits) - {meta["commit"]}:
            commit_text += f" (results measured at {measured})"
    else:
        commit_text = measured or "unknown"
    lines = [f"**Commit** {commit_text}"]
    if meta.get("target_branch"):
        lines[0] += f" · **target branch** `{meta['target_branch']}`"
    devices = by_device(rows)
    gpus = [n for n, g in devices if not is_cpu(g[0])]
    cpus = [n for n, g in devices if is_cpu(g[0])]
    if devices and not gpus:
        lines.append(
            f"**Devices** {', '.join(cpus)} — **{CPU_NOTE}**: these timings are of "
            "the CPU, not of any GPU kernel"
        )
    elif devices:
        text = f"**GPUs** {', '.join(gpus)}"
        if cpus:
            text += f"; also {', '.join(cpus)} — {CPU_NOTE}"
        lines.append(text)
    else:
        lines.append("**No results found.**")
    c = count_statuses(rows)
    lines.append(
        f"**Results** {c['passed']} passed · {c['failed']} failed · {c['skipped']} "
        f"skipped · {c['error']} error ({len(rows)} case x backend results)"
    )
    if problems:
        lines.append(
            f"**Result-file problems** {len(problems)} corrupt or unreadable lines "
            "skipped (listed below)"
        )
    else:
        lines.append("**Result-file problems** none")
    if duplicates:
        lines.append(f"**Duplicates merged** {duplicates} (same case, backend, device, commit)")
    if meta.get("note"):
        lines.append(f"**Note** {meta['note']}")
    return f"# {TITLE}\n\n" + "  \n".join(lines)


def _failures(rows: list[ResultRow]) -> str:
    bad = [r for _, group in by_device(rows) for r in group if r.status in ("failed", "error")]
    if not bad:
        return ""
    body = []
    for r in bad:
        msg = " ".join(failure_text(r).split())
        if len(msg) > MESSAGE_CHARS:
            msg = msg[: MESSAGE_CHARS - 1] + "…"
        body.append([r.device_name, r.case_id, r.backend, r.status, msg])
    table = _table(["device", "test case", "backend", "status", "message"], body, ["left"] * 5)
    return "\n".join(
        ["## Failures and errors", "", _fold(f"{len(body)} failures and errors", table, len(body))]
    )


def _skips(rows: list[ResultRow]) -> str:
    skipped = [r for r in rows if r.status == "skipped"]
    if not skipped:
        return ""
    counts = Counter(r.message or "no reason given" for r in skipped)
    backends: dict[str, set[str]] = defaultdict(set)
    devices: dict[str, set[str]] = defaultdict(set)
    for r in skipped:
        backends[r.message or "no reason given"].add(r.backend)
        devices[r.message or "no reason given"].add(r.device_name)
    body = [
        [reason, str(n), ", ".join(sorted(backends[reason])), ", ".join(sorted(devices[reason]))]
        for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    table = _table(
        ["reason", "count", "backends", "devices"], body, ["left", "right", "left", "left"]
    )
    return "\n".join(
        [f"## Skipped ({len(skipped)})", "", _fold(f"{len(body)} skip reasons", table, len(body))]
    )


def _problems(problems: Sequence[ReadProblem]) -> str:
    if not problems:
        return ""
    lines = [
        "## Result-file problems",
        "",
        "These lines could not be read and were left out of every table:",
        "",
    ]
    lines += [f"- `{p.path}:{p.line}`: {_cell(p.message)}" for p in problems[:PROBLEMS_SHOWN]]
    if len(problems) > PROBLEMS_SHOWN:
        lines.append(f"- … and {len(problems) - PROBLEMS_SHOWN} more")
    return "\n".join(lines)


def render_markdown(
    rows: Iterable[ResultRow],
    *,
    problems: Iterable[ReadProblem] = (),
    meta: Mapping[str, str] | None = None,
    duplicates: int = 0,
) -> str:
    """The whole summary as markdown. `meta` may carry `commit`, `target_branch` and
    `note`; `duplicates` is how many duplicate rows the merge dropped."""
    rows = list(rows)
    problems = list(problems)
    parts = [_headline(rows, problems, meta or {}, duplicates)]
    parts += [_device_section(name, group) for name, group in by_device(rows)]
    parts += [_failures(rows), _skips(rows), _problems(problems)]
    parts.append(
        "<sub>Times are medians in ms with 95% confidence intervals (± is the "
        "half-width, n the sample count); speedup = baseline median / opt median "
        "measured on the same device; % of copy BW compares achieved TB/s with "
        "that device's measured copy bandwidth.</sub>"
    )
    return "\n\n".join(p for p in parts if p) + "\n"


def write_markdown(
    rows: Iterable[ResultRow],
    path: str | Path,
    *,
    problems: Iterable[ReadProblem] = (),
    meta: Mapping[str, str] | None = None,
    duplicates: int = 0,
) -> Path:
    """Write `render_markdown(...)` to `path` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        render_markdown(rows, problems=problems, meta=meta, duplicates=duplicates), encoding="utf-8"
    )
    return path
