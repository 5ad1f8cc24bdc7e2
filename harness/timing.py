"""Timing: warm-up until settled, cold L2 (or warm), CUDA events or CUDA-graph replays,
NVML clock/throttle sampling, a stopping rule on the confidence interval, and paired
A/B timing in randomized interleaved order.

`time_fn` times one launcher; `time_ab` times two interleaved and returns the ratio of
medians with a bootstrap interval. Both report why they stopped: "converged" (the
interval reached the target width), "budget", "max_reps", or "throttled" (too few
samples taken at steady clocks to report a number).
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from harness.stats import MIN_SAMPLES_FOR_VERDICT, RatioEstimate, ratio_of_medians

CONFIDENCE = 0.95
# NVML clock-event reasons that exclude a batch: the clocks were pulled down by heat or
# by a hardware slowdown (HW slowdown 0x8, SW thermal 0x20, HW thermal 0x40, power brake
# 0x80). The SW power cap (0x4) is recorded but does not exclude: on an H100 the most
# memory-bound spec_decode A/A case (Qwen3-480B fp8 q2 B64) had a reason set in every
# batch at steady 1980 MHz clocks and up to 522 W (the bits were not yet recorded; the
# power cap fits), and excluding them made that case untimeable.
THROTTLE_MASK = 0x8 | 0x20 | 0x40 | 0x80
POWER_CAP = 0x4
# NVML's violation counters in a snapshot (harness.gpu.nvml_snapshot) -> the ClockSummary
# field that carries the time they moved over the timed batches.
LIMIT_COUNTERS = {
    "power_violation_ns": "power_limited_ms",
    "thermal_violation_ns": "thermal_limited_ms",
}


@dataclass(frozen=True)
class TimingConfig:
    """How hard to try for a number. Defaults suit a decode kernel of 10 µs .. 5 ms."""

    warmup_ms: float = 25.0
    budget_ms: float = 400.0
    min_reps: int = 10
    max_reps: int = 2000
    target_rel_ci: float = 0.0025  # stop once the CI half-width is within 0.25 %
    flush_l2: bool = True  # cold L2 between launches (default); False = warm L2
    # A GPU spin this long before each timed launch (CUDA): the host enqueues the launch
    # while the GPU spins, so host latency (Python, a GIL stall) never lands between the
    # start event and the kernel. Without it the first launch of every batch, enqueued onto
    # an idle GPU, measured 2-3x the kernel (H100, fourteenth session, kernels/NOTES.md).
    host_lead_us: float = 200.0
    use_graphs: bool = False  # time CUDA-graph replays of `graph_launches` launches
    graph_launches: int = 10
    check_every: int = 10
    settle_rel: float = 0.02  # warm-up ends when successive medians agree within 2 %
    sample_clocks: bool = True
    seed: int = 0


@dataclass(frozen=True)
class ClockSummary:
    """What NVML saw while timing: the numbers a reader needs to trust a median."""

    sm_clock_mhz_min: int | None = None
    sm_clock_mhz_max: int | None = None
    mem_clock_mhz: int | None = None
    temperature_c_max: int | None = None
    power_w_max: float | None = None
    throttled_batches: int = 0
    batches: int = 0
    excluded_samples: int = 0
    power_capped_batches: int = 0
    reasons_seen: int = 0  # OR of every NVML clock-event reason bitmask sampled
    # Time the power / thermal policy held the clocks down during the timed batches (NVML's
    # violation counters; None where NVML does not keep them).
    power_limited_ms: float | None = None
    thermal_limited_ms: float | None = None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class TimingStats:
    """A timed result: never a bare number, always its spread and how it was taken."""

    median_ms: float
    ci_low_ms: float
    ci_high_ms: float
    n: int
    method: str
    l2_flush: bool
    stop_reason: str
    min_ms: float
    mean_ms: float
    clocks: ClockSummary = field(default_factory=ClockSummary)
    samples_ms: tuple[float, ...] = field(repr=False, default=())

    @property
    def rel_ci_halfwidth(self) -> float:
        return (self.ci_high_ms - self.ci_low_ms) / 2 / self.median_ms if self.median_ms else 0.0

    @property
    def usable(self) -> bool:
        return self.stop_reason != "throttled"

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
        d = {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}
        d["clocks"] = self.clocks.to_dict()
        if keep_samples:
            d["samples_ms"] = list(self.samples_ms)
        return d


@dataclass(frozen=True)
class PairedTiming:
    """Two launchers timed interleaved on one GPU: each side's stats and B/A."""

    a: TimingStats
    b: TimingStats
    ratio: RatioEstimate
    stop_reason: str

    def to_dict(self) -> dict:
        return {
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "ratio": self.ratio.to_dict(),
            "stop_reason": self.stop_reason,
        }


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
    samples: Sequence[float],
    method: str,
    l2_flush: bool,
    stop_reason: str,
    clocks: ClockSummary | None = None,
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
        clocks=clocks or ClockSummary(),
        samples_ms=tuple(samples),
    )


