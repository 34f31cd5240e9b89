"""Statistics across seeds and tasks: bootstrap intervals and rliable's aggregates.

    scores = {"dqn": array(runs, tasks), "emdqn": array(runs, tasks)}
    aggregate_scores(scores, baseline="dqn")
    # {"emdqn": {"iqm": (value, low, high), "probability_of_improvement": (value, low, high)}, "dqn": {...}}
    score_distribution(human_normalized_scores)    # median, IQM, mean, optimality gap (HNS across games)

Intervals are 95 % percentile intervals of a stratified bootstrap (runs resampled within
each task), as in Agarwal et al. (2021), computed with their ``rliable`` package (the
``analysis`` extra: ``pip install -e ".[analysis]"``). The probability of improvement of X
over Y is P(X > Y) for a random run of each on the same task (Mann-Whitney U / runs²),
averaged over tasks; above 0.5 with its interval above 0.5 is a reliable improvement.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np

Interval = tuple[float, float, float]  # (estimate, low, high)


def bootstrap_mean_interval(values: np.ndarray, reps: int = 2000, seed: int = 0,
                            rng: np.random.Generator | None = None) -> Interval:
    """The mean over the first axis (seeds) with a 95 % percentile-bootstrap interval, per
    remaining entry when ``values`` is 2-D (then each of the three is an array). ``rng``
    (else one seeded with ``seed``) draws the resamples."""
    values = np.asarray(values, dtype=np.float64)
    mean = values.mean(axis=0)
    if len(values) < 2:
        return mean, mean, mean
    rng = rng if rng is not None else np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(reps, len(values)))
    means = values[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return mean, low, high


def bootstrap_difference_interval(values: np.ndarray, baseline: np.ndarray, reps: int = 2000,
                                  seed: int = 0) -> Interval:
    """mean(values) - mean(baseline) with a 95 % percentile-bootstrap interval; the runs of
    each side are resampled on their own (two independent groups of seeds)."""
    return bootstrap_contrast_interval([values, baseline], [1.0, -1.0], reps, seed)


def bootstrap_contrast_interval(groups: Sequence[np.ndarray], weights: Sequence[float], reps: int = 2000,
                                seed: int = 0) -> Interval:
    """sum_i weights[i] * mean(groups[i]) with a 95 % percentile-bootstrap interval, each
    group's runs resampled on their own: with weights (1, -1, -1, 1), how much a difference
    between two arms changes from one setting to another."""
    groups = [np.asarray(group, dtype=np.float64) for group in groups]
    value = sum(weight * group.mean() for group, weight in zip(groups, weights))
    rng = np.random.default_rng(seed)
    resampled = sum(weight * group[rng.integers(0, len(group), size=(reps, len(group)))].mean(axis=1)
                    for group, weight in zip(groups, weights))
    low, high = np.percentile(resampled, [2.5, 97.5])
    return float(value), float(low), float(high)


def _rliable():
    try:
        from rliable import library, metrics
    except ImportError as error:  # pragma: no cover - the analysis extra is part of dev
        raise ImportError("aggregates across tasks need rliable: pip install -e \".[analysis]\"") from error
    return library, metrics


def aggregate_scores(scores: Mapping[str, np.ndarray], baseline: str | None = None, reps: int = 2000,
                     seed: int = 0) -> dict[str, dict[str, Interval]]:
    """IQM of each arm's (runs, tasks) scores, and its probability of improvement over ``baseline``."""
    library, metrics = _rliable()
    scores = {name: np.asarray(value, dtype=np.float64) for name, value in scores.items()}
    tasks = {value.shape[1] for value in scores.values()}
    if len(tasks) != 1:
        raise ValueError(f"every arm needs scores on the same tasks; got task counts {sorted(tasks)}")
    result: dict[str, dict[str, Interval]] = {name: {} for name in scores}
    def interval_estimates(score_dict: dict, func) -> dict[str, Interval]:
        return {name: intervals[0] for name, intervals in _interval_estimates(library, score_dict, func, reps,
                                                                              seed).items()}

    iqm = lambda matrix: np.array([metrics.aggregate_iqm(matrix)])  # noqa: E731
    for name, interval in interval_estimates(scores, iqm).items():
        result[name]["iqm"] = interval
    if baseline is not None:
        if baseline not in scores:
            raise ValueError(f"baseline {baseline!r} is not one of the arms {sorted(scores)}")
        pairs = {name: (scores[name], scores[baseline]) for name in scores if name != baseline}
        if pairs:
            for name, interval in interval_estimates(pairs, metrics.probability_of_improvement).items():
                result[name]["probability_of_improvement"] = interval
    return result


def _interval_estimates(library, score_dict: dict, func, reps: int, seed: int) -> dict[str, tuple[Interval, ...]]:
    # rliable's StratifiedBootstrap draws its resamples from numpy's global generator, not
    # from the random_state it is given: seed the global one for the call, then put it back,
    # so that the same scores give the same intervals whatever ran before in the process.
    global_state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            # arch (rliable's bootstrap) deprecates the RandomState argument.
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            estimates, intervals = library.get_interval_estimates(score_dict, func, reps=reps,
                                                                  random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(global_state)
    return {name: tuple((float(value), float(intervals[name][0][i]), float(intervals[name][1][i]))
                        for i, value in enumerate(np.ravel(estimates[name])))
            for name in score_dict}


# The four aggregates of Agarwal et al. (2021) over human-normalized scores, in their order.
DISTRIBUTION_AGGREGATES = ("median", "iqm", "mean", "optimality_gap")


def score_distribution(scores: Mapping[str, np.ndarray], reps: int = 2000,
                       seed: int = 0) -> dict[str, dict[str, Interval]]:
    """Median, IQM, mean and optimality gap (1 - score, capped at 1) of each arm's (runs, tasks)
    normalized scores, with 95 % stratified-bootstrap intervals."""
    library, metrics = _rliable()
    scores = {name: np.asarray(value, dtype=np.float64) for name, value in scores.items()}
    aggregates = lambda matrix: np.array([metrics.aggregate_median(matrix), metrics.aggregate_iqm(matrix),  # noqa: E731
                                          metrics.aggregate_mean(matrix), metrics.aggregate_optimality_gap(matrix)])
    return {name: dict(zip(DISTRIBUTION_AGGREGATES, intervals))
            for name, intervals in _interval_estimates(library, scores, aggregates, reps, seed).items()}


def normalize_by_baseline(scores: Mapping[str, np.ndarray], baseline: str) -> dict[str, np.ndarray]:
    """Each task's scores divided by the baseline's mean score on that task."""
    reference = np.asarray(scores[baseline], dtype=np.float64).mean(axis=0)
    if (reference <= 0).any():
        raise ValueError(f"the baseline {baseline!r} has a mean score <= 0 on some task: cannot normalize by it")
    return {name: np.asarray(value, dtype=np.float64) / reference for name, value in scores.items()}


def format_interval(interval: Interval, digits: int = 2) -> str:
    value, low, high = interval
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
