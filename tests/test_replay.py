import numpy as np
import pytest

from emdqn.agent.replay import ReplayBuffer

STACK = 4


def frame(value):
    return np.full((2, 2), value, dtype=np.uint8)


class StackPlayer:
    """Feeds a buffer like the env loop does: stacks repeat the first frame at a reset."""

    def __init__(self, buffer):
        self.buffer = buffer
        self.counter = 0
        self.stack = None

    def reset(self):
        self.counter += 1
        self.stack = [frame(self.counter)] * STACK
        return np.stack(self.stack)

    def step(self, action, terminated=False, truncated=False, reward=1.0):
        obs = np.stack(self.stack)
        self.counter += 1
        self.stack = self.stack[1:] + [frame(self.counter)]
        next_obs = np.stack(self.stack)
        self.buffer.add(obs, action, reward, next_obs, terminated, truncated, key=np.full(3, self.counter, np.float32))
        return obs, next_obs


def new_buffer(capacity=64):
    return ReplayBuffer(capacity, (STACK, 2, 2), frame_stack=STACK, key_dim=3, seed=0)


def played_buffer(steps, capacity=64):
    """A buffer after one episode of ``steps`` transitions with actions 0, 1, 2, 0, ..."""
    buffer = new_buffer(capacity)
    player = StackPlayer(buffer)
    player.reset()
    for t in range(steps):
        player.step(t % 3)
    return buffer


def all_valid_slots(buffer):
    return np.flatnonzero(buffer._valid_mask())


def test_stacks_are_rebuilt_exactly_within_and_at_the_start_of_episodes():
    buffer = new_buffer()
    player = StackPlayer(buffer)
    expected = {}
    for episode_length in (6, 2, 5):
        player.reset()
        for t in range(episode_length):
            obs, next_obs = player.step(t % 3, terminated=(t == episode_length - 1))
            expected[buffer.num_transitions - 1] = (obs, next_obs)
    valid = all_valid_slots(buffer)
    assert len(valid) == 13
    batch = buffer.sample(256)
    for obs, next_obs in zip(batch.obs, batch.next_obs):
        assert any((obs == o).all() and (next_obs == n).all() for o, n in expected.values())


def test_stack_never_crosses_an_episode_boundary():
    buffer = new_buffer()
    player = StackPlayer(buffer)
    player.reset()
    player.step(0)
    player.step(0, terminated=True)
    first_obs_next_episode = player.reset()
    player.step(1)
    slots = all_valid_slots(buffer)
    start = slots[-1]
    assert buffer.episode_pos[start] == 0
    rebuilt = buffer.stacks(np.array([start]))[0]
    assert (rebuilt == first_obs_next_episode).all()


def test_terminated_vs_truncated_flags_and_final_observation():
    buffer = new_buffer()
    player = StackPlayer(buffer)
    player.reset()
    _, final_truncated = player.step(0, truncated=True)
    player.reset()
    player.step(1, terminated=True)
    batch = buffer.sample(64)
    truncated_rows = batch.truncated
    assert truncated_rows.any() and batch.terminated.any()
    assert not (batch.truncated & batch.terminated).any()
    # The truncated transition keeps its real next observation so it can bootstrap.
    assert (batch.next_obs[truncated_rows] == final_truncated).all()


def test_wrap_around_overwrites_oldest_and_samples_only_valid_transitions():
    capacity = 10
    buffer = played_buffer(37, capacity)
    assert buffer.filled == capacity
    valid = all_valid_slots(buffer)
    # The slot about to be overwritten and those whose history is gone are excluded.
    assert len(valid) == capacity - 1 - (STACK - 1)
    batch = buffer.sample(500)
    for obs, next_obs in zip(batch.obs, batch.next_obs):
        # Frames count up by one inside a stack and from obs to next_obs: nothing stale.
        assert (np.diff(obs[:, 0, 0].astype(int)) == 1).all()
        assert (next_obs[:, 0, 0].astype(int) == obs[:, 0, 0].astype(int) + 1).all()


def test_sampling_is_seeded():
    def draw():
        return played_buffer(20).sample(16).slots

    assert (draw() == draw()).all()


def test_keys_actions_rewards_travel_with_the_transition():
    buffer = new_buffer()
    player = StackPlayer(buffer)
    player.reset()
    for t in range(10):
        player.step(t % 3, reward=float(t))
    batch = buffer.sample(100)
    # The key stored with a transition was the counter of its next frame.
    assert (batch.keys[:, 0] == batch.next_obs[:, -1, 0, 0]).all()
    assert (batch.rewards == batch.next_obs[:, -1, 0, 0] - 2).all()
    assert (batch.actions == (batch.rewards.astype(int) % 3)).all()


