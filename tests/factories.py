"""Shared builders for the tests: small cases and the seed's case axes."""

from __future__ import annotations

from typing import Any

from harness.matrix import AXES, Case, case_id

POINT_KEYS = ("model", "kv_dtype", "q_dtype", "batch", "q_len", "kv_len", "page_size", "ragged")
SHAPE_KEYS = ("num_qo_heads", "num_kv_heads", "head_dim")


def make_case(defaults: dict[str, Any], **kw: Any) -> Case:
    """A Case from `defaults` (every point and shape key, plus seed) overridden by `kw`;
    the id names every axis, so two different cases never share one."""
    values = {**defaults, **kw}
    unknown = set(values) - set(POINT_KEYS) - set(SHAPE_KEYS) - {"seed"}
    assert not unknown, unknown
    point = {k: values[k] for k in POINT_KEYS}
    shape = {k: values[k] for k in SHAPE_KEYS}
    return Case(**point, **shape, seed=values["seed"], id=case_id(point, AXES))


def seed_case_axes(batch: int, q_len: int) -> dict[str, Any]:
    """Case axes of the seed table's Qwen3-480B fp8 rows, as a result row stores them."""
    return {
        "model": "Qwen3-480B",
        "kv_dtype": "fp8_e4m3",
        "batch": batch,
        "q_len": q_len,
        "kv_len": 16384,
        "page_size": 16,
        "q_dtype": "bf16",
        "ragged": False,
        "num_qo_heads": 96,
        "num_kv_heads": 8,
        "head_dim": 128,
        "seed": 0,
    }
