"""Result rows -> one JUnit XML file that GitLab's and Jenkins' readers both accept.

Shape (checked in tests against a Jenkins junit-10 style XSD, tests/data/junit-10.xsd):

    testsuites                       (tests/failures/errors/time; no `skipped`: junit-10
                                      does not allow it on the root)
      testsuite  name=<device>       one per GPU type, flat (GitLab reads no nesting)
        properties                   device + environment, then per test case
                                      `<name>.median_ms` etc. (timings as properties)
        testcase name=CASE[backend] classname=<matrix>.<device>  time=duration_s
                                      (comparison rows too: CASE[a-vs-b], verdict properties,
                                      a `slower` verdict is a failure of type regression)
          failure|error|skipped      message carries the error figures
          system-out                 the key figures again: GitLab ignores properties
      testsuite  name="result files" one error test case per corrupt result line

Why suite-level properties and not junitparser.xunit2's test-case properties: the
Jenkins xunit XSD allows `property` only under `testsuite`, and GitLab ignores
properties anyway; the figures a person reads are in the message and system-out.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

from harness.report.figures import (
    by_device,
    commit_of,
    comparison_of,
    copy_tbps,
    failure_text,
    fmt_pct,
    fmt_tbps,
    gpus_text,
    is_cpu,
    key_figures,
    pct_of_copy,
    short_commit,
    tbps_of,
    timing_of,
    xml_safe,
)
from harness.results import ReadProblem, ResultRow

PROBLEMS_SUITE = "result files"
PROBLEMS_CLASSNAME = "harness.result_files"
MESSAGE_LIMIT = 2000  # attribute text; the full text goes into the element body


def sanitize(name: str) -> str:
    """A classname component: no dots (Jenkins splits packages on them), no spaces."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    return cleaned or "unknown"


def _short(text: str) -> str:
    text = xml_safe(text)
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _case_names(rows: list[ResultRow]) -> list[str]:
    """`CASEID[backend]`, unique within the suite (GitLab keeps only the first of equal
    names): rows of several commits on one device get `@commit`, any clash left a `#n`."""
    several_commits = len({commit_of(r) for r in rows}) > 1
    names: list[str] = []
    seen: dict[str, int] = {}
    for row in rows:
        name = f"{row.case_id}[{row.backend}]"
        if several_commits:
            name += f"@{short_commit(commit_of(row))}"
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return names


def _testcase(row: ResultRow, name: str) -> TestCase:
    case = TestCase(
        xml_safe(name),
        f"{sanitize(row.matrix)}.{sanitize(row.device_name)}",
        round(max(float(row.duration_s or 0.0), 0.0), 3),
    )
    if row.status == "failed":
        kind = "regression" if comparison_of(row) is not None else "wrong_output"
        result = Failure(_short(failure_text(row)), kind)
    elif row.status == "error":
        result = Error(_short(failure_text(row)), "error")
    elif row.status == "skipped":
        result = Skipped(_short(row.message or "skipped"), "unsupported")
    else:
        result = None
    if result is not None:
        result.text = xml_safe(failure_text(row))
        case.result = [result]
    case.system_out = xml_safe(key_figures(row))
    return case


def _figure_properties(row: ResultRow, name: str) -> list[tuple[str, str]]:
    props = [(f"{name}.status", row.status)]
    uuid = str(row.device.get("uuid") or "")
    if uuid:
        props.append((f"{name}.gpu", f"{uuid[:12]} {row.worker or 'main'}"))
    t = timing_of(row)
    if t is not None:
        props += [
            (f"{name}.median_ms", repr(t.median_ms)),
            (f"{name}.ci_low_ms", repr(t.ci_low_ms)),
            (f"{name}.ci_high_ms", repr(t.ci_high_ms)),
            (f"{name}.n", str(t.n)),
            (f"{name}.stop_reason", t.stop_reason),
        ]
    achieved, pct = tbps_of(row), pct_of_copy(row)
    if achieved is not None:
        props.append((f"{name}.tbps", fmt_tbps(achieved)))
    if pct is not None:
        props.append((f"{name}.pct_copy_bw", fmt_pct(pct)))
    if row.plan:
        props.append((f"{name}.plan", row.plan))
    comp = comparison_of(row)
    if comp is not None:
        props += [
            (f"{name}.verdict", comp.verdict),
            (f"{name}.ratio", repr(comp.ratio)),
            (f"{name}.ratio_ci_low", repr(comp.ci_low)),
            (f"{name}.ratio_ci_high", repr(comp.ci_high)),
        ]
        if comp.threshold is not None:
            props.append((f"{name}.threshold", repr(comp.threshold)))
    c = row.correctness if isinstance(row.correctness, dict) else {}
    for key in ("max_abs_err", "mismatches"):
        if key in c:
            props.append((f"{name}.{key}", str(c[key])))
    return props


