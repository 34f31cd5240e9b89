import numpy as np
import pytest

from emdqn.agent.memory import EpisodicMemory
from emdqn.agent.memory_index import hash_points, unique_rows

OBS_SHAPE = (4, 84, 84)


def random_obs(rng, n):
    return rng.integers(0, 256, (n, *OBS_SHAPE), dtype=np.uint8)


def random_keys(rng, n, dim=4):
    return rng.normal(0, 100, (n, dim)).astype(np.float32)


def test_same_observation_same_key_whatever_the_batch():
    memory = EpisodicMemory(3, OBS_SHAPE)
    obs = random_obs(np.random.default_rng(0), 33)
    together = memory.project(obs)
    alone = np.concatenate([memory.project(obs[i:i + 1]) for i in range(len(obs))])
    shuffled = memory.project(obs[::-1])[::-1]
    assert together.dtype == np.float32 and together.shape == (33, 4)
    assert (together == alone).all() and (together == shuffled).all()


def test_single_exposure_is_recalled_exactly():
    rng = np.random.default_rng(1)
    memory = EpisodicMemory(4, OBS_SHAPE)
    obs = random_obs(rng, 50)
    keys = memory.project(obs)
    actions = rng.integers(0, 4, 50)
    returns = rng.normal(size=50)
    memory.write(keys, actions, returns)
    values, found = memory.lookup(memory.project(obs), actions)
    assert found.all()
    np.testing.assert_allclose(values, returns.astype(np.float32))


def test_miss_returns_zero_and_false():
    rng = np.random.default_rng(2)
    memory = EpisodicMemory(2, (3,), key_dim=3)
    values, found = memory.lookup(random_keys(rng, 5, 3), np.zeros(5, dtype=int))
    assert not found.any() and (values == 0).all()
    memory.write(random_keys(rng, 5, 3), np.zeros(5, dtype=int), np.ones(5))
    values, found = memory.lookup(random_keys(rng, 5, 3), np.zeros(5, dtype=int))
    assert not found.any() and (values == 0).all()


def test_partial_cue_retrieves_nearest_in_knn_mode():
    rng = np.random.default_rng(3)
    memory = EpisodicMemory(2, OBS_SHAPE, match="knn", k=1)
    obs = random_obs(rng, 20)
    actions = np.zeros(20, dtype=int)
    returns = np.arange(20, dtype=float)
    memory.write(memory.project(obs), actions, returns)
    # A partial cue: the same screens with a patch of the oldest frame occluded.
    cue = obs.copy()
    cue[:, 0, 40:46, 40:46] = 0
    values, found = memory.lookup(memory.project(cue), actions)
    assert found.all()
    np.testing.assert_allclose(values, returns)
    # Exact matching does not accept the perturbed cue.
    exact = EpisodicMemory(2, OBS_SHAPE)
    exact.write(exact.project(obs), actions, returns)
    assert not exact.lookup(exact.project(cue), actions)[1].any()


def test_knn_averages_k_nearest_of_the_same_action_only():
    memory = EpisodicMemory(2, (2,), key_dim=2, match="knn", k=2)
    keys = np.array([[0, 0], [1, 0], [10, 0], [0.5, 0]], dtype=np.float32)
    memory.write(keys, np.array([0, 0, 0, 1]), np.array([1.0, 3.0, 100.0, -50.0]))
    values, found = memory.lookup(np.array([[0.4, 0]], dtype=np.float32), np.array([0]))
    assert found.all() and values[0] == pytest.approx(2.0)
    values, found = memory.lookup(np.array([[0.4, 0]], dtype=np.float32), np.array([1]))
    assert found.all() and values[0] == pytest.approx(-50.0)  # fewer than k stored: mean of what there is


def test_max_update_and_no_duplicate_keys():
    memory = EpisodicMemory(2, (4,), key_dim=4)
    key = np.array([[1, 2, 3, 4]], dtype=np.float32)
    action = np.array([1])
    for value in (5.0, 3.0, 8.0, 7.0):
        memory.write(key, action, np.array([value]))
    assert len(memory) == 1
    values, found = memory.lookup(key, action)
    assert found.all() and values[0] == 8.0
    # Duplicates inside one write collapse to their maximum.
    memory.write(np.repeat(key, 3, axis=0), np.array([0, 0, 0]), np.array([1.0, 9.0, 2.0]))
    assert len(memory) == 2
    assert memory.lookup(key, np.array([0]))[0][0] == 9.0
    keys, actions, _, _, _ = memory.entries()
    assert len(np.unique(np.column_stack([keys, actions]), axis=0)) == len(keys)


