"""The LightningModule: a thin adapter that hands the Trainer the :class:`~emdqn.agent.learner.Learner`.

Each training step takes one replay batch from the collector's stream and gives it to the
learner (one gradient step), then logs the loss parts when a row is due. The update goes
through Lightning's ``manual_backward`` only when a hook needs it (:func:`update_hooks_in_use`).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities.model_helpers import is_overridden

from emdqn.config.choices import PRECISIONS
from emdqn.config.checks import MemoryWeights
from emdqn.agent.learner import Learner
from emdqn.agent.metrics import log_metrics


class EMDQNModule(pl.LightningModule):
    """The Trainer's handle on the :class:`Learner`: its networks, its optimizer, one update per batch."""

    def __init__(self, learner: Learner):
        super().__init__()
        self.learner = learner
        self.automatic_optimization = False
        # Registered here so that Lightning moves them to the run's device (in place: the
        # learner's optimizer keeps its parameters).
        self.q_network, self.target_network = learner.q_network, learner.target_network
        self._through_lightning = True  # decided when training starts (update_hooks_in_use)

    @classmethod
    def from_config(cls, cfg: Any, obs_shape: Sequence[int], num_actions: int,
                    weights: MemoryWeights | None = None) -> "EMDQNModule":
        return cls(Learner.from_config(cfg, obs_shape, num_actions, weights))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q_network(obs)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.learner.optimizer

    def on_train_start(self) -> None:
        self._through_lightning = update_hooks_in_use(self.trainer)

    def training_step(self, dataloader_iter: Iterator) -> None:
        # Taking the iterator (not a batch) turns off Lightning's one-batch prefetch: the env
        # steps of the next batch must be played with the network this step updates, as in
        # the original, and a stop between two steps must not leave a sampled, untrained batch.
        batch, _, _ = next(dataloader_iter)
        if batch.obs.device != self.device:  # Lightning's generic transfer walks the batch even when nothing moves
            batch = self.transfer_batch_to_device(batch, self.device, 0)
        if self._through_lightning:
            losses = self.learner.update(batch, self.optimizers(), self.manual_backward)
        else:
            losses = self.learner.update(batch)
        if losses is not None:
            log_metrics(self.loggers, losses, batch.env_step)

    def log_remaining_losses(self) -> None:
        """The mean losses of the steps since the last loss row, at the end of the budget (a
        stopped run keeps them in its checkpoint instead: its resume logs them on time)."""
        remaining = self.learner.remaining_losses()
        if remaining is not None:
            log_metrics(self.loggers, *remaining)


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
