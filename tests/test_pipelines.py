"""The shipped CI files: .gitlab-ci.yml against GitLab's CI schema (check-jsonschema's
vendored copy, offline) plus the structure teams rely on; the Jenkinsfile parse-checked
here (braces, strings, the declarative matrix) and linted by npm-groovy-lint when it is
installed; the Dockerfile by hadolint when it is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GITLAB_CI = ROOT / ".gitlab-ci.yml"
JENKINSFILE = ROOT / "Jenkinsfile"
GPUS = ["h100", "a100", "l40s", "b200"]
AB_ARG = '--baseline-rev "origin/$CI_MERGE_REQUEST_TARGET_BRANCH_NAME"'


# --- GitLab -------------------------------------------------------------------------------


def _check_gitlab(path: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is in the [test] extra")
    cmd = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci"]
    cmd += ["--data-transform", "gitlab-ci", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def test_gitlab_ci_matches_gitlabs_schema() -> None:
    proc = _check_gitlab(GITLAB_CI)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_catches_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / ".gitlab-ci.yml"
    bad.write_text(GITLAB_CI.read_text().replace("parallel:\n", "paralel:\n", 1))
    assert _check_gitlab(bad).returncode != 0


@pytest.fixture(scope="module")
def gitlab() -> dict:
    yaml = pytest.importorskip("ruamel.yaml", reason="ruamel.yaml comes with check-jsonschema")
    return yaml.YAML(typ="safe").load(GITLAB_CI.read_text())


def _script(job: dict) -> str:
    return "\n".join(job.get("script", []))


def test_gitlab_runs_on_merge_requests(gitlab: dict) -> None:
    first = gitlab["workflow"]["rules"][0]
    assert first == {"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}


def test_gitlab_cpu_jobs_have_no_gpu_tags(gitlab: dict) -> None:
    for name in ("lint", "tests"):
        assert "tags" not in gitlab[name]
    assert "nox -s lint" in _script(gitlab["lint"])
    assert "nox -s tests" in _script(gitlab["tests"])


def test_gitlab_gpu_matrix_fans_out_by_runner_tag(gitlab: dict) -> None:
    job = gitlab["gpu_matrix"]
    assert job["parallel"]["matrix"] == [{"GPU": GPUS}]
    assert job["tags"] == ["$GPU"]
    template = gitlab[job["extends"]]
    assert "reports/results/" in template["artifacts"]["paths"]
    assert template["artifacts"]["reports"]["junit"] == "reports/$GPU/junit.xml"
    assert template["artifacts"]["when"] == "always"
    assert '--results-dir "reports/results/$GPU"' in _script(job)


def test_gitlab_ab_job_compares_against_the_target_branch(gitlab: dict) -> None:
    job = gitlab["ab_vs_target"]
    assert job["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    assert AB_ARG in _script(job)
    assert "refs/remotes/origin/$CI_MERGE_REQUEST_TARGET_BRANCH_NAME" in _script(job)
    assert job["variables"]["HARNESS_CONTAINER_MOUNT_REPO"] == "1"


def test_gitlab_report_merges_every_gpu_and_posts(gitlab: dict) -> None:
    job = gitlab["report"]
    needed = {n["job"]: n for n in job["needs"]}
    assert needed["gpu_matrix"]["artifacts"] is True
    assert needed["ab_vs_target"]["optional"] is True
    assert job["rules"] == [{"when": "always"}]
    script = _script(job)
    assert "nox -s report -- reports/results" in script
    assert "nox -s post" in script
    assert job["artifacts"]["reports"]["junit"] == "reports/junit.xml"


# --- Jenkins --------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<comment>//[^\n]*|/\*.*?\*/)
      |(?P<string>'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")
      |(?P<open>[{(\[])|(?P<close>[})\]])""",
    re.S | re.X,
)
_PAIRS = {"}": "{", ")": "(", "]": "["}


