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

from types import SimpleNamespace
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


class Ring(NamedTuple):
    """Where one env's circular run of slots lies in the arrays, for the rows being read:
    the slot ``s`` of a row is at index ``base + s``. Scalars for one buffer; arrays (one
    value per row) when rows come from the several envs of a :class:`MultiEnvReplay`."""

    base: Any
    capacity: int
    cursor: Any
    filled: Any


def check_sample_arguments(batch_size: int, n_step: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_step < 1:
        raise ValueError(f"n_step must be >= 1, got {n_step}")


def valid_slots(arrays: Any, ring: Ring, slots: np.ndarray, frame_stack: int) -> np.ndarray:
    """Which ``slots`` hold a transition that can be sampled."""
    valid = arrays.has_transition[ring.base + slots]
    # The next frame must exist (it is not the slot about to be overwritten) ...
    valid &= ((slots + 1) % ring.capacity) != ring.cursor
    # ... and the stack's history must not have been overwritten by newer slots (the
    # number of older slots still intact behind each slot).
    history = np.where(ring.filled < ring.capacity, slots, (slots - ring.cursor) % ring.capacity)
    valid &= history >= np.minimum(arrays.episode_pos[ring.base + slots], frame_stack - 1)
    return valid


def stack_positions(arrays: Any, ring: Ring, slots: np.ndarray, frame_stack: int) -> np.ndarray:
    """Array indices of the frames that make up each slot's observation (oldest first)."""
    if frame_stack == 1:
        return ring.base + slots
    offsets = np.arange(frame_stack - 1, -1, -1)
    back = np.minimum(offsets[None, :], arrays.episode_pos[ring.base + slots][:, None])
    return np.asarray(ring.base)[..., None] + (slots[:, None] - back) % ring.capacity


def n_step_window(arrays: Any, ring: Ring, slots: np.ndarray, n_step: int, gamma: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(last slot, discounted reward sum, number of rewards) of each slot's n-step window.

    The window walks forward through the slot's episode: the slot after a transition
    holds its next observation, and it has a transition of its own unless the episode
    ended there or it is the newest slot (the agent has not acted from it yet).
    """
    last = slots.copy()
    at = ring.base + slots
    total = arrays.rewards[at].astype(np.float64)
    steps = np.ones(len(slots), dtype=np.int64)
    ended = arrays.terminated[at] | arrays.truncated[at]
    for offset in range(1, n_step):
        following = ring.base + (last + 1) % ring.capacity
        going = ~ended & arrays.has_transition[following]
        if not going.any():
            break
        last = np.where(going, (last + 1) % ring.capacity, last)
        total += np.where(going, gamma ** offset * arrays.rewards[following], 0.0)
        steps += going
        ended |= ~going | arrays.terminated[following] | arrays.truncated[following]
    return last, total.astype(np.float32), steps


def gather_transitions(arrays: Any, ring: Ring, slots: np.ndarray, frame_stack: int, n_step: int,
                       gamma: float) -> ReplaySample:
    """The (n-step) transitions from ``slots`` (all valid), as a :class:`ReplaySample`."""
    at = ring.base + slots
    if n_step == 1:
        last, rewards, steps = slots, arrays.rewards[at], np.ones(len(slots), dtype=np.int64)
    else:
        last, rewards, steps = n_step_window(arrays, ring, slots, n_step, gamma)
    end = ring.base + last
    return ReplaySample(obs=arrays.frames[stack_positions(arrays, ring, slots, frame_stack)],
                        actions=arrays.actions[at].astype(np.int64), rewards=rewards,
                        next_obs=arrays.frames[stack_positions(arrays, ring, (last + 1) % ring.capacity, frame_stack)],
                        terminated=arrays.terminated[end], truncated=arrays.truncated[end],
                        discounts=(gamma ** steps).astype(np.float32), keys=arrays.keys[at], slots=slots)


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
    def _ring(self) -> "Ring":
        return Ring(base=0, capacity=self.capacity, cursor=self.cursor, filled=self.filled)

    def _valid_mask(self, slots: np.ndarray | None = None) -> np.ndarray:
        return valid_slots(self, self._ring(), np.arange(self.capacity) if slots is None else slots, self.frame_stack)

    def stacks(self, slots: np.ndarray) -> np.ndarray:
        """The observations (frame stacks) of the given slots, rebuilt from single frames."""
        return self.frames[stack_positions(self, self._ring(), slots, self.frame_stack)]

    def sample(self, batch_size: int, n_step: int = 1, gamma: float = 0.99) -> ReplaySample:
        """A uniform batch of valid transitions.

        With ``n_step > 1`` each row is the n-step transition from the sampled state:
        ``rewards`` the discounted sum of up to ``n_step`` rewards, ``next_obs`` the state
        after the last of them, ``terminated`` whether the episode terminated within them
        and ``discounts`` gamma^k for the k rewards summed. An episode end inside the window
        shortens it (termination cuts the bootstrap; truncation bootstraps from the final
        observation), as does the newest transition of an episode still in progress.
        """
        check_sample_arguments(batch_size, n_step)
        if not self.has_transition.any():
            raise ValueError("cannot sample from an empty replay buffer")
        chosen = np.empty(0, dtype=np.int64)
        while chosen.size < batch_size:
            candidates = self.rng.integers(0, self.filled, size=2 * batch_size)
            chosen = np.concatenate([chosen, candidates[self._valid_mask(candidates)]])
        return gather_transitions(self, self._ring(), chosen[:batch_size], self.frame_stack, n_step, gamma)

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
            start = 0  # a checkpoint's array arrives chunk by chunk: the buffer is never held twice
            for part in (array.chunks() if hasattr(array, "chunks") else (array,)):
                own[start:start + len(part)] = part
                start += len(part)
        self.cursor, self.filled = int(state["cursor"]), int(state["filled"])
        self.current, self.num_transitions = int(state["current"]), int(state["num_transitions"])
        self.slots_written = int(state["slots_written"])
        self.rng.bit_generator.state = state["rng"]

    _array_names = ("frames", "actions", "rewards", "terminated", "truncated", "episode_pos",
                    "has_transition", "keys")


class MultiEnvReplay:
    """One :class:`ReplayBuffer` per sub-environment, sampled as one uniform buffer.

    Each env's frames stay consecutive in its own buffer, so stacks are rebuilt exactly as
    with one env. With one env it is that env's buffer unchanged. With several, the envs'
    buffers are blocks of shared arrays, so that a batch is drawn and gathered across all
    of them in one pass: each candidate row is one of all envs' written slots, uniformly,
    and invalid candidates are drawn again, as in one buffer.
    """

    def __init__(self, num_envs: int, capacity: int, obs_shape: Sequence[int], frame_stack: int = 1,
                 obs_dtype: Any = np.uint8, key_dim: int = 0, seed: int = 0):
        if capacity // num_envs < 2:
            raise ValueError(f"buffer capacity {capacity} leaves fewer than 2 slots for each of {num_envs} envs")
        self.streams = [ReplayBuffer(capacity // num_envs, obs_shape, frame_stack, obs_dtype, key_dim,
                                     seed=seed + index) for index in range(num_envs)]
        self.rng = np.random.default_rng(seed)
        self.frame_stack = frame_stack
        self.arrays: SimpleNamespace | None = None
        if num_envs > 1:
            per_env = self.streams[0].capacity
            self.arrays = SimpleNamespace()
            for name in ReplayBuffer._array_names:
                first = getattr(self.streams[0], name)
                shared = np.zeros((num_envs * per_env, *first.shape[1:]), dtype=first.dtype)
                setattr(self.arrays, name, shared)
                for index, stream in enumerate(self.streams):
                    setattr(stream, name, shared[index * per_env:(index + 1) * per_env])

    def add(self, env_index: int, *transition: Any) -> None:
        """Store one transition of env ``env_index`` (arguments as :meth:`ReplayBuffer.add`)."""
        self.streams[env_index].add(*transition)

    def end_episode(self, env_index: int) -> None:
        """Abandon env ``env_index``'s episode in progress (its game was restarted)."""
        self.streams[env_index].current = -1

    def sample(self, batch_size: int, n_step: int = 1, gamma: float = 0.99) -> ReplaySample:
        if self.arrays is None:
            return self.streams[0].sample(batch_size, n_step, gamma)
        check_sample_arguments(batch_size, n_step)
        if not any(stream.num_transitions for stream in self.streams):
            raise ValueError("cannot sample from an empty replay buffer")
        capacity = self.streams[0].capacity
        cursors = np.array([stream.cursor for stream in self.streams])
        filled = np.array([stream.filled for stream in self.streams])
        ends = np.cumsum(filled)  # all envs' written slots, numbered env after env

        def ring_of(envs: np.ndarray) -> Ring:  # each row's env buffer within the shared arrays
            return Ring(envs * capacity, capacity, cursors[envs], filled[envs])

        chosen_envs, chosen_slots = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        while chosen_envs.size < batch_size:
            numbers = self.rng.integers(0, ends[-1], size=2 * batch_size)
            envs = np.searchsorted(ends, numbers, side="right")
            slots = numbers - (ends[envs] - filled[envs])
            valid = valid_slots(self.arrays, ring_of(envs), slots, self.frame_stack)
            chosen_envs = np.concatenate([chosen_envs, envs[valid]])
            chosen_slots = np.concatenate([chosen_slots, slots[valid]])
        envs, slots = chosen_envs[:batch_size], chosen_slots[:batch_size]
        return gather_transitions(self.arrays, ring_of(envs), slots, self.frame_stack, n_step, gamma)

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
