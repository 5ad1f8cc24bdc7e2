"""Paged-KV decode attention CUDA kernels (`baseline`, `grouped`) and their cost model.

    from kernels import paged_decode, plan

`plan` is the pure cost model (CPU); `device_plan` feeds it one CUDA device's SM count and
the occupancy of the kernels that device runs (what `paged_decode` uses when given no plan).

Importing needs neither a GPU, torch nor nvcc: the library is built and loaded at the
first launch (or by `python -m kernels.build`).
"""

from typing import Any

from .binding import cuda_available, device_plan, library_info, paged_decode
from .plan import Plan, plan


def __getattr__(name: str) -> Any:
    # Lazy, so that `python -m kernels.build` does not import kernels.build twice.
    if name == "BuildError":
        from .build import BuildError

        return BuildError
    raise AttributeError(name)


__all__ = [
    "BuildError",
    "Plan",
    "cuda_available",
    "device_plan",
    "library_info",
    "paged_decode",
    "plan",
]
