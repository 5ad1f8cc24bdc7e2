"""Recognising the faults a kernel PR causes, so each becomes a recorded outcome of the
one case that caused it: out of memory (a skip: the case does not fit), a poisoned CUDA
context (an error; the worker must be replaced), a hang (a timeout)."""

from __future__ import annotations

import re
from typing import Any

EXIT_TIMEOUT = 70  # worker ended by the case watchdog
EXIT_CUDA_FAULT = 71  # worker ended after a CUDA fault poisoned its context

_CPU_OOM = ("can't allocate memory", "not enough memory", "DefaultCPUAllocator")


def out_of_memory(exc: BaseException) -> str | None:
    """'N bytes requested ...' when `exc` is an allocation failure, else None."""
    import torch

    text = str(exc)
    is_oom = isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and any(s in text for s in _CPU_OOM)
    )
    if not is_oom:
        return None
    m = re.search(r"[Tt]ried to allocate ([0-9.]+ [KMGTP]?i?B)", text)
    if m:
        return f"tried to allocate {m.group(1)}"
    m = re.search(r"allocate (\d+) bytes", text)
    if m:
        return f"tried to allocate {int(m.group(1))} bytes"
    return text.splitlines()[0][:200] if text else type(exc).__name__


def cuda_context_broken(device: Any) -> bool:
    """A sticky CUDA error (illegal address, device assert) makes every later call fail."""
    import torch

    try:
        torch.cuda.synchronize(device)
        torch.empty(1, device=device).fill_(1.0).item()
    except Exception:
        return True
    return False


def free_device_memory(device: Any) -> None:
    import gc

    import torch

    gc.collect()
    if getattr(device, "type", "") == "cuda":
        torch.cuda.empty_cache()
