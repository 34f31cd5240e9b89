"""The memory's seat in the loop: what the collector tells the episodic memory, and asks it.

    feed = EpisodicFeed(memory, num_envs, gamma)   # memory=kdtree
    feed = NoMemory(num_envs)                       # memory=none: the same calls, nothing kept
    keys = feed.keys(obs)                           # per env: the key stored with the transition
    feed.observe(keys, actions, rewards, terminated, truncated)   # after every env step
    values, found = feed.values(keys, actions)      # H(s, a) and the hit mask of a replay batch

:class:`EpisodicFeed` owns the key projection (through the memory), the episode in progress
of every env, the writes of finished episodes, the lookups with their hit statistics, and
its own state. An episode that *terminated* is written to the memory walking backwards; one
that was cut off (a time limit, a restart) is dropped unwritten: its returns lack the rewards
after the cut, and the max-update would keep a wrong value forever.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from emdqn.agent.memory import EpisodicMemory


class EpisodicFeed:
    """Episodes in progress, memory writes and lookups for ``num_envs`` envs."""

    def __init__(self, memory: EpisodicMemory, num_envs: int, gamma: float, hit_rate_window: int = 100):
        self.memory, self.num_envs, self.gamma = memory, num_envs, gamma
        self.key_dim = memory.key_dim
        self.episode_keys: list[list[np.ndarray]] = [[] for _ in range(num_envs)]
        self.episode_actions: list[list[int]] = [[] for _ in range(num_envs)]
        self.episode_rewards: list[list[float]] = [[] for _ in range(num_envs)]
        # Per looked-up batch: (hits, batch size, sum of H over hits, hits revisited more than once).
        self.hit_window: deque[tuple[int, int, float, int]] = deque(maxlen=hit_rate_window)

    def keys(self, obs: np.ndarray) -> np.ndarray:
        """The memory key of each env's observation."""
        return self.memory.project(obs)

    def observe(self, keys: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminated: np.ndarray,
                truncated: np.ndarray) -> None:
        """One env step of every env: extend its episode; write it if it terminated, drop it if cut off."""
        for index in range(self.num_envs):
            self.episode_keys[index].append(keys[index])
            self.episode_actions[index].append(int(actions[index]))
            self.episode_rewards[index].append(float(rewards[index]))
            if terminated[index]:
                self._write_episode(index)
            elif truncated[index]:
                self._drop_episode(index)

    def _write_episode(self, index: int) -> None:
        self.memory.add_episode(np.stack(self.episode_keys[index]),
                                np.asarray(self.episode_actions[index], dtype=np.int64),
                                np.asarray(self.episode_rewards[index]), self.gamma)
        self._drop_episode(index)

    def _drop_episode(self, index: int) -> None:
        self.episode_keys[index], self.episode_actions[index], self.episode_rewards[index] = [], [], []

    def end_episodes(self) -> None:
        """Every env's episode ends here unwritten (new games start after a resume without the envs)."""
        for index in range(self.num_envs):
            self._drop_episode(index)

    def values(self, keys: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """H(s, a) and the hit mask of a replay batch; the hit statistics count it."""
        values, found, visits = self.memory.lookup(keys, actions, with_visits=True)
        hits = int(found.sum())
        self.hit_window.append((hits, len(found), float(values[found].sum()), int(np.count_nonzero(visits > 1))))
        return values, found

    def size(self) -> int:
        return len(self.memory)

    def metrics(self) -> dict[str, float]:
        """Over the last ``hit_rate_window`` batches: hit rate, mean H of hits, share of hits revisited."""
        hits, total, value_sum, revisits = (sum(column) for column in zip(*self.hit_window)) \
            if self.hit_window else (0, 0, 0.0, 0)
        return {"memory/hit_rate": hits / total if total else 0.0,
                "memory/h_mean": value_sum / hits if hits else 0.0,
                "memory/revisit_share": revisits / hits if hits else 0.0,
                "memory/size": len(self.memory), "memory/rebuild_seconds": self.memory.rebuild_seconds}

    def state_dict(self) -> dict[str, Any]:
        return {"episode_keys": list(self.episode_keys), "episode_actions": list(self.episode_actions),
                "episode_rewards": list(self.episode_rewards), "hit_window": list(self.hit_window),
                "memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is None:
            raise ValueError("the saved state has no episodic memory but this run uses memory=kdtree")
        self.episode_keys = list(state["episode_keys"])
        self.episode_actions = list(state["episode_actions"])
        self.episode_rewards = list(state["episode_rewards"])
        self.hit_window.clear()
        self.hit_window.extend(tuple(row) for row in state["hit_window"])
        self.memory.load_state_dict(state["memory"])


class NoMemory:
    """``memory=none``: plain DQN. Keys are absent, every lookup misses, nothing is kept."""

    key_dim = 0

    def __init__(self, num_envs: int):
        self.num_envs = num_envs
        self._no_keys = [None] * num_envs

    def keys(self, obs: np.ndarray) -> list[None]:
        return self._no_keys

    def observe(self, keys: Any, actions: np.ndarray, rewards: np.ndarray, terminated: np.ndarray,
                truncated: np.ndarray) -> None:
        pass

    def end_episodes(self) -> None:
        pass

    def values(self, keys: Any, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(len(actions), dtype=np.float32), np.zeros(len(actions), dtype=bool)

    def size(self) -> None:
        return None

    def metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, state: Any) -> None:
        pass  # a memory saved by another run's settings is refused earlier, by the config check


def build_memory_feed(memory_cfg: Any, num_envs: int, num_actions: int, obs_shape: Any,
                      gamma: float) -> EpisodicFeed | NoMemory:
    """The feed ``cfg.memory`` asks for."""
    if not memory_cfg.enabled:
        return NoMemory(num_envs)
    memory = EpisodicMemory(num_actions, obs_shape, key_dim=memory_cfg.key_dim, capacity=memory_cfg.capacity,
                            match=memory_cfg.match, k=memory_cfg.k, seed=memory_cfg.seed,
                            tolerance=memory_cfg.tolerance)
    return EpisodicFeed(memory, num_envs, gamma, int(memory_cfg.hit_rate_window))
