"""``env.num_envs`` environments stepped together behind one small contract.

The data loop acts for all of them with one batched forward pass and counts every
sub-environment step as one env step. Two implementations:

* :class:`SerialEnvs` steps our own wrapped envs (:func:`emdqn.envs.make.make_env`) one after
  another. ``num_envs=1`` (the original setting) and the flat games use it; it pickles,
  emulator state included, so a resumed run continues bit-exactly.
* :class:`AleVectorEnvs` runs Atari games in ale-py's C++ vector environment, which steps
  and preprocesses the games on its own threads. It reproduces our wrapper stack with
  ale-py's options (frame skip with max-pool, no-op starts, fire reset, grayscale 84x84)
  and does the rest here, as the single-env wrappers do: a lost life ends the training
  episode but not the game (``life_loss_info``, not ale-py's ``episodic_life``, which
  would restart the game), rewards are sign-clipped here so the reported return stays the
  real score, and frames are stacked here with the first frame repeated at an episode
  start (``padding_type="reset"``), exactly as the replay buffer rebuilds stacks.

Both reset a finished sub-environment inside :meth:`step`: ``next_obs`` holds the true
successor (the final observation where an episode ended) and ``observations`` the one to
act from next. ``step`` is ``send`` then ``recv``; where ``steps_in_background`` is true
(ale-py's threads), the games are emulated between the two calls while this process does
other work.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from emdqn.envs.make import make_env, real_episode_stats

# env.kwargs that ale-py's vector env understands (others only work with num_envs=1).
ALE_VECTOR_KWARGS = ("repeat_action_probability", "full_action_space", "max_num_frames_per_episode")


def unsupported_vector_kwargs(env_cfg: Any) -> list[str]:
    """The ``env.kwargs`` that ale-py's vector env cannot take (sorted; empty when all fit)."""
    return sorted(set(env_cfg.get("kwargs") or {}) - set(ALE_VECTOR_KWARGS))


@dataclass
class VectorStep:
    """What one step of all sub-environments produced (arrays have one row per env)."""

    next_obs: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    finished_games: list[tuple[int, float, int]]  # (env index, real return, length in agent steps)


class SerialEnvs:
    """Our wrapped gymnasium envs, stepped in turn in this process."""

    def __init__(self, env_cfg: Any, num_envs: int, seed: int):
        self.envs = [make_env(env_cfg, seed=seed + index) for index in range(num_envs)]
        self.num_envs = num_envs
        self.seed = seed
        space = self.envs[0].observation_space
        self.observation_shape, self.observation_dtype = tuple(space.shape), space.dtype
        self.num_actions = int(self.envs[0].action_space.n)
        self.observations: np.ndarray | None = None  # None until the first reset
        self._actions: np.ndarray | None = None

    steps_in_background = False  # the envs step in recv(), in this thread

    def reset(self) -> None:
        self.observations = np.stack([env.reset(seed=self.seed + index)[0] for index, env in enumerate(self.envs)])

    def step(self, actions: np.ndarray) -> VectorStep:
        self.send(actions)
        return self.recv()

    def send(self, actions: np.ndarray) -> None:
        self._actions = actions

    def recv(self) -> VectorStep:
        actions, self._actions = self._actions, None
        next_obs = np.empty_like(self.observations)
        rewards = np.empty(self.num_envs, dtype=np.float32)
        terminated = np.empty(self.num_envs, dtype=bool)
        truncated = np.empty(self.num_envs, dtype=bool)
        finished_games = []
        for index, env in enumerate(self.envs):
            obs, reward, terminated[index], truncated[index], info = env.step(int(actions[index]))
            next_obs[index], rewards[index] = obs, reward
            game = real_episode_stats(info)
            if game is not None:
                finished_games.append((index, *game))
            if terminated[index] or truncated[index]:
                obs, _ = env.reset()
            self.observations[index] = obs
        return VectorStep(next_obs, rewards, terminated, truncated, finished_games)

    def state(self) -> bytes | None:
        """The pickled envs with their emulator states (ALE's RNG included); None if not picklable."""
        emulators = [env.unwrapped.clone_state(include_rng=True) if hasattr(env.unwrapped, "clone_state") else None
                     for env in self.envs]
        try:
            return pickle.dumps((self.envs, emulators, self.observations))
        except Exception:
            return None

    def load_state(self, blob: bytes) -> None:
        envs, emulators, observations = pickle.loads(blob)
        for env, emulator in zip(envs, emulators):
            if emulator is not None:
                env.unwrapped.restore_state(emulator)
        self.close()
        self.envs, self.observations = envs, observations

    def close(self) -> None:
        for env in self.envs:
            env.close()


