"""The learner, free of Lightning: online and target Q-networks and how they are trained.

    learner = Learner.from_config(cfg, obs_shape, num_actions)
    losses = learner.update(batch)      # one gradient step; the mean losses when a log row is due
    learner.state_dict()                # networks, Adam, cadences, keep-best: an exact resume

One update: the EMDQN loss of the batch (:mod:`emdqn.agent.loss`), backward, per-tensor clipping,
Adam with the lr of the env step's schedule, the target sync every ``agent.target_update`` env
steps. The LightningModule wraps it for the Trainer; the benchmarks time it bare.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Sequence

import torch

from emdqn.agent.cadence import Cadence
from emdqn.config.checks import MemoryWeights, resolve_memory_weights
from emdqn.agent.networks import build_q_network
from emdqn.agent.schedules import PiecewiseLinearSchedule
from emdqn.agent.loss import (LOGGED_PARTS, METRIC_NAMES, Batch, NonFiniteLossError, adam_step, build_optimizer,
                              compute_gradients, emdqn_loss)


class Learner:
    """Online and target Q-networks trained on alpha * TD + beta * memory loss."""

    def __init__(self, agent_cfg: Any, q_network: torch.nn.Module, weights: MemoryWeights, *,
                 memory_average: str = "batch", log_every: int = 1000, compile_networks: bool = False,
                 memory_enabled: bool = True):
        self.q_network = q_network
        self.target_network = copy.deepcopy(q_network).requires_grad_(False)
        self.optimizer = build_optimizer(q_network.parameters(), agent_cfg)
        self.weights = weights
        self._train_q, self._train_target = self.q_network, self.target_network
        if compile_networks:
            self._train_q, self._train_target = torch.compile(self.q_network), torch.compile(self.target_network)
        # Plain values for the hot path (config lookups cost more than small tensor ops).
        self.loss_settings = {"alpha": weights.alpha, "beta": weights.beta, "double_q": bool(agent_cfg.double_q),
                              "loss": str(agent_cfg.loss), "average": str(memory_average),
                              "memory": bool(memory_enabled)}
        self.grad_clip_norm = agent_cfg.grad_clip_norm
        # The lr is a function of the env step (not of a scheduler's own counter), so a
        # resumed run continues the same schedule without extra state.
        schedule = agent_cfg.get("lr_schedule")
        self._lr_factor = PiecewiseLinearSchedule(schedule) if schedule is not None else None
        self._base_lr = float(agent_cfg.lr)
        self._parameters = list(self.q_network.parameters())
        self.target_sync = Cadence(int(agent_cfg.target_update))
        self.log_cadence = Cadence(int(log_every))
        # With eval.keep_best: the online network of the best periodic evaluation so far.
        self.best_return, self.best_step = -math.inf, -1
        self.best_network: dict[str, torch.Tensor] | None = None
        self._sums: dict[str, float] = {}
        self._count = 0
        self._last_env_step = 0

    @classmethod
    def from_config(cls, cfg: Any, obs_shape: Sequence[int], num_actions: int,
                    weights: MemoryWeights | None = None) -> "Learner":
        """``weights``: the run's resolved loss weights (resolved from ``cfg.memory`` if not given)."""
        return cls(cfg.agent, build_q_network(cfg.model, obs_shape, num_actions, cfg.trainer),
                   weights if weights is not None else resolve_memory_weights(cfg.memory),
                   memory_average=cfg.memory.average, log_every=int(cfg.trainer.log_every_steps),
                   compile_networks=bool(cfg.trainer.compile), memory_enabled=bool(cfg.memory.enabled))

    def update(self, batch: Batch, optimizer: Any = None,
               backward: Callable[[torch.Tensor], None] | None = None) -> dict[str, float] | None:
        """One gradient step on ``batch``; returns the mean losses since the last row when one is due.

        ``optimizer`` and ``backward``: Lightning's optimizer wrapper and ``manual_backward``
        where its hooks are in use (the same arithmetic); this learner's own otherwise.
        """
        env_step = self._last_env_step = batch.env_step
        parts = self.gradients(batch, backward)
        if self._lr_factor is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self._base_lr * self._lr_factor(env_step)
        if optimizer is not None:  # Lightning's wrapper: its hooks run
            optimizer.step()
        else:
            adam_step(self.optimizer)
        # One device-to-host read per step, once all of its work is queued: on a GPU a check
        # before the backward pass would stall the queue. A non-finite step is never saved:
        # the error ends the run before any checkpoint is written.
        values = dict(zip(LOGGED_PARTS, torch.stack([parts[name].detach() for name in LOGGED_PARTS]).tolist()))
        if not math.isfinite(values["loss"]):
            raise NonFiniteLossError(
                f"the loss became {values['loss']} at env step {env_step} (td_loss={values['td_loss']}, "
                f"memory_loss={values['memory_loss']}); training stopped, the last checkpoint is kept. "
                "Try a lower agent.lr or enable agent.grad_clip_norm.")
        if self.target_sync.due(env_step):
            self._sync_target()
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + value
        self._count += 1
        # A row once the step's updates are all in: one row per log step, however many envs.
        return self._mean_losses() if batch.closes_step and self.log_cadence.due(env_step) else None

    def gradients(self, batch: Batch, backward: Callable[[torch.Tensor], None] | None = None
                  ) -> dict[str, torch.Tensor]:
        """The loss of ``batch`` and its parts, with the clipped gradients in the online network."""
        parts = emdqn_loss(self._train_q, self._train_target, batch, **self.loss_settings)
        compute_gradients(parts["loss"], self._parameters, self.grad_clip_norm, backward)
        return parts

    def _sync_target(self) -> None:
        self.target_network.load_state_dict(self.q_network.state_dict())

    def _mean_losses(self) -> dict[str, float]:
        """The mean of each loss part since the last call (the memory's parts only when beta != 0)."""
        metrics = {METRIC_NAMES[name]: total / max(self._count, 1) for name, total in self._sums.items()
                   if self.weights.beta != 0 or not METRIC_NAMES[name].startswith("memory/")}
        self._sums, self._count = {}, 0
        return metrics

    def remaining_losses(self) -> tuple[dict[str, float], int] | None:
        """The mean losses of the steps since the last row and the env step of the last one; None if none."""
        return (self._mean_losses(), self._last_env_step) if self._count else None

    def remember_if_best(self, mean_return: float, env_step: int) -> bool:
        """Keep a copy of the online network when an evaluation is the best so far (a tie: the later)."""
        if mean_return < self.best_return:
            return False
        self.best_return, self.best_step = float(mean_return), int(env_step)
        self.best_network = {name: tensor.detach().clone() for name, tensor in self.q_network.state_dict().items()}
        return True

    def online_weights(self) -> dict[str, torch.Tensor]:
        """The online network's weights on the CPU (what evaluation and the weights-only file need)."""
        return {name: tensor.detach().cpu() for name, tensor in self.q_network.state_dict().items()}

    def parameter_bytes(self) -> int:
        return sum(parameter.numel() * parameter.element_size() for parameter in self._parameters)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Networks, optimizer, cadences, the loss sums of the current row and keep-best."""
        return {"q_network": self.q_network.state_dict(), "target_network": self.target_network.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "last_target_sync": self.target_sync.last, "last_log_step": self.log_cadence.last,
                "loss_sums": {"sums": dict(self._sums), "count": self._count, "last_env_step": self._last_env_step},
                "best": {"return": self.best_return, "step": self.best_step, "network": self.best_network}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q_network.load_state_dict(state["q_network"])
        self.target_network.load_state_dict(state["target_network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.target_sync.last, self.log_cadence.last = int(state["last_target_sync"]), int(state["last_log_step"])
        sums = state["loss_sums"]
        self._sums, self._count, self._last_env_step = dict(sums["sums"]), int(sums["count"]), int(sums["last_env_step"])
        best = state["best"]
        self.best_return, self.best_step, self.best_network = best["return"], best["step"], best["network"]
