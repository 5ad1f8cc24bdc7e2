"""The JUnit report: one flat suite per device, correct results, figures where GitLab and
Jenkins show them, and a file that validates against a junit-10 style XSD."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from factories import seed_row
from junitparser import Error, Failure, JUnitXml, Skipped

from harness.report.junit import PROBLEMS_SUITE, build_junit, sanitize, write_junit
from harness.results import ReadProblem, ResultRow

XSD = Path(__file__).parent / "data" / "junit-10.xsd"
H100 = {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "sm_count": 132, "capability": "9.0"}
CPU = {"kind": "cpu", "name": "Test Xeon CPU", "sm_count": 16}
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CORR = {
    "max_abs_err": 0.5,
    "mismatches": 40,
    "allowed_mismatches": 1,
    "nan_count": 3,
    "numel": 32768,
    "rtol": 0.04,
    "atol": 0.04,
}


def make_row(
    batch: int, q_len: int, backend: str, status: str = "passed", *, device: dict = H100, **kw
) -> ResultRow:
    cuda = "12.8" if device["kind"] == "cuda" else ""
    return seed_row(
        batch,
        q_len,
        backend,
        status,
        device=device,
        commit=kw.pop("commit", COMMIT),
        env_extra={"torch": "2.13.0", "cuda": cuda},
        **kw,
    )


def sample_rows() -> list[ResultRow]:
    return [
        make_row(8, 2, "cuda_baseline", median=0.057, tbps=1.9),
        make_row(
            8, 2, "cuda_grouped", median=0.046, tbps=2.4, plan="tile=32 splits=4", duration=1.23456
        ),
        make_row(16, 2, "cuda_baseline", median=0.110),
        make_row(
            16,
            2,
            "cuda_grouped",
            "failed",
            correctness=CORR,
            message="40 of 32768 elements outside rtol=0.04 atol=0.04 (allowed 1); "
            "max abs err 0.5; 3 NaN (unwritten or invalid)",
        ),
        make_row(
            8,
            4,
            "cuda_grouped",
            "error",
            message="RuntimeError: CUDA error: an illegal memory access",
        ),
        make_row(8, 2, "torch_baseline", "skipped", message="fp8 KV needs sm_89+"),
        make_row(8, 2, "torch_grouped", "skipped", message="fp8 KV needs sm_89+"),
        make_row(8, 2, "torch_baseline", device=CPU, median=12.0, tbps=0.004),
        make_row(8, 2, "torch_grouped", device=CPU, median=4.0, tbps=0.012),
        make_row(8, 2, "cuda_grouped", "skipped", device=CPU, message="no CUDA device"),
    ]


PROBLEMS = [ReadProblem("reports/results/run1-gw1.jsonl", 3, "not valid JSON: truncated")]


@pytest.fixture
def junit_file(tmp_path: Path) -> Path:
    return write_junit(sample_rows(), tmp_path / "out" / "junit.xml", problems=PROBLEMS)


def _suites(path: Path) -> dict:
    return {s.name: s for s in JUnitXml.fromfile(str(path))}


def _cases(suite) -> dict:
    return {c.name: c for c in suite}


def test_one_flat_suite_per_device_plus_problems(junit_file: Path) -> None:
    suites = _suites(junit_file)
    assert set(suites) == {"NVIDIA H100 80GB HBM3", "Test Xeon CPU", PROBLEMS_SUITE}
    from xml.etree import ElementTree as ET

    root = ET.parse(junit_file).getroot()
    assert root.tag == "testsuites"
    assert [s.tag for s in root] == ["testsuite"] * 3
    assert not root.findall("testsuite/testsuite"), "GitLab reads no nested suites"


def test_counts_per_suite_and_root(junit_file: Path) -> None:
    suites = _suites(junit_file)
    h100 = suites["NVIDIA H100 80GB HBM3"]
    assert (h100.tests, h100.failures, h100.errors, h100.skipped) == (7, 1, 1, 2)
    cpu = suites["Test Xeon CPU"]
    assert (cpu.tests, cpu.failures, cpu.errors, cpu.skipped) == (3, 0, 0, 1)
    from xml.etree import ElementTree as ET

    root = ET.parse(junit_file).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("11", "1", "2")
    assert root.get("skipped") is None  # junit-10 declares no `skipped` on <testsuites>


def test_testcase_names_classnames_and_time(junit_file: Path) -> None:
    cases = _cases(_suites(junit_file)["NVIDIA H100 80GB HBM3"])
    case = cases["Qwen3-480B-fp8_e4m3-batchSize8-seqLenQ2[cuda_grouped]"]
    assert case.classname == "spec_decode.NVIDIA_H100_80GB_HBM3"
    assert case.time == pytest.approx(1.235)
    assert case.is_passed
    cpu_case = next(iter(_suites(junit_file)["Test Xeon CPU"]))
    assert cpu_case.classname == "spec_decode.Test_Xeon_CPU"


def test_failure_error_and_skip_are_set_with_their_messages(junit_file: Path) -> None:
    cases = _cases(_suites(junit_file)["NVIDIA H100 80GB HBM3"])
    failed = cases["Qwen3-480B-fp8_e4m3-batchSize16-seqLenQ2[cuda_grouped]"]
    (res,) = failed.result
    assert isinstance(res, Failure)
    assert "40 of 32768 elements" in res.message and "max abs err 0.5" in res.message
    errored = cases["Qwen3-480B-fp8_e4m3-batchSize8-seqLenQ4[cuda_grouped]"]
    (res,) = errored.result
    assert isinstance(res, Error) and "illegal memory access" in res.message
    skipped = cases["Qwen3-480B-fp8_e4m3-batchSize8-seqLenQ2[torch_grouped]"]
    (res,) = skipped.result
    assert isinstance(res, Skipped) and res.message == "fp8 KV needs sm_89+"
    assert not failed.is_passed and not skipped.is_passed


def test_key_figures_in_system_out_and_timings_as_suite_properties(junit_file: Path) -> None:
    suite = _suites(junit_file)["NVIDIA H100 80GB HBM3"]
    name = "Qwen3-480B-fp8_e4m3-batchSize8-seqLenQ2[cuda_grouped]"
    out = _cases(suite)[name].system_out
    assert "median 0.046 ms" in out
    assert "n=200" in out
    assert "achieved 2.4 TB/s = 80% of measured copy bandwidth 3 TB/s" in out
    assert "plan: tile=32 splits=4" in out
    props = {p.name: p.value for p in suite.properties()}
    assert float(props[f"{name}.median_ms"]) == pytest.approx(0.046)
    assert props[f"{name}.pct_copy_bw"] == "80%"
    assert props[f"{name}.plan"] == "tile=32 splits=4"
    assert props["device.copy_tbps"] == "3"
    assert props["device.timed_on"] == "gpu"
    failed = "Qwen3-480B-fp8_e4m3-batchSize16-seqLenQ2[cuda_grouped]"
    assert props[f"{failed}.mismatches"] == "40"
    cpu_props = {p.name: p.value for p in _suites(junit_file)["Test Xeon CPU"].properties()}
    assert cpu_props["device.timed_on"] == "cpu (no GPU)"


def test_result_file_problems_are_error_testcases(junit_file: Path) -> None:
    suite = _suites(junit_file)[PROBLEMS_SUITE]
    (case,) = list(suite)
    assert case.name == "reports/results/run1-gw1.jsonl:3"
    (res,) = case.result
    assert isinstance(res, Error) and "truncated" in res.message
    assert suite.errors == 1


def test_validates_against_junit10_xsd(junit_file: Path) -> None:
    from lxml import etree

    schema = etree.XMLSchema(etree.parse(str(XSD)))
    schema.assertValid(etree.parse(str(junit_file)))


def test_xsd_rejects_what_gitlab_or_jenkins_would(junit_file: Path) -> None:
    """The schema has teeth: nested suites, `skipped` on the root, testcase properties."""
    from lxml import etree

    schema = etree.XMLSchema(etree.parse(str(XSD)))
    good = etree.parse(str(junit_file)).getroot()

    root_skipped = etree.fromstring(etree.tostring(good))
    root_skipped.set("skipped", "3")  # what junitparser's own update_statistics writes
    nested = etree.fromstring(etree.tostring(good))
    nested[0].append(etree.fromstring(b'<testsuite name="x" tests="0" failures="0" errors="0"/>'))
    case_props = etree.fromstring(etree.tostring(good))
    case_props.find("testsuite/testcase").insert(0, etree.fromstring(b"<properties/>"))
    for doc in (root_skipped, nested, case_props):
        assert not schema.validate(doc)


def test_names_stay_unique_when_a_device_has_two_commits(tmp_path: Path) -> None:
    rows = [
        make_row(8, 2, "cuda_grouped", median=0.05),
        make_row(8, 2, "cuda_grouped", median=0.06, commit="f" * 40),
    ]
    xml = build_junit(rows)
    names = [c.name for s in xml for c in s]
    assert len(names) == len(set(names)) == 2
    assert all(
        n.startswith("Qwen3-480B-fp8_e4m3-batchSize8-seqLenQ2[cuda_grouped]@") for n in names
    )


def test_control_characters_do_not_break_the_xml(tmp_path: Path) -> None:
    from lxml import etree

    row = make_row(8, 2, "cuda_grouped", "error", message="boom \x00\x1b[31m red")
    path = write_junit([row], tmp_path / "j.xml")
    doc = etree.parse(str(path))  # parses: no illegal characters written
    assert "boom" in doc.find("testsuite/testcase/error").get("message")


def test_empty_run_is_still_valid(tmp_path: Path) -> None:
    from lxml import etree

    path = write_junit([], tmp_path / "j.xml")
    root = etree.parse(str(path)).getroot()
    assert root.get("tests") == "0" and len(root) == 0
    etree.XMLSchema(etree.parse(str(XSD))).assertValid(root)


def test_sanitize_removes_dots_and_spaces() -> None:
    assert sanitize("NVIDIA H100 80GB HBM3") == "NVIDIA_H100_80GB_HBM3"
    assert sanitize("Intel(R) Xeon(R) 2.1GHz") == "Intel_R_Xeon_R_2_1GHz"


def test_comparison_rows_carry_verdicts_and_a_slower_one_is_a_regression(tmp_path: Path) -> None:
    base = make_row(8, 2, "cuda_baseline-vs-cuda_grouped", median=0.05)
    comp = {
        "a": "cuda_baseline",
        "b": "cuda_grouped",
        "ratio": 1.07,
        "ci_low": 1.05,
        "ci_high": 1.09,
        "confidence": 0.95,
        "verdict": "slower",
        "threshold": 0.02,
    }
    row = replace(base, role="comparison", status="failed", message="1.07: slower", comparison=comp)
    path = write_junit([row], tmp_path / "j.xml")
    suite = next(iter(JUnitXml.fromfile(str(path))))
    (case,) = list(suite)
    assert case.name == "Qwen3-480B-fp8_e4m3-batchSize8-seqLenQ2[cuda_baseline-vs-cuda_grouped]"
    (res,) = case.result
    assert isinstance(res, Failure) and res.type == "regression"
    assert (
        "cuda_grouped / cuda_baseline = 1.0700 [1.0500, 1.0900] (95% CI): slower" in case.system_out
    )
    props = {p.name: p.value for p in suite.properties()}
    assert props[f"{case.name}.verdict"] == "slower"
    assert float(props[f"{case.name}.ratio_ci_low"]) == pytest.approx(1.05)
    from lxml import etree

    etree.XMLSchema(etree.parse(str(XSD))).assertValid(etree.parse(str(path)))


def _on_gpu(row: ResultRow, uuid: str, visible: str, worker: str) -> ResultRow:
    return replace(
        row, device={**row.device, "uuid": uuid, "visible_devices": visible}, worker=worker
    )


def test_a_sharded_run_names_each_gpu_and_each_case_says_where_it_ran(tmp_path: Path) -> None:
    from lxml import etree

    rows = [
        _on_gpu(make_row(8, 2, "cuda_baseline", median=0.057), "GPU-aaaaaaaa-1111", "0", "gw0"),
        _on_gpu(make_row(8, 2, "cuda_grouped", median=0.046), "GPU-bbbbbbbb-2222", "1", "gw1"),
        _on_gpu(make_row(16, 2, "cuda_grouped", median=0.09), "GPU-bbbbbbbb-2222", "1", "gw1"),
    ]
    path = write_junit(rows, tmp_path / "junit.xml")
    suite = _suites(path)["NVIDIA H100 80GB HBM3"]
    props = {p.name: p.value for p in suite.properties()}
    assert props["device.gpus"] == (
        "ran on 2 GPUs: GPU-aaaaaaaa (CUDA_VISIBLE_DEVICES=0, gw0): 1 results; "
        "GPU-bbbbbbbb (CUDA_VISIBLE_DEVICES=1, gw1): 2 results"
    )
    assert props["Qwen3-480B-fp8_e4m3-batchSize8-seqLenQ2[cuda_baseline].gpu"] == "GPU-aaaaaaaa gw0"
    assert props["Qwen3-480B-fp8_e4m3-batchSize16-seqLenQ2[cuda_grouped].gpu"] == "GPU-bbbbbbbb gw1"
    etree.XMLSchema(etree.parse(str(XSD))).assertValid(etree.parse(str(path)))
    one = write_junit(rows[1:], tmp_path / "one.xml")  # one GPU: no shard line
    assert "device.gpus" not in {
        p.name for s in JUnitXml.fromfile(str(one)) for p in s.properties()
    }


def test_key_figures_say_which_batches_ran_at_the_power_cap() -> None:
    from harness.report.figures import key_figures

    row = make_row(64, 8, "cuda_grouped", median=0.859, tbps=2.5)
    clocks = {
        "sm_clock_mhz_min": 1980,
        "sm_clock_mhz_max": 1980,
        "batches": 5,
        "power_capped_batches": 4,
        "power_limited_ms": 12.5,
        "throttled_batches": 1,
        "excluded_samples": 10,
    }
    capped = replace(row, timing={**row.timing, "clocks": clocks})
    out = key_figures(capped)
    assert (
        "clocks: SM 1980-1980 MHz; 4 of 5 batches at the power cap (12.5 ms held below the "
        "requested clock); 1 throttled (excluded, 10 samples)"
    ) in out
    # NVML without violation counters: the count alone; no clocks sampled: no line at all.
    bare = {k: v for k, v in clocks.items() if k not in ("power_limited_ms", "throttled_batches")}
    lines = key_figures(replace(row, timing={**row.timing, "clocks": bare})).splitlines()
    assert "clocks: SM 1980-1980 MHz; 4 of 5 batches at the power cap" in lines
    assert "clocks:" not in key_figures(row)
    cpu = {"batches": 3, "power_capped_batches": 0, "sm_clock_mhz_min": None}  # NVML not read
    assert "clocks:" not in key_figures(replace(row, timing={**row.timing, "clocks": cpu}))