class AleVectorEnvs:
    """``num_envs`` Atari games in ale-py's threaded C++ vector environment."""

    def __init__(self, env_cfg: Any, num_envs: int, seed: int):
        from ale_py import AtariVectorEnv

        spec_kwargs = dict(gym.spec(env_cfg.id).kwargs)
        spec_kwargs.update(env_cfg.get("kwargs") or {})
        unsupported = unsupported_vector_kwargs(env_cfg)
        if unsupported:
            raise ValueError(f"env.kwargs {unsupported} are not supported with env.num_envs > 1 (ale-py's vector "
                             f"env takes {', '.join(ALE_VECTOR_KWARGS)}); use env.num_envs=1")
        if env_cfg.get("frame", "resize") == "original":
            logging.getLogger("emdqn").warning(
                "env.num_envs > 1 plays in ale-py's vector env, whose frames are its own 84x84 resize with the "
                "score bar kept: env.frame=original applies to env.num_envs=1 only (docs/fidelity.md)")
        max_frames = spec_kwargs.get("max_num_frames_per_episode", 108_000)
        if env_cfg.get("max_episode_frames"):
            max_frames = min(max_frames, int(env_cfg.max_episode_frames))
        self.vector_env = AtariVectorEnv(
            spec_kwargs["game"], num_envs, frameskip=int(env_cfg.frame_skip), maxpool=True, stack_num=1,
            img_height=int(env_cfg.screen_size), img_width=int(env_cfg.screen_size), grayscale=True,
            noop_max=int(env_cfg.noop_max), use_fire_reset=bool(env_cfg.fire_reset), episodic_life=False,
            life_loss_info=bool(env_cfg.episodic_life), reward_clipping=False,
            repeat_action_probability=float(spec_kwargs.get("repeat_action_probability", 0.0)),
            full_action_space=bool(spec_kwargs.get("full_action_space", False)),
            max_num_frames_per_episode=max_frames, autoreset_mode="SameStep")
        self.num_envs, self.seed = num_envs, seed
        self.frame_stack, self.clip_rewards = int(env_cfg.frame_stack), bool(env_cfg.clip_rewards)
        size = int(env_cfg.screen_size)
        self.observation_shape, self.observation_dtype = (self.frame_stack, size, size), np.dtype(np.uint8)
        self.num_actions = int(self.vector_env.single_action_space.n)
        self.observations: np.ndarray | None = None
        self.lives = np.zeros(num_envs, dtype=np.int64)
        self.game_returns = np.zeros(num_envs, dtype=np.float64)
        self.game_lengths = np.zeros(num_envs, dtype=np.int64)

    steps_in_background = True  # ale-py emulates the games on its threads between send and recv

    def reset(self) -> None:
        frames, info = self.vector_env.reset(seed=self.seed)
        self.observations = np.repeat(frames, self.frame_stack, axis=1)
        self.lives[:] = info["lives"]
        self.game_returns[:] = 0
        self.game_lengths[:] = 0

    def step(self, actions: np.ndarray) -> VectorStep:
        self.send(actions)
        return self.recv()

    def send(self, actions: np.ndarray) -> None:
        self.vector_env.send(np.asarray(actions, dtype=np.int32))

    def recv(self) -> VectorStep:
        frames, raw_rewards, terminated, truncated, info = self.vector_env.recv()
        done = terminated | truncated
        any_done = bool(done.any())
        newest = frames[:, 0]
        if any_done:  # the frame that ended the episode; ``frames`` already shows the reset
            newest = newest.copy()
            newest[done] = info["final_obs"][done, 0]
        next_obs = np.concatenate([self.observations[:, 1:], newest[:, None]], axis=1)
        self.observations = next_obs  # a fresh array each step: sharing it is safe
        if any_done:
            self.observations = next_obs.copy()
            self.observations[done] = np.repeat(frames[done], self.frame_stack, axis=1)
        raw_rewards = np.asarray(raw_rewards, dtype=np.float64)
        self.game_returns += raw_rewards
        self.game_lengths += 1
        # As EpisodicLifeEnv: 0 < lives < previous lives is a lost life, any other end is
        # the end of the game (then ale-py already reports the next game's lives).
        lives = np.asarray(info["lives"], dtype=np.int64)
        life_lost = terminated & (lives > 0) & (lives < self.lives)
        game_over = done & ~life_lost
        finished_games = [(int(index), float(self.game_returns[index]), int(self.game_lengths[index]))
                          for index in np.flatnonzero(game_over)]
        self.game_returns[game_over] = 0
        self.game_lengths[game_over] = 0
        self.lives = lives
        rewards = np.sign(raw_rewards) if self.clip_rewards else raw_rewards
        return VectorStep(next_obs, rewards.astype(np.float32), terminated, truncated, finished_games)

    def state(self) -> None:
        """ale-py's vector env cannot be saved: a resumed run starts new games."""
        return None

    def load_state(self, blob: bytes) -> None:  # pragma: no cover - state() is always None
        raise NotImplementedError

    def close(self) -> None:
        self.vector_env.close()


def make_envs(env_cfg: Any, seed: int) -> SerialEnvs | AleVectorEnvs:
    """The sub-environments of the ``env`` config: ale-py's vector env for several Atari games."""
    num_envs = int(env_cfg.get("num_envs", 1))
    if env_cfg.kind == "atari" and num_envs > 1:
        return AleVectorEnvs(env_cfg, num_envs, seed)
    return SerialEnvs(env_cfg, num_envs, seed)