def _device_properties(rows: list[ResultRow]) -> list[tuple[str, str]]:
    first = rows[0]
    dev, env = first.device, first.env
    props = [
        ("device.kind", str(dev.get("kind", ""))),
        ("device.name", first.device_name),
        ("device.timed_on", "cpu (no GPU)" if is_cpu(first) else "gpu"),
    ]
    for key in ("sm_count", "capability", "memory_bytes", "l2_bytes"):
        if dev.get(key) not in (None, ""):
            props.append((f"device.{key}", str(dev[key])))
    bw = copy_tbps(first)
    if bw is not None:
        props.append(("device.copy_tbps", fmt_tbps(bw)))
    for key in ("driver", "cuda", "torch", "python"):
        if env.get(key):
            props.append((key, str(env[key])))
    shards = gpus_text(rows)
    if shards:
        props.append(("device.gpus", shards))
    props.append(("commits", ",".join(sorted({commit_of(r) for r in rows}))))
    props.append(("hosts", ",".join(sorted({str(r.env.get("hostname", "")) for r in rows}))))
    props.append(("runs", ",".join(sorted({r.run_id for r in rows}))))
    return props


def _device_suite(name: str, rows: list[ResultRow]) -> TestSuite:
    suite = TestSuite(xml_safe(name))
    stamps = [r.timestamp for r in rows if r.timestamp]
    if stamps:
        suite.timestamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(min(stamps)))
    names = _case_names(rows)
    # properties must precede the test cases (the XSD's element order)
    props = _device_properties(rows)
    for row, case_name in zip(rows, names, strict=True):
        props += _figure_properties(row, case_name)
    for key, value in props:
        suite.add_property(xml_safe(key), xml_safe(value))
    suite.add_testcases([_testcase(row, n) for row, n in zip(rows, names, strict=True)])
    return suite


def _problems_suite(problems: Iterable[ReadProblem]) -> TestSuite | None:
    cases = []
    for p in problems:
        case = TestCase(xml_safe(f"{p.path}:{p.line}"), PROBLEMS_CLASSNAME, 0.0)
        err = Error(_short(p.message), "corrupt_result_line")
        err.text = xml_safe(str(p))
        case.result = [err]
        cases.append(case)
    if not cases:
        return None
    suite = TestSuite(PROBLEMS_SUITE)
    suite.add_testcases(cases)
    return suite


def build_junit(rows: Iterable[ResultRow], problems: Iterable[ReadProblem] = ()) -> JUnitXml:
    """The JUnit document for merged rows (see the module docstring for its shape)."""
    xml = JUnitXml("decode-attention")
    suites = [_device_suite(name, group) for name, group in by_device(rows)]
    extra = _problems_suite(problems)
    if extra is not None:
        suites.append(extra)
    for suite in suites:
        xml.add_testsuite(suite)
    # Root totals set by hand: junitparser's update_statistics also writes `skipped` on
    # <testsuites>, which the junit-10 XSD (Jenkins) rejects.
    xml.tests = sum(s.tests for s in suites)
    xml.failures = sum(s.failures for s in suites)
    xml.errors = sum(s.errors for s in suites)
    xml.time = round(sum(s.time for s in suites), 3)
    return xml


def write_junit(
    rows: Iterable[ResultRow], path: str | Path, problems: Iterable[ReadProblem] = ()
) -> Path:
    """Write the JUnit file for `rows` (+ one error test case per result-file problem)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    build_junit(rows, problems).write(str(path), pretty=True)
    return path
