"""Shared builders for the tests: small cases and the seed's case axes."""

from __future__ import annotations

from typing import Any

from harness.matrix import AXES, Case, case_id

POINT_KEYS = ("model", "kv_dtype", "q_dtype", "batch", "q_len", "kv_len", "page_size", "ragged")
SHAPE_KEYS = ("num_qo_heads", "num_kv_heads", "head_dim")


def make_case(defaults: dict[str, Any], **kw: Any) -> Case:
    """A Case from `defaults` (every point and shape key, plus seed) overridden by `kw`;
    the id names every axis, so two different cases never share one."""
    values = {"score_scale": 1.0, **defaults, **kw}
    unknown = set(values) - set(POINT_KEYS) - set(SHAPE_KEYS) - {"seed", "score_scale"}
    assert not unknown, unknown
    point = {k: values[k] for k in (*POINT_KEYS, "score_scale")}
    shape = {k: values[k] for k in SHAPE_KEYS}
    varying = [k for k in AXES if k != "score_scale" or point[k] != 1.0]
    return Case(**point, **shape, seed=values["seed"], id=case_id(point, varying))


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


def seed_row(
    batch: int,
    q_len: int,
    backend: str,
    status: str = "passed",
    *,
    device: dict[str, Any],
    commit: str,
    median: float | None = None,
    tbps: float | None = None,
    message: str = "",
    plan: str = "",
    correctness: dict[str, Any] | None = None,
    ci_rel: float = 0.01,
    n: int = 200,
    duration: float = 0.25,
    timestamp: float = 1.7e9,
    env_extra: dict[str, Any] | None = None,
) -> Any:
    """A result row of the seed table's Qwen3-480B fp8 case on `device`, as a worker
    writes it; `median` (ms) adds timing with a +-`ci_rel` interval."""
    from harness.results import ResultRow

    role = backend.split("_", 1)[1] if backend.endswith(("baseline", "grouped")) else "peer"
    timing: dict[str, Any] = {}
    if median is not None:
        timing = {
            "median_ms": median,
            "ci_low_ms": median * (1 - ci_rel),
            "ci_high_ms": median * (1 + ci_rel),
            "n": n,
            "method": "cuda_events",
            "l2_flush": True,
            "stop_reason": "converged",
        }
    env = {
        "device": device,
        "git_commit": commit,
        "hostname": "h1",
        "copy_tbps": 3.0 if device["kind"] == "cuda" else 0.02,
        **(env_extra or {}),
    }
    return ResultRow(
        run_id="run1",
        matrix="spec_decode",
        case_id=f"Qwen3-480B-fp8_e4m3-batchSize{batch}-seqLenQ{q_len}",
        case=seed_case_axes(batch, q_len),
        backend=backend,
        role=role,
        status=status,
        message=message,
        device=device,
        correctness=correctness or {},
        timing=timing,
        tbps=tbps,
        plan=plan,
        env=env,
        worker="gw0",
        timestamp=timestamp,
        duration_s=duration,
    )
