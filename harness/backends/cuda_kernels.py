"""Our CUDA kernels (`kernels/`) as the backends `cuda_baseline` and `cuda_grouped`.

`register_revision(path, "@base")` adds the same two backends for a `kernels/` package
checked out from another git revision, so a PR and its target branch can be timed
interleaved in one process (`cuda_grouped@base` vs `cuda_grouped`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from harness.backends.base import Backend, Launcher, register
from harness.inputs import CaseInputs
from harness.matrix import Case

SUPPORTED_HEAD_DIMS = (64, 128, 256)
SUPPORTED_PAGE_SIZES = (16, 32, 64)
MAX_Q_LEN = 16
MAX_GROUP = 16


def _supports(case: Case, device: torch.device) -> str | None:
    if device.type != "cuda":
        return "no CUDA device"
    if case.head_dim not in SUPPORTED_HEAD_DIMS:
        return f"head_dim {case.head_dim} not in {SUPPORTED_HEAD_DIMS}"
    if case.page_size not in SUPPORTED_PAGE_SIZES:
        return f"page_size {case.page_size} not in {SUPPORTED_PAGE_SIZES}"
    if case.q_len > MAX_Q_LEN:
        return f"q_len {case.q_len} > {MAX_Q_LEN}"
    if case.group > MAX_GROUP:
        return f"GQA group {case.group} > {MAX_GROUP}"
    return None


@functools.cache
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _backends(load: Callable[[], ModuleType], suffix: str = "") -> list[Backend]:
    """The two kernels of one `kernels` package as backends."""

    def plan_for(inputs: CaseInputs):
        c = inputs.case
        mod = load()
        shape = (c.batch, c.q_len, c.num_qo_heads, c.num_kv_heads, c.head_dim)
        shape += (max(inputs.kv_lens_host),)
        if hasattr(mod, "device_plan"):  # the device's own occupancies (older packages: none)
            return mod.device_plan(
                *shape, kv_dtype=c.kv_dtype, q_dtype=str(inputs.q.dtype), device=inputs.device.index
            )
        return mod.plan(*shape, _sm_count(inputs.device), kv_dtype=c.kv_dtype)

    def make_prepare(kernel: str) -> Callable[[CaseInputs], Launcher]:
        def prepare(inputs: CaseInputs) -> Launcher:
            mod = load()
            c = inputs.case
            chosen = plan_for(inputs) if kernel == "grouped" else None

            def launch(out: torch.Tensor) -> None:
                mod.paged_decode(
                    inputs.q,
                    inputs.kv_cache,
                    inputs.page_table,
                    inputs.kv_lens,
                    q_len=c.q_len,
                    kernel=kernel,
                    sm_scale=inputs.sm_scale,
                    k_scale=inputs.k_scale,
                    v_scale=inputs.v_scale,
                    out=out,
                    plan=chosen,
                )

            return launch

        return prepare

    return [
        Backend(
            name=f"cuda_baseline{suffix}",
            role="baseline",
            supports=_supports,
            prepare=make_prepare("baseline"),
        ),
        Backend(
            name=f"cuda_grouped{suffix}",
            role="grouped",
            supports=_supports,
            prepare=make_prepare("grouped"),
            describe=lambda inputs: str(plan_for(inputs)),
        ),
    ]


def load_package(path: Path, name: str) -> ModuleType:
    """Import the `kernels` package at `path` under another module name, so two
    revisions live side by side in one process (their modules import relatively)."""
    init = Path(path) / "__init__.py"
    if not init.exists():
        raise FileNotFoundError(f"{path}: not a kernels package (no __init__.py)")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(path)]
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def register_revision(path: Path, suffix: str) -> list[Backend]:
    name = "kernels_rev_" + "".join(ch if ch.isalnum() else "_" for ch in suffix)
    loader = functools.cache(lambda: load_package(path, name))
    return [register(b) for b in _backends(loader, suffix)]


for _b in _backends(lambda: importlib.import_module("kernels")):
    register(_b)
