"""A test-only backend that plants real faults in chosen cases, so the harness's
recovery paths are exercised for real, on the GPU and on the CPU:

- `crash`: GPU: an out-of-bounds write in a tiny CUDA kernel (illegal address, the
  context is poisoned); CPU: the worker process dies with SIGSEGV.
- `hang`: GPU: a kernel that spins for hours (torch.cuda._sleep); CPU: a sleep.
- `oom`: an allocation far larger than the device (GPU) or the host (CPU) has.

Other cases are computed correctly (as `torch_grouped`). Enabled only by
`--inject-faults crash@CASE,hang@CASE,oom@CASE` (CASE: a substring of the case id).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from harness.backends.base import Backend, Launcher, register
from harness.backends.torch_ref import TORCH_GROUPED
from harness.inputs import CaseInputs
from harness.matrix import Case

KINDS = ("crash", "hang", "oom")
SOURCE = Path(__file__).with_name("fault_kernels.cu")


def parse_spec(spec: str) -> list[tuple[str, str]]:
    """'crash@A,hang@B' -> [('crash', 'A'), ('hang', 'B')]; ValueError on a bad entry."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, sep, case = part.partition("@")
        if not sep or kind not in KINDS or not case:
            raise ValueError(f"--inject-faults entry {part!r}: expected KIND@CASE, KIND in {KINDS}")
        out.append((kind, case))
    return out


@functools.cache
def _fault_library() -> ctypes.CDLL:
    """Compile the fault kernel with nvcc on first use (GPU machines have it)."""
    out = Path(tempfile.mkdtemp(prefix="harness-faults-")) / "libharness_faults.so"
    cmd = ["nvcc", "-shared", "-Xcompiler", "-fPIC", "-o", str(out), str(SOURCE)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the fault kernel failed: {proc.stderr.strip()}")
    lib = ctypes.CDLL(str(out))
    lib.harness_fault_oob.argtypes = [ctypes.c_void_p]
    lib.harness_fault_error_string.restype = ctypes.c_char_p
    return lib


def _crash(device: torch.device) -> None:
    if device.type == "cuda":
        lib = _fault_library()
        code = lib.harness_fault_oob(ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
        msg = lib.harness_fault_error_string(code).decode()
        raise RuntimeError(f"CUDA error {code}: {msg}")
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda._sleep(1 << 50)  # spins on the GPU far longer than any case timeout
        torch.cuda.synchronize(device)
    while True:
        time.sleep(3600)


def _oom(device: torch.device) -> None:
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.empty(4 * total, dtype=torch.uint8, device=device)
    torch.empty(1 << 52, dtype=torch.uint8)  # 4 PiB: no host has it


ACTIONS = {"crash": _crash, "hang": _hang, "oom": _oom}


def make_backend(plan: list[tuple[str, str]]) -> Backend:
    def fault_for(case: Case) -> str | None:
        for kind, pattern in plan:
            if pattern in case.id:
                return kind
        return None

    def prepare(inputs: CaseInputs) -> Launcher:
        kind = fault_for(inputs.case)
        if kind is None:
            return TORCH_GROUPED.prepare(inputs)

        def launch(out: torch.Tensor) -> None:
            ACTIONS[kind](inputs.device)

        return launch

    return Backend(
        name="fault_injector",
        role="peer",
        supports=lambda case, device: None,
        prepare=prepare,
    )


def enable(spec: str) -> Backend:
    return register(make_backend(parse_spec(spec)))
