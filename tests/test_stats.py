"""dllab.stats against independent references: scipy.stats.trim_mean (IQM), scipy.stats.bootstrap
(percentile intervals, one sample per stratum = the stratified bootstrap), scipy.stats.mannwhitneyu
(probability of improvement), and the coverage of the interval on data of known mean."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from dllab import stats


def test_iqm_is_scipy_trim_mean_a_quarter_each_end():
    rng = np.random.default_rng(1)
    for n in (1, 3, 4, 7, 20, 101):
        values = rng.standard_normal(n) ** 3
        assert stats.iqm(values) == pytest.approx(scipy_stats.trim_mean(values, 0.25))
    # the middle half only: outliers at either end do not move it
    assert stats.iqm([1.0, 2.0, 3.0, 1e9]) == pytest.approx(2.5)
    assert stats.iqm([np.inf, 1.0, 2.0, 3.0]) == pytest.approx(2.5)
    assert stats.iqm([np.inf, np.inf, 1.0, 2.0]) == np.inf  # more than a quarter never solved


def _scipy_interval(samples, statistic, seed):
    result = scipy_stats.bootstrap(
        samples,
        statistic,
        n_resamples=20_000,
        confidence_level=0.95,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return result.confidence_interval.low, result.confidence_interval.high


def test_iqm_interval_matches_scipy_bootstrap_percentile():
    values = np.random.default_rng(2).gamma(2.0, 1.0, size=25)
    low, high = stats.stratified_bootstrap_ci([values], stats._pooled_iqm, resamples=20_000, seed=0)
    ref_low, ref_high = _scipy_interval(
        (values,), lambda x, axis: scipy_stats.trim_mean(x, 0.25, axis=axis), 7
    )
    width = ref_high - ref_low
    assert abs(low - ref_low) < 0.05 * width and abs(high - ref_high) < 0.05 * width
    center, low2, high2 = stats.iqm_ci(values, resamples=20_000, seed=0)
    assert (low2, high2) == (low, high) and low < center < high


def test_stratified_bootstrap_matches_scipy_with_one_sample_per_stratum():
    """Two strata far apart: resampling within each keeps their proportion; pooling would not."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.0, 1.0, 12), rng.normal(10.0, 1.0, 12)
    mean_of_all = lambda *drawn: np.concatenate(drawn, axis=-1).mean(axis=-1)
    low, high = stats.stratified_bootstrap_ci([a, b], mean_of_all, resamples=20_000, seed=0)
    ref_low, ref_high = _scipy_interval(
        (a, b), lambda x, y, axis: np.concatenate([x, y], axis=axis).mean(axis=axis), 5
    )
    width = ref_high - ref_low
    assert abs(low - ref_low) < 0.05 * width and abs(high - ref_high) < 0.05 * width
    pooled_low, pooled_high = stats.stratified_bootstrap_ci(
        [np.concatenate([a, b])], mean_of_all, resamples=20_000, seed=0
    )
    assert pooled_high - pooled_low > 3 * width  # the unstratified interval is far wider here


def test_bootstrap_is_seeded():
    values = np.random.default_rng(4).standard_normal(15)
    assert stats.iqm_ci(values, resamples=3000, seed=11) == stats.iqm_ci(
        values, resamples=3000, seed=11
    )
    assert stats.iqm_ci(values, resamples=3000, seed=11) != stats.iqm_ci(
        values, resamples=3000, seed=12
    )
    assert stats.summary(values, resamples=3000) == stats.summary(list(values), resamples=3000)


def test_interval_covers_a_known_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(5)
    mean = lambda x: x.mean(axis=-1)
    covered = sum(
        low <= 0.0 <= high
        for low, high in (
            stats.stratified_bootstrap_ci(
                [rng.standard_normal(30)], mean, resamples=1000, seed=trial
            )
            for trial in range(200)
        )
    )
    assert 0.88 <= covered / 200 <= 0.99


def test_probability_of_improvement_is_mann_whitney_u_over_pairs():
    rng = np.random.default_rng(6)
    x, y = rng.integers(0, 6, 17).astype(float), rng.integers(1, 7, 11).astype(float)  # many ties
    u = scipy_stats.mannwhitneyu(x, y, alternative="two-sided").statistic
    assert stats.probability_of_improvement(x, y) == pytest.approx(u / (17 * 11))
    assert stats.probability_of_improvement(y, x) == pytest.approx(1 - u / (17 * 11))
    # over tasks: the mean of the per-task probabilities
    p = stats.probability_of_improvement([x, [1.0, 2.0]], [y, [0.0, 0.0]])
    assert p == pytest.approx((u / (17 * 11) + 1.0) / 2)
    # never (inf) ties with never; a finite time is below it: (0.5 + 0.5 + 0 + 0) / 4
    assert stats.probability_of_improvement([np.inf, 1.0], [np.inf, np.inf]) == pytest.approx(0.25)


def test_probability_of_improvement_interval_matches_scipy():
    rng = np.random.default_rng(7)
    x, y = rng.normal(0.5, 1.0, 15), rng.normal(0.0, 1.0, 15)
    value, low, high = stats.probability_of_improvement_ci(x, y, resamples=20_000, seed=0)
    statistic = lambda a, b, axis: stats._pairwise_greater(
        np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)
    )
    ref_low, ref_high = _scipy_interval((x, y), statistic, 9)
    assert low < value < high
    assert abs(low - ref_low) < 0.05 * (ref_high - ref_low) and abs(high - ref_high) < 0.05 * (
        ref_high - ref_low
    )


def test_summary_and_profile():
    found = stats.summary([3.0, 1.0, np.nan, 2.0, 4.0], resamples=500)
    assert (
        found["n"] == 4 and found["min"] == 1.0 and found["max"] == 4.0 and found["median"] == 2.5
    )
    assert (
        found["iqm"] == pytest.approx(2.5) and found["ci_low"] <= found["iqm"] <= found["ci_high"]
    )
    assert stats.summary([np.nan])["n"] == 0
    profile = stats.performance_profile([0.1, 0.5, 0.9, 0.9], np.array([0.0, 0.5, 0.9]))
    np.testing.assert_allclose(profile, [1.0, 0.5, 0.0])
