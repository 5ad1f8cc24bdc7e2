"""Result rows -> the markdown summary a kernel engineer reads on the PR in thirty seconds.

Order of the page: a headline (commit, devices and whether they were GPUs, counts,
result-file problems), then per device and backend family the seed's table
`test case | median_time_ms | median_time_ms (opt) | speedup` (baseline role vs grouped
role) with its extra columns and a mermaid speedup chart, then failures, a skipped
summary (a count per reason) and the problems. Tables longer than FOLD_ROWS are folded
into `<details>`; with `max_chars` the largest tables and charts are left out (pointing
at the full page, a CI artifact) so the page fits a PR comment (GitHub: 65,536 chars).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from harness.report.artifacts import artifact_ref
from harness.report.figures import (
    CPU_NOTE,
    VERDICT_ORDER,
    by_device,
    case_order_key,
    commit_of,
    comparison_of,
    copy_tbps,
    count_statuses,
    device_label,
    failure_text,
    family,
    fmt_ms,
    fmt_pct,
    fmt_ratio,
    fmt_rel_ci,
    fmt_tbps,
    gpus_text,
    is_cpu,
    pct_of_copy,
    power_capped,
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
GITHUB_COMMENT_LIMIT = 65_536
FULL_REPORT_NAME = "summary-full.md"


@dataclass(frozen=True)
class _Block:
    """A paragraph of the page; one with a `label` (a table, a chart) may be left out,
    largest first, when the page must fit a comment size limit."""

    text: str
    label: str = ""


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


def _fold(summary: str, content: str, rows: int) -> _Block:
    """A table, inside `<details>` when it is longer than FOLD_ROWS."""
    if rows > FOLD_ROWS:
        content = f"<details><summary>{summary}</summary>\n\n{content}\n\n</details>"
    return _Block(content, summary)


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


PEER_COLUMNS = ("best peer (µs, TB/s, which)", "opt / best peer")


def _best_peer(peers: list[ResultRow]) -> ResultRow | None:
    """The fastest timed peer of a case (a failed or skipped peer has no timing)."""
    timed = [(t.median_ms, p.backend, p) for p in peers if (t := timing_of(p)) is not None]
    return min(timed, key=lambda x: (x[0], x[1]))[2] if timed else None


def _peer_cells(peers: list[ResultRow], opt: ResultRow | None) -> list[str]:
    """`123.4 µs, 2.51 TB/s, flashinfer_xqa` and the ratio opt median / best-peer median
    (above 1: our grouped kernel is slower than the best peer)."""
    best = _best_peer(peers)
    if best is None:
        return ["—", "—"]
    t = timing_of(best)
    assert t is not None
    achieved = tbps_of(best)
    cell = f"{t.median_ms * 1e3:.1f} µs, {'—' if achieved is None else fmt_tbps(achieved)} TB/s, "
    cell += best.backend
    to = timing_of(opt) if opt is not None else None
    return [cell, "—" if to is None else fmt_ratio(to.median_ms / t.median_ms)]


def _pair_table(
    base_name: str,
    opt_name: str,
    rows: list[ResultRow],
    peers: dict[str, list[ResultRow]],
    title: str,
    level: str = "###",
) -> list[_Block]:
    """The seed's four columns first, then CI, TB/s, % of copy bandwidth, plan (and, when a
    peer ran on this device, the fastest peer per case and opt / best-peer)."""
    by_case: dict[str, dict[str, ResultRow]] = defaultdict(dict)
    order: dict[str, tuple] = {}
    for r in rows:
        if r.backend in (base_name, opt_name):
            by_case[r.case_id][r.backend] = r
            order.setdefault(r.case_id, case_order_key(r))
    heading = f"{level} {title}: `{base_name}` → `{opt_name}` (opt)"
    if all(r.status == "skipped" for case in by_case.values() for r in case.values()):
        return [_Block(heading), _Block(f"All {len(by_case)} cases skipped (reasons below).")]
    show_peer = any(peers.get(cid) for cid in by_case)
    headers = [*SEED_COLUMNS, *EXTRA_COLUMNS] + (list(PEER_COLUMNS) if show_peer else [])
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
            "—" if t is None else f"{fmt_rel_ci(t)} n={t.n}",
            "—" if achieved is None else fmt_tbps(achieved),
            "—" if pct is None else fmt_pct(pct),
            (opt.plan if opt is not None and opt.plan else "—"),
        ]
        if show_peer:
            line += _peer_cells(peers.get(cid, []), opt)
        body.append(line)
    align = ["left"] + ["right"] * 6 + ["left"] + (["left", "right"] if show_peer else [])
    table = _table(headers, body, align)
    blocks = [_Block(heading)]
    if speedups:
        values = [s for _, s in speedups]
        geo = math.exp(sum(math.log(v) for v in values) / len(values))
        blocks.append(
            _Block(
                f"Speedup (baseline / opt median): geomean **{fmt_ratio(geo)}x** over "
                f"{len(values)} case(s), min {fmt_ratio(min(values))}x, "
                f"max {fmt_ratio(max(values))}x."
            )
        )
    what = f"{opt_name} vs {base_name} on {rows[0].device_name}"
    if len(speedups) >= 2:
        blocks.append(_Block(_chart(f"{opt_name} vs {base_name}", speedups), f"chart {what}"))
    table_block = _fold(f"{len(body)} cases ({base_name} vs {opt_name})", table, len(body))
    blocks.append(_Block(table_block.text, f"table {what} ({len(body)} cases)"))
    return blocks


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


def _device_section(name: str, rows: list[ResultRow]) -> list[_Block]:
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
    out = [_Block(f"## {device_label(first)}"), _Block(" · ".join(facts))]
    shards = gpus_text(rows)
    if shards:
        out.append(_Block(shards[0].upper() + shards[1:]))
    capped = _power_cap_note(rows)
    if capped:
        out.append(_Block(capped))
    commits = sorted({commit_of(r) for r in rows})
    level = "####" if len(commits) > 1 else "###"
    for commit in commits:
        crow = [r for r in rows if commit_of(r) == commit]
        if len(commits) > 1:
            out.append(_Block(f"### commit `{short_commit(commit)}`"))
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
                out.append(_Block(f"{level} {fam}: only {only} ran here, no speedup to show"))
                continue
            for b in bases:
                for o in opts:
                    out += _pair_table(b, o, frows, peers, fam, level)
    return out


def _power_cap_note(rows: list[ResultRow], most: int = 8) -> str:
    """Which timed results had batches at the board's power cap (their medians include
    them: the cap is counted, not excluded), so a reader does not take a capped number for
    the kernel's own; "" when none had."""
    timed = [r for r in rows if timing_of(r) is not None]
    capped = [(r, pc) for r in timed if (pc := power_capped(r))]
    if not capped:
        return ""
    names = ", ".join(f"`{r.case_id}[{r.backend}]` ({k} of {n})" for r, (k, n) in capped[:most])
    more = f" and {len(capped) - most} more" if len(capped) > most else ""
    return (
        f"**Power cap**: {len(capped)} of {len(timed)} timed results had batches at the "
        f"board's power cap, which their medians include: {names}{more}. Each case's "
        "`clocks:` line in the JUnit output gives the SM clocks and the time held back."
    )


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
    if meta.get("incomplete"):
        lines.insert(0, f"**INCOMPLETE RUN** {meta['incomplete']}")
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
    verdicts = Counter(c.verdict for r in rows if (c := comparison_of(r)) is not None)
    if verdicts:
        lines.append(
            f"**Regressions** {verdicts['slower']} slower of {sum(verdicts.values())} "
            "comparisons ("
            + ", ".join(f"{verdicts[v]} {v}" for v in VERDICT_ORDER if v in verdicts)
            + "; see Comparisons)"
        )
    if problems:
        lines.append(
            f"**Result-file problems** {len(problems)} corrupt or unreadable line(s) "
            "skipped (listed below)"
        )
    else:
        lines.append("**Result-file problems** none")
    if duplicates:
        lines.append(f"**Duplicates merged** {duplicates} (same case, backend, device, commit)")
    if meta.get("note"):
        lines.append(f"**Note** {meta['note']}")
    if meta.get("chart"):  # markdown from generate(): the PNG's link, or why it was skipped
        lines.append(f"**Chart** {meta['chart']}")
    return f"# {TITLE}\n\n" + "  \n".join(lines)