class ClockWatch:
    """Samples NVML around each batch and remembers which batches ran throttled."""

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.snaps: list[dict] = []
        self.throttled_batches = 0
        self.batches = 0
        self.excluded = 0
        self.power_capped = 0
        self.reasons = 0
        self.limited_ns: dict[str, int] = {}  # violation-counter key -> ns over the batches
        self._read = None
        if enabled and device.type == "cuda":
            from harness.gpu import nvml_snapshot

            if nvml_snapshot(device) is not None:
                self._read = lambda: nvml_snapshot(device)

    def snapshot(self) -> dict | None:
        if self._read is None:
            return None
        snap = self._read()
        if snap:
            self.snaps.append(snap)
        return snap

    def batch_clean(self, before: dict | None, after: dict | None, n_samples: int) -> bool:
        self.batches += 1
        reasons = 0
        for s in (before, after):
            if s:
                reasons |= int(s.get("throttle_reasons", 0))
        self.reasons |= reasons
        moved = {}
        for key in LIMIT_COUNTERS:
            if before and after and key in before and key in after:
                moved[key] = max(0, int(after[key]) - int(before[key]))
                self.limited_ns[key] = self.limited_ns.get(key, 0) + moved[key]
        if reasons & POWER_CAP or moved.get("power_violation_ns", 0) > 0:
            self.power_capped += 1
        if reasons & THROTTLE_MASK:
            self.throttled_batches += 1
            self.excluded += n_samples
            return False
        return True

    def summary(self) -> ClockSummary:
        if not self.snaps:
            return ClockSummary(
                throttled_batches=self.throttled_batches,
                batches=self.batches,
                excluded_samples=self.excluded,
                power_capped_batches=self.power_capped,
                reasons_seen=self.reasons,
                **self._limited_ms(),
            )
        sm = [s["sm_clock_mhz"] for s in self.snaps]
        return ClockSummary(
            sm_clock_mhz_min=min(sm),
            sm_clock_mhz_max=max(sm),
            mem_clock_mhz=max(s["mem_clock_mhz"] for s in self.snaps),
            temperature_c_max=max(s["temperature_c"] for s in self.snaps),
            power_w_max=round(max(s["power_w"] for s in self.snaps), 1),
            throttled_batches=self.throttled_batches,
            batches=self.batches,
            excluded_samples=self.excluded,
            power_capped_batches=self.power_capped,
            reasons_seen=self.reasons,
            **self._limited_ms(),
        )

    def _limited_ms(self) -> dict[str, float]:
        return {LIMIT_COUNTERS[k]: round(ns / 1e6, 3) for k, ns in self.limited_ns.items()}


