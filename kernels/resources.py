"""Per-kernel resource usage from ptxas (registers, spills, stack) for one architecture.

Why: a kernel change that makes ptxas spill, or pushes a kernel past the register count
its block size allows (the warp-specialized kernel must fit 168 at launch), is a speed
regression the timing only shows later; this shows it at compile time, on a CPU machine.

    python -m kernels.resources [--arch 90a] [--filter grouped_w] [--units grouped_d128.cu]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kernels.build import BASE_FLAGS, CSRC, BuildError, find_nvcc, sources

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


@dataclass(frozen=True)
class KernelResources:
    """What ptxas reported for one kernel entry on one architecture."""

    name: str  # mangled, as ptxas prints it
    arch: str
    registers: int
    stack_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int

    @property
    def spills(self) -> bool:
        return self.spill_store_bytes > 0 or self.spill_load_bytes > 0


def parse_ptxas(text: str) -> list[KernelResources]:
    """Kernel entries from `ptxas -v` output of one single-architecture compile (several
    architectures in one nvcc call may interleave their lines)."""
    out: list[KernelResources] = []
    name = arch = None
    stack = stores = loads = 0
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            name, arch = m.group(1), m.group(2)
            stack = stores = loads = 0
        elif (m := _SPILL.search(line)) and name:
            stack, stores, loads = (int(g) for g in m.groups())
        elif (m := _REGS.search(line)) and name and arch:
            out.append(KernelResources(name, arch, int(m.group(1)), stack, stores, loads))
            name = arch = None
    return out


def _compile(unit: Path, arch: str, defines: tuple[str, ...] = ()) -> list[KernelResources]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(find_nvcc()), *BASE_FLAGS, "-cubin", f"-arch=sm_{arch}", "-Xptxas=-v"]
        cmd += [f"-D{d}" for d in defines]
        cmd += ["-o", str(Path(tmp) / "k.cubin"), str(unit)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"nvcc failed ({proc.returncode}) on {unit.name}\n{proc.stderr.strip()}")
    return parse_ptxas(proc.stderr + proc.stdout)


def resource_usage(
    arch: str = "90a", units: list[Path] | None = None, defines: tuple[str, ...] = ()
) -> list[KernelResources]:
    """ptxas's report for every kernel of `units` (default: every csrc/*.cu), one arch,
    built with the preprocessor `defines` (NAME=VALUE: the kernels' compile-time variants)."""
    todo = units if units is not None else sources(CSRC)[0]
    with ThreadPoolExecutor() as pool:
        return [k for ks in pool.map(lambda u: _compile(u, arch, defines), todo) for k in ks]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m kernels.resources", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--arch", default="90a", help="one architecture, e.g. 90a (default)")
    ap.add_argument("--filter", default="", help="only kernels whose mangled name contains this")
    ap.add_argument("--units", default="", help="comma-separated csrc/*.cu names (default: all)")
    ap.add_argument(
        "--define",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a compile-time variant define (repeatable), as `python -m kernels.build --define`",
    )
    args = ap.parse_args(argv)
    units = [CSRC / u.strip() for u in args.units.split(",") if u.strip()] or None
    missing = [u.name for u in units or [] if not u.is_file()]
    if missing:
        print(f"error: no such kernel source: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        kernels = resource_usage(args.arch.removeprefix("sm_"), units, tuple(args.define))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{'registers':>9} {'stack':>6} {'spill st/ld':>12}  kernel ({args.arch})")
    for k in sorted(kernels, key=lambda k: k.name):
        if args.filter in k.name:
            spill = f"{k.spill_store_bytes}/{k.spill_load_bytes}"
            print(f"{k.registers:>9} {k.stack_bytes:>6} {spill:>12}  {k.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
