"""harness.timing: the median's confidence interval, the stopping rule, CPU timing."""

from __future__ import annotations

import math
import random
import statistics
import time

import pytest
import torch

from harness.timing import (
    POWER_CAP,
    ClockWatch,
    TimingConfig,
    TimingStats,
    median_ci,
    summarize,
    time_fn,
)

CPU = torch.device("cpu")


def _coverage(draw, true_median: float, n: int, trials: int, seed: int) -> float:
    rng = random.Random(seed)
    hits = 0
    for _ in range(trials):
        lo, hi = median_ci([draw(rng) for _ in range(n)])
        hits += lo <= true_median <= hi
    return hits / trials


@pytest.mark.parametrize("n", [30, 50, 100, 200])
def test_median_ci_coverage_lognormal(n: int) -> None:
    # lognormal(mu=0, sigma=0.6): skewed like kernel times; true median exp(0) = 1
    cov = _coverage(lambda r: r.lognormvariate(0.0, 0.6), 1.0, n, trials=500, seed=n)
    assert 0.90 <= cov <= 0.99, cov


def test_median_ci_coverage_exponential_with_outliers() -> None:
    # exponential(1) has median ln 2; a 2 % tail of 20x slow launches moves the median
    # only slightly, so use the mixture's true median computed from its CDF.
    def draw(r: random.Random) -> float:
        return r.expovariate(1.0) * (20.0 if r.random() < 0.02 else 1.0)

    # solve 0.98 * (1 - e^-m) + 0.02 * (1 - e^(-m/20)) = 0.5 by bisection
    lo, hi = 0.0, 5.0
    for _ in range(100):
        mid = (lo + hi) / 2
        cdf = 0.98 * (1 - math.exp(-mid)) + 0.02 * (1 - math.exp(-mid / 20))
        lo, hi = (mid, hi) if cdf < 0.5 else (lo, mid)
    cov = _coverage(draw, lo, 80, trials=500, seed=7)
    assert 0.90 <= cov <= 0.99, cov


def test_median_ci_shrinks_with_n() -> None:
    rng = random.Random(3)

    def mean_width(n: int) -> float:
        widths = []
        for _ in range(100):
            lo, hi = median_ci([rng.lognormvariate(0.0, 0.5) for _ in range(n)])
            widths.append(hi - lo)
        return statistics.fmean(widths)

    w25, w100, w400 = mean_width(25), mean_width(100), mean_width(400)
    assert w25 > w100 > w400
    # width ~ 1/sqrt(n): 16x the samples gives about a quarter of the width
    assert 0.15 < w400 / w25 < 0.4


def test_median_ci_contains_median_and_is_made_of_samples() -> None:
    rng = random.Random(11)
    for n in range(1, 60):
        xs = [rng.gauss(5.0, 1.0) for _ in range(n)]
        lo, hi = median_ci(xs)
        assert lo in xs and hi in xs
        assert lo <= statistics.median(xs) <= hi
    assert median_ci([2.0]) == (2.0, 2.0)
    assert median_ci([3.0, 1.0]) == (1.0, 3.0)
    with pytest.raises(ValueError):
        median_ci([])


def test_higher_confidence_is_wider() -> None:
    xs = [i / 99 for i in range(100)]
    lo95, hi95 = median_ci(xs, 0.95)
    lo99, hi99 = median_ci(xs, 0.99)
    assert lo99 <= lo95 and hi99 >= hi95 and (hi99 - lo99) > (hi95 - lo95)


def test_summarize_and_to_dict() -> None:
    xs = [1.0, 2.0, 3.0, 4.0, 100.0]
    s = summarize(xs, "perf_counter", False, "budget")
    assert (s.median_ms, s.min_ms, s.n, s.stop_reason) == (3.0, 1.0, 5, "budget")
    assert s.mean_ms == pytest.approx(22.0)
    d = s.to_dict()
    assert d["samples_ms"] == xs
    assert d["rel_ci_halfwidth"] == pytest.approx((s.ci_high_ms - s.ci_low_ms) / 2 / 3.0)
    assert "samples_ms" not in s.to_dict(keep_samples=False)


def test_time_fn_converges_once_the_interval_is_tight_enough() -> None:
    # any interval is "tight" against a 1000 % target: stop as soon as min_reps is reached
    cfg = TimingConfig(
        warmup_ms=0.0,
        budget_ms=60_000.0,
        min_reps=25,
        max_reps=1000,
        target_rel_ci=10.0,
        check_every=10,
    )
    s = time_fn(lambda: sum(range(100)), CPU, cfg)
    assert s.stop_reason == "converged"
    assert 25 <= s.n < 25 + cfg.check_every


def test_time_fn_cpu() -> None:
    calls = []

    def fn() -> None:
        calls.append(sum(range(200)))

    cfg = TimingConfig(warmup_ms=1.0, budget_ms=30.0, min_reps=10, max_reps=500)
    s = time_fn(fn, CPU, cfg)
    assert isinstance(s, TimingStats)
    assert s.n >= cfg.min_reps
    assert s.n <= cfg.max_reps
    assert s.stop_reason in ("converged", "budget", "max_reps")
    assert s.ci_low_ms <= s.median_ms <= s.ci_high_ms
    assert s.min_ms <= s.median_ms
    assert s.method == "perf_counter" and s.l2_flush is False
    assert len(s.samples_ms) == s.n and all(x >= 0 for x in s.samples_ms)
    assert len(calls) >= s.n + 1  # at least one warm-up call