def test_flat_observations_without_stacking():
    buffer = ReplayBuffer(8, (3,), frame_stack=1, obs_dtype=np.float32)
    buffer.add(np.zeros(3), 0, 1.0, np.ones(3), False, False)
    batch = buffer.sample(4)
    assert batch.obs.shape == (4, 3) and (batch.next_obs == 1).all()


def test_state_round_trip():
    buffer = played_buffer(12)
    copy = new_buffer()
    copy.load_state_dict(buffer.state_dict())
    assert (copy.sample(8).slots == buffer.sample(8).slots).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(1, (4, 2, 2), frame_stack=4)
    with pytest.raises(ValueError, match="empty"):
        new_buffer().sample(4)
    with pytest.raises(ValueError, match="key is required"):
        new_buffer().add(np.zeros((4, 2, 2)), 0, 0.0, np.zeros((4, 2, 2)), False, False)


def test_atari_bytes_per_transition_is_about_one_frame():
    buffer = ReplayBuffer(1000, (4, 84, 84), frame_stack=4, key_dim=4)
    assert buffer.nbytes() / buffer.capacity <= 7_300


def flat_buffer(rewards, ends, capacity=64):
    """One-number observations 0, 1, 2, ...; ``ends[t]`` is None, "terminated" or "truncated"."""
    buffer = ReplayBuffer(capacity, (1,), frame_stack=1, obs_dtype=np.float32, seed=0)
    obs = 0.0
    for reward, end in zip(rewards, ends):
        buffer.add(np.array([obs]), 0, reward, np.array([obs + 1]), end == "terminated", end == "truncated")
        obs += 1
    return buffer


def sample_rows(buffer, n_step, gamma=0.5):
    """Every valid slot's n-step transition, keyed by the observation it starts from."""
    slots = all_valid_slots(buffer)
    buffer.rng = np.random.default_rng(0)
    batch = buffer.sample(4096, n_step=n_step, gamma=gamma)
    rows = {}
    for index in range(len(batch.slots)):
        rows[float(batch.obs[index, 0])] = (float(batch.rewards[index]), float(batch.next_obs[index, 0]),
                                               bool(batch.terminated[index]), float(batch.discounts[index]))
    assert len(rows) == len(slots)
    return rows


def test_n_step_targets_by_hand_across_a_termination_and_a_truncation():
    # Episode A: observations 0..3, terminated after the third reward (next obs 3).
    # Episode B: observations 4..6, truncated after its second reward (next obs 6).
    # Episode C: observation 7 onwards, still in progress after two rewards.
    rewards = [1, 2, 4, 8, 16, 32, 64]
    ends = [None, None, "terminated", None, "truncated", None, None]
    buffer = ReplayBuffer(64, (1,), frame_stack=1, obs_dtype=np.float32, seed=0)
    observations = [0, 1, 2, 4, 5, 7, 8]  # each episode starts at a new observation
    for obs, reward, end in zip(observations, rewards, ends):
        buffer.add(np.array([obs], np.float32), 0, reward, np.array([obs + 1], np.float32),
                   end == "terminated", end == "truncated")
    rows = sample_rows(buffer, n_step=3, gamma=0.5)
    # (n-step reward sum, next observation, terminated, gamma^k)
    assert rows[0.0] == (1 + 0.5 * 2 + 0.25 * 4, 3.0, True, 0.125)
    assert rows[1.0] == (2 + 0.5 * 4, 3.0, True, 0.25)       # the termination cuts the window
    assert rows[2.0] == (4.0, 3.0, True, 0.5)
    assert rows[4.0] == (8 + 0.5 * 16, 6.0, False, 0.25)     # truncation: bootstrap from obs 6
    assert rows[5.0] == (16.0, 6.0, False, 0.5)
    assert rows[7.0] == (32 + 0.5 * 64, 9.0, False, 0.25)    # the episode in progress: what exists
    assert rows[8.0] == (64.0, 9.0, False, 0.5)
    one_step = sample_rows(buffer, n_step=1, gamma=0.5)
    assert one_step[0.0] == (1.0, 1.0, False, 0.5) and one_step[2.0] == (4.0, 3.0, True, 0.5)


def test_n_step_window_never_reads_overwritten_slots():
    buffer = ReplayBuffer(8, (1,), frame_stack=1, obs_dtype=np.float32, seed=0)
    for obs in range(20):  # one long episode wrapping the buffer twice
        buffer.add(np.array([obs], np.float32), 0, 1.0, np.array([obs + 1], np.float32), False, False)
    rows = sample_rows(buffer, n_step=3, gamma=1.0)
    for start, (reward, next_obs, terminated, discount) in rows.items():
        steps = int(next_obs - start)
        assert 1 <= steps <= 3 and reward == steps and not terminated and discount == 1.0
    assert max(rows) == 19.0 and rows[19.0][1] == 20.0