def _failures(rows: list[ResultRow]) -> list[_Block]:
    bad = [
        r
        for _, group in by_device(rows)
        for r in group
        if r.status in ("failed", "error") and comparison_of(r) is None
    ]
    if not bad:
        return []
    body = []
    for r in bad:
        msg = " ".join(failure_text(r).split())
        if len(msg) > MESSAGE_CHARS:
            msg = msg[: MESSAGE_CHARS - 1] + "…"
        body.append([r.device_name, r.case_id, r.backend, r.status, msg])
    table = _table(["device", "test case", "backend", "status", "message"], body, ["left"] * 5)
    table_block = _fold(f"{len(body)} failures and errors", table, len(body))
    return [_Block("## Failures and errors"), _Block(table_block.text, "failures table")]


def _comparisons(rows: list[ResultRow]) -> list[_Block]:
    """Verdict rows (in-run A/B, or this PR vs the target branch), regressions first."""
    found = [(r, c) for r in rows if (c := comparison_of(r)) is not None]
    if not found:
        return []
    rank = {v: i for i, v in enumerate(VERDICT_ORDER)}
    found.sort(
        key=lambda rc: (rank.get(rc[1].verdict, -1), rc[0].device_name, case_order_key(rc[0]))
    )
    body = [
        [
            r.device_name,
            r.case_id,
            f"{c.b} vs {c.a}",
            f"{c.ratio:.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}]",
            f"**{c.verdict}**" if c.verdict == "slower" else c.verdict,
            "—" if c.threshold is None else f"±{c.threshold:.1%}",
            "; ".join(c.labels) or "in one run",
        ]
        for r, c in found
    ]
    headers = ["device", "test case", "b vs a", "ratio b/a [95% CI]", "verdict", "threshold", "how"]
    table = _table(headers, body, ["left", "left", "left", "right", "left", "right", "left"])
    table_block = _fold(f"{len(body)} comparisons", table, len(body))
    return [
        _Block("## Comparisons"),
        _Block(
            "ratio = median of b / median of a; above 1 means b is slower. A verdict is "
            "given only when the whole interval is beyond (or within) the threshold."
        ),
        _Block(table_block.text, "comparisons table"),
    ]