def test_written_entry_is_visible_immediately_over_many_writes():
    rng = np.random.default_rng(4)
    memory = EpisodicMemory(3, (4,), key_dim=4, merge_ratio=2.0)
    all_keys, all_actions, all_values = [], [], []
    for _ in range(40):
        keys = random_keys(rng, int(rng.integers(1, 60)))
        actions = rng.integers(0, 3, len(keys))
        values = rng.normal(size=len(keys))
        memory.write(keys, actions, values)
        found_values, found = memory.lookup(keys, actions)
        assert found.all()
        all_keys.append(keys), all_actions.append(actions), all_values.append(values)
    keys, actions, values = map(np.concatenate, (all_keys, all_actions, all_values))
    found_values, found = memory.lookup(keys, actions)
    assert found.all() and len(memory) == len(keys)
    np.testing.assert_allclose(found_values, values.astype(np.float32))
    assert len(memory.levels) < 10  # levels were merged, not piled up


def test_per_action_separation():
    memory = EpisodicMemory(3, (4,), key_dim=4)
    key = np.ones((1, 4), dtype=np.float32)
    memory.write(key, np.array([0]), np.array([1.0]))
    memory.write(key, np.array([2]), np.array([-3.0]))
    assert memory.lookup(key, np.array([0]))[0][0] == 1.0
    assert memory.lookup(key, np.array([2]))[0][0] == -3.0
    assert not memory.lookup(key, np.array([1]))[1][0]


def test_returns_are_computed_backwards_with_gamma():
    memory = EpisodicMemory(2, (1,), key_dim=1)
    keys = np.arange(4, dtype=np.float32).reshape(4, 1)
    returns = memory.add_episode(keys, np.zeros(4, dtype=int), np.array([0.0, 1.0, 0.0, 2.0]), gamma=0.5)
    np.testing.assert_allclose(returns, [0.5 + 0.25, 1.0 + 0.5, 1.0, 2.0])
    values, found = memory.lookup(keys, np.zeros(4, dtype=int))
    assert found.all()
    np.testing.assert_allclose(values, [0.75, 1.5, 1.0, 2.0])


def test_unique_rows_gives_numpys_rows_and_inverse():
    rng = np.random.default_rng(8)
    for size in (1, 2, 9, 200):
        pool = rng.integers(-3, 4, (7, 5)) * 0.37
        points = pool[rng.integers(0, len(pool), size)]
        rows, inverse = unique_rows(points)
        expected_rows, expected_inverse = np.unique(points, axis=0, return_inverse=True)
        assert rows.tobytes() == expected_rows.tobytes()
        assert (inverse == expected_inverse.reshape(-1)).all()


def test_the_key_hash_is_stable():
    # The order of entries inside a level (and so which of two equally old entries is
    # evicted first) follows this hash: a change would change runs and resumed runs.
    points = np.array([[0.0, 1.5, -2.25, 3.0, 0.0], [1e-3, 7.0, 0.5, -0.0, 2e12]])
    assert hash_points(points).tolist() == [1336254466, 347217921]


def test_capacity_evicts_least_recently_used_and_keeps_max_returns():
    capacity = 50
    rng = np.random.default_rng(5)
    memory = EpisodicMemory(2, (4,), key_dim=4, capacity=capacity, evict_fraction=0.02)
    old_keys = random_keys(rng, capacity)
    actions = np.zeros(capacity, dtype=int)
    memory.write(old_keys, actions, np.zeros(capacity))
    memory.write(old_keys[:10], actions[:10], np.full(10, 5.0))   # max-update, and touched last
    memory.lookup(old_keys[10:20], actions[10:20])                # touched by a read
    new_keys = random_keys(rng, 25)
    memory.write(new_keys, np.zeros(25, dtype=int), np.full(25, 2.0))
    assert memory.counts[0] == capacity and len(memory) == capacity
    # 25 of the 30 least recently used (old keys 20..49, never touched again) went;
    # the touched ones stayed, with their max.
    values, found = memory.lookup(old_keys[:10], actions[:10])
    assert found.all() and (values == 5.0).all()
    assert memory.lookup(old_keys[10:20], actions[10:20])[1].all()
    assert memory.lookup(old_keys[20:], actions[20:])[1].sum() == 5
    values, found = memory.lookup(new_keys, np.zeros(25, dtype=int))
    assert found.all() and (values == 2.0).all()
    # Keeps working far past capacity.
    for _ in range(20):
        memory.write(random_keys(rng, 30), np.zeros(30, dtype=int), np.ones(30))
    assert memory.counts[0] <= capacity
    keys, _, values, _, _ = memory.entries()
    assert len(keys) == len(memory)
    assert memory.lookup(keys, np.zeros(len(keys), dtype=int))[1].all()


def test_capacity_is_per_action():
    rng = np.random.default_rng(6)
    memory = EpisodicMemory(2, (4,), key_dim=4, capacity=10)
    memory.write(random_keys(rng, 10), np.zeros(10, dtype=int), np.ones(10))
    memory.write(random_keys(rng, 10), np.ones(10, dtype=int), np.ones(10))
    assert list(memory.counts) == [10, 10]


def test_state_dict_round_trip():
    rng = np.random.default_rng(7)
    memory = EpisodicMemory(3, (4,), key_dim=4)
    keys = random_keys(rng, 30)
    actions = rng.integers(0, 3, 30)
    memory.write(keys, actions, np.arange(30.0))
    copy = EpisodicMemory(3, (4,), key_dim=4)
    copy.load_state_dict(memory.state_dict())
    assert len(copy) == 30
    np.testing.assert_array_equal(copy.lookup(keys, actions)[0], memory.lookup(keys, actions)[0])
    with pytest.raises(ValueError, match="capacity"):
        EpisodicMemory(3, (4,), key_dim=4, capacity=5).load_state_dict(memory.state_dict())


