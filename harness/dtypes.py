"""Names used in matrices -> torch dtypes and sizes (one place, so ids and bytes agree)."""

from __future__ import annotations

import torch

TORCH_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8_e4m3": torch.float8_e4m3fn,
}
FP8_MAX = 448.0  # largest finite e4m3fn value


def torch_dtype(name: str) -> torch.dtype:
    return TORCH_DTYPES[name]


def itemsize(name: str) -> int:
    return TORCH_DTYPES[name].itemsize
