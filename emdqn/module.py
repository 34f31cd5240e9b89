"""The LightningModule: a thin adapter holding the online and target Q-networks.

Each training step takes one replay batch from the collector's stream, computes the
EMDQN loss and takes one optimizer step (:mod:`emdqn.update`), syncs the target network
every ``agent.target_update`` env steps, and logs the loss parts every
``trainer.log_every_steps`` env steps.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Iterator, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities.model_helpers import is_overridden

from emdqn.cadence import Cadence
from emdqn.choices import PRECISIONS
from emdqn.config import MemoryWeights, resolve_memory_weights
from emdqn.metrics import log_metrics
from emdqn.networks import build_q_network
from emdqn.schedules import PiecewiseLinearSchedule
from emdqn.update import (LOGGED_PARTS, METRIC_NAMES, NonFiniteLossError, apply_gradients, build_optimizer,
                          emdqn_loss)


class EMDQNModule(pl.LightningModule):
    """Online and target Q-networks trained on alpha * TD + beta * memory loss."""

    def __init__(self, cfg: Any, obs_shape: Sequence[int], num_actions: int,
                 weights: MemoryWeights | None = None):
        """``weights``: the run's resolved loss weights (resolved from ``cfg.memory`` if not given)."""
        super().__init__()
        self.agent = cfg.agent
        self.automatic_optimization = False
        self.q_network = build_q_network(cfg.model, obs_shape, num_actions, cfg.trainer)
        self.target_network = copy.deepcopy(self.q_network).requires_grad_(False)
        self.weights = weights if weights is not None else resolve_memory_weights(cfg.memory)
        self._train_q, self._train_target = self.q_network, self.target_network
        if cfg.trainer.compile:
            self._train_q = torch.compile(self.q_network)
            self._train_target = torch.compile(self.target_network)
        # Plain values for the hot path (config lookups cost more than small tensor ops).
        self._loss_settings = {"alpha": self.weights.alpha, "beta": self.weights.beta,
                               "double_q": bool(self.agent.double_q), "loss": str(self.agent.loss),
                               "average": str(cfg.memory.average)}
        self._grad_clip_norm = self.agent.grad_clip_norm
        # The lr is a function of the env step (not of a scheduler's own counter), so a
        # resumed run continues the same schedule without extra state.
        schedule = self.agent.get("lr_schedule")
        self._lr_factor = PiecewiseLinearSchedule(schedule) if schedule is not None else None
        self._base_lr = float(self.agent.lr)
        self._q_parameters = list(self.q_network.parameters())
        self.target_sync = Cadence(int(self.agent.target_update))
        self.log_cadence = Cadence(int(cfg.trainer.log_every_steps))
        self.pending_optimizer_state: dict[str, Any] | None = None
        # With eval.keep_best: the online network of the best periodic evaluation so far.
        self.best_return, self.best_step = -math.inf, -1
        self.best_network: dict[str, torch.Tensor] | None = None
        self._sums: dict[str, float] = {}
        self._count = 0
        self._last_env_step = 0
        self._through_lightning = True  # decided when training starts (update_hooks_in_use)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q_network(obs)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.q_network.parameters(), self.agent)

    def on_train_start(self) -> None:
        if self.pending_optimizer_state is not None:
            self.optimizers().optimizer.load_state_dict(self.pending_optimizer_state)
            self.pending_optimizer_state = None
        self._through_lightning = update_hooks_in_use(self.trainer)

    def sync_target(self) -> None:
        self.target_network.load_state_dict(self.q_network.state_dict())

    def training_step(self, dataloader_iter: Iterator) -> None:
        # Taking the iterator (not a batch) turns off Lightning's one-batch prefetch: the env
        # steps of the next batch must be played with the network this step updates, as in
        # the original, and a stop between two steps must not leave a sampled, untrained batch.
        batch, _, _ = next(dataloader_iter)
        if batch.obs.device != self.device:  # Lightning's generic transfer walks the batch even when nothing moves
            batch = self.transfer_batch_to_device(batch, self.device, 0)
        env_step = self._last_env_step = batch.env_step
        parts = emdqn_loss(self._train_q, self._train_target, batch, **self._loss_settings)
        optimizer = self.optimizers(use_pl_optimizer=self._through_lightning)
        if self._lr_factor is not None:
            for group in optimizer.param_groups:
                group["lr"] = self._base_lr * self._lr_factor(env_step)
        apply_gradients(parts["loss"], self._q_parameters, optimizer, self._grad_clip_norm,
                        backward=self.manual_backward if self._through_lightning else None)
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
            self.sync_target()
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + value
        self._count += 1
        if self.log_cadence.due(env_step):
            self._log_losses(env_step)

    def _log_losses(self, env_step: int) -> None:
        metrics = {METRIC_NAMES[name]: total / max(self._count, 1) for name, total in self._sums.items()
                   if self.weights.beta != 0 or not METRIC_NAMES[name].startswith("memory/")}
        log_metrics(self.loggers, metrics, env_step)
        self._sums, self._count = {}, 0

    def remember_if_best(self, mean_return: float, env_step: int) -> bool:
        """Keep a copy of the online network when an evaluation is the best so far (a tie: the later)."""
        if mean_return < self.best_return:
            return False
        self.best_return, self.best_step = float(mean_return), int(env_step)
        self.best_network = {name: tensor.detach().clone() for name, tensor in self.q_network.state_dict().items()}
        return True

    def log_remaining_losses(self) -> None:
        """The mean losses of the steps since the last loss row, at the end of the budget (a
        stopped run keeps them in its checkpoint instead: its resume logs them on time)."""
        if self._count:
            self._log_losses(self._last_env_step)

    # ------------------------------------------------------------------ state
    def training_state(self) -> dict[str, Any]:
        """Networks, optimizer and cadences: what a resumed run needs to go on exactly."""
        try:
            optimizers = self.trainer.optimizers
        except RuntimeError:  # not attached to a Trainer (yet)
            optimizers = []
        return {"q_network": self.q_network.state_dict(), "target_network": self.target_network.state_dict(),
                "optimizer": optimizers[0].state_dict() if optimizers else self.pending_optimizer_state,
                "last_target_sync": self.target_sync.last, "last_log_step": self.log_cadence.last,
                "loss_sums": {"sums": dict(self._sums), "count": self._count, "last_env_step": self._last_env_step},
                "best": {"return": self.best_return, "step": self.best_step, "network": self.best_network}}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state`; the optimizer state follows when training starts."""
        self.q_network.load_state_dict(state["q_network"])
        self.target_network.load_state_dict(state["target_network"])
        self.pending_optimizer_state = state["optimizer"]
        self.target_sync.last, self.log_cadence.last = int(state["last_target_sync"]), int(state["last_log_step"])
        sums = state["loss_sums"]
        self._sums, self._count, self._last_env_step = dict(sums["sums"]), int(sums["count"]), int(sums["last_env_step"])
        best = state.get("best") or {"return": -math.inf, "step": -1, "network": None}
        self.best_return, self.best_step, self.best_network = best["return"], best["step"], best["network"]


# Lightning's per-update hooks: manual_backward and its optimizer wrapper call them (and the
# precision plugin) on every gradient step.
UPDATE_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def update_hooks_in_use(trainer: pl.Trainer) -> bool:
    """Whether the gradient step must go through Lightning (``manual_backward`` and its
    optimizer wrapper): when a callback or the module overrides one of UPDATE_HOOKS, or the
    strategy or precision needs Lightning's hands in the backward pass. Otherwise the step calls
    torch directly: the same arithmetic without Lightning's dispatch of the hooks, which costs
    a small network's run a tenth of its speed (docs/performance.md). Under bf16-mixed the
    autocast comes from the training step's context, not from the backward pass."""
    if not isinstance(trainer.strategy, SingleDeviceStrategy) or trainer.precision not in PRECISIONS:
        return True
    owners = [(callback, pl.Callback) for callback in trainer.callbacks]
    owners.append((trainer.lightning_module, pl.LightningModule))
    return any(is_overridden(hook, owner, parent=parent) for owner, parent in owners for hook in UPDATE_HOOKS)
