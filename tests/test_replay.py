import numpy as np
import pytest

from emdqn.replay import ReplayBuffer

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
    for obs, next_obs in zip(batch["obs"], batch["next_obs"]):
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
    truncated_rows = batch["truncated"]
    assert truncated_rows.any() and batch["terminated"].any()
    assert not (batch["truncated"] & batch["terminated"]).any()
    # The truncated transition keeps its real next observation so it can bootstrap.
    assert (batch["next_obs"][truncated_rows] == final_truncated).all()


def test_wrap_around_overwrites_oldest_and_samples_only_valid_transitions():
    capacity = 10
    buffer = played_buffer(37, capacity)
    assert buffer.filled == capacity
    valid = all_valid_slots(buffer)
    # The slot about to be overwritten and those whose history is gone are excluded.
    assert len(valid) == capacity - 1 - (STACK - 1)
    batch = buffer.sample(500)
    for obs, next_obs in zip(batch["obs"], batch["next_obs"]):
        # Frames count up by one inside a stack and from obs to next_obs: nothing stale.
        assert (np.diff(obs[:, 0, 0].astype(int)) == 1).all()
        assert (next_obs[:, 0, 0].astype(int) == obs[:, 0, 0].astype(int) + 1).all()


def test_sampling_is_seeded():
    def draw():
        return played_buffer(20).sample(16)["slots"]

    assert (draw() == draw()).all()


def test_keys_actions_rewards_travel_with_the_transition():
    buffer = new_buffer()
    player = StackPlayer(buffer)
    player.reset()
    for t in range(10):
        player.step(t % 3, reward=float(t))
    batch = buffer.sample(100)
    # The key stored with a transition was the counter of its next frame.
    assert (batch["keys"][:, 0] == batch["next_obs"][:, -1, 0, 0]).all()
    assert (batch["rewards"] == batch["next_obs"][:, -1, 0, 0] - 2).all()
    assert (batch["actions"] == (batch["rewards"].astype(int) % 3)).all()


def test_flat_observations_without_stacking():
    buffer = ReplayBuffer(8, (3,), frame_stack=1, obs_dtype=np.float32)
    buffer.add(np.zeros(3), 0, 1.0, np.ones(3), False, False)
    batch = buffer.sample(4)
    assert batch["obs"].shape == (4, 3) and (batch["next_obs"] == 1).all()


def test_state_round_trip():
    buffer = played_buffer(12)
    copy = new_buffer()
    copy.load_state_dict(buffer.state_dict())
    assert (copy.sample(8)["slots"] == buffer.sample(8)["slots"]).all()


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
