"""The statistics behind the results tables, on synthetic scores with known answers."""

import numpy as np
import pytest

from emdqn.analysis.aggregates import (aggregate_scores, bootstrap_difference_interval, bootstrap_mean_interval,
                              normalize_by_baseline)


def test_an_arm_better_on_every_run_of_every_task_improves_with_probability_one():
    rng = np.random.default_rng(0)
    baseline = rng.uniform(0, 1, size=(5, 3))
    better = baseline + 10.0  # every run beats every baseline run on every task
    result = aggregate_scores({"dqn": baseline, "emdqn": better, "same": baseline.copy()}, baseline="dqn", reps=200)
    assert result["emdqn"]["probability_of_improvement"] == (1.0, 1.0, 1.0)
    value, low, high = result["same"]["probability_of_improvement"]
    assert value == pytest.approx(0.5) and low < 0.5 < high
    assert "probability_of_improvement" not in result["dqn"]


def test_iqm_of_known_scores():
    # Per task the runs are 0..7: the interquartile mean drops the lowest and highest quarter.
    scores = np.tile(np.arange(8.0)[:, None], (1, 4))
    value, low, high = aggregate_scores({"arm": scores}, reps=200)["arm"]["iqm"]
    assert value == pytest.approx(np.mean([2, 3, 4, 5])) and low <= value <= high
    constant = aggregate_scores({"arm": np.full((4, 2), 3.0)}, reps=50)["arm"]["iqm"]
    assert constant == (3.0, 3.0, 3.0)


def test_the_same_scores_give_the_same_intervals_whatever_ran_before():
    # rliable resamples from numpy's global generator: the intervals must not depend on its
    # state, and computing them must leave that state as it was.
    rng = np.random.default_rng(1)
    scores = {"dqn": rng.uniform(0, 1, size=(3, 5)), "emdqn": rng.uniform(0, 1, size=(3, 5))}
    first = aggregate_scores(scores, baseline="dqn", reps=500)
    np.random.seed(123)
    np.random.random(1000)
    state = np.random.get_state()[1].copy()
    assert aggregate_scores(scores, baseline="dqn", reps=500) == first
    assert (np.random.get_state()[1] == state).all()


def test_normalization_and_bootstrap_interval():
    normalized = normalize_by_baseline({"dqn": np.array([[1.0, 4.0], [3.0, 4.0]]), "x": np.array([[4.0, 8.0]])}, "dqn")
    assert normalized["x"].tolist() == [[2.0, 2.0]]
    with pytest.raises(ValueError, match="baseline"):
        normalize_by_baseline({"dqn": np.zeros((2, 1))}, "dqn")
    mean, low, high = bootstrap_mean_interval(np.array([1.0, 2.0, 3.0, 4.0]), reps=500)
    assert mean == 2.5 and 1.0 <= low < 2.5 < high <= 4.0
    assert bootstrap_mean_interval(np.array([7.0])) == (7.0, 7.0, 7.0)


def test_arms_must_share_the_tasks():
    with pytest.raises(ValueError, match="same tasks"):
        aggregate_scores({"a": np.zeros((2, 3)), "b": np.zeros((2, 2))})


def test_difference_interval_excludes_zero_only_for_separated_groups():
    ahead, low, high = bootstrap_difference_interval(np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0, 3.0]))
    assert ahead == 4.0 and 2.0 <= low < 4.0 < high <= 6.0
    tie = bootstrap_difference_interval(np.array([1.0, 5.0, 3.0]), np.array([2.0, 4.0, 3.0]))
    assert tie[0] == 0.0 and tie[1] < 0.0 < tie[2]
    assert bootstrap_difference_interval(np.array([2.0]), np.array([3.0])) == (-1.0, -1.0, -1.0)


def test_a_contrast_of_four_groups_is_the_change_of_a_difference_and_two_groups_give_the_difference():
    from emdqn.analysis.aggregates import bootstrap_contrast_interval

    rng = np.random.default_rng(1)
    a, b, c, d = (rng.normal(mean, 1.0, size=5) for mean in (3.0, 1.0, 0.0, 1.0))
    assert bootstrap_contrast_interval([a, b], [1, -1], 500) == bootstrap_difference_interval(a, b, 500)
    value, low, high = bootstrap_contrast_interval([a, b, c, d], [1, -1, -1, 1], 500)
    assert value == pytest.approx((a.mean() - b.mean()) - (c.mean() - d.mean()))
    assert low < value < high and high - low > 0