def _skips(rows: list[ResultRow]) -> list[_Block]:
    skipped = [r for r in rows if r.status == "skipped"]
    if not skipped:
        return []
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
    return [
        _Block(f"## Skipped ({len(skipped)})"),
        _fold(f"{len(body)} skip reasons", table, len(body)),
    ]


def _problems(problems: Sequence[ReadProblem]) -> list[_Block]:
    if not problems:
        return []
    lines = [
        "## Result-file problems",
        "",
        "These lines could not be read and were left out of every table:",
        "",
    ]
    lines += [f"- `{p.path}:{p.line}`: {_cell(p.message)}" for p in problems[:PROBLEMS_SHOWN]]
    if len(problems) > PROBLEMS_SHOWN:
        lines.append(f"- … and {len(problems) - PROBLEMS_SHOWN} more")
    return [_Block("\n".join(lines))]


FOOTNOTE = (
    "<sub>Times are medians in ms with 95% confidence intervals (± is the half-width, n the "
    "sample count); speedup = baseline median / opt median measured on the same device; "
    "% of copy BW compares achieved TB/s with that device's measured copy bandwidth.</sub>"
)


def _fit(blocks: list[_Block], max_chars: int, artifact: str) -> list[_Block]:
    """Leave out the largest tables and charts until the page fits `max_chars`, and say
    so under the headline; the full page is the artifact (`artifact` is markdown: a link
    when its URL is known, else the file name in backticks)."""

    def size(bs: list[_Block]) -> int:
        return sum(len(b.text) + 2 for b in bs) + 200  # + the note added below

    blocks = list(blocks)
    left_out: list[str] = []
    droppable = sorted(
        (i for i, b in enumerate(blocks) if b.label), key=lambda i: -len(blocks[i].text)
    )
    for i in droppable:
        if size(blocks) <= max_chars:
            break
        left_out.append(blocks[i].label)
        blocks[i] = _Block(
            f"_{blocks[i].label}: left out to fit the comment size limit; see {artifact}._"
        )
    if left_out:
        note = (
            f"**Folded** {len(left_out)} tables/charts left out to stay under "
            f"{max_chars:,} characters; the full report is {artifact} in the CI "
            "artifacts."
        )
        blocks.insert(1, _Block(note))
    return blocks