class L2Flusher:
    """Writes a buffer twice the L2 size so each launch starts with a cold cache."""

    def __init__(self, device: torch.device) -> None:
        props = torch.cuda.get_device_properties(device)
        l2 = int(getattr(props, "L2_cache_size", 0) or 64 * 2**20)
        self.buf = torch.empty(2 * l2 // 4, dtype=torch.int32, device=device)

    def __call__(self) -> None:
        self.buf.zero_()


class _Runner:
    """Measures a batch of launchers, one sample each, with the device's clock."""

    method = "perf_counter"

    def __init__(self, device: torch.device, cfg: TimingConfig) -> None:
        self.device = device
        self.cfg = cfg

    def unit(self, fn: Callable[[], None]) -> Callable[[], None]:
        return fn

    def per_unit(self) -> int:
        return 1

    def sync(self) -> None:
        pass

    def measure(self, units: Sequence[Callable[[], None]]) -> list[float]:
        out = []
        for u in units:
            s = time.perf_counter()
            u()
            out.append((time.perf_counter() - s) * 1e3)
        return out

    @property
    def l2_flush(self) -> bool:
        return False


class _CudaRunner(_Runner):
    def __init__(self, device: torch.device, cfg: TimingConfig) -> None:
        super().__init__(device, cfg)
        self.flush = L2Flusher(device) if cfg.flush_l2 else None
        self.stream = torch.cuda.current_stream(device)
        # torch.cuda._sleep counts SM clock cycles; at 2 GHz (no GPU runs faster) the spin
        # lasts at least host_lead_us.
        self.lead_cycles = int(cfg.host_lead_us * 2000)
        self.method = "cuda_graph_events" if cfg.use_graphs else "cuda_events"

    @property
    def l2_flush(self) -> bool:
        return self.flush is not None

    def per_unit(self) -> int:
        return self.cfg.graph_launches if self.cfg.use_graphs else 1

    def unit(self, fn: Callable[[], None]) -> Callable[[], None]:
        """With graphs, one unit replays `graph_launches` captured launches: launch gaps
        vanish; only the first launch of a replay starts with a cold L2."""
        if not self.cfg.use_graphs:
            return fn
        side = torch.cuda.Stream(self.device)
        side.wait_stream(self.stream)
        with torch.cuda.stream(side):
            fn()
        self.stream.wait_stream(side)
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(self.cfg.graph_launches):
                fn()
        return graph.replay

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)

    def measure(self, units: Sequence[Callable[[], None]]) -> list[float]:
        events = []
        for u in units:
            if self.flush is not None:
                self.flush()
            if self.lead_cycles > 0:
                torch.cuda._sleep(self.lead_cycles)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(self.stream)
            u()
            end.record(self.stream)
            events.append((start, end))
        torch.cuda.synchronize(self.device)
        k = self.per_unit()
        return [s.elapsed_time(e) / k for s, e in events]


def _runner(device: torch.device, cfg: TimingConfig) -> _Runner:
    return _CudaRunner(device, cfg) if device.type == "cuda" else _Runner(device, cfg)


def _warm_up(runner: _Runner, units: Sequence[Callable[[], None]], cfg: TimingConfig) -> None:
    """Run until successive batch medians agree (clocks ramped, caches and allocators
    warm) or the warm-up budget is spent; at least one batch always runs."""
    t0 = time.perf_counter()
    prev: float | None = None
    while True:
        batch = runner.measure(list(units) * 3)
        med = statistics.median(batch)
        elapsed = (time.perf_counter() - t0) * 1e3
        if elapsed >= cfg.warmup_ms and (
            (prev is not None and abs(med - prev) <= cfg.settle_rel * prev)
            or elapsed >= 4 * cfg.warmup_ms
        ):
            return
        prev = med


def _converged(samples: Sequence[float], cfg: TimingConfig) -> bool:
    # never "converged" on fewer samples than a verdict (across runs) can use
    if len(samples) < max(cfg.min_reps, MIN_SAMPLES_FOR_VERDICT):
        return False
    lo, hi = median_ci(samples)
    med = statistics.median(samples)
    return med > 0 and (hi - lo) / 2 / med <= cfg.target_rel_ci


