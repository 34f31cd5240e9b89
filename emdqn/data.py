"""The DataModule: environment loop, replay buffer and episodic memory in one place.

Its dataset plays ``agent.train_freq`` env steps with the module's current Q-network
(epsilon-greedy), then yields one replay batch that already carries the memory target H
and the hit mask. Env steps are the clock of every schedule and of the budget; the stream
ends when ``agent.total_steps`` env steps have been played.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from emdqn.memory import EpisodicMemory
from emdqn.metrics import ProgressReporter, log_metrics
from emdqn.replay import MultiEnvReplay
from emdqn.schedules import PiecewiseLinearSchedule
from emdqn.vector import make_envs


class ExperienceStream(IterableDataset):
    """Batches produced by playing the environment; see :meth:`EMDQNDataModule.batches`."""

    def __init__(self, datamodule: "EMDQNDataModule"):
        super().__init__()
        self.datamodule = datamodule

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.datamodule.batches()


class EMDQNDataModule(pl.LightningDataModule):
    """Owns the env, the replay buffer and the episodic memory (``num_workers`` stays 0)."""

    def __init__(self, cfg: Any):
        super().__init__()
        self.cfg = cfg
        self.agent = cfg.agent
        self.envs = make_envs(cfg.env, seed=cfg.seed)
        self.num_envs = self.envs.num_envs
        self.obs_shape = self.envs.observation_shape
        self.num_actions = self.envs.num_actions
        frame_stack = cfg.env.frame_stack if cfg.env.kind == "atari" else 1  # MinAtar frames carry motion trails
        memory_cfg = cfg.memory
        self.memory: EpisodicMemory | None = None
        if memory_cfg.enabled:
            self.memory = EpisodicMemory(
                self.num_actions, self.obs_shape, key_dim=memory_cfg.key_dim, capacity=memory_cfg.capacity,
                match=memory_cfg.match, k=memory_cfg.k, seed=memory_cfg.seed, tolerance=memory_cfg.tolerance)
        self.replay = MultiEnvReplay(
            self.num_envs, cfg.buffer.capacity, self.obs_shape, frame_stack=frame_stack,
            obs_dtype=self.envs.observation_dtype, key_dim=memory_cfg.key_dim if self.memory is not None else 0,
            seed=cfg.seed)
        self.epsilon = PiecewiseLinearSchedule(self.agent.exploration.schedule)
        self.batch_size = int(self.agent.batch_size)
        self.n_step, self.gamma = int(self.agent.n_step), float(self.agent.gamma)
        self.rng = np.random.default_rng(cfg.seed)
        self.frames_per_step = cfg.env.frame_skip if cfg.env.kind == "atari" else 1
        self.progress = ProgressReporter(self.agent.total_steps, cfg.trainer.progress_every_seconds)
        # Counters and the episode in progress (all part of a resumable state).
        self.env_steps = 0
        self.episodes = 0
        self.recent_returns: deque[float] = deque(maxlen=100)
        # Each env's (training) episode in progress, written to the memory when it ends.
        self.episode_keys: list[list[np.ndarray]] = [[] for _ in range(self.num_envs)]
        self.episode_actions: list[list[int]] = [[] for _ in range(self.num_envs)]
        self.episode_rewards: list[list[float]] = [[] for _ in range(self.num_envs)]
        self.hit_window: deque[tuple[int, int, float]] = deque(maxlen=memory_cfg.hit_rate_window)
        self.stop_requested = False  # a signal: stop, checkpoint, resume later
        self.solved_at_step: int | None = None  # eval.stop_at_return reached: the run is complete
        self.learning_resumes_at = 0
        self.total_steps = int(self.agent.total_steps)  # a plain int: read every env step
        # A step whose actions were sent but not yet received: (obs, actions, memory keys).
        self.step_in_flight: tuple[np.ndarray, np.ndarray, Any] | None = None
        self._rng_before_step = self.rng.bit_generator.state
        self.updates_pending = 0  # batches still to yield for the last step played
        self._interval_start = (time.perf_counter(), 0)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(ExperienceStream(self), batch_size=None, num_workers=0)

    # ------------------------------------------------------------------ acting
    def _loggers(self) -> list[Any]:
        return list(self.trainer.loggers) if self.trainer is not None else []

    @torch.inference_mode()
    def greedy_actions(self, network: torch.nn.Module, obs: np.ndarray) -> np.ndarray:
        device = next(network.parameters()).device
        # This stream is consumed inside training_step, under Lightning's autocast when
        # trainer.precision=bf16-mixed; acting stays fp32 (and casting the weights to bf16
        # for a batch of a few observations costs more than the pass saves).
        with torch.autocast(device.type, enabled=False):
            return network(torch.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()

    def choose_actions(self, network: torch.nn.Module, obs: np.ndarray) -> np.ndarray:
        """Epsilon-greedy for every env; the network runs only when some env acts greedily."""
        epsilon = self.epsilon(self.env_steps)
        explore = self.rng.random(self.num_envs) < epsilon
        actions = self.rng.integers(self.num_actions, size=self.num_envs)
        if not explore.all():
            actions = np.where(explore, actions, self.greedy_actions(network, obs))
        return actions

    def play_step(self, network: torch.nn.Module) -> None:
        """One epsilon-greedy step of every env (``num_envs`` env steps): store the
        transitions, write finished episodes to the memory."""
        if self.step_in_flight is None:
            self.start_step(network)
        self.finish_step()

    def start_step(self, network: torch.nn.Module) -> None:
        """Choose every env's action and hand the actions to the envs."""
        if self.envs.observations is None:
            self.envs.reset()
        self._rng_before_step = self.rng.bit_generator.state
        obs = self.envs.observations.copy()
        actions = self.choose_actions(network, obs)
        self.envs.send(actions)
        # Projected while the envs step (ale-py's threads emulate the games meanwhile).
        keys = self.memory.project(obs) if self.memory is not None else [None] * self.num_envs
        self.step_in_flight = (obs, actions, keys)

    def start_next_step_early(self, network: torch.nn.Module) -> None:
        """Called after a gradient step: when the stream would play next, send the envs
        their actions now, chosen with the network just updated (as the original acts), so
        that the games are emulated during Lightning's work between two steps. Only where
        the envs step in the background; the data and the updates stay the same."""
        if (self.envs.steps_in_background and self.step_in_flight is None and self.updates_pending == 0
                and self._may_play()):
            self.start_step(network)

    def finish_step(self) -> None:
        """Receive the step started by :meth:`start_step` and store what it produced."""
        obs, actions, keys = self.step_in_flight
        step = self.envs.recv()
        self.step_in_flight = None
        for index in range(self.num_envs):
            action, reward = int(actions[index]), float(step.rewards[index])
            self.replay.add(index, obs[index], action, reward, step.next_obs[index], step.terminated[index],
                            step.truncated[index], keys[index])
            if self.memory is not None:
                self.episode_keys[index].append(keys[index])
                self.episode_actions[index].append(action)
                self.episode_rewards[index].append(reward)
                if step.terminated[index]:
                    self.flush_episode_to_memory(index)
                elif step.truncated[index]:
                    self.discard_episode(index)
        self.env_steps += self.num_envs
        for _, episodic_return, length in step.finished_games:
            self._log_game(episodic_return, length)

    def flush_episode_to_memory(self, env_index: int) -> None:
        """Write env ``env_index``'s finished (terminated) episode to the memory, walking backwards."""
        if self.memory is not None and self.episode_keys[env_index]:
            self.memory.add_episode(np.stack(self.episode_keys[env_index]),
                                    np.asarray(self.episode_actions[env_index], dtype=np.int64),
                                    np.asarray(self.episode_rewards[env_index]), self.agent.gamma)
        self.discard_episode(env_index)

    def discard_episode(self, env_index: int) -> None:
        """Forget env ``env_index``'s episode in progress without writing it.

        A cut-off episode (time limit, a game restarted on resume) is never written: its
        returns lack the rewards after the cut, and a too-low H would only be harmless
        while a max-update keeps any too-high value forever; the rule is one and simple.
        """
        self.episode_keys[env_index], self.episode_actions[env_index], self.episode_rewards[env_index] = [], [], []

    def _log_game(self, episodic_return: float, length: int) -> None:
        self.episodes += 1
        self.recent_returns.append(episodic_return)
        log_metrics(self._loggers(), {
            "charts/episodic_return": episodic_return,
            "charts/episodic_length": length,
            "charts/episodes": self.episodes,
        }, self.env_steps)

    # ------------------------------------------------------------------ batches
    def sample_batch(self) -> dict[str, torch.Tensor]:
        batch = self.replay.sample(self.batch_size, self.n_step, self.gamma)
        if self.memory is not None:
            memory_values, found, visits = self.memory.lookup(batch["keys"], batch["actions"], with_visits=True)
            hits = int(found.sum())
            self.hit_window.append((hits, len(found), float(memory_values[found].sum()),
                                    int(np.count_nonzero(visits > 1))))
        else:
            memory_values = np.zeros(len(batch["actions"]), dtype=np.float32)
            found = np.zeros(len(batch["actions"]), dtype=bool)
        return {
            "obs": torch.from_numpy(batch["obs"]),
            "actions": torch.from_numpy(batch["actions"]),
            "rewards": torch.from_numpy(batch["rewards"]),
            "next_obs": torch.from_numpy(batch["next_obs"]),
            "terminated": torch.from_numpy(batch["terminated"]),
            "discounts": torch.from_numpy(batch["discounts"]),
            "memory_values": torch.from_numpy(memory_values),
            "memory_found": torch.from_numpy(found),
            "env_step": torch.tensor(self.env_steps, dtype=torch.int64),
        }

    def _may_play(self) -> bool:
        return self.env_steps < self.total_steps and not self.stop_requested and self.solved_at_step is None

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Play one step of the envs at a time; per ``train_freq`` env steps, yield a batch.

        Stepping one at a time (not ``train_freq`` per loop) keeps the schedule identical
        when a run stops between two gradient steps and is resumed. A step that
        :meth:`start_next_step_early` started is finished here; if the run stops first,
        that step never happened (its actions are dropped, nothing was stored).
        """
        network = self.trainer.lightning_module.q_network if self.trainer is not None else None
        # Plain ints (here and self.total_steps): config lookups cost more than this loop's bookkeeping.
        train_freq = int(self.agent.train_freq)
        learning_starts = max(int(self.agent.learning_starts), self.learning_resumes_at)
        first_update = -(-learning_starts // train_freq)  # the first multiple of train_freq >= learning_starts
        while self._may_play():
            steps_before = self.env_steps
            self.play_step(network)
            if self.progress.due():
                self._report_progress()
            # One batch per multiple of train_freq (at or after learning starts) passed in this
            # step, however many envs it played: the same updates as with one env.
            self.updates_pending = self.env_steps // train_freq - max(steps_before // train_freq, first_update - 1)
            while self.updates_pending > 0:
                self.updates_pending -= 1
                yield self.sample_batch()
        self._report_progress(force=True)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Counters, RNG, the episode in progress and the observation the agent acts from."""
        return {
            "env_steps": self.env_steps, "episodes": self.episodes, "recent_returns": list(self.recent_returns),
            "episode_keys": list(self.episode_keys), "episode_actions": list(self.episode_actions),
            "episode_rewards": list(self.episode_rewards),
            # A step in flight is not in this state (nothing of it is stored yet): the RNG as before it.
            "rng": self._rng_before_step if self.step_in_flight is not None else self.rng.bit_generator.state,
            "hit_window": list(self.hit_window),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env_steps, self.episodes = int(state["env_steps"]), int(state["episodes"])
        self.recent_returns.extend(state["recent_returns"])
        self.episode_keys = list(state["episode_keys"])
        self.episode_actions = list(state["episode_actions"])
        self.episode_rewards = list(state["episode_rewards"])
        self.rng.bit_generator.state = state["rng"]
        # Windows saved before revisits were counted have three fields: no revisit known.
        self.hit_window.extend(tuple(row) + (0,) * (4 - len(row)) for row in state["hit_window"])
        self._interval_start = (time.perf_counter(), self.env_steps)

    def episodes_not_restored(self) -> None:
        """After a resume without the envs' state: new games start, the old episodes end here."""
        self.envs.observations = None
        for index in range(self.num_envs):
            self.replay.end_episode(index)
            self.discard_episode(index)

    def replay_not_restored(self) -> None:
        """After a resume without the replay file: refill before learning goes on."""
        self.learning_resumes_at = self.env_steps + self.agent.learning_starts
        self.episodes_not_restored()

    # ------------------------------------------------------------------ reporting
    def recent_return(self) -> float | None:
        return float(np.mean(self.recent_returns)) if self.recent_returns else None

    def _report_progress(self, force: bool = False) -> None:
        self.progress.maybe_report(self.env_steps, self.epsilon(self.env_steps), self.recent_return(),
                                   len(self.memory) if self.memory is not None else None, force=force)

    def interval_metrics(self) -> dict[str, float]:
        """Metrics of the data side since the previous call (SPS, epsilon, memory stats)."""
        now = time.perf_counter()
        start_time, start_step = self._interval_start
        self._interval_start = (now, self.env_steps)
        metrics = {
            "charts/epsilon": self.epsilon(self.env_steps),
            "charts/SPS": (self.env_steps - start_step) / max(now - start_time, 1e-9),
            "charts/frames": self.env_steps * self.frames_per_step,
        }
        if self.memory is not None:
            hits, total, value_sum, revisits = (sum(column) for column in zip(*self.hit_window)) \
                if self.hit_window else (0, 0, 0.0, 0)
            metrics["memory/hit_rate"] = hits / total if total else 0.0
            metrics["memory/h_mean"] = value_sum / hits if hits else 0.0
            metrics["memory/revisit_share"] = revisits / hits if hits else 0.0
            metrics["memory/size"] = len(self.memory)
            metrics["memory/rebuild_seconds"] = self.memory.rebuild_seconds
        return metrics
