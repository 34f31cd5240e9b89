"""Environment construction: Atari with the original code's preprocessing, MinAtar, flat games.

Atari wrappers are applied in the order of the original code (its ``wrap_dqn``), innermost
(nearest the emulator) first::

    frame cap (400k frames, also ALE's own) -> [real-game statistics] -> episodic life
      -> 1-30 no-op frames -> skip 4 with max-pool -> fire reset
      -> the original's cropped 84x84 frame -> sign-clipped reward -> 4-frame stack

Episodic life being innermost, a lost life is followed by the random no-ops and FIRE, as
in the original. The *reported* return (``info["episode"]``) is counted below every other
wrapper, so it is the real, unclipped score of a full game; its length is in agent steps
(frames / ``frame_skip``, rounded up).
"""

from __future__ import annotations

import difflib
import logging
import warnings
from typing import Any, Callable

import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces

from emdqn.config.choices import ENV_KINDS

try:  # ale-py >= 0.9 ships the ROMs; registering is a no-op when already done.
    import ale_py

    gym.register_envs(ale_py)
except ImportError:  # pragma: no cover - ale-py is a core dependency
    ale_py = None


def register_minatar() -> None:
    """MinAtar's gymnasium ids exist only after ``minatar.gym.register_envs()``. Called when a
    MinAtar id is asked for, not at import: importing minatar loads seaborn and scipy.stats
    (about a second), which a config error, a listing of Atari ids or a CartPole run never need."""
    if "MinAtar/Breakout-v0" in gym.registry:
        return
    # minatar.gym logs a root-logger warning when seaborn (needed only for its rgb_array
    # rendering) is missing; training never renders through it.
    logging.disable(logging.WARNING)
    try:
        import minatar.gym
    finally:
        logging.disable(logging.NOTSET)
    minatar.gym.register_envs()


def minatar_id(game: str, action_set: str = "full") -> str:
    """The gymnasium id of a MinAtar game: ``full`` (6 actions, -v0, the published results) or ``minimal`` (-v1)."""
    version = {"full": "v0", "minimal": "v1"}.get(action_set, action_set)
    return f"MinAtar/{str(game).title().replace('_', '')}-{version}"