def test_time_fn_stops_on_budget_when_it_cannot_converge() -> None:
    cfg = TimingConfig(
        warmup_ms=0.0,
        budget_ms=5.0,
        min_reps=10,
        max_reps=10_000,
        target_rel_ci=0.0,
        check_every=10,
    )
    s = time_fn(lambda: None, CPU, cfg)
    # target 0 can only be met by identical samples; otherwise the budget ends it
    assert s.stop_reason in ("budget", "converged")
    assert s.n >= 10


def test_time_fn_never_exceeds_max_reps() -> None:
    """max_reps is a cap. Bug: samples are taken check_every (10) at a time, so a cap that
    is not a multiple of 10 is overshot (15 -> 20)."""
    cfg = TimingConfig(
        warmup_ms=0.0, budget_ms=60_000.0, min_reps=5, max_reps=15, target_rel_ci=0.0
    )
    s = time_fn(lambda: sum(range(50)), CPU, cfg)
    assert s.stop_reason in ("max_reps", "converged")
    assert s.n <= 15, s.n


def test_time_fn_honours_min_reps_when_the_budget_is_short() -> None:
    """A slow launch and a short budget must still give min_reps samples and a number.
    Bug: when the budget runs out before min_reps (> check_every) samples, time_fn stops
    with stop_reason 'throttled' and NaN medians, although on the CPU nothing was
    throttled and no sample was excluded."""
    cfg = TimingConfig(warmup_ms=0.0, budget_ms=5.0, min_reps=25, max_reps=1000, target_rel_ci=0.0)
    s = time_fn(lambda: time.sleep(0.001), CPU, cfg)
    assert s.clocks.excluded_samples == 0
    assert s.stop_reason == "budget", s
    assert s.n >= 25
    assert s.ci_low_ms <= s.median_ms <= s.ci_high_ms


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the GPU machine)")
def test_host_latency_before_a_launch_stays_outside_the_timed_region() -> None:
    # fn keeps the host busy 1 ms before launching a kernel of a few µs. Behind a GPU spin
    # longer than that (host_lead_us) the events time the kernel alone; with no spin the
    # GPU reaches the start event first and waits for the launch, so the 1 ms is timed.
    dev = torch.device("cuda")
    x = torch.zeros(1 << 16, device=dev)

    def fn() -> None:
        end = time.perf_counter() + 1e-3
        while time.perf_counter() < end:
            pass
        x.add_(1.0)

    def median_ms(lead_us: float) -> float:
        cfg = TimingConfig(
            warmup_ms=0, budget_ms=0, min_reps=20, max_reps=20, flush_l2=False,
            sample_clocks=False, host_lead_us=lead_us,
        )  # fmt: skip
        return time_fn(fn, dev, cfg).median_ms

    assert median_ms(3000.0) < 0.3
    assert median_ms(0.0) > 0.8


def _snap(reasons: int = 0, power_ns: int | None = None, thermal_ns: int | None = None) -> dict:
    """An NVML snapshot as harness.gpu.nvml_snapshot returns it."""
    s = {"sm_clock_mhz": 1980, "mem_clock_mhz": 2619, "temperature_c": 40, "power_w": 300.0}
    s["throttle_reasons"] = reasons
    if power_ns is not None:
        s["power_violation_ns"] = power_ns
    if thermal_ns is not None:
        s["thermal_violation_ns"] = thermal_ns
    return s


def test_clock_watch_counts_a_power_cap_that_lifted_before_the_batch_ended() -> None:
    # The reason bits are clear at both readings, but NVML's power-violation counter moved
    # by 3 ms during the batch: the batch ran capped (it is counted, not excluded).
    w = ClockWatch(CPU, enabled=False)
    assert w.batch_clean(_snap(power_ns=10_000_000), _snap(power_ns=13_000_000), 10)
    assert w.batch_clean(_snap(power_ns=13_000_000), _snap(power_ns=13_000_000), 10)
    assert w.batch_clean(_snap(power_ns=13_000_000), _snap(power_ns=13_500_000), 10)
    c = w.summary()
    assert (c.power_capped_batches, c.batches, c.excluded_samples) == (2, 3, 0)
    assert c.power_limited_ms == pytest.approx(3.5)
    assert c.thermal_limited_ms is None  # this NVML kept no thermal counter


def test_clock_watch_without_counters_falls_back_to_the_reason_bits() -> None:
    w = ClockWatch(CPU, enabled=False)
    assert w.batch_clean(_snap(), _snap(reasons=POWER_CAP), 10)
    assert not w.batch_clean(_snap(reasons=0x20), _snap(), 10)  # SW thermal: excluded
    c = w.summary()
    assert (c.power_capped_batches, c.throttled_batches, c.excluded_samples) == (1, 1, 10)
    assert c.power_limited_ms is None and c.thermal_limited_ms is None


def test_clock_watch_records_thermal_limits_and_the_sampled_clocks() -> None:
    readings = iter(
        [_snap(power_ns=0, thermal_ns=5_000_000), _snap(power_ns=0, thermal_ns=7_250_000)]
    )
    w = ClockWatch(CPU, enabled=False)
    w._read = lambda: next(readings)  # the two readings NVML would give around one batch
    before, after = w.snapshot(), w.snapshot()
    assert w.batch_clean(before, after, 10)  # thermal time is recorded; bits decide exclusion
    c = w.summary()
    assert c.thermal_limited_ms == pytest.approx(2.25)
    assert c.power_limited_ms == 0.0 and c.power_capped_batches == 0
    assert (c.sm_clock_mhz_min, c.sm_clock_mhz_max, c.batches) == (1980, 1980, 1)
    assert c.to_dict()["thermal_limited_ms"] == pytest.approx(2.25)
