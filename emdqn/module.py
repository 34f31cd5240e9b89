"""The LightningModule: online and target Q-networks and the EMDQN loss.

    loss = alpha * l(Q(s,a) - S) + beta * mask * l(Q(s,a) - H(s,a))
    S    = R + gamma^k * (1 - terminated) * max_a' Q_target(s', a')   (double Q optional)

with R the discounted sum of the k <= ``agent.n_step`` rewards before s' (k = 1: the
original one-step target).

``l`` is the Huber loss (delta 1) of the original. The memory term of a miss is zero; by
default both terms are averaged over the whole batch as the original does, so the memory
term's effective weight is beta x hit rate (``memory.average=hits`` averages over hits).
Truncated episodes bootstrap; only termination cuts the target.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Iterator, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from emdqn.config import resolve_memory_weights
from emdqn.metrics import log_metrics
from emdqn.networks import build_q_network


LOGGED_PARTS = ("loss", "td_loss", "memory_loss", "q_values", "h_minus_q", "memory_share")
# Where each part goes in the metric namespace.
METRIC_NAMES = {"loss": "losses/loss", "td_loss": "losses/td_loss", "memory_loss": "losses/memory_loss",
                "q_values": "losses/q_values", "h_minus_q": "memory/h_minus_q",
                "memory_share": "memory/loss_share"}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops and keeps the last good checkpoint."""


