"""Statistics behind every verdict: bootstrap intervals for a ratio of medians and the
faster / slower / same / inconclusive rule.

Ratios are B / A (head over base, candidate over reference): above 1 means B is slower.
Paired samples (taken adjacent in time, interleaved) are resampled as pairs so slow
drifts of the GPU cancel; unpaired samples (two separate runs) are resampled apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

VERDICTS = ("faster", "slower", "same", "inconclusive")
DEFAULT_THRESHOLD = 0.02  # in one process; across runs a calibrated profile sets it
MIN_SAMPLES_FOR_VERDICT = 30  # below this a bootstrap interval of a median is too optimistic
N_BOOT = 2000


@dataclass(frozen=True)
class RatioEstimate:
    """median(B) / median(A) with a bootstrap interval."""

    ratio: float
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int
    paired: bool
    confidence: float

    @property
    def halfwidth(self) -> float:
        return (self.ci_high - self.ci_low) / 2

    def to_dict(self) -> dict:
        return {
            "ratio": self.ratio,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n_a": self.n_a,
            "n_b": self.n_b,
            "paired": self.paired,
            "confidence": self.confidence,
        }


def _median(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The average of the two middle values (torch.median returns the lower one)."""
    s, _ = torch.sort(x, dim=dim)
    n = s.shape[dim]
    lo = s.narrow(dim, (n - 1) // 2, 1)
    hi = s.narrow(dim, n // 2, 1)
    return ((lo + hi) / 2).squeeze(dim)


def ratio_of_medians(
    a: Sequence[float],
    b: Sequence[float],
    *,
    paired: bool | None = None,
    confidence: float = 0.95,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> RatioEstimate:
    """Percentile-bootstrap interval of median(b) / median(a).

    `paired=None` pairs the samples when both sides have the same count.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least two samples on each side")
    ta = torch.tensor(a, dtype=torch.float64)
    tb = torch.tensor(b, dtype=torch.float64)
    if paired is None:
        paired = len(a) == len(b)
    if paired and len(a) != len(b):
        raise ValueError("paired samples need equal counts")
    gen = torch.Generator().manual_seed(seed)
    if paired:
        idx = torch.randint(len(a), (n_boot, len(a)), generator=gen)
        ra = _median(ta[idx])
        rb = _median(tb[idx])
    else:
        ra = _median(ta[torch.randint(len(a), (n_boot, len(a)), generator=gen)])
        rb = _median(tb[torch.randint(len(b), (n_boot, len(b)), generator=gen)])
    boots = torch.sort(rb / ra).values
    alpha = (1 - confidence) / 2
    lo = boots[max(0, math.floor(alpha * n_boot))].item()
    hi = boots[min(n_boot - 1, math.ceil((1 - alpha) * n_boot) - 1)].item()
    point = (_median(tb) / _median(ta)).item()
    return RatioEstimate(point, min(lo, point), max(hi, point), len(a), len(b), paired, confidence)


def verdict(
    est: RatioEstimate, threshold: float, min_samples: int = MIN_SAMPLES_FOR_VERDICT
) -> str:
    """`slower` / `faster` when the whole interval lies beyond +-threshold, `same` when it
    lies inside, `inconclusive` when it straddles a boundary or rests on too few samples
    (rerun that case)."""
    if min(est.n_a, est.n_b) < min_samples:
        return "inconclusive"
    if est.ci_low > 1 + threshold:
        return "slower"
    if est.ci_high < 1 - threshold:
        return "faster"
    if est.ci_low >= 1 - threshold and est.ci_high <= 1 + threshold:
        return "same"
    return "inconclusive"
