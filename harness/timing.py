"""Timing one launcher: warm-up, cold L2, device events, a stopping rule, and the median
with a distribution-free confidence interval.

The interface is `time_fn(fn, device, config) -> TimingStats`; the clock, the flush and
the stopping rule are separate pieces so paired A/B timing can reuse them.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

CONFIDENCE = 0.95


@dataclass(frozen=True)
class TimingConfig:
    """How hard to try for a number. Defaults suit a decode kernel of 10 µs .. 5 ms."""

    warmup_ms: float = 25.0
    budget_ms: float = 400.0
    min_reps: int = 10
    max_reps: int = 2000
    target_rel_ci: float = 0.0025  # stop once the CI half-width is within 0.25 % of the median
    flush_l2: bool = True
    check_every: int = 10


@dataclass(frozen=True)
class TimingStats:
    """A timed result: never a bare number, always its spread and how it was taken."""

    median_ms: float
    ci_low_ms: float
    ci_high_ms: float
    n: int
    method: str
    l2_flush: bool
    stop_reason: str  # "converged" | "budget" | "max_reps"
    min_ms: float
    mean_ms: float
    samples_ms: tuple[float, ...] = field(repr=False, default=())

    @property
    def rel_ci_halfwidth(self) -> float:
        return (self.ci_high_ms - self.ci_low_ms) / 2 / self.median_ms if self.median_ms else 0.0

    def to_dict(self, keep_samples: bool = True) -> dict:
        d = {
            k: getattr(self, k)
            for k in (
                "median_ms",
                "ci_low_ms",
                "ci_high_ms",
                "n",
                "method",
                "l2_flush",
                "stop_reason",
                "min_ms",
                "mean_ms",
            )
        }
        d["rel_ci_halfwidth"] = self.rel_ci_halfwidth
        if keep_samples:
            d["samples_ms"] = list(self.samples_ms)
        return d


def median_ci(samples: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Order-statistic CI of the median (binomial, normal approximation): no normality
    assumed, which matters because kernel times are skewed by rare slow launches."""
    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        raise ValueError("no samples")
    if n < 3:
        return xs[0], xs[-1]
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2 + half))
    return xs[lo], xs[hi]


def summarize(
    samples: Sequence[float], method: str, l2_flush: bool, stop_reason: str
) -> TimingStats:
    lo, hi = median_ci(samples)
    return TimingStats(
        median_ms=statistics.median(samples),
        ci_low_ms=lo,
        ci_high_ms=hi,
        n=len(samples),
        method=method,
        l2_flush=l2_flush,
        stop_reason=stop_reason,
        min_ms=min(samples),
        mean_ms=statistics.fmean(samples),
        samples_ms=tuple(samples),
    )


class L2Flusher:
    """Writes a buffer twice the L2 size so each launch starts with a cold cache."""

    def __init__(self, device: torch.device) -> None:
        props = torch.cuda.get_device_properties(device)
        l2 = int(getattr(props, "L2_cache_size", 0) or 64 * 2**20)
        self.buf = torch.empty(2 * l2 // 4, dtype=torch.int32, device=device)

    def __call__(self) -> None:
        self.buf.zero_()


def _stop_reason(samples: list[float], elapsed_ms: float, cfg: TimingConfig) -> str | None:
    n = len(samples)
    if n >= cfg.max_reps:
        return "max_reps"
    if n >= cfg.min_reps:
        lo, hi = median_ci(samples)
        med = statistics.median(samples)
        if med > 0 and (hi - lo) / 2 / med <= cfg.target_rel_ci:
            return "converged"
    if elapsed_ms >= cfg.budget_ms and n >= cfg.min_reps:
        return "budget"
    return None


def _time_cuda(fn: Callable[[], None], device: torch.device, cfg: TimingConfig) -> TimingStats:
    flush = L2Flusher(device) if cfg.flush_l2 else (lambda: None)
    stream = torch.cuda.current_stream(device)
    start_wall = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    while (time.perf_counter() - start_wall) * 1e3 < cfg.warmup_ms:
        flush()
        fn()
        torch.cuda.synchronize(device)
    samples: list[float] = []
    t0 = time.perf_counter()
    while True:
        pairs = []
        for _ in range(cfg.check_every):
            flush()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            fn()
            end.record(stream)
            pairs.append((start, end))
        torch.cuda.synchronize(device)
        samples += [s.elapsed_time(e) for s, e in pairs]
        reason = _stop_reason(samples, (time.perf_counter() - t0) * 1e3, cfg)
        if reason:
            return summarize(samples, "cuda_events", cfg.flush_l2, reason)


def _time_cpu(fn: Callable[[], None], cfg: TimingConfig) -> TimingStats:
    start_wall = time.perf_counter()
    fn()
    while (time.perf_counter() - start_wall) * 1e3 < cfg.warmup_ms:
        fn()
    samples: list[float] = []
    t0 = time.perf_counter()
    while True:
        for _ in range(cfg.check_every):
            s = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - s) * 1e3)
        reason = _stop_reason(samples, (time.perf_counter() - t0) * 1e3, cfg)
        if reason:
            return summarize(samples, "perf_counter", False, reason)


def time_fn(
    fn: Callable[[], None], device: torch.device, cfg: TimingConfig | None = None
) -> TimingStats:
    """Time `fn` on `device` until the median is tight enough or the budget is spent."""
    cfg = cfg or TimingConfig()
    if device.type == "cuda":
        return _time_cuda(fn, device, cfg)
    return _time_cpu(fn, cfg)