def test_trees_do_not_alias_mutable_arrays():
    """Value updates in place after a build must leave every indexed key where it was."""
    rng = np.random.default_rng(8)
    memory = EpisodicMemory(1, (4,), key_dim=4)
    keys = random_keys(rng, 100)
    memory.write(keys, np.zeros(100, dtype=int), np.zeros(100))
    indexed_before = [level.tree.data.copy() for level in memory.levels]
    memory.write(keys, np.zeros(100, dtype=int), np.ones(100))  # max-updates only
    assert [level.tree.data for level in memory.levels][0].tolist() == indexed_before[0].tolist()
    values, found = memory.lookup(keys, np.zeros(100, dtype=int))
    assert found.all() and (values == 1.0).all()


@pytest.mark.parametrize("call, message", [
    (lambda m: m.lookup(np.zeros((2, 3), np.float32), np.zeros(2, int)), r"keys must have shape \(B, 4\)"),
    (lambda m: m.lookup(np.zeros((2, 4), np.float32), np.zeros(3, int)), r"actions must have shape \(2,\)"),
    (lambda m: m.lookup(np.zeros((1, 4), np.float32), np.array([5])), r"actions must be integers in \[0, 3\)"),
    (lambda m: m.lookup(np.zeros((1, 4), np.float32), np.array([-1])), r"actions must be integers"),
    (lambda m: m.write(np.zeros((1, 4), np.float32), np.array([0]), np.array([np.nan])), "returns must be finite"),
    (lambda m: m.write(np.zeros((1, 4), np.float32), np.array([0]), np.zeros(2)), r"returns must have shape"),
    (lambda m: m.project(np.zeros((2, 5), np.uint8)), r"obs must have shape"),
    (lambda m: m.add_episode(np.zeros((1, 4), np.float32), np.array([0]), np.array([1.0]), 1.5), "gamma"),
])
def test_bad_arguments_name_the_argument(call, message):
    memory = EpisodicMemory(3, (4,), key_dim=4)
    with pytest.raises(ValueError, match=message):
        call(memory)


@pytest.mark.parametrize("kwargs, message", [
    ({"key_dim": 0}, "key_dim"), ({"capacity": 0}, "capacity"), ({"match": "fuzzy"}, "match"),
    ({"k": 0}, "k must be"), ({"num_actions": 0}, "num_actions"),
])
def test_bad_constructor_arguments(kwargs, message):
    arguments = {"num_actions": 3, "obs_shape": (4,)} | kwargs
    with pytest.raises(ValueError, match=message):
        EpisodicMemory(**arguments)


def test_rows_of_one_write_age_in_order_for_the_lru():
    """Rows written in one call count as written one after another: the first are evicted first."""
    memory = EpisodicMemory(1, (3,), key_dim=3, capacity=4, evict_fraction=0.25)
    keys = np.arange(18, dtype=np.float32).reshape(6, 3)
    memory.write(keys, np.zeros(6, np.int64), np.arange(6, dtype=np.float64))
    kept_keys, _, values, _, _ = memory.entries()
    assert sorted(values.tolist()) == [2.0, 3.0, 4.0, 5.0]


def test_an_episode_is_written_backwards_as_the_original_walks_it():
    memory = EpisodicMemory(1, (3,), key_dim=3, capacity=3, evict_fraction=0.25)
    keys = np.arange(15, dtype=np.float32).reshape(5, 3)
    memory.add_episode(keys, np.zeros(5, np.int64), np.zeros(5), gamma=0.9)
    kept_keys, _, _, _, _ = memory.entries()
    # The last steps are written first, so they are the least recently used.
    assert sorted(kept_keys[:, 0].tolist()) == [0.0, 3.0, 6.0]


def test_visits_count_every_write_of_an_entry_and_lookup_reports_them():
    memory = EpisodicMemory(2, (3,), key_dim=3)
    keys = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=np.float32)
    memory.write(keys, np.array([0, 0, 0]), np.array([1.0, 2.0, 3.0]))   # key 0 visited twice
    memory.write(keys[1:2], np.array([0]), np.array([0.5]))               # key 1 visited twice
    memory.write(keys[1:2], np.array([1]), np.array([0.5]))               # another action: a new entry
    values, found, visits = memory.lookup(np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]], np.float32),
                                          np.array([0, 0, 1, 0]), with_visits=True)
    assert values.tolist() == [3.0, 2.0, 0.5, 0.0]
    assert visits.tolist() == [2, 2, 1, 0] and found.tolist() == [True, True, True, False]
    restored = EpisodicMemory(2, (3,), key_dim=3)
    restored.load_state_dict(memory.state_dict())
    assert restored.lookup(keys[:1], np.array([0]), with_visits=True)[2].tolist() == [2]
