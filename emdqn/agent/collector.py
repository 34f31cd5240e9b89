"""The RL loop, free of Lightning: act, step the envs, store, write finished episodes, sample.

    collector = Collector.from_config(cfg)
    collector.set_policy(q_network)          # once; acting always uses its current weights
    for batch in collector.batches():        # one Batch (with H and the hit mask) per train_freq env steps
        update(batch)

Each env step: epsilon-greedy actions for every env (one batched forward pass when some
env acts greedily), the envs step, every transition goes to the replay buffer with the
memory key of the observation it was taken from, and the memory feed
(:mod:`emdqn.agent.memory_feed`) sees the step (it writes an episode that terminated). A sampled
batch carries H(s, a) and the hit mask from the feed. With ``memory=none`` the feed is
:class:`~emdqn.agent.memory_feed.NoMemory`: the same loop, nothing kept. Env steps are the clock
of the epsilon schedule, the updates, the logs and the budget.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from emdqn.agent.cadence import Cadence, crossings
from emdqn.agent.memory_feed import EpisodicFeed, NoMemory, build_memory_feed
from emdqn.agent.metrics import ProgressReporter, log_metrics
from emdqn.agent.replay import MultiEnvReplay, ReplaySample
from emdqn.agent.schedules import PiecewiseLinearSchedule
from emdqn.agent.loss import Batch
from emdqn.envs.vector import make_envs


@dataclass
class RunControl:
    """Why the loop stops early: a signal (checkpoint, resume later) or a solved task."""

    stop_requested: bool = False
    solved_at_step: int | None = None


@torch.inference_mode()
def greedy_actions(network: torch.nn.Module, obs: np.ndarray) -> np.ndarray:
    device = next(network.parameters()).device
    # The loop runs inside Lightning's training step, under its autocast when
    # trainer.precision=bf16-mixed; acting stays fp32 (and casting the weights to bf16
    # for a batch of a few observations costs more than the pass saves). Entering the
    # autocast-off context only when autocast is on keeps it off the fp32 hot path.
    autocast_off = (torch.autocast(device.type, enabled=False) if torch.is_autocast_enabled(device.type)
                    else contextlib.nullcontext())
    with autocast_off:
        return network(torch.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()


class Collector:
    """Plays the envs with a policy, feeds the replay buffer and the episodic memory."""

    def __init__(self, envs: Any, replay: MultiEnvReplay, memory_feed: EpisodicFeed | NoMemory, *, schedule: Any,
                 batch_size: int, train_freq: int, learning_starts: int, total_steps: int, gamma: float,
                 n_step: int = 1, seed: int = 0, frames_per_step: int = 1, log_every: int = 1000,
                 progress_every_seconds: float = 10.0, control: RunControl | None = None):
        self.envs, self.replay, self.memory_feed = envs, replay, memory_feed
        self.num_envs = envs.num_envs
        self.epsilon = PiecewiseLinearSchedule(schedule)
        self.batch_size, self.train_freq, self.n_step, self.gamma = batch_size, train_freq, n_step, gamma
        self.learning_starts, self.total_steps = learning_starts, total_steps
        self.frames_per_step = frames_per_step
        self.control = control or RunControl()
        self.rng = np.random.default_rng(seed)
        self.progress = ProgressReporter(total_steps, progress_every_seconds, learning_starts)
        self.log_cadence = Cadence(log_every)
        self.policy: torch.nn.Module | None = None
        self.loggers: list[Any] = []
        # Counters and the episodes in progress: all part of the resumable state.
        self.env_steps = 0
        self.episodes = 0
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.learning_resumes_at = 0
        # A step whose actions were sent but not yet received: (obs, actions, memory keys).
        self.step_in_flight: tuple[np.ndarray, np.ndarray, Any] | None = None
        self._rng_before_step = self.rng.bit_generator.state
        self.updates_pending = 0  # batches still to yield for the last step played
        self._interval_start = (time.perf_counter(), 0)

    @classmethod
    def from_config(cls, cfg: Any, control: RunControl | None = None) -> "Collector":
        envs = make_envs(cfg.env, seed=cfg.seed)
        agent = cfg.agent
        memory_feed = build_memory_feed(cfg.memory, envs.num_envs, envs.num_actions, envs.observation_shape,
                                   float(agent.gamma))
        # Atari observations are stacks of frames stored once; MinAtar frames carry motion trails.
        frame_stack = cfg.env.frame_stack if cfg.env.kind == "atari" else 1
        replay = MultiEnvReplay(envs.num_envs, cfg.buffer.capacity, envs.observation_shape, frame_stack=frame_stack,
                                obs_dtype=envs.observation_dtype, key_dim=memory_feed.key_dim, seed=cfg.seed)
        return cls(envs, replay, memory_feed, schedule=agent.exploration.schedule, batch_size=int(agent.batch_size),
                   train_freq=int(agent.train_freq), learning_starts=int(agent.learning_starts),
                   total_steps=int(agent.total_steps), gamma=float(agent.gamma), n_step=int(agent.n_step),
                   seed=cfg.seed, frames_per_step=cfg.env.frame_skip if cfg.env.kind == "atari" else 1,
                   log_every=int(cfg.trainer.log_every_steps),
                   progress_every_seconds=cfg.trainer.progress_every_seconds, control=control)

    def set_policy(self, network: torch.nn.Module) -> None:
        """The Q-network acting greedily; handed over once, read with its current weights."""
        self.policy = network

    def log_to(self, loggers: list[Any]) -> None:
        self.loggers = list(loggers)

    # ------------------------------------------------------------------ acting
    def _choose_actions(self, obs: np.ndarray) -> np.ndarray:
        """Epsilon-greedy for every env; the network runs only when some env acts greedily."""
        epsilon = self.epsilon(self.env_steps)
        explore = self.rng.random(self.num_envs) < epsilon
        actions = self.rng.integers(self.envs.num_actions, size=self.num_envs)
        if not explore.all():
            actions = np.where(explore, actions, greedy_actions(self.policy, obs))
        return actions

    def play_step(self) -> None:
        """One epsilon-greedy step of every env (``num_envs`` env steps)."""
        if self.step_in_flight is None:
            self._start_step()
        self._finish_step()

    def _start_step(self) -> None:
        """Choose every env's action and hand the actions to the envs."""
        if self.envs.observations is None:
            self.envs.reset()
        self._rng_before_step = self.rng.bit_generator.state
        obs = self.envs.observations.copy()
        actions = self._choose_actions(obs)
        self.envs.send(actions)
        # Projected while the envs step (ale-py's threads emulate the games meanwhile).
        keys = self.memory_feed.keys(obs)
        self.step_in_flight = (obs, actions, keys)

    def start_next_step_early(self) -> None:
        """After a gradient step: when the loop would play next, send the envs their
        actions now, chosen with the network just updated (as the original acts), so that
        the games are emulated during Lightning's work between two steps. Only where the
        envs step in the background; the data and the updates stay the same."""
        if (self.envs.steps_in_background and self.step_in_flight is None and self.updates_pending == 0
                and self._may_play()):
            self._start_step()

    def _finish_step(self) -> None:
        """Receive the step started by :meth:`_start_step` and store what it produced."""
        obs, actions, keys = self.step_in_flight
        step = self.envs.recv()
        self.step_in_flight = None
        for index in range(self.num_envs):
            self.replay.add(index, obs[index], int(actions[index]), float(step.rewards[index]), step.next_obs[index],
                            step.terminated[index], step.truncated[index], keys[index])
        self.memory_feed.observe(keys, actions, step.rewards, step.terminated, step.truncated)
        self.env_steps += self.num_envs
        for _, episodic_return, length in step.finished_games:
            self._log_game(episodic_return, length)

    def _log_game(self, episodic_return: float, length: int) -> None:
        self.episodes += 1
        self.recent_returns.append(episodic_return)
        log_metrics(self.loggers, {"charts/episodic_return": episodic_return, "charts/episodic_length": length,
                                   "charts/episodes": self.episodes}, self.env_steps)

    # ------------------------------------------------------------------ batches
    def _sample_batch(self) -> Batch:
        """A replay batch with H(s, a) and the hit mask of each sample."""
        sample: ReplaySample = self.replay.sample(self.batch_size, self.n_step, self.gamma)
        memory_values, found = self.memory_feed.values(sample.keys, sample.actions)
        return Batch(obs=torch.from_numpy(sample.obs), actions=torch.from_numpy(sample.actions),
                     rewards=torch.from_numpy(sample.rewards), next_obs=torch.from_numpy(sample.next_obs),
                     terminated=torch.from_numpy(sample.terminated), discounts=torch.from_numpy(sample.discounts),
                     memory_values=torch.from_numpy(memory_values), memory_found=torch.from_numpy(found),
                     env_step=self.env_steps, closes_step=self.updates_pending == 0)

    def _may_play(self) -> bool:
        control = self.control
        return self.env_steps < self.total_steps and not control.stop_requested and control.solved_at_step is None

    def batches(self) -> Iterator[Batch]:
        """Play one step of the envs at a time; per ``train_freq`` env steps, yield a batch.

        Stepping one at a time keeps the schedule identical when a run stops between two
        gradient steps and is resumed. A step that :meth:`start_next_step_early` started is
        finished here; if the run stops first, that step never happened (its actions are
        dropped, nothing was stored).
        """
        learning_starts = max(self.learning_starts, self.learning_resumes_at)
        first_update = -(-learning_starts // self.train_freq)  # the first multiple of train_freq >= learning_starts
        # A stop (or a checkpoint) can fall between the updates of one step (several envs, or
        # train_freq below the envs' count): a resumed run first takes the ones still due.
        yield from self._batches_due()
        while self._may_play():
            steps_before = self.env_steps
            self.play_step()
            if self.progress.due():
                self._report_progress()
            if self.log_cadence.due(self.env_steps):
                log_metrics(self.loggers, self.interval_metrics(), self.env_steps)
            # One batch per multiple of train_freq (at or after learning starts) passed in
            # this step, however many envs it played: the same updates as with one env.
            self.updates_pending = crossings(max(steps_before, (first_update - 1) * self.train_freq),
                                             self.env_steps, self.train_freq)
            yield from self._batches_due()
        self._report_progress(force=True)

    def _batches_due(self) -> Iterator[Batch]:
        """The ``updates_pending`` batches of the last step played, counted down as they go out
        (so that a stop between two of them leaves the rest in the state)."""
        while self.updates_pending > 0:
            self.updates_pending -= 1
            yield self._sample_batch()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Counters, RNG, the updates still due for the last step played, the envs and the memory
        feed (the replay is saved apart: :meth:`replay_state`)."""
        return {
            "env_steps": self.env_steps, "episodes": self.episodes, "recent_returns": list(self.recent_returns),
            # A step in flight is not in this state (nothing of it is stored yet): the RNG as before it.
            "rng": self._rng_before_step if self.step_in_flight is not None else self.rng.bit_generator.state,
            "last_log_step": self.log_cadence.last,
            "updates_pending": self.updates_pending,
            "env": self.envs.state(),
            "memory": self.memory_feed.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], replay_restored: bool = True) -> None:
        """Restore :meth:`state_dict` (after :meth:`load_replay_state`: the episodes of envs that
        cannot be restored are closed in the replay). Without the replay (``replay_restored``
        false, a checkpoint saved without it) the buffer refills for ``agent.learning_starts``
        env steps before learning goes on; the games, and the episodes the memory will be
        written, go on."""
        self.env_steps, self.episodes = int(state["env_steps"]), int(state["episodes"])
        self.recent_returns.extend(state["recent_returns"])
        self.rng.bit_generator.state = state["rng"]
        self.log_cadence.last = int(state["last_log_step"])
        self.updates_pending = int(state.get("updates_pending", 0))  # absent from checkpoints of older versions
        self._interval_start = (time.perf_counter(), self.env_steps)
        self.memory_feed.load_state_dict(state["memory"])
        if not replay_restored:
            self.learning_resumes_at = self.env_steps + self.learning_starts
        if state["env"] is not None:
            self.envs.load_state(state["env"])
        else:  # the games in progress cannot be restored (ale-py's vector env): new ones start
            self._start_new_episodes()

    def replay_state(self) -> dict[str, Any]:
        """The replay buffer's state: large arrays under ``arrays``, saved in files of their own."""
        return self.replay.state_dict()

    def load_replay_state(self, state: dict[str, Any]) -> None:
        self.replay.load_state_dict(state)

    def _start_new_episodes(self) -> None:
        """After a resume without the envs' state: new games start, the old episodes end here, unwritten."""
        self.envs.observations = None
        for index in range(self.num_envs):
            self.replay.end_episode(index)
        self.memory_feed.end_episodes()

    # ------------------------------------------------------------------ reporting
    def recent_return(self) -> float | None:
        return float(np.mean(self.recent_returns)) if self.recent_returns else None

    def _report_progress(self, force: bool = False) -> None:
        self.progress.maybe_report(self.env_steps, self.epsilon(self.env_steps), self.recent_return(),
                                   self.memory_feed.size(), force=force)

    def interval_metrics(self) -> dict[str, float]:
        """Metrics of the loop since the previous call (SPS, epsilon, memory statistics)."""
        now = time.perf_counter()
        start_time, start_step = self._interval_start
        self._interval_start = (now, self.env_steps)
        return {
            "charts/epsilon": self.epsilon(self.env_steps),
            "charts/SPS": (self.env_steps - start_step) / max(now - start_time, 1e-9),
            "charts/frames": self.env_steps * self.frames_per_step,
            **self.memory_feed.metrics(),
        }