def render_markdown(
    rows: Iterable[ResultRow],
    *,
    problems: Iterable[ReadProblem] = (),
    meta: Mapping[str, str] | None = None,
    duplicates: int = 0,
    max_chars: int | None = None,
    artifact: str = FULL_REPORT_NAME,
    artifact_url: str = "",
) -> str:
    """The whole summary as markdown. `meta` may carry `commit`, `target_branch` and
    `note`; `duplicates` is how many duplicate rows the merge dropped. With `max_chars`
    (e.g. GITHUB_COMMENT_LIMIT) the largest tables are left out, pointing at `artifact`,
    until the page fits; a page that still does not fit is cut with a note. With
    `artifact_url` (see harness.report.artifacts) those notes link the full page."""
    rows = list(rows)
    problems = list(problems)
    blocks = [_Block(_headline(rows, problems, meta or {}, duplicates))]
    for name, group in by_device(rows):
        blocks += _device_section(name, group)
    blocks += _comparisons(rows) + _failures(rows) + _skips(rows) + _problems(problems)
    blocks.append(_Block(FOOTNOTE))
    if max_chars is not None:
        blocks = _fit(blocks, max_chars, artifact_ref(artifact, artifact_url))
    text = "\n\n".join(b.text for b in blocks) + "\n"
    if max_chars is not None and len(text) > max_chars:
        ref = artifact_ref(artifact, artifact_url)
        cut = f"\n\n_… cut at {max_chars:,} characters; the full report is {ref}._\n"
        text = text[: max_chars - len(cut)] + cut
    return text


def write_markdown(
    rows: Iterable[ResultRow],
    path: str | Path,
    *,
    problems: Iterable[ReadProblem] = (),
    meta: Mapping[str, str] | None = None,
    duplicates: int = 0,
    max_chars: int | None = None,
    artifact_url: str = "",
) -> tuple[Path, Path | None]:
    """Write the summary to `path`. With `max_chars`, a page that would be longer is
    written in full beside it as FULL_REPORT_NAME and `path` gets the folded page.
    Returns (path, the full page's path or None)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, problems = list(rows), list(problems)
    full = render_markdown(rows, problems=problems, meta=meta, duplicates=duplicates)
    if max_chars is None or len(full) <= max_chars:
        path.write_text(full, encoding="utf-8")
        return path, None
    full_path = path.with_name(FULL_REPORT_NAME)
    full_path.write_text(full, encoding="utf-8")
    path.write_text(
        render_markdown(
            rows,
            problems=problems,
            meta=meta,
            duplicates=duplicates,
            max_chars=max_chars,
            artifact=full_path.name,
            artifact_url=artifact_url,
        ),
        encoding="utf-8",
    )
    return path, full_path
