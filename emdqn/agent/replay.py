"""A circular replay buffer that stores each frame once and rebuilds stacks when sampled.

Layout: one *slot* per observation, in the order they were seen. A slot holds the newest
frame of that observation, its position in its episode, and, once the agent has acted
from it, the action, the (clipped) reward, whether the episode terminated or was truncated
right after, and the memory key of the observation. An episode of T transitions takes
T + 1 slots: the last one holds the final next observation (needed to bootstrap a
truncated episode) and is never sampled as a state itself.

A frame stack is rebuilt from the ``frame_stack`` newest slots of the same episode; before
the episode's first frame the stack repeats that first frame, exactly as
``gymnasium.wrappers.FrameStackObservation(padding_type="reset")`` does when acting.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np


class ReplaySample(NamedTuple):
    """A uniform batch of transitions as numpy arrays (one row per sampled transition)."""

    obs: np.ndarray
    actions: np.ndarray       # int64
    rewards: np.ndarray       # discounted sum of the (up to n) rewards
    next_obs: np.ndarray
    terminated: np.ndarray    # the episode terminated within the window
    truncated: np.ndarray     # it was cut off at the window's end
    discounts: np.ndarray     # gamma^k for the k rewards summed
    keys: np.ndarray          # the memory key of ``obs`` (width 0 without a memory)
    slots: np.ndarray         # where each row lies in its buffer


class ReplayBuffer:
    """Uniform replay over ``capacity`` slots of single frames (or flat observations).

    Args:
        capacity: number of slots (about one per transition).
        obs_shape: shape of one observation as the agent sees it; with ``frame_stack > 1``
            its first axis is the stack.
        frame_stack: frames per observation (1 for flat observations).
        obs_dtype: dtype of stored frames (uint8 for Atari).
        key_dim: width of the episodic-memory key stored per transition (0: none).
        seed: seed of the sampling generator.
    """

    def __init__(self, capacity: int, obs_shape: Sequence[int], frame_stack: int = 1,
                 obs_dtype: Any = np.uint8, key_dim: int = 0, seed: int = 0):
        if capacity < 2:
            raise ValueError(f"buffer capacity must be >= 2, got {capacity}")
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
        obs_shape = tuple(int(s) for s in obs_shape)
        if frame_stack > 1 and obs_shape[0] != frame_stack:
            raise ValueError(f"obs_shape {obs_shape} must start with the frame stack {frame_stack}")
        self.capacity = int(capacity)
        self.obs_shape = obs_shape
        self.frame_stack = frame_stack
        self.frame_shape = obs_shape[1:] if frame_stack > 1 else obs_shape
        self.key_dim = key_dim
        self.frames = np.zeros((self.capacity, *self.frame_shape), dtype=obs_dtype)
        self.actions = np.zeros(self.capacity, dtype=np.int32)
        self.rewards = np.zeros(self.capacity, dtype=np.float32)
        self.terminated = np.zeros(self.capacity, dtype=bool)
        self.truncated = np.zeros(self.capacity, dtype=bool)
        self.episode_pos = np.zeros(self.capacity, dtype=np.int32)
        self.has_transition = np.zeros(self.capacity, dtype=bool)
        self.keys = np.zeros((self.capacity, key_dim), dtype=np.float32)
        self.rng = np.random.default_rng(seed)
        self.cursor = 0          # next slot to write
        self.filled = 0          # slots written so far, capped at capacity
        self.current = -1        # slot of the observation the agent acts from; -1 = new episode
        self.num_transitions = 0  # transitions added in total (a counter, not a size)
        self.slots_written = 0    # frames written in total: which slots changed since a checkpoint

    # ------------------------------------------------------------------ writing
    def _write_frame(self, obs: np.ndarray, episode_pos: int) -> int:
        slot = self.cursor
        self.frames[slot] = obs[-1] if self.frame_stack > 1 else obs
        self.episode_pos[slot] = episode_pos
        self.has_transition[slot] = False
        self.cursor = (slot + 1) % self.capacity
        self.filled = min(self.filled + 1, self.capacity)
        self.slots_written += 1
        return slot

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray,
            terminated: bool, truncated: bool, key: np.ndarray | None = None) -> None:
        """Store one transition; ``obs`` is only read at the start of an episode."""
        if self.current < 0:
            self.current = self._write_frame(np.asarray(obs), 0)
        slot = self.current
        self.actions[slot] = action
        self.rewards[slot] = reward
        self.terminated[slot] = terminated
        self.truncated[slot] = truncated
        if self.key_dim:
            if key is None:
                raise ValueError("key is required: this buffer stores memory keys (key_dim > 0)")
            self.keys[slot] = key
        next_slot = self._write_frame(np.asarray(next_obs), int(self.episode_pos[slot]) + 1)
        self.has_transition[slot] = True
        self.num_transitions += 1
        self.current = -1 if (terminated or truncated) else next_slot

    def __len__(self) -> int:
        """Transitions that can currently be sampled."""
        return int(self._valid_mask().sum())

    # ------------------------------------------------------------------ reading
    def _history_available(self, slots: np.ndarray) -> np.ndarray:
        """How many older slots of the buffer are still intact behind each slot."""
        if self.filled < self.capacity:
            return slots
        return (slots - self.cursor) % self.capacity

    def _valid_mask(self, slots: np.ndarray | None = None) -> np.ndarray:
        if slots is None:
            slots = np.arange(self.capacity)
        valid = self.has_transition[slots]
        # The next frame must exist (it is not the slot about to be overwritten) ...
        valid &= ((slots + 1) % self.capacity) != self.cursor
        # ... and the stack's history must not have been overwritten by newer slots.
        needed = np.minimum(self.episode_pos[slots], self.frame_stack - 1)
        valid &= self._history_available(slots) >= needed
        return valid

    def stacks(self, slots: np.ndarray) -> np.ndarray:
        """The observations (frame stacks) of the given slots, rebuilt from single frames."""
        if self.frame_stack == 1:
            return self.frames[slots]
        offsets = np.arange(self.frame_stack - 1, -1, -1)  # oldest first
        back = np.minimum(offsets[None, :], self.episode_pos[slots][:, None])
        return self.frames[(slots[:, None] - back) % self.capacity]

    def sample(self, batch_size: int, n_step: int = 1, gamma: float = 0.99) -> ReplaySample:
        """A uniform batch of valid transitions.

        With ``n_step > 1`` each row is the n-step transition from the sampled state:
        ``rewards`` the discounted sum of up to ``n_step`` rewards, ``next_obs`` the state
        after the last of them, ``terminated`` whether the episode terminated within them
        and ``discounts`` gamma^k for the k rewards summed. An episode end inside the window
        shortens it (termination cuts the bootstrap; truncation bootstraps from the final
        observation), as does the newest transition of an episode still in progress.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        if not self.has_transition.any():
            raise ValueError("cannot sample from an empty replay buffer")
        chosen = np.empty(0, dtype=np.int64)
        while chosen.size < batch_size:
            candidates = self.rng.integers(0, self.filled, size=2 * batch_size)
            chosen = np.concatenate([chosen, candidates[self._valid_mask(candidates)]])
        slots = chosen[:batch_size]
        if n_step == 1:
            last, rewards, steps = slots, self.rewards[slots], np.ones(batch_size, dtype=np.int64)
        else:
            last, rewards, steps = self._n_step_window(slots, n_step, gamma)
        return ReplaySample(obs=self.stacks(slots), actions=self.actions[slots].astype(np.int64), rewards=rewards,
                            next_obs=self.stacks((last + 1) % self.capacity), terminated=self.terminated[last],
                            truncated=self.truncated[last], discounts=(gamma ** steps).astype(np.float32),
                            keys=self.keys[slots], slots=slots)

    def _n_step_window(self, slots: np.ndarray, n_step: int, gamma: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(last slot, discounted reward sum, number of rewards) of each slot's n-step window.

        The window walks forward through the slot's episode: the slot after a transition
        holds its next observation, and it has a transition of its own unless the episode
        ended there or it is the newest slot (the agent has not acted from it yet).
        """
        last = slots.copy()
        total = self.rewards[slots].astype(np.float64)
        steps = np.ones(len(slots), dtype=np.int64)
        ended = self.terminated[slots] | self.truncated[slots]
        for offset in range(1, n_step):
            following = (last + 1) % self.capacity
            going = ~ended & self.has_transition[following]
            if not going.any():
                break
            last = np.where(going, following, last)
            total += np.where(going, gamma ** offset * self.rewards[following], 0.0)
            steps += going
            ended |= ~going | self.terminated[following] | self.truncated[following]
        return last, total.astype(np.float32), steps

    # ------------------------------------------------------------------ sizes and state
    def nbytes(self) -> int:
        arrays = (self.frames, self.actions, self.rewards, self.terminated, self.truncated,
                  self.episode_pos, self.has_transition, self.keys)
        return int(sum(a.nbytes for a in arrays))

    def state_dict(self) -> dict[str, Any]:
        """The filled slots only (a checkpoint early in a run is small)."""
        return {
            "arrays": {name: getattr(self, name)[:self.filled] for name in self._array_names},
            "capacity": self.capacity, "cursor": self.cursor, "filled": self.filled, "current": self.current,
            "num_transitions": self.num_transitions, "slots_written": self.slots_written,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._array_names:
            array, own = state["arrays"][name], getattr(self, name)
            if array.shape[1:] != own.shape[1:] or len(array) > len(own):
                raise ValueError(f"replay state has {name} of shape {array.shape}, "
                                 f"this buffer holds {own.shape} (capacity or env changed)")
            own[:len(array)] = array
        self.cursor, self.filled = int(state["cursor"]), int(state["filled"])
        self.current, self.num_transitions = int(state["current"]), int(state["num_transitions"])
        self.slots_written = int(state["slots_written"])
        self.rng.bit_generator.state = state["rng"]

    _array_names = ("frames", "actions", "rewards", "terminated", "truncated", "episode_pos",
                    "has_transition", "keys")


class MultiEnvReplay:
    """One :class:`ReplayBuffer` per sub-environment, sampled as one uniform buffer.

    Each env's frames stay consecutive in its own buffer, so stacks are rebuilt exactly as
    with one env. A batch draws how many transitions come from each env (multinomial by the
    transitions each holds) and then samples within each; with one env it is that env's
    buffer unchanged.
    """

    def __init__(self, num_envs: int, capacity: int, obs_shape: Sequence[int], frame_stack: int = 1,
                 obs_dtype: Any = np.uint8, key_dim: int = 0, seed: int = 0):
        if capacity // num_envs < 2:
            raise ValueError(f"buffer capacity {capacity} leaves fewer than 2 slots for each of {num_envs} envs")
        self.streams = [ReplayBuffer(capacity // num_envs, obs_shape, frame_stack, obs_dtype, key_dim,
                                     seed=seed + index) for index in range(num_envs)]
        self.rng = np.random.default_rng(seed)

    def add(self, env_index: int, *transition: Any) -> None:
        """Store one transition of env ``env_index`` (arguments as :meth:`ReplayBuffer.add`)."""
        self.streams[env_index].add(*transition)

    def end_episode(self, env_index: int) -> None:
        """Abandon env ``env_index``'s episode in progress (its game was restarted)."""
        self.streams[env_index].current = -1

    def sample(self, batch_size: int, n_step: int = 1, gamma: float = 0.99) -> ReplaySample:
        if len(self.streams) == 1:
            return self.streams[0].sample(batch_size, n_step, gamma)
        held = np.array([min(stream.num_transitions, stream.capacity) for stream in self.streams], dtype=np.float64)
        if not held.any():
            raise ValueError("cannot sample from an empty replay buffer")
        counts = self.rng.multinomial(batch_size, held / held.sum())
        parts = [stream.sample(int(count), n_step, gamma) for stream, count in zip(self.streams, counts) if count]
        return ReplaySample(*(np.concatenate(fields) for fields in zip(*parts)))

    def __len__(self) -> int:
        return sum(len(stream) for stream in self.streams)

    @property
    def num_transitions(self) -> int:
        return sum(stream.num_transitions for stream in self.streams)

    def nbytes(self) -> int:
        return sum(stream.nbytes() for stream in self.streams)

    def state_dict(self) -> dict[str, Any]:
        states = [stream.state_dict() for stream in self.streams]
        arrays = {f"env{index}_{name}": array for index, state in enumerate(states)
                  for name, array in state.pop("arrays").items()}
        return {"arrays": arrays, "streams": states, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["streams"]) != len(self.streams):
            raise ValueError(f"replay state holds {len(state['streams'])} envs' buffers, "
                             f"this run has env.num_envs={len(self.streams)}")
        for index, (stream, meta) in enumerate(zip(self.streams, state["streams"])):
            arrays = {name: state["arrays"][f"env{index}_{name}"] for name in ReplayBuffer._array_names}
            stream.load_state_dict({"arrays": arrays, **meta})
        self.rng.bit_generator.state = state["rng"]
