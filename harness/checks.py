"""The correctness rule: FlashInfer-style tolerances, a small allowance of mismatching
elements, and NaN (an element the kernel never wrote) always counted as a mismatch."""

from __future__ import annotations

from typing import Any

import torch

from harness.matrix import Case

MISMATCH_FRACTION = 5e-5


def tolerances(case: Case) -> tuple[float, float]:
    """(rtol, atol): 1e-2 for 16-bit KV, doubled for q_len > 1, doubled again for fp8."""
    tol = 1e-2
    if case.q_len > 1:
        tol *= 2
    if case.kv_dtype == "fp8_e4m3":
        tol *= 2
    return tol, tol


def check_output(out: torch.Tensor, ref: torch.Tensor, case: Case) -> dict[str, Any]:
    """Compare `out` with the reference; returns the figures a report shows."""
    rtol, atol = tolerances(case)
    o = out.float()
    r = ref.float()
    diff = (o - r).abs()
    ok = diff <= atol + rtol * r.abs()
    numel = o.numel()
    finite = diff[torch.isfinite(diff)]
    return {
        "max_abs_err": float(finite.max()) if finite.numel() else None,
        "mismatches": int(numel - int(ok.sum())),
        "allowed_mismatches": int(MISMATCH_FRACTION * numel),
        "nan_count": int(torch.isnan(o).sum()),
        "numel": numel,
        "rtol": rtol,
        "atol": atol,
    }


def passed(corr: dict[str, Any]) -> bool:
    return corr["mismatches"] <= corr["allowed_mismatches"]


def failure_text(corr: dict[str, Any]) -> str:
    return (
        f"{corr['mismatches']} of {corr['numel']} elements outside rtol={corr['rtol']:g} "
        f"atol={corr['atol']:g} (allowed {corr['allowed_mismatches']}); max abs err "
        f"{corr['max_abs_err'] if corr['max_abs_err'] is None else format(corr['max_abs_err'], '.4g')}; {corr['nan_count']} NaN (unwritten or invalid)"
    )