def groovy_blocks(text: str) -> list[tuple[str, int, int]]:
    """(word before '{', start, end) for every brace block; raises on unbalanced brackets
    or an unterminated string (strings and comments are skipped)."""
    stack: list[tuple[str, int]] = []
    blocks = []
    pos = 0
    for m in _TOKEN.finditer(text):
        gap = text[pos : m.start()]
        if "'" in gap or '"' in gap:
            raise SyntaxError(f"unterminated string near offset {pos}")
        pos = m.end()
        if m.group("open"):
            stack.append((m.group("open"), m.start()))
        elif m.group("close"):
            if not stack or stack[-1][0] != _PAIRS[m.group("close")]:
                raise SyntaxError(f"unbalanced {m.group('close')!r} at offset {m.start()}")
            opener, start = stack.pop()
            if opener == "{":
                head = re.search(r"([\w']+)\s*(?:\([^()]*\))?\s*$", text[:start])
                blocks.append((head.group(1) if head else "", start, m.end()))
    if "'" in text[pos:] or '"' in text[pos:]:
        raise SyntaxError("unterminated string at the end")
    if stack:
        raise SyntaxError(f"unclosed {stack[-1][0]!r} at offset {stack[-1][1]}")
    return blocks


def _block(text: str, word: str) -> str:
    found = [text[s:e] for w, s, e in groovy_blocks(text) if w == word]
    assert found, f"no `{word} {{ }}` block"
    return found[0]


@pytest.fixture(scope="module")
def jenkins() -> str:
    return JENKINSFILE.read_text()


def test_jenkinsfile_parses(jenkins: str) -> None:
    words = [w for w, _, _ in groovy_blocks(jenkins)]
    assert words[-1] == "pipeline"  # the outermost block closes last
    for needed in ("stages", "matrix", "axes", "axis", "agent", "post", "always"):
        assert needed in words


@pytest.mark.parametrize(
    "broken",
    [
        lambda t: t.replace("stages {", "stages {{", 1),
        lambda t: t.replace("'h100'", "'h100", 1),
        lambda t: t[: t.rindex("}")],
    ],
)
def test_parse_check_catches_breakage(jenkins: str, broken) -> None:
    with pytest.raises(SyntaxError):
        groovy_blocks(broken(jenkins))


def test_jenkins_matrix_axis_and_agent_per_gpu(jenkins: str) -> None:
    matrix = _block(jenkins, "matrix")
    axis = _block(matrix, "axis")
    assert re.search(r"name\s+'GPU'", axis)
    assert re.findall(r"'(\w+)'", axis.split("values", 1)[1]) == GPUS
    assert re.search(r'agent\s*\{\s*label\s+"gpu && \$\{GPU\}"\s*\}', matrix)
    assert 'junit testResults: "reports/${GPU}/junit.xml"' in matrix
    assert "archiveArtifacts" in matrix and "stash name:" in matrix
    assert "catchError" in matrix  # a failing GPU still lets the report run


def test_jenkins_pr_stage_and_final_report(jenkins: str) -> None:
    assert "when { changeRequest() }" in jenkins
    assert "--baseline-rev origin/${env.CHANGE_TARGET}" in jenkins
    report = jenkins[jenkins.index("stage('Report')") :]
    assert "unstash" in report and "nox -s report -- reports/results" in report
    assert "nox -s post" in report and "withCredentials" in report
    assert "junit testResults: 'reports/junit.xml'" in report


@pytest.mark.skipif(shutil.which("npm-groovy-lint") is None, reason="npm-groovy-lint not installed")
def test_npm_groovy_lint(tmp_path: Path) -> None:
    cmd = ["npm-groovy-lint", "--config", str(ROOT / "ci/groovylint.json"), "--failon", "info"]
    cmd += ["--output", "txt", str(JENKINSFILE)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=nvidia/cuda:13\.0\.\d+-devel-", text, re.M)
    final = text[text.index("AS final") :]
    assert re.search(r"^USER \$\{HARNESS_UID\}$", final, re.M)
    assert "ARG HARNESS_UID=10001" in final
    builder = text[text.index("AS builder") : text.index("AS final")]
    # the kernels' layer comes before (and does not depend on) the harness code
    assert builder.index("COPY kernels/ kernels/") < builder.index("python -m kernels.build")
    assert "COPY harness/" not in builder
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130" in builder


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed")
def test_hadolint() -> None:
    proc = subprocess.run(
        ["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
