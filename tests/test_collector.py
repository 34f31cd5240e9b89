"""The RL loop without Lightning, and the one cadence rule everything periodic follows."""

import numpy as np
import torch
from torch import nn

from emdqn.agent.cadence import Cadence, crossings
from emdqn.agent.collector import Collector
from tests.conftest import compose_config

DOWN = 1  # FrozenLake's action: from the start of the 4x4 map, down runs 0 -> 4 -> 8 -> 12, a hole


class AlwaysDown(nn.Module):
    """A fixed policy: Q is highest for DOWN in every state."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, obs):
        q = torch.zeros(len(obs), 4)
        q[:, DOWN] = 1.0
        return q


def greedy_collector(**overrides):
    cfg = compose_config(["env=frozenlake", "model=mlp", "env.kwargs.map_name=4x4", "agent.exploration.schedule=[[0,0.0]]",
                          "agent.batch_size=4", "agent.learning_starts=4", "agent.train_freq=2", "agent.total_steps=12",
                          "buffer.capacity=64", "memory.capacity=64", *[f"{k}={v}" for k, v in overrides.items()]])
    collector = Collector.from_config(cfg)
    collector.set_policy(AlwaysDown())
    return collector


def test_a_fixed_policy_gives_the_expected_replay_and_memory():
    collector = greedy_collector()
    for _ in range(6):  # two episodes of three steps, each ending in the hole (terminated, reward 0)
        collector.play_step()
    stream = collector.replay.streams[0]
    assert collector.env_steps == 6 and stream.num_transitions == 6
    assert stream.actions[:8].tolist() == [DOWN, DOWN, DOWN, 0, DOWN, DOWN, DOWN, 0]  # 4 slots per episode
    assert stream.terminated[:8].tolist() == [False, False, True, False, False, False, True, False]
    starts = [int(np.argmax(stream.frames[slot])) for slot in range(8)]
    assert starts == [0, 4, 8, 12, 0, 4, 8, 12]  # one-hot states: start, down, down, the hole
    keys, actions, values, _, visits = collector.memory_feed.memory.entries()
    assert len(keys) == 3 and actions.tolist() == [DOWN] * 3 and values.tolist() == [0.0] * 3
    assert visits.tolist() == [2, 2, 2]  # each state-action visited once per episode
    assert not any(collector.memory_feed.episode_keys)


def test_batches_come_once_per_train_freq_from_learning_starts_and_carry_the_memory_target():
    collector = greedy_collector()
    steps = []
    for batch in collector.batches():
        steps.append(batch.env_step)
        assert batch.obs.shape == (4, 16) and batch.memory_found.dtype == torch.bool
    assert steps == [4, 6, 8, 10, 12] and collector.env_steps == 12
    assert collector.interval_metrics()["memory/revisit_share"] > 0


def test_a_truncated_episode_is_not_written_to_the_memory():
    collector = greedy_collector(**{"+env.kwargs.max_episode_steps": 2})
    for _ in range(4):
        collector.play_step()
    assert collector.memory_feed.size() == 0  # both episodes were cut off after two steps


def test_crossings_and_cadence():
    assert crossings(0, 10, 4) == 2 and crossings(3, 4, 4) == 1 and crossings(4, 7, 4) == 0
    assert crossings(0, 100, 0) == 0
    cadence = Cadence(4)
    assert [cadence.due(step) for step in (1, 3, 4, 5, 9, 9, 12)] == [False, False, True, False, True, False, True]
    never = Cadence(0)
    assert not any(never.due(step) for step in range(0, 100, 7))
    resumed = Cadence(4, last=9)
    assert resumed.due(11) is False and resumed.due(12) is True
