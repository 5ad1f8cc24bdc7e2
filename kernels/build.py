"""Build the CUDA kernels into one shared library with nvcc, cached by content.

Why a hand-rolled build: the library has a plain C ABI and no torch headers, so a few nvcc
calls are all it takes; caching by a hash of (sources, nvcc version, archs, flags) makes a
rebuild happen exactly when something that changes the binary changes.

    python -m kernels.build [--archs 80,90a,100a] [--force] [--define NAME=VAL ...]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CSRC = Path(__file__).resolve().parent / "csrc"
DEFAULT_CACHE = Path(__file__).resolve().parent / "_build"
# Ampere, Ada, Hopper (sm_90a: its own target), Blackwell (sm_100a).
DEFAULT_ARCHS: tuple[str, ...] = ("80", "89", "90a", "100a")
BASE_FLAGS: tuple[str, ...] = (
    "-O3",
    "-std=c++17",
    "-Xcompiler=-fPIC",
    "-Xcompiler=-fvisibility=hidden",
    "--expt-relaxed-constexpr",
    "-lineinfo",
)
LIB_NAME = "libpaged_decode.so"


class BuildError(RuntimeError):
    """nvcc failed or is missing; the message carries nvcc's own error text."""


@dataclass(frozen=True)
class BuildResult:
    """Where the library is and what went into it."""

    path: Path
    key: str
    archs: tuple[str, ...]
    nvcc_version: str
    defines: tuple[str, ...]
    cached: bool


def find_nvcc() -> Path:
    """Locate nvcc on PATH, then $CUDA_HOME/bin, then /usr/local/cuda/bin."""
    found = shutil.which("nvcc")
    if found:
        return Path(found)
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]) / "bin" / "nvcc")
    candidates.append(Path("/usr/local/cuda/bin/nvcc"))
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    raise BuildError(
        "nvcc not found: looked on PATH, in $CUDA_HOME/bin and /usr/local/cuda/bin. "
        "Install the CUDA toolkit or set CUDA_HOME."
    )


def nvcc_version(nvcc: Path) -> str:
    """The `release X.Y, VX.Y.Z` line of `nvcc --version` (part of the cache key)."""
    out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if "release" in line:
            return line.strip()
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "unknown"


def default_archs() -> tuple[str, ...]:
    """Archs from $HARNESS_CUDA_ARCHS (comma/space separated, e.g. "90a,80") or the default."""
    env = os.environ.get("HARNESS_CUDA_ARCHS", "").replace(",", " ").split()
    return tuple(a.removeprefix("sm_") for a in env) or DEFAULT_ARCHS


def gencode_flags(archs: tuple[str, ...]) -> list[str]:
    """One -gencode per arch: SASS only (the library targets known GPUs)."""
    flags = []
    for arch in archs:
        num = arch.rstrip("af")
        if not num.isdigit():
            raise BuildError(f"bad CUDA arch {arch!r}: expected e.g. 80, 90a, 100a")
        flags.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
    return flags


def sources(csrc: Path = CSRC) -> tuple[list[Path], list[Path]]:
    """(compile units, headers) in a stable order."""
    units = sorted(csrc.glob("*.cu"))
    headers = sorted([*csrc.glob("*.cuh"), *csrc.glob("*.h")])
    return units, headers


def build_key(csrc: Path, nvcc_ver: str, archs: tuple[str, ...], defines: tuple[str, ...]) -> str:
    """Hash of everything that changes the binary."""
    h = hashlib.sha256()
    units, headers = sources(csrc)
    for f in [*units, *headers]:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    for part in (nvcc_ver, ",".join(archs), " ".join(BASE_FLAGS), " ".join(defines)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        text = (proc.stderr + proc.stdout).strip()
        raise BuildError(f"nvcc failed ({proc.returncode}): {' '.join(cmd)}\n{text}")


def build(
    archs: tuple[str, ...] | None = None,
    defines: tuple[str, ...] = (),
    force: bool = False,
    cache_dir: Path | None = None,
    csrc: Path = CSRC,
    jobs: int | None = None,
) -> BuildResult:
    """Compile every csrc/*.cu (in parallel) and link them into one cached shared library."""
    nvcc = find_nvcc()
    archs = tuple(archs) if archs else default_archs()
    defines = tuple(sorted(defines))
    ver = nvcc_version(nvcc)
    key = build_key(csrc, ver, archs, defines)
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    out_dir = cache / key
    lib = out_dir / LIB_NAME
    result = BuildResult(lib, key, archs, ver, defines, cached=True)
    if lib.is_file() and not force:
        return result
    units, _ = sources(csrc)
    if not units:
        raise BuildError(f"no .cu sources in {csrc}")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=cache))
    try:
        common = [*BASE_FLAGS, *gencode_flags(archs), *(f"-D{d}" for d in defines)]
        objs = [tmp / (u.stem + ".o") for u in units]
        # Units run in parallel; each nvcc also splits its gencode targets (--threads) so
        # that jobs x threads ~ cores (2 on CI: two units at a time, one target each).
        ncpu = os.cpu_count() or 2
        jobs = jobs or max(1, min(len(units), ncpu))
        threads = max(1, min(len(archs), ncpu // jobs))
        cmds = [
            [str(nvcc), "-c", *common, f"--threads={threads}", "-o", str(o), str(u)]
            for u, o in zip(units, objs, strict=True)
        ]
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for fut in [pool.submit(_run, c) for c in cmds]:
                fut.result()
        _run(
            [
                str(nvcc),
                "-shared",
                *gencode_flags(archs),
                "-o",
                str(tmp / LIB_NAME),
                *map(str, objs),
            ]
        )
        if out_dir.exists() and force:
            shutil.rmtree(out_dir)
        try:
            tmp.rename(out_dir)
        except OSError:  # another process won the race: its build is equally good
            if not lib.is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return BuildResult(lib, key, archs, ver, defines, cached=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m kernels.build", description=__doc__.splitlines()[0]
    )
    ap.add_argument(
        "--archs",
        help="comma-separated, e.g. 80,90a,100a (default: $HARNESS_CUDA_ARCHS or "
        f"{','.join(DEFAULT_ARCHS)})",
    )
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    ap.add_argument(
        "--define",
        action="append",
        default=[],
        metavar="NAME=VAL",
        help="compile-time define (repeatable)",
    )
    ap.add_argument("--cache-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    archs = (
        tuple(a.strip().removeprefix("sm_") for a in args.archs.split(",")) if args.archs else None
    )
    try:
        res = build(
            archs=archs, defines=tuple(args.define), force=args.force, cache_dir=args.cache_dir
        )
    except BuildError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    print(f"library: {res.path}")
    print(
        f"key: {res.key} ({'cached' if res.cached else 'built'}; archs {','.join(res.archs)}; {res.nvcc_version})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
