"""Aggregate statistics over many seeded runs, as in Agarwal et al. (2021), "Deep reinforcement
learning at the edge of the statistical precipice" (NeurIPS), the method of the rliable library.

- `iqm`: the interquartile mean, the mean of the middle 50% of the runs (rliable's
  `metrics.aggregate_iqm` is `scipy.stats.trim_mean(scores, 0.25, axis=None)`; so is this).
- `stratified_bootstrap_ci`: a percentile bootstrap interval in which runs are resampled with
  replacement within each stratum (task or setting) separately, never across (rliable's
  `StratifiedBootstrap`, default `method="percentile"`). With one stratum it is the ordinary
  percentile bootstrap; with several it is what `scipy.stats.bootstrap(..., method="percentile")`
  does with one sample per stratum (samples are resampled independently). tests/test_stats.py
  checks both against scipy.stats.bootstrap on the same data.
- `probability_of_improvement`: P(X > Y) for a run X of one algorithm and a run Y of another,
  ties counting one half, averaged over tasks: rliable's `probability_of_improvement`, which per
  task is the Mann-Whitney U statistic divided by n_x * n_y (checked against
  scipy.stats.mannwhitneyu).

Every resampling draws from `numpy.random.default_rng(seed)`: the same runs give the same
intervals. Non-finite values are allowed where they mean "never" (an unsolved run's time to
solve is +inf): the IQM is then +inf when more than a quarter of the runs are +inf.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

DEFAULT_RESAMPLES = 10_000
DEFAULT_CONFIDENCE = 0.95
_CHUNK_VALUES = 2_000_000  # resampled values held in memory at once (16 MB of float64)


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: drop int(0.25 n) runs at each end of the sorted scores, average the
    rest (scipy.stats.trim_mean(values, 0.25) along the last axis; rliable's definition)."""
    array = np.sort(np.asarray(values, dtype=float), axis=-1)
    n = array.shape[-1]
    if n == 0:
        return float("nan")
    cut = int(0.25 * n)
    middle = array[..., cut : n - cut]
    with np.errstate(invalid="ignore"):
        return middle.mean(axis=-1) if array.ndim > 1 else float(middle.mean())


def _percentile(values: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """np.percentile (linear interpolation, as scipy's bootstrap uses), tolerating +-inf: an
    interpolation between two equal infinities is that infinity, not nan."""
    finite = np.nan_to_num(
        values, nan=np.nan, posinf=np.finfo(float).max / 4, neginf=-np.finfo(float).max / 4
    )
    found = np.percentile(finite, q)
    found = np.where(found >= np.finfo(float).max / 8, np.inf, found)
    return np.where(found <= -np.finfo(float).max / 8, -np.inf, found)


def stratified_bootstrap(
    strata: Sequence[Sequence[float]],
    statistic: Callable[..., np.ndarray],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> np.ndarray:
    """`statistic(*resampled_strata)` for `resamples` bootstrap replicates: each stratum is
    resampled with replacement on its own (its size kept). `statistic` takes one 2-D array per
    stratum, (replicates, runs), and returns one value per replicate."""
    arrays = [np.asarray(stratum, dtype=float) for stratum in strata]
    if any(array.size == 0 for array in arrays):
        raise ValueError("every stratum needs at least one run")
    rng = np.random.default_rng(seed)
    per_replicate = max(sum(array.size for array in arrays), 1)
    chunk = max(1, _CHUNK_VALUES // per_replicate)
    found = []
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        drawn = [array[rng.integers(0, array.size, size=(count, array.size))] for array in arrays]
        found.append(np.asarray(statistic(*drawn), dtype=float))
    return np.concatenate(found)


def stratified_bootstrap_ci(
    strata: Sequence[Sequence[float]],
    statistic: Callable[..., np.ndarray],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile interval of `statistic` under the stratified bootstrap (rliable's method)."""
    replicates = stratified_bootstrap(strata, statistic, resamples=resamples, seed=seed)
    alpha = (1 - confidence) / 2
    low, high = _percentile(replicates, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def _pooled_iqm(*strata: np.ndarray) -> np.ndarray:
    return iqm(np.concatenate(strata, axis=-1))


def iqm_ci(
    strata: Sequence[Sequence[float]] | Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(IQM of all runs pooled, CI low, CI high). A flat list of scores is one stratum."""
    strata = _as_strata(strata)
    pooled = np.concatenate([np.asarray(s, dtype=float) for s in strata])
    low, high = stratified_bootstrap_ci(
        strata, _pooled_iqm, resamples=resamples, confidence=confidence, seed=seed
    )
    return iqm(pooled), low, high


def _as_strata(values) -> list[np.ndarray]:
    if len(values) and np.ndim(values[0]) == 0:
        return [np.asarray(values, dtype=float)]
    return [np.asarray(stratum, dtype=float) for stratum in values]


def _pairwise_greater(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per replicate (last axis = runs): mean over all pairs of [x_i > y_j] + 0.5 [x_i == y_j]."""
    greater = (x[..., :, None] > y[..., None, :]).mean(axis=(-2, -1))
    equal = (x[..., :, None] == y[..., None, :]).mean(axis=(-2, -1))
    return greater + 0.5 * equal


def probability_of_improvement(
    x_tasks: Sequence[Sequence[float]] | Sequence[float],
    y_tasks: Sequence[Sequence[float]] | Sequence[float],
) -> float:
    """P(X > Y): a random run of X scores above a random run of Y of the same task (ties 1/2),
    averaged over tasks (rliable). Per task it is MannWhitneyU(x, y) / (n_x n_y)."""
    xs, ys = _as_strata(x_tasks), _as_strata(y_tasks)
    if len(xs) != len(ys):
        raise ValueError("X and Y need the same tasks")
    return float(np.mean([_pairwise_greater(x, y) for x, y in zip(xs, ys)]))


def probability_of_improvement_ci(
    x_tasks,
    y_tasks,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(P(X > Y), CI low, CI high): the runs of X and of Y of every task resampled separately."""
    xs, ys = _as_strata(x_tasks), _as_strata(y_tasks)
    if len(xs) != len(ys):
        raise ValueError("X and Y need the same tasks")
    tasks = len(xs)

    def statistic(*drawn):
        return np.mean(
            [_pairwise_greater(drawn[i], drawn[tasks + i]) for i in range(tasks)], axis=0
        )

    low, high = stratified_bootstrap_ci(
        [*xs, *ys], statistic, resamples=resamples, confidence=confidence, seed=seed
    )
    return probability_of_improvement(xs, ys), low, high


def summary(
    values: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, float | int]:
    """IQM with its stratified-bootstrap interval, mean, median, min, max and n of one metric."""
    array = np.asarray(values, dtype=float)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return {
            "iqm": None,
            "ci_low": None,
            "ci_high": None,
            "mean": None,
            "median": None,
            "min": None,
            "max": None,
            "n": 0,
        }
    center, low, high = iqm_ci([array], resamples=resamples, confidence=confidence, seed=seed)
    with np.errstate(invalid="ignore"):
        return {
            "iqm": center,
            "ci_low": low,
            "ci_high": high,
            "mean": float(array.mean()),
            "median": float(np.median(array)),
            "min": float(array.min()),
            "max": float(array.max()),
            "n": int(array.size),
        }


def performance_profile(values: Sequence[float], thresholds: np.ndarray) -> np.ndarray:
    """The fraction of runs scoring above each threshold (a run-score distribution, rliable)."""
    array = np.asarray(values, dtype=float)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return np.full(len(thresholds), np.nan)
    return (array[None, :] > np.asarray(thresholds, dtype=float)[:, None]).mean(axis=1)
