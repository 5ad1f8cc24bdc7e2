"""`nox -s container_smoke`: prove the container path end to end on a CPU machine.

Why a separate smoke path: no registry (so no nvidia/cuda image) and no GPU here, yet the
Dockerfile, the SDK runner, the in-image kernel build and the report must be proven. So:
a local Debian base (debootstrap + docker import) -> our Dockerfile with the CPU torch
wheel and nvcc from PyPI -> `nox -s gpu_matrix` on the smoke matrix inside, no GPU ->
the JUnit that comes out must hold passing cases and no failure.

    python ci/container_smoke.py [--base-tag localbase:bookworm] [--archs 90a] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import container as hc  # noqa: E402

TORCH_VERSION = "2.13.0"  # the CPU pin of noxfile.py (CPU_TORCH)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SMOKE_MATRIX = "matrices/smoke.toml"
REPORTS = Path("reports") / "container_smoke"


@dataclass(frozen=True)
class JunitSummary:
    """The counts that decide the smoke verdict."""

    tests: int
    failures: int
    errors: int
    skipped: int

    @property
    def passed(self) -> int:
        return self.tests - self.failures - self.errors - self.skipped

    @property
    def ok(self) -> bool:
        return self.passed > 0 and self.failures == 0 and self.errors == 0


def _say(msg: str) -> None:
    print(f"[container_smoke] {msg}", flush=True)


def ensure_base(client, tag: str) -> None:
    """Build the registry-free Debian base with ci/local-base.sh unless it exists."""
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
        _say(f"base image {tag} present")
        return
    except ImageNotFound:
        pass
    if shutil.which("debootstrap") is None:
        raise hc.ContainerError(
            f"base image {tag} missing and debootstrap not installed "
            "(apt-get install -y debootstrap, or pass --base-tag with an image you have)"
        )
    _say(f"base image {tag} missing: building it with ci/local-base.sh (about a minute)")
    if subprocess.run(["bash", str(ROOT / "ci" / "local-base.sh"), tag]).returncode != 0:
        raise hc.ContainerError(f"ci/local-base.sh could not build {tag} (its output is above)")


def python_tag(client, image: str) -> str:
    """`cp311` etc.: which CPU torch wheel the base image can install."""
    out = client.containers.run(
        image,
        ["python3", "-c", "import sys; print('cp%d%d' % sys.version_info[:2])"],
        network_mode="host",
        remove=True,
    )
    tag = out.decode().strip()
    if not re.fullmatch(r"cp3\d+", tag):
        raise hc.ContainerError(f"{image}: python3 printed {tag!r}, expected e.g. cp311")
    return tag


def wheel_dirs(environ: dict[str, str]) -> list[Path]:
    """Where a CPU torch wheel may already lie: $HARNESS_WHEELS, pip's find-links
    (environment or pip config), then our download cache."""
    dirs = [environ.get("HARNESS_WHEELS", ""), *environ.get("PIP_FIND_LINKS", "").split()]
    cfg = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.find-links"],
        capture_output=True,
        text=True,
        check=False,
    )
    if cfg.returncode == 0:
        dirs += cfg.stdout.split()
    out = [Path(d.removeprefix("file://")) for d in dirs if d]
    return [d for d in [*out, cache_dir()] if d.is_dir()]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "decode-attn-harness" / "wheels"


def find_cpu_torch(dirs: Iterable[Path], pytag: str) -> Path | None:
    pattern = f"torch-{TORCH_VERSION}+cpu-{pytag}-{pytag}-*linux*x86_64.whl"
    for d in dirs:
        hits = sorted(d.glob(pattern))
        if hits:
            return hits[-1]
    return None


def cpu_torch_wheel(pytag: str) -> Path:
    """The CPU torch wheel for the smoke image: found on disk, else downloaded once."""
    found = find_cpu_torch(wheel_dirs(dict(os.environ)), pytag)
    if found:
        _say(f"CPU torch wheel: {found}")
        return found
    dest = cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    _say(f"downloading torch=={TORCH_VERSION}+cpu ({pytag}) from {TORCH_CPU_INDEX} to {dest}")
    cmd = [
        sys.executable, "-m", "pip", "download", f"torch=={TORCH_VERSION}+cpu", "--no-deps",
        "--only-binary=:all:", "--implementation", "cp", "--python-version", pytag[2:],
        "--platform", "manylinux_2_28_x86_64", "--index-url", TORCH_CPU_INDEX, "-d", str(dest),
    ]  # fmt: skip
    if subprocess.run(cmd).returncode != 0 or not (found := find_cpu_torch([dest], pytag)):
        raise hc.ContainerError(
            f"no torch {TORCH_VERSION}+cpu wheel for {pytag}: put one in $HARNESS_WHEELS "
            f"or make {TORCH_CPU_INDEX} reachable"
        )
    return found


def read_junit(path: Path) -> JunitSummary:
    """Count outcomes over every testsuite (junitparser 4/5)."""
    from junitparser import Error, Failure, JUnitXml, Skipped, TestSuite

    xml = JUnitXml.fromfile(str(path))
    suites = [xml] if isinstance(xml, TestSuite) else list(xml)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for case in suite:
            counts["tests"] += 1
            kinds = {type(r) for r in case.result}
            counts["failures"] += Failure in kinds
            counts["errors"] += Error in kinds
            counts["skipped"] += Skipped in kinds and not kinds & {Failure, Error}
    return JunitSummary(**counts)


def check_reports(reports: Path) -> JunitSummary:
    rows = sum(
        1 for f in (reports / "results").rglob("*.jsonl") for line in f.open() if line.strip()
    )
    junit = reports / "junit.xml"
    if not junit.is_file():
        raise hc.ContainerError(f"no {junit} after the run ({rows} result rows in results/)")
    summary = read_junit(junit)
    _say(
        f"{junit}: {summary.tests} tests, {summary.passed} passed, {summary.failures} failed, "
        f"{summary.errors} errors, {summary.skipped} skipped; {rows} result rows"
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="container_smoke", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--base-tag", default=os.environ.get("HARNESS_SMOKE_BASE", "localbase:bookworm")
    )
    ap.add_argument(
        "--archs",
        default=os.environ.get("HARNESS_SMOKE_ARCHS", "90a"),
        help="HARNESS_CUDA_ARCHS for the in-image kernel build (one arch keeps it short)",
    )
    ap.add_argument("--timeout", type=float, default=1200, help="seconds for the run inside")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the image without cache")
    ap.add_argument("session_args", nargs="*", help="extra arguments for gpu_matrix inside")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        client = hc.connect()
        ensure_base(client, args.base_tag)
        wheel = cpu_torch_wheel(python_tag(client, args.base_tag))
        t_base = time.perf_counter()
        spec = hc.BuildSpec(
            root=ROOT,
            build_args=(
                ("BASE_IMAGE", args.base_tag),
                ("HARNESS_CUDA_ARCHS", args.archs),
                ("TORCH_INDEX_URL", ""),
                ("TORCH_SPEC", f"torch=={TORCH_VERSION}+cpu"),
            ),
            extras=hc.extras_for(hc.default_ca_bundle(os.environ), [wheel]),
        )
        image = hc.ensure_image(client, spec, rebuild=args.rebuild)
        t_image = time.perf_counter()
        reports = ROOT / REPORTS
        shutil.rmtree(reports, ignore_errors=True)
        reports.mkdir(parents=True)
        root_caller = os.getuid() == 0
        if root_caller:  # run as the image's non-root user: it must be able to write here
            reports.chmod(0o1777)
        run = hc.RunSpec(
            image=image,
            reports_dir=reports,
            session="gpu_matrix",
            session_args=("--matrix", SMOKE_MATRIX, *args.session_args),
            gpus="none",
            env=hc.select_env(os.environ),
            user=None if root_caller else hc.caller_user(),
            timeout_s=args.timeout,
        )
        code = hc.run_container(client, run)
        t_run = time.perf_counter()
        _say(
            f"times: base+wheel {t_base - t0:.0f} s, image {t_image - t_base:.0f} s, "
            f"run {t_run - t_image:.0f} s, total {t_run - t0:.0f} s"
        )
        summary = check_reports(reports)
    except hc.ContainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return hc.EXIT_ERROR
    if code != 0 or not summary.ok:
        _say(f"FAILED: session exit code {code}; see {REPORTS}/summary.md")
        return 1
    _say(f"OK: the image {image} ran the smoke matrix on the CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