def time_fn(
    fn: Callable[[], None], device: torch.device, cfg: TimingConfig | None = None
) -> TimingStats:
    """Time `fn` on `device` until its median is tight enough or the budget is spent."""
    cfg = cfg or TimingConfig()
    runner = _runner(device, cfg)
    unit = runner.unit(fn)
    _warm_up(runner, [unit], cfg)
    watch = ClockWatch(device, cfg.sample_clocks)
    samples: list[float] = []
    t0 = time.perf_counter()
    while True:
        before = watch.snapshot()
        batch = runner.measure([unit] * min(cfg.check_every, cfg.max_reps - len(samples)))
        after = watch.snapshot()
        if watch.batch_clean(before, after, len(batch)):
            samples += batch
        elapsed = (time.perf_counter() - t0) * 1e3
        reason = None
        if len(samples) >= cfg.max_reps:
            reason = "max_reps"
        elif _converged(samples, cfg):
            reason = "converged"
        elif elapsed >= cfg.budget_ms and len(samples) >= cfg.min_reps:
            reason = "budget"
        elif elapsed >= 2 * cfg.budget_ms and watch.excluded:
            reason = "throttled"
        if reason:
            if reason == "throttled" or len(samples) < 2:
                return _unusable(runner, watch.summary(), len(samples))
            return summarize(samples, runner.method, runner.l2_flush, reason, watch.summary())


def _unusable(runner: _Runner, clocks: ClockSummary, n: int) -> TimingStats:
    """Too few samples at steady clocks: reported as such, never as a number."""
    nan = float("nan")
    return TimingStats(
        median_ms=nan,
        ci_low_ms=nan,
        ci_high_ms=nan,
        n=n,
        method=runner.method,
        l2_flush=runner.l2_flush,
        stop_reason="throttled",
        min_ms=nan,
        mean_ms=nan,
        clocks=clocks,
    )


def time_ab(
    fn_a: Callable[[], None],
    fn_b: Callable[[], None],
    device: torch.device,
    cfg: TimingConfig | None = None,
) -> PairedTiming:
    """Time A and B interleaved, each pair in random order, on one device.

    Stops when the bootstrap interval of median(B)/median(A) is within the target
    relative width, or the budget (shared by both sides) is spent.
    """
    cfg = cfg or TimingConfig()
    rng = random.Random(cfg.seed)
    runner = _runner(device, cfg)
    ua, ub = runner.unit(fn_a), runner.unit(fn_b)
    _warm_up(runner, [ua, ub], cfg)
    watch = ClockWatch(device, cfg.sample_clocks)
    sa: list[float] = []
    sb: list[float] = []
    t0 = time.perf_counter()
    next_check = cfg.min_reps
    while True:
        order = [rng.random() < 0.5 for _ in range(min(cfg.check_every, cfg.max_reps - len(sa)))]
        units = [u for a_first in order for u in ((ua, ub) if a_first else (ub, ua))]
        before = watch.snapshot()
        batch = runner.measure(units)
        after = watch.snapshot()
        if watch.batch_clean(before, after, len(batch)):
            for i, a_first in enumerate(order):
                x, y = batch[2 * i], batch[2 * i + 1]
                sa.append(x if a_first else y)
                sb.append(y if a_first else x)
        elapsed = (time.perf_counter() - t0) * 1e3
        reason = None
        if len(sa) >= cfg.max_reps:
            reason = "max_reps"
        elif len(sa) >= max(next_check, MIN_SAMPLES_FOR_VERDICT):
            est = ratio_of_medians(sa, sb, paired=True, n_boot=400, seed=cfg.seed)
            if est.halfwidth / est.ratio <= cfg.target_rel_ci:
                reason = "converged"
            next_check = max(len(sa) + cfg.check_every, int(len(sa) * 1.25))
        if reason is None and elapsed >= cfg.budget_ms:
            if len(sa) >= max(cfg.min_reps, MIN_SAMPLES_FOR_VERDICT):
                reason = "budget"
            elif elapsed >= 2 * cfg.budget_ms and watch.excluded:
                reason = "throttled"
        if reason:
            clocks = watch.summary()
            if len(sa) < 2:
                raise RuntimeError(
                    f"no clean A/B samples in {elapsed:.0f} ms: clocks throttled "
                    f"in {clocks.throttled_batches} of {clocks.batches} batches"
                )
            est = ratio_of_medians(sa, sb, paired=True, seed=cfg.seed)
            return PairedTiming(
                a=summarize(sa, runner.method, runner.l2_flush, reason, clocks),
                b=summarize(sb, runner.method, runner.l2_flush, reason, clocks),
                ratio=est,
                stop_reason=reason,
            )
