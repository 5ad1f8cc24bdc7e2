"""harness.stats on CPU with seeded synthetic samples from known distributions.

ratio_of_medians: point estimate, errors, pairing, interval coverage, paired vs unpaired
width. verdict: exact boundaries, the sample-count floor, a planted slowdown is caught,
A/A is never called faster or slower. Nothing here depends on wall-clock speed.
"""

from __future__ import annotations

import math
import random
import statistics

import pytest

from harness.stats import (
    DEFAULT_THRESHOLD,
    MIN_SAMPLES_FOR_VERDICT,
    VERDICTS,
    RatioEstimate,
    ratio_of_medians,
    verdict,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def lognormal(rng: random.Random, n: int, median: float, sigma: float) -> list[float]:
    """n samples whose true median is `median` (lognormal: median = exp(mu))."""
    return [rng.lognormvariate(math.log(median), sigma) for _ in range(n)]


def est(lo: float, hi: float, n: int = 100, ratio: float | None = None) -> RatioEstimate:
    mid = (lo + hi) / 2 if ratio is None else ratio
    return RatioEstimate(mid, lo, hi, n, n, True, 0.95)


# ------------------------------------------------------------------ ratio_of_medians


@pytest.mark.parametrize("n_a,n_b", [(7, 7), (8, 8), (9, 12), (10, 5)])
def test_point_estimate_is_the_ratio_of_sample_medians(n_a: int, n_b: int) -> None:
    rng = random.Random(n_a * 100 + n_b)
    a = lognormal(rng, n_a, 1.0, 0.2)
    b = lognormal(rng, n_b, 1.3, 0.2)
    r = ratio_of_medians(a, b, n_boot=200)
    # statistics.median averages the two middle values for even counts
    assert r.ratio == pytest.approx(statistics.median(b) / statistics.median(a), rel=1e-12)
    assert r.ci_low <= r.ratio <= r.ci_high
    assert (r.n_a, r.n_b) == (n_a, n_b)
    assert r.confidence == 0.95


def test_too_few_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least two"):
        ratio_of_medians([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least two"):
        ratio_of_medians([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least two"):
        ratio_of_medians([], [])


def test_paired_with_unequal_counts_is_an_error() -> None:
    with pytest.raises(ValueError, match="equal counts"):
        ratio_of_medians([1.0, 2.0, 3.0], [1.0, 2.0], paired=True)


def test_pairing_defaults_to_equal_counts() -> None:
    rng = random.Random(1)
    a, b = lognormal(rng, 40, 1, 0.1), lognormal(rng, 40, 1, 0.1)
    assert ratio_of_medians(a, b, n_boot=100).paired is True
    assert ratio_of_medians(a, b[:39], n_boot=100).paired is False
    assert ratio_of_medians(a, b, paired=False, n_boot=100).paired is False


def test_seeded_and_deterministic() -> None:
    rng = random.Random(2)
    a, b = lognormal(rng, 50, 1, 0.1), lognormal(rng, 50, 1.1, 0.1)
    assert ratio_of_medians(a, b, seed=3, n_boot=300) == ratio_of_medians(a, b, seed=3, n_boot=300)
    assert ratio_of_medians(a, b, seed=3, n_boot=300) != ratio_of_medians(a, b, seed=4, n_boot=300)


def test_higher_confidence_is_not_narrower() -> None:
    rng = random.Random(3)
    a, b = lognormal(rng, 60, 1, 0.05), lognormal(rng, 60, 1.02, 0.05)
    r90 = ratio_of_medians(a, b, confidence=0.90, n_boot=1000)
    r99 = ratio_of_medians(a, b, confidence=0.99, n_boot=1000)
    assert r99.ci_low <= r90.ci_low and r99.ci_high >= r90.ci_high
    assert r99.halfwidth > r90.halfwidth


def test_to_dict_round_trips() -> None:
    r = ratio_of_medians([1.0, 2.0, 3.0], [2.0, 4.0, 6.0], n_boot=50)
    assert r.ratio == pytest.approx(2.0)
    assert RatioEstimate(**r.to_dict()) == r


def _coverage(paired: bool, trials: int = 200, n: int = 60) -> float:
    true_ratio = 1.05
    hits = 0
    for t in range(trials):
        rng = random.Random(1000 + t)
        a = lognormal(rng, n, 1.0, 0.1)
        b = lognormal(rng, n, true_ratio, 0.1)
        r = ratio_of_medians(a, b, paired=paired, n_boot=500, seed=t)
        hits += r.ci_low <= true_ratio <= r.ci_high
    return hits / trials


@pytest.mark.parametrize("paired", [False, True])
def test_95_percent_interval_covers_the_true_ratio(paired: bool) -> None:
    """Independent lognormal A and B with a known ratio of medians (1.05): the 95 %
    percentile-bootstrap interval covers it in about 95 % of 200 seeded trials (a
    percentile bootstrap of a median is a little optimistic at n=60, hence 90 %)."""
    cov = _coverage(paired)
    assert 0.90 <= cov <= 0.99, cov


def test_coverage_with_a_shared_drift_needs_pairing() -> None:
    """Samples drift together (clock ramps, neighbours): the paired interval still covers
    the true ratio and is several times narrower than treating the sides as independent."""
    true_ratio = 1.03
    hits, widths_p, widths_u = 0, [], []
    for t in range(100):
        rng = random.Random(5000 + t)
        drift = lognormal(rng, 60, 1.0, 0.05)  # shared per pair, 5 %
        a = [d * rng.lognormvariate(0, 0.005) for d in drift]
        b = [true_ratio * d * rng.lognormvariate(0, 0.005) for d in drift]
        p = ratio_of_medians(a, b, paired=True, n_boot=500, seed=t)
        u = ratio_of_medians(a, b, paired=False, n_boot=500, seed=t)
        widths_p.append(p.halfwidth)
        widths_u.append(u.halfwidth)
        hits += p.ci_low <= true_ratio <= p.ci_high
    # the paired point estimate is still a ratio of medians (not a median of ratios), so
    # drift leaks in a little: coverage stays high but is not exactly 95 %
    assert hits >= 85, hits
    assert statistics.median(widths_p) * 3 < statistics.median(widths_u)


def test_paired_interval_much_narrower_with_drift() -> None:
    rng = random.Random(7)
    drift = [1 + 0.1 * math.sin(i / 5) + rng.gauss(0, 0.03) for i in range(200)]
    a = [d * rng.lognormvariate(0, 0.002) for d in drift]
    b = [1.01 * d * rng.lognormvariate(0, 0.002) for d in drift]
    p = ratio_of_medians(a, b, paired=True, n_boot=500)
    u = ratio_of_medians(a, b, paired=False, n_boot=500)
    assert p.halfwidth * 5 < u.halfwidth
    assert p.ci_low <= 1.01 <= p.ci_high
    assert p.ci_low > 1.0  # a 1 % change seen through 10 % drift, paired ...
    assert u.ci_low < 1.0 < u.ci_high  # ... and lost in the drift, unpaired


# --------------------------------------------------------------------------- verdict


def test_verdict_names() -> None:
    assert set(VERDICTS) == {"faster", "slower", "same", "inconclusive"}
    assert DEFAULT_THRESHOLD == 0.02
    assert MIN_SAMPLES_FOR_VERDICT == 30


@pytest.mark.parametrize("thr", [0.01, 0.02, 0.05])
def test_verdict_exact_edges(thr: float) -> None:
    up, down = 1 + thr, 1 - thr
    eps = 1e-9
    # wholly beyond +thr: slower; the lower end exactly at the edge is not beyond it
    assert verdict(est(up + eps, up + 0.01), thr) == "slower"
    assert verdict(est(up, up + 0.01), thr) == "inconclusive"
    # wholly below -thr: faster
    assert verdict(est(down - 0.01, down - eps), thr) == "faster"
    assert verdict(est(down - 0.01, down), thr) == "inconclusive"
    # inside, edges included: same
    assert verdict(est(down, up), thr) == "same"
    assert verdict(est(down + eps, up - eps), thr) == "same"
    assert verdict(est(1 - eps, 1 + eps), thr) == "same"
    # straddling either edge, or both: inconclusive
    assert verdict(est(down - eps, 1.0), thr) == "inconclusive"
    assert verdict(est(1.0, up + eps), thr) == "inconclusive"
    assert verdict(est(down - eps, up + eps), thr) == "inconclusive"
    assert verdict(est(up - eps, up + eps), thr) == "inconclusive"


def test_verdict_needs_min_samples_even_when_narrow() -> None:
    for n_a, n_b in [(29, 29), (29, 100), (100, 29), (2, 2)]:
        for lo, hi in [(1.5, 1.5001), (0.5, 0.5001), (0.9999, 1.0001)]:
            e = RatioEstimate((lo + hi) / 2, lo, hi, n_a, n_b, False, 0.95)
            assert verdict(e, 0.01) == "inconclusive", (n_a, n_b, lo)
    assert verdict(est(1.5, 1.5001, n=30), 0.01) == "slower"
    assert verdict(est(1.5, 1.5001, n=10), 0.01, min_samples=10) == "slower"
    assert verdict(est(1.5, 1.5001, n=30), 0.01, min_samples=31) == "inconclusive"


def test_a_narrow_interval_from_few_real_samples_is_inconclusive() -> None:
    rng = random.Random(11)
    a, b = lognormal(rng, 20, 1.0, 0.001), lognormal(rng, 20, 1.2, 0.001)
    r = ratio_of_medians(a, b, n_boot=300)
    assert r.ci_low > 1.1  # clearly slower on its face ...
    assert verdict(r, 0.01) == "inconclusive"  # ... but 20 samples are not enough


@pytest.mark.parametrize("paired", [True, False])
def test_planted_2_percent_slowdown_is_called_slower(paired: bool) -> None:
    """1 % noise, a true 2 % slowdown, 1 % threshold: `slower` on every seed, never
    `same` or `faster`."""
    verdicts = []
    for seed in range(20):
        rng = random.Random(seed)
        a = lognormal(rng, 200, 1.0, 0.01)
        b = lognormal(rng, 200, 1.02, 0.01)
        verdicts.append(verdict(ratio_of_medians(a, b, paired=paired, n_boot=500), 0.01))
    assert verdicts == ["slower"] * 20


def test_planted_2_percent_speedup_is_called_faster() -> None:
    for seed in range(10):
        rng = random.Random(seed)
        a = lognormal(rng, 200, 1.0, 0.01)
        b = lognormal(rng, 200, 1 / 1.02, 0.01)
        assert verdict(ratio_of_medians(a, b, n_boot=500), 0.01) == "faster"


@pytest.mark.parametrize("paired", [True, False])
def test_aa_is_never_faster_or_slower(paired: bool) -> None:
    """A/A (same distribution both sides) at a 1 % threshold with realistic 0.3 % noise
    and occasional slow outliers: over 100 seeds never `faster`/`slower`, almost always
    `same`."""
    counts = dict.fromkeys(VERDICTS, 0)
    for seed in range(100):
        rng = random.Random(10_000 + seed)

        def side(rng: random.Random = rng) -> list[float]:
            xs = lognormal(rng, 100, 0.05, 0.003)
            return [x * 1.5 if rng.random() < 0.02 else x for x in xs]  # rare slow launches

        r = ratio_of_medians(side(), side(), paired=paired, n_boot=500, seed=seed)
        counts[verdict(r, 0.01)] += 1
    assert counts["faster"] == counts["slower"] == 0, counts
    assert counts["same"] >= 95, counts