def td_targets(target_network: nn.Module, online_network: nn.Module | None,
               batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """S = R + discount (1 - terminated) Q_target(s', a*); a* from the online net if given (double Q).

    ``R`` is the batch's (n-step) discounted reward sum and ``discount`` gamma^k for the k
    rewards it holds (the replay computes both), so one formula serves every ``agent.n_step``.
    """
    with torch.no_grad():
        next_q_target = target_network(batch["next_obs"])
        if online_network is not None:
            next_actions = online_network(batch["next_obs"]).argmax(dim=1, keepdim=True)
            next_value = next_q_target.gather(1, next_actions).squeeze(1)
        else:
            next_value = next_q_target.max(dim=1).values
        not_done = 1.0 - batch["terminated"].float()
        return batch["rewards"].float() + batch["discounts"].float() * not_done * next_value


def elementwise_loss(kind: str, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "huber":
        return F.huber_loss(prediction, target, reduction="none", delta=1.0)
    return F.mse_loss(prediction, target, reduction="none")


def emdqn_loss(q_network: nn.Module, target_network: nn.Module, batch: dict[str, torch.Tensor], *,
               alpha: float, beta: float, double_q: bool = False, loss: str = "huber",
               average: str = "batch") -> dict[str, torch.Tensor]:
    """The EMDQN loss of one batch and its parts (``loss`` carries the gradient)."""
    q_all = q_network(batch["obs"])
    q_taken = q_all.gather(1, batch["actions"].long().unsqueeze(1)).squeeze(1)
    targets = td_targets(target_network, q_network if double_q else None, batch)
    td_loss = elementwise_loss(loss, q_taken, targets).mean()
    found = batch["memory_found"].float()
    memory_terms = elementwise_loss(loss, q_taken, batch["memory_values"].float()) * found
    if average == "hits":
        memory_loss = memory_terms.sum() / found.sum().clamp(min=1.0)
    else:
        memory_loss = memory_terms.mean()
    total = alpha * td_loss + beta * memory_loss if beta != 0 else alpha * td_loss
    with torch.no_grad():  # how hard the memory pulls: mean H - Q(s,a) over hits, and its share of the loss
        hits = found.sum()
        h_minus_q = ((batch["memory_values"].float() - q_taken) * found).sum() / hits.clamp(min=1.0)
        memory_share = beta * memory_loss / total.clamp(min=1e-12) if beta != 0 else torch.zeros_like(total)
    return {"loss": total, "td_loss": td_loss.detach(), "memory_loss": memory_loss.detach(),
            "q_values": q_taken.detach().mean(), "h_minus_q": h_minus_q, "memory_share": memory_share.detach()}


def clip_grad_norm_per_tensor(parameters: Sequence[nn.Parameter], max_norm: float) -> None:
    """Scale each gradient tensor to norm <= max_norm on its own (tf.clip_by_norm per variable)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    # One fused norm over all tensors and one fused scaling: the result of a loop of
    # clip_grad_norm_ calls (scale = max_norm / (norm + 1e-6), capped at 1) in 4 ops.
    scales = (max_norm / (torch.stack(torch._foreach_norm(grads)) + 1e-6)).clamp(max=1.0)
    # Most steps clip nothing; on the CPU, checking costs less than a pass over 7 MB of
    # gradients (x 1.0 changes no bit). On a GPU the check would stall the queue.
    if grads[0].device.type == "cpu" and not bool((scales < 1.0).any()):
        return
    torch._foreach_mul_(grads, list(scales.unbind()))


def build_optimizer(parameters: Any, agent_cfg: Any) -> torch.optim.Optimizer:
    """Adam with the agent's lr and eps; the fused kernel where torch has one (same update)."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=agent_cfg.lr, eps=agent_cfg.adam_eps, fused=True)
    except (RuntimeError, TypeError):  # older torch or a device without the fused kernel
        return torch.optim.Adam(parameters, lr=agent_cfg.lr, eps=agent_cfg.adam_eps)


class EMDQNModule(pl.LightningModule):
    """Online and target Q-networks trained on alpha * TD + beta * memory loss."""

    def __init__(self, cfg: Any, obs_shape: Sequence[int], num_actions: int):
        super().__init__()
        self.cfg = cfg
        self.agent = cfg.agent
        self.automatic_optimization = False
        self.q_network = build_q_network(cfg.model, obs_shape, num_actions)
        self.target_network = copy.deepcopy(self.q_network).requires_grad_(False)
        self.alpha, self.beta, self.memory_lambda = resolve_memory_weights(cfg.memory)
        self._train_q, self._train_target = self.q_network, self.target_network
        if cfg.model.get("compile", False):
            self._train_q = torch.compile(self.q_network)
            self._train_target = torch.compile(self.target_network)
        # Plain values for the hot path (config lookups cost more than small tensor ops).
        self._loss_settings = {"alpha": self.alpha, "beta": self.beta,
                               "double_q": bool(self.agent.double_q), "loss": str(self.agent.loss),
                               "average": str(cfg.memory.average)}
        self._grad_clip_norm = self.agent.grad_clip_norm
        self._target_update = int(self.agent.target_update)
        self._log_every = int(cfg.trainer.log_every_steps)
        self._q_parameters = list(self.q_network.parameters())
        self.last_target_sync = 0
        self.pending_optimizer_state: dict[str, Any] | None = None
        self.last_log_step = 0
        self._sums: dict[str, float] = {}
        self._count = 0

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q_network(obs)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.q_network.parameters(), self.agent)

    def on_train_start(self) -> None:
        if self.pending_optimizer_state is not None:
            self.optimizers().optimizer.load_state_dict(self.pending_optimizer_state)
            self.pending_optimizer_state = None

    def sync_target(self) -> None:
        self.target_network.load_state_dict(self.q_network.state_dict())

    def training_step(self, dataloader_iter: Iterator) -> None:
        # Taking the iterator (not a batch) turns off Lightning's one-batch prefetch: the env
        # steps of the next batch must be played with the network this step updates, as in
        # the original, and a stop between two steps must not leave a sampled, untrained batch.
        batch, _, _ = next(dataloader_iter)
        batch = self.transfer_batch_to_device(batch, self.device, 0)
        env_step = int(batch["env_step"])
        parts = emdqn_loss(self._train_q, self._train_target, batch, **self._loss_settings)
        optimizer = self.optimizers()
        for parameter in self._q_parameters:  # zero_grad(set_to_none=True) without its per-call hooks
            parameter.grad = None
        self.manual_backward(parts["loss"])
        if self._grad_clip_norm is not None:
            clip_grad_norm_per_tensor(self._q_parameters, self._grad_clip_norm)
        optimizer.step()
        # One device-to-host read per step, once all of its work is queued: on a GPU a check
        # before the backward pass would stall the queue. A non-finite step is never saved:
        # the error ends the run before any checkpoint is written.
        values = dict(zip(LOGGED_PARTS, torch.stack([parts[name].detach() for name in LOGGED_PARTS]).tolist()))
        if not math.isfinite(values["loss"]):
            raise NonFiniteLossError(
                f"the loss became {values['loss']} at env step {env_step} (td_loss={values['td_loss']}, "
                f"memory_loss={values['memory_loss']}); training stopped, the last checkpoint is kept. "
                "Try a lower agent.lr or enable agent.grad_clip_norm.")
        if env_step // self._target_update > self.last_target_sync // self._target_update:
            self.sync_target()
            self.last_target_sync = env_step
        datamodule = self.trainer.datamodule
        if datamodule is not None:
            datamodule.start_next_step_early(self.q_network)
        self._accumulate(values)
        self._maybe_log(env_step)

    def _accumulate(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + value
        self._count += 1

    def _maybe_log(self, env_step: int, force: bool = False) -> None:
        every = self._log_every
        if not force and env_step // every == self.last_log_step // every:
            return
        self.last_log_step = env_step
        metrics = {METRIC_NAMES[name]: total / max(self._count, 1) for name, total in self._sums.items()
                   if self.beta != 0 or not METRIC_NAMES[name].startswith("memory/")}
        datamodule = self.trainer.datamodule
        if datamodule is not None:
            metrics.update(datamodule.interval_metrics())
        log_metrics(self.loggers, metrics, env_step)
        self._sums, self._count = {}, 0

    def on_train_end(self) -> None:
        if self._count and self.trainer.datamodule is not None:
            self._maybe_log(self.trainer.datamodule.env_steps, force=True)

    def memory_weight_summary(self) -> str:
        return f"alpha={self.alpha:g} beta={self.beta:g} lambda={self.memory_lambda:g}"

