"""Our CUDA kernels (`kernels/`) as the backends `cuda_baseline` and `cuda_grouped`."""

from __future__ import annotations

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


def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _plan_for(inputs: CaseInputs):
    from kernels import plan

    c = inputs.case
    return plan(
        c.batch,
        c.q_len,
        c.num_qo_heads,
        c.num_kv_heads,
        c.head_dim,
        max(inputs.kv_lens_host),
        _sm_count(inputs.device),
        kv_dtype=c.kv_dtype,
    )


def _describe(inputs: CaseInputs) -> str:
    return str(_plan_for(inputs))


def _make_prepare(kernel: str):
    def prepare(inputs: CaseInputs) -> Launcher:
        from kernels import paged_decode

        c = inputs.case
        chosen = _plan_for(inputs) if kernel == "grouped" else None

        def launch(out: torch.Tensor) -> None:
            paged_decode(
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


CUDA_BASELINE = register(
    Backend(
        name="cuda_baseline", role="baseline", supports=_supports, prepare=_make_prepare("baseline")
    )
)
CUDA_GROUPED = register(
    Backend(
        name="cuda_grouped",
        role="grouped",
        supports=_supports,
        prepare=_make_prepare("grouped"),
        describe=_describe,
    )
)