class NoopResetEnv(gym.Wrapper):
    """Play a random number (1..noop_max) of NOOPs after each real reset."""

    def __init__(self, env: gym.Env, noop_max: int = 30):
        super().__init__(env)
        self.noop_max = noop_max
        assert env.unwrapped.get_action_meanings()[0] == "NOOP"

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        noops = int(self.unwrapped.np_random.integers(1, self.noop_max + 1))
        for _ in range(noops):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class MaxAndSkipEnv(gym.Wrapper):
    """Repeat the action ``skip`` frames; observe the max over the last two frames seen
    (Atari flicker), also when a step ends early, as the original's deque of two frames."""

    def __init__(self, env: gym.Env, skip: int = 4):
        super().__init__(env)
        self._skip = skip
        self._obs_buffer = np.zeros((2, *env.observation_space.shape), dtype=np.uint8)
        self._frames_seen = 0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._obs_buffer[:] = obs
        return obs, info

    def step(self, action):
        total_reward = 0.0
        terminated = truncated = False
        info: dict[str, Any] = {}
        for _ in range(self._skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            self._obs_buffer[self._frames_seen % 2] = obs
            self._frames_seen += 1
            total_reward += float(reward)
            if terminated or truncated:
                break
        return self._obs_buffer.max(axis=0), total_reward, terminated, truncated, info


class GameStatistics(gym.Wrapper):
    """The real score and length of each full game, counted on every emulator frame below
    the life, no-op and reward wrappers: ``info["episode"] = {"r": score, "l": agent steps}``
    on the step that ends a game (game over or the frame cap)."""

    def __init__(self, env: gym.Env, frames_per_step: int):
        super().__init__(env)
        self.frames_per_step = frames_per_step
        self.game_return, self.frames = 0.0, 0

    def reset(self, **kwargs):
        self.game_return, self.frames = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_return += float(reward)
        self.frames += 1
        if terminated or truncated:
            info = {**info, "episode": {"r": self.game_return, "l": -(-self.frames // self.frames_per_step)}}
        return obs, reward, terminated, truncated, info


class EpisodicLifeEnv(gym.Wrapper):
    """A lost life ends the training episode; the game itself only resets when it is over."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:  # no-op step to continue from the state where the life was lost
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireResetEnv(gym.Wrapper):
    """Press FIRE after reset for games that wait for it."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        assert meanings[1] == "FIRE" and len(meanings) >= 3

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:
            self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(2)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        return obs, info


class WarpFrame(gym.ObservationWrapper):
    """Grayscale and resize to ``size`` x ``size`` with area interpolation (as baselines)."""

    def __init__(self, env: gym.Env, size: int = 84):
        super().__init__(env)
        self.size = size
        self.observation_space = spaces.Box(0, 255, (size, size), dtype=np.uint8)

    def observation(self, frame):
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        return cv2.resize(frame, (self.size, self.size), interpolation=cv2.INTER_AREA)


class OriginalFrame(gym.ObservationWrapper):
    """The original code's ``ProcessFrame84``: gray = 0.299 R + 0.587 G + 0.114 B in float,
    resized to 84 wide x 110 high (area interpolation), rows 18-101 kept (the score bar and,
    in Pong, the walls are cut away), truncated to uint8.

    Without the crop every point scored changes the frame, and with it every later memory key.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = spaces.Box(0, 255, (84, 84), dtype=np.uint8)

    def observation(self, frame):
        gray = frame[:, :, 0] * np.float32(0.299) + frame[:, :, 1] * np.float32(0.587) \
            + frame[:, :, 2] * np.float32(0.114)
        resized = cv2.resize(gray, (84, 110), interpolation=cv2.INTER_AREA)
        return resized[18:102, :].astype(np.uint8)


FRAME_PROCESSING = {"original": OriginalFrame, "resize": WarpFrame}


class ClipRewardEnv(gym.RewardWrapper):
    """Train on the sign of the reward; the reported score stays unclipped."""

    def reward(self, reward):
        return float(np.sign(reward))


class ChannelsFirstUint8(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """MinAtar's bool (10, 10, C) frames as uint8 (C, 10, 10): the layout of every image env here."""

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        height, width, channels = env.observation_space.shape
        self.observation_space = spaces.Box(0, 1, (channels, height, width), dtype=np.uint8)

    def observation(self, obs):
        return np.ascontiguousarray(obs.transpose(2, 0, 1), dtype=np.uint8)


class UpscaledRender(gym.Wrapper):
    """MinAtar renders 10x10 floats in [0, 1]: as uint8 pixels, each cell ``scale`` pixels wide (videos)."""

    def __init__(self, env: gym.Env, scale: int = 16, fps: int = 15):
        super().__init__(env)
        self.scale = scale
        self.metadata = {**env.metadata, "render_fps": fps}

    def render(self):
        frame = np.asarray(self.env.render(), dtype=np.float64)
        pixels = np.clip(np.rint(frame * 255), 0, 255).astype(np.uint8)
        return np.kron(pixels, np.ones((self.scale, self.scale, 1), dtype=np.uint8))


class OneHotObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Discrete states as one-hot vectors, so exact state repeats give exact key repeats."""

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        self.n = int(env.observation_space.n)
        self.observation_space = spaces.Box(0.0, 1.0, (self.n,), dtype=np.float32)

    def observation(self, obs):
        one_hot = np.zeros(self.n, dtype=np.float32)
        one_hot[int(obs)] = 1.0
        return one_hot


def check_env_id(env_id: str) -> None:
    """Fail early, with a hint, for an id that gymnasium does not know."""
    if env_id.startswith("MinAtar/") or env_id not in gym.registry:
        register_minatar()
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry.keys()), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"env.id={env_id!r} is not a registered gymnasium environment.{hint} "
        "List the valid ids with: python -m emdqn.envs (Atari games look like PongNoFrameskip-v4)."
    )


def make_env(env_cfg: Any, seed: int | None = None, render_mode: str | None = None,
             raw_wrapper: Callable[[gym.Env], gym.Env] | None = None) -> gym.Env:
    """Build one environment from the ``env`` config group.

    Atari envs observe ``(frame_stack, 84, 84)`` uint8 stacks; flat envs observe a 1-D
    float32 vector. Every env reports real full-game statistics in ``info["episode"]``.
    ``raw_wrapper`` wraps the env as ``gym.make`` returns it, below all preprocessing (a
    video recorder sees the unprocessed screen).
    """
    kind = env_cfg.kind
    if kind not in ENV_KINDS:
        raise ValueError(f"env.kind={kind!r} is not supported; allowed: {', '.join(ENV_KINDS)}")
    check_env_id(env_cfg.id)
    kwargs = dict(env_cfg.get("kwargs") or {})
    if kind == "atari":
        env = _make_atari(env_cfg, kwargs, render_mode, raw_wrapper)
    elif kind == "minatar":
        env = _make_minatar(env_cfg, kwargs, render_mode, raw_wrapper)
    else:
        env = gym.make(env_cfg.id, render_mode=render_mode, **kwargs)
        if raw_wrapper is not None:
            env = raw_wrapper(env)
        if isinstance(env.observation_space, spaces.Discrete):
            env = OneHotObservation(env)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        if not isinstance(env.action_space, spaces.Discrete):
            raise ValueError(f"env.id={env_cfg.id!r} has a {env.action_space} action space; DQN needs Discrete")
    if seed is not None:
        env.action_space.seed(seed)
        env.observation_space.seed(seed)
    return env


def _make_minatar(env_cfg: Any, kwargs: dict, render_mode: str | None,
                  raw_wrapper: Callable[[gym.Env], gym.Env] | None) -> gym.Env:
    """MinAtar with its own defaults (sticky actions 0.1, difficulty ramping) and a step cap.

    No frame stack: MinAtar frames carry trail channels that show motion.
    """
    with warnings.catch_warnings():  # -v0 (the full action set of the published results) is not out of date for us
        warnings.filterwarnings("ignore", message=".*is out of date.*")
        # MinAtar's rgb_array frames are floats without a frame rate: UpscaledRender makes
        # them video pixels, and gymnasium's checker would only warn about the raw ones.
        env = gym.make(env_cfg.id, render_mode=render_mode, max_episode_steps=env_cfg.get("max_episode_steps"),
                       disable_env_checker=True, **kwargs)
    if render_mode == "rgb_array":
        env = UpscaledRender(env)
    if raw_wrapper is not None:
        env = raw_wrapper(env)
    env = ChannelsFirstUint8(env)
    return gym.wrappers.RecordEpisodeStatistics(env)


def _make_atari(env_cfg: Any, kwargs: dict, render_mode: str | None,
                raw_wrapper: Callable[[gym.Env], gym.Env] | None) -> gym.Env:
    if "NoFrameskip" not in env_cfg.id and kwargs.get("frameskip", None) != 1:
        # Frame skipping is ours (with max-pool); a second one inside ALE would square it.
        kwargs["frameskip"] = 1
    max_frames = env_cfg.get("max_episode_frames")
    if max_frames:  # ALE caps episodes itself (108,000 frames for *NoFrameskip-v4): the cap must reach it
        kwargs.setdefault("max_num_frames_per_episode", int(max_frames))
    env = gym.make(env_cfg.id, render_mode=render_mode, max_episode_steps=max_frames, **kwargs)
    if raw_wrapper is not None:
        env = raw_wrapper(env)
    env = GameStatistics(env, frames_per_step=env_cfg.frame_skip)
    # The original's order: episodic life innermost, so the random no-ops (and FIRE) are
    # played again after every lost life, not only after a game over.
    if env_cfg.episodic_life:
        env = EpisodicLifeEnv(env)
    if env_cfg.noop_max > 0:
        env = NoopResetEnv(env, noop_max=env_cfg.noop_max)
    env = MaxAndSkipEnv(env, skip=env_cfg.frame_skip)
    if env_cfg.fire_reset and "FIRE" in env.unwrapped.get_action_meanings():
        env = FireResetEnv(env)
    frame = env_cfg.get("frame", "resize")
    env = OriginalFrame(env) if frame == "original" else WarpFrame(env, size=env_cfg.screen_size)
    if env_cfg.clip_rewards:
        env = ClipRewardEnv(env)
    env = gym.wrappers.FrameStackObservation(env, env_cfg.frame_stack, padding_type="reset")
    return env


def real_episode_stats(info: dict) -> tuple[float, int] | None:
    """The (return, length) of a finished real game, if this step finished one."""
    episode = info.get("episode")
    if episode is None:
        return None
    return float(np.asarray(episode["r"]).reshape(-1)[0]), int(np.asarray(episode["l"]).reshape(-1)[0])


def untrainable_reason(env_id: str) -> str | None:
    """Why DQN cannot train a classic-control or toy-text env (None when it can): its actions
    must be a finite set and its observations a flat vector or a finite set of states."""
    try:
        probe = gym.make(env_id)
    except Exception as error:  # an env that needs an extra package, for example
        return f"it cannot be built here ({type(error).__name__}: {error})"
    try:
        actions, observations = probe.action_space, probe.observation_space
    finally:
        probe.close()
    if not isinstance(actions, spaces.Discrete):
        return f"its actions are {actions}, and DQN needs a finite set of actions (Discrete)"
    flat = isinstance(observations, spaces.Discrete) or (isinstance(observations, spaces.Box)
                                                          and len(observations.shape) == 1)
    if not flat:
        return f"its observations are {observations}, and model=mlp takes a flat vector or a Discrete state"
    return None


def available_envs() -> dict[str, list[str]]:
    """The environment ids this machine can build and train, by family."""
    register_minatar()
    families: dict[str, list[str]] = {"Atari (env=atari env.id=...)": [], "MinAtar (env=minatar env.game=...)": [],
                                      "classic control and toy text (model=mlp)": []}
    for env_id, spec in sorted(gym.registry.items()):
        entry = str(spec.entry_point)
        if "ale_py" in entry and env_id.endswith("NoFrameskip-v4"):
            families["Atari (env=atari env.id=...)"].append(env_id)
        elif env_id.startswith("MinAtar/"):
            families["MinAtar (env=minatar env.game=...)"].append(env_id)
        elif ("classic_control" in entry or "toy_text" in entry) and untrainable_reason(env_id) is None:
            families["classic control and toy text (model=mlp)"].append(env_id)
    return families
