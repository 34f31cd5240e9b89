"""The episodic memory of EMDQN: best Monte-Carlo returns per (state key, action).

Keys are Gaussian random projections of raw observations. Values are the best discounted
return ever seen after taking the action from that state. The public API::

    mem = EpisodicMemory(num_actions, obs_shape, key_dim=4, capacity=5_000_000,
                         match="exact", k=1, seed=123456)
    keys = mem.project(obs)                     # (B, *obs_shape) -> (B, key_dim) float32
    values, found = mem.lookup(keys, actions)   # (B,) float32, (B,) bool
    mem.write(keys, actions, returns)           # max-update, else insert (LRU at capacity)
    mem.add_episode(keys, actions, rewards, gamma)

How it differs from the original code, and why:

* **Keys do not depend on the batch.** The projection matrix holds dyadic rationals
  (multiples of 2^-16). With uint8 observations every product and partial sum is then
  exactly representable in float64, so the key of an observation is bit-identical whatever
  batch it is projected in or whatever order BLAS sums in.
* **An index that sees every write at once**, searched by exact key bytes: see
  :mod:`emdqn.agent.memory_index`.
* **LRU without an O(capacity) scan per insert.** When an action's table overflows, its
  least-recently-used entries are evicted in one vectorized pass that takes out at least
  ``evict_fraction`` of the capacity, so the scan is paid once per many inserts.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np
from scipy.signal import lfilter

from emdqn.config.choices import MATCH_MODES
from emdqn.agent.memory_index import TreeLevel, find_equal, find_within, unique_rows

ACTION_SEPARATION = 1e12
_PROJECTION_SCALE = 2.0 ** 16


class EpisodicMemory:
    """Per-action tables of the best discounted return, indexed by scipy cKDTrees.

    Args:
        num_actions: size of the discrete action space.
        obs_shape: shape of one observation (for Atari the raw ``(4, 84, 84)`` uint8 stack).
        key_dim: width of the random projection (the original uses 4).
        capacity: entries kept per action; the least recently used are evicted beyond it.
        match: ``"exact"`` (a hit only for a stored key equal to the query within
            ``tolerance``, the original behaviour) or ``"knn"`` (mean value of the ``k``
            nearest stored keys of that action; a miss only when that table is empty).
        k: neighbours averaged in ``knn`` mode.
        seed: seed of the projection matrix.
        tolerance: largest Euclidean key distance that counts as equal in ``exact`` mode.
        merge_ratio: growth factor between level capacities (larger: fewer levels to query,
            more rebuilds per entry).
        base_level_size: capacity of level 0 is ``base_level_size * merge_ratio``.
        evict_fraction: share of the capacity evicted at once when a table overflows.
        leafsize: cKDTree leaf size.
    """

    def __init__(self, num_actions: int, obs_shape: Sequence[int], key_dim: int = 4,
                 capacity: int = 5_000_000, match: str = "exact", k: int = 1, seed: int = 123456,
                 tolerance: float = 1e-5, merge_ratio: float = 4.0, evict_fraction: float = 0.01,
                 leafsize: int = 64, base_level_size: int = 1024):
        if int(num_actions) < 1:
            raise ValueError(f"num_actions must be >= 1, got {num_actions}")
        if int(key_dim) < 1:
            raise ValueError(f"key_dim must be >= 1, got {key_dim}")
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if match not in MATCH_MODES:
            raise ValueError(f"match must be one of {MATCH_MODES}, got {match!r}")
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        if int(base_level_size) < 1:
            raise ValueError(f"base_level_size must be >= 1, got {base_level_size}")
        if not merge_ratio > 1:
            raise ValueError(f"merge_ratio must be > 1, got {merge_ratio}")
        if not 0 < evict_fraction <= 1:
            raise ValueError(f"evict_fraction must be in (0, 1], got {evict_fraction}")
        self.num_actions = int(num_actions)
        self.obs_shape = tuple(int(s) for s in obs_shape)
        self.key_dim = int(key_dim)
        self.capacity = int(capacity)
        self.match = match
        self.k = int(k)
        self.seed = seed
        self.tolerance = float(tolerance)
        self.merge_ratio = float(merge_ratio)
        self.base_level_size = int(base_level_size)
        self.evict_fraction = float(evict_fraction)
        self.leafsize = int(leafsize)
        # cKDTree accepts neighbours strictly closer than the bound; equal keys are at 0.
        self._exact_bound = float(np.nextafter(self.tolerance, np.inf))
        obs_dim = int(math.prod(self.obs_shape))
        gaussian = np.random.default_rng(seed).normal(0.0, 1.0 / math.sqrt(self.key_dim), (obs_dim, self.key_dim))
        self.projection = np.round(gaussian * _PROJECTION_SCALE) / _PROJECTION_SCALE
        self.levels: list[TreeLevel | None] = []  # index = level; None = empty level
        self.counts = np.zeros(self.num_actions, dtype=np.int64)
        self.clock = 0
        self.rebuild_seconds = 0.0  # total time spent building trees

    # ------------------------------------------------------------------ keys
    def project(self, obs: np.ndarray) -> np.ndarray:
        """Keys of a batch of observations: ``(B, *obs_shape) -> (B, key_dim)`` float32."""
        obs = np.asarray(obs)
        if obs.shape[1:] != self.obs_shape:
            raise ValueError(f"obs must have shape (B, {', '.join(map(str, self.obs_shape))}), got {obs.shape}")
        flat = obs.reshape(len(obs), -1).astype(np.float64)
        return (flat @ self.projection).astype(np.float32)

    # ------------------------------------------------------------------ validation
    def _check_batch(self, keys: Any, actions: Any, returns: Any = None) -> tuple[np.ndarray, ...]:
        keys = np.asarray(keys)
        if keys.ndim != 2 or keys.shape[1] != self.key_dim:
            raise ValueError(f"keys must have shape (B, {self.key_dim}), got {keys.shape}")
        if not np.isfinite(keys).all():
            raise ValueError("keys must be finite")
        actions = np.asarray(actions)
        if actions.shape != (len(keys),):
            raise ValueError(f"actions must have shape ({len(keys)},), got {actions.shape}")
        if actions.size and (actions.dtype.kind not in "iu"  # any integer type, not bool
                             or actions.min() < 0 or actions.max() >= self.num_actions):
            raise ValueError(f"actions must be integers in [0, {self.num_actions}), got {actions.dtype} "
                             f"in [{actions.min()}, {actions.max()}]")
        if returns is None:
            return keys, actions
        returns = np.asarray(returns, dtype=np.float64)
        if returns.shape != (len(keys),):
            raise ValueError(f"returns must have shape ({len(keys)},), got {returns.shape}")
        if not np.isfinite(returns).all():
            raise ValueError("returns must be finite (no NaN or inf)")
        return keys, actions, returns

    def _points(self, keys: np.ndarray, actions: np.ndarray) -> np.ndarray:
        points = np.empty((len(keys), self.key_dim + 1), dtype=np.float64)
        points[:, :-1] = keys
        points[:, -1] = actions * ACTION_SEPARATION
        return points

    # ------------------------------------------------------------------ reading
    def lookup(self, keys: np.ndarray, actions: np.ndarray, with_visits: bool = False
               ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """H(s, a) and a hit mask for a batch; a miss is value 0 and found False.

        ``with_visits=True`` also returns how many visits were max-updated into each hit's
        entry (0 for a miss; in ``knn`` mode the most of the neighbours averaged).
        """
        values, found, visits = self._lookup(keys, actions)
        return (values, found, visits) if with_visits else (values, found)

    def _lookup(self, keys: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys, actions = self._check_batch(keys, actions)
        values = np.zeros(len(keys), dtype=np.float32)
        found = np.zeros(len(keys), dtype=bool)
        visits = np.zeros(len(keys), dtype=np.uint32)
        if not any(self.levels) or len(keys) == 0:
            return values, found, visits
        self.clock += 1
        points = self._points(keys, actions)
        if self.match == "exact":
            # Bit-identical keys (the usual case: lookups use the keys that were written)
            # are found by hash; only the rest go through the trees' tolerance search.
            levels = self._live_levels()
            level_of, entry_of = find_equal(levels, points)
            missing = np.flatnonzero(level_of < 0)
            if self.tolerance > 0 and missing.size:
                level_of[missing], entry_of[missing] = find_within(levels, points[missing], self._exact_bound)
            for level_index, level in levels:
                rows = np.flatnonzero(level_of == level_index)
                if rows.size:
                    values[rows] = level.values[entry_of[rows]]
                    visits[rows] = level.visits[entry_of[rows]]
                    level.last_used[entry_of[rows]] = self.clock
                    found[rows] = True
            return values, found, visits
        return self._lookup_knn(points)

    def _lookup_knn(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = self.k
        candidate_distance, candidate_value, candidate_visits, candidate_ref = [], [], [], []
        for level_index, level in self._live_levels():
            kk = min(k, len(level))
            distance, entry = level.tree.query(points, k=kk, distance_upper_bound=ACTION_SEPARATION / 2)
            distance, entry = distance.reshape(len(points), kk), entry.reshape(len(points), kk)
            valid = np.isfinite(distance)
            safe_entry = np.where(valid, entry, 0)
            valid &= level.last_used[safe_entry] != 0
            candidate_distance.append(np.where(valid, distance, np.inf))
            candidate_value.append(level.values[safe_entry])
            candidate_visits.append(level.visits[safe_entry])
            candidate_ref.append(np.where(valid, level_index * (1 << 40) + safe_entry, -1))
        distance = np.concatenate(candidate_distance, axis=1)
        value = np.concatenate(candidate_value, axis=1)
        visit = np.concatenate(candidate_visits, axis=1)
        ref = np.concatenate(candidate_ref, axis=1)
        if distance.shape[1] > k:
            nearest = np.argpartition(distance, k - 1, axis=1)[:, :k]
            distance = np.take_along_axis(distance, nearest, axis=1)
            value = np.take_along_axis(value, nearest, axis=1)
            visit = np.take_along_axis(visit, nearest, axis=1)
            ref = np.take_along_axis(ref, nearest, axis=1)
        used = np.isfinite(distance)
        count = used.sum(axis=1)
        found = count > 0
        values = np.where(found, np.where(used, value, 0.0).sum(axis=1) / np.maximum(count, 1), 0.0)
        for level_index, level in self._live_levels():
            touched = ref[used & (ref >> 40 == level_index)] & ((1 << 40) - 1)
            level.last_used[touched] = self.clock
        visits = np.where(used, visit, 0).max(axis=1).astype(np.uint32)
        return values.astype(np.float32), found, visits

    # ------------------------------------------------------------------ writing
    def write(self, keys: np.ndarray, actions: np.ndarray, returns: np.ndarray) -> None:
        """Keep max(old, new) for stored (key, action) pairs; insert the others.

        The rows count as written one after another, in order (the original's clock ticks
        per insert): when a table overflows, the least recently used rows of a batch are
        its first ones.
        """
        keys, actions, returns = self._check_batch(keys, actions, returns)
        if len(keys) == 0:
            return
        points = self._points(keys, actions)
        # Duplicates inside the batch collapse to one entry holding their best return,
        # written at the time of their last row, visited once per row.
        unique_points, inverse = unique_rows(points)
        best = np.full(len(unique_points), -np.inf)
        np.maximum.at(best, inverse, returns)
        last_row = np.zeros(len(unique_points), dtype=np.int64)
        np.maximum.at(last_row, inverse, np.arange(len(points)))
        clocks = (self.clock + 1 + last_row).astype(np.uint32)
        visits = np.bincount(inverse, minlength=len(unique_points)).astype(np.uint32)
        self.clock += len(points)
        # Both match modes deduplicate on the exact key, as the original's write does.
        levels = self._live_levels()
        level_of, entry_of = find_equal(levels, unique_points)
        for level_index, level in levels:
            rows = np.flatnonzero(level_of == level_index)
            if rows.size:
                entries = entry_of[rows]
                level.values[entries] = np.maximum(level.values[entries], best[rows]).astype(np.float32)
                level.last_used[entries] = clocks[rows]
                level.visits[entries] += visits[rows]
        new = level_of < 0
        if new.any():
            self._insert(unique_points[new], best[new], clocks[new], visits[new])

    def _live_levels(self) -> list[tuple[int, TreeLevel]]:
        return [(index, level) for index, level in enumerate(self.levels) if level is not None]

    def _insert(self, points: np.ndarray, values: np.ndarray, clocks: np.ndarray, visits: np.ndarray) -> None:
        new_actions = np.rint(points[:, -1] / ACTION_SEPARATION).astype(np.int64)
        self.counts += np.bincount(new_actions, minlength=self.num_actions)
        self._add_run(points, values, clocks, visits)
        for action in np.flatnonzero(self.counts > self.capacity):
            self._evict(int(action))
        self._compact_dead_levels()

    def _level_capacity(self, level: int) -> float:
        return self.base_level_size * self.merge_ratio ** (level + 1)

    def _add_run(self, points: np.ndarray, values: np.ndarray, last_used: np.ndarray, visits: np.ndarray) -> None:
        """Merge new entries into level 0, carrying into higher levels while they overflow."""
        parts = [(points, values, last_used, visits)]
        total = len(points)
        level = 0
        while True:
            if level == len(self.levels):
                self.levels.append(None)
            existing = self.levels[level]
            if existing is not None:
                alive = existing.alive
                parts.append((existing.points[alive], existing.values[alive], existing.last_used[alive],
                              existing.visits[alive]))
                total += existing.num_alive
                self.levels[level] = None
            if total <= self._level_capacity(level):
                break
            level += 1
        self._build(level, parts)

    def _build(self, level: int, parts: list[tuple[np.ndarray, ...]]) -> None:
        start = time.perf_counter()
        points, values, clocks, visits = (np.concatenate(column) if len(parts) > 1 else column[0]
                                          for column in zip(*parts))
        self.levels[level] = TreeLevel(points, values, clocks, visits, self.leafsize) if len(points) else None
        self.rebuild_seconds += time.perf_counter() - start

    def _evict(self, action: int) -> None:
        """Drop the least recently used entries of one action's table, in one pass."""
        excess = int(self.counts[action] - self.capacity)
        amount = min(max(excess, math.ceil(self.evict_fraction * self.capacity)), int(self.counts[action]))
        owners, clocks = [], []
        for level_index, level in self._live_levels():
            entries = np.flatnonzero(level.alive & (level.points[:, -1] == action * ACTION_SEPARATION))
            owners.append(np.stack([np.full(len(entries), level_index), entries], axis=1))
            clocks.append(level.last_used[entries])
        owner = np.concatenate(owners)
        clock = np.concatenate(clocks)
        # Stable order among equal clocks: lower levels (more recent writes) last.
        oldest = np.argsort(clock, kind="stable")[:amount]
        for level_index, entry in owner[oldest]:
            level = self.levels[level_index]
            level.last_used[entry] = 0
            level.num_alive -= 1
        self.counts[action] -= amount

    def _compact_dead_levels(self) -> None:
        """Rebuild a level once most of its entries were evicted (queries stay tight)."""
        for index, level in self._live_levels():
            if level.num_alive * 2 < len(level):
                alive = level.alive
                self._build(index, [(level.points[alive], level.values[alive], level.last_used[alive],
                                     level.visits[alive])])

    def add_episode(self, keys: np.ndarray, actions: np.ndarray, rewards: np.ndarray, gamma: float) -> np.ndarray:
        """Write one finished episode: discounted returns computed backwards, then ``write``.

        Returns the discounted returns that were written.
        """
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        rewards = np.asarray(rewards, dtype=np.float64)
        if rewards.ndim != 1:
            raise ValueError(f"rewards must be 1-D, got shape {rewards.shape}")
        if not np.isfinite(rewards).all():
            raise ValueError("rewards must be finite (no NaN or inf)")
        returns = lfilter([1.0], [1.0, -gamma], rewards[::-1])[::-1]
        # Written walking backwards, as the original does: the episode's first steps are
        # its most recently written entries.
        self.write(np.asarray(keys)[::-1], np.asarray(actions)[::-1], returns[::-1])
        return returns

    # ------------------------------------------------------------------ size and state
    def __len__(self) -> int:
        return int(self.counts.sum())

    def nbytes(self) -> int:
        return sum(level.nbytes() for _, level in self._live_levels()) + self.counts.nbytes

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """All live entries as (keys float32, actions, values, last_used, visits) arrays."""
        levels = [level for _, level in self._live_levels()]
        if not levels:
            return (np.zeros((0, self.key_dim), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32),
                    np.zeros(0, np.uint32), np.zeros(0, np.uint32))
        alive = [level.alive for level in levels]
        points = np.concatenate([level.points[mask] for level, mask in zip(levels, alive)])
        values = np.concatenate([level.values[mask] for level, mask in zip(levels, alive)])
        clocks = np.concatenate([level.last_used[mask] for level, mask in zip(levels, alive)])
        visits = np.concatenate([level.visits[mask] for level, mask in zip(levels, alive)])
        actions = np.rint(points[:, -1] / ACTION_SEPARATION).astype(np.int64)
        return points[:, :-1].astype(np.float32), actions, values, clocks, visits

    def state_dict(self) -> dict[str, Any]:
        keys, actions, values, clocks, visits = self.entries()
        return {"config": self._config(), "keys": keys, "actions": actions, "values": values,
                "last_used": clocks, "visits": visits, "clock": self.clock, "rebuild_seconds": self.rebuild_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config"] != self._config():
            raise ValueError(f"memory state was saved with {state['config']}, this memory has {self._config()}")
        self.levels = []
        self.counts = np.bincount(state["actions"], minlength=self.num_actions).astype(np.int64)
        if len(state["keys"]):
            self._add_run(self._points(state["keys"], state["actions"]), np.asarray(state["values"], np.float32),
                          np.asarray(state["last_used"], np.uint32), np.asarray(state["visits"], np.uint32))
        self.clock = int(state["clock"])
        self.rebuild_seconds = float(state["rebuild_seconds"])

    def _config(self) -> dict[str, Any]:
        return {"num_actions": self.num_actions, "obs_shape": list(self.obs_shape), "key_dim": self.key_dim,
                "capacity": self.capacity, "match": self.match, "k": self.k, "seed": self.seed}
