"""The EMDQN update, free of Lightning: the batch type, the loss, and one optimizer step.

    loss = alpha * l(Q(s,a) - S) + beta * mask * l(Q(s,a) - H(s,a))
    S    = R + gamma^k * (1 - terminated) * max_a' Q_target(s', a')   (double Q optional)

with R the discounted sum of the k <= ``agent.n_step`` rewards before s' (k = 1: the
original one-step target). ``l`` is the Huber loss (delta 1) of the original. The memory
term of a miss is zero; by default both terms are averaged over the whole batch as the
original does, so the memory term's effective weight is beta x hit rate
(``memory.average=hits`` averages over hits). Truncated episodes bootstrap; only
termination cuts the target. :class:`emdqn.agent.learner.Learner` calls these.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Batch(NamedTuple):
    """One replay batch as the update consumes it (tensors; ``env_step`` the clock when drawn)."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor          # discounted sum of the (up to n) rewards
    next_obs: torch.Tensor
    terminated: torch.Tensor
    discounts: torch.Tensor        # gamma^k for the k rewards summed
    memory_values: torch.Tensor    # H(s, a); 0 on a miss
    memory_found: torch.Tensor     # the hit mask
    env_step: int = 0
    closes_step: bool = True       # the last update of its env step (several envs can make several)


LOGGED_PARTS = ("loss", "td_loss", "memory_loss", "q_values", "h_minus_q", "memory_share")
# Where each part goes in the metric namespace.
METRIC_NAMES = {"loss": "losses/loss", "td_loss": "losses/td_loss", "memory_loss": "losses/memory_loss",
                "q_values": "losses/q_values", "h_minus_q": "memory/h_minus_q",
                "memory_share": "memory/loss_share"}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops and keeps the last good checkpoint."""


def td_targets(target_network: nn.Module, online_network: nn.Module | None,
               batch: Batch) -> torch.Tensor:
    """S = R + discount (1 - terminated) Q_target(s', a*); a* from the online net if given (double Q).

    ``R`` is the batch's (n-step) discounted reward sum and ``discount`` gamma^k for the k
    rewards it holds (the replay computes both), so one formula serves every ``agent.n_step``.
    """
    with torch.no_grad():
        next_q_target = target_network(batch.next_obs)
        if online_network is not None:
            next_actions = online_network(batch.next_obs).argmax(dim=1, keepdim=True)
            next_value = next_q_target.gather(1, next_actions).squeeze(1)
        else:
            next_value = next_q_target.max(dim=1).values
        not_done = 1.0 - batch.terminated.float()
        return batch.rewards.float() + batch.discounts.float() * not_done * next_value


def elementwise_loss(kind: str, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``kind``: one of :data:`emdqn.config.choices.LOSSES` (Huber with delta 1, or squared error)."""
    if kind == "huber":
        return F.huber_loss(prediction, target, reduction="none", delta=1.0)
    return F.mse_loss(prediction, target, reduction="none")


def emdqn_loss(q_network: nn.Module, target_network: nn.Module, batch: Batch, *,
               alpha: float, beta: float, double_q: bool = False, loss: str = "huber",
               average: str = "batch", memory: bool = True) -> dict[str, torch.Tensor]:
    """The EMDQN loss of one batch and its parts (``loss`` carries the gradient).

    ``memory`` false (``memory=none``: every row a miss, beta 0): the memory's parts are the
    zeros they would come to, without the tensor work.
    """
    q_all = q_network(batch.obs)
    q_taken = q_all.gather(1, batch.actions.long().unsqueeze(1)).squeeze(1)
    targets = td_targets(target_network, q_network if double_q else None, batch)
    td_loss = elementwise_loss(loss, q_taken, targets).mean()
    if not memory:
        zero = td_loss.new_zeros(())
        return {"loss": alpha * td_loss, "td_loss": td_loss.detach(), "memory_loss": zero,
                "q_values": q_taken.detach().mean(), "h_minus_q": zero, "memory_share": zero}
    found = batch.memory_found.float()
    memory_terms = elementwise_loss(loss, q_taken, batch.memory_values.float()) * found
    if average == "hits":
        memory_loss = memory_terms.sum() / found.sum().clamp(min=1.0)
    else:
        memory_loss = memory_terms.mean()
    total = alpha * td_loss + beta * memory_loss if beta != 0 else alpha * td_loss
    with torch.no_grad():  # how hard the memory pulls: mean H - Q(s,a) over hits, and its share of the loss
        hits = found.sum()
        h_minus_q = ((batch.memory_values.float() - q_taken) * found).sum() / hits.clamp(min=1.0)
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


def adam_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, calling the fused Adam kernel directly where that is all the step does.

    ``torch.optim.Adam.step`` wraps the kernel in hooks, profiler records and a regrouping of
    the tensors by device on every call; on a small network that is about half of the step.
    Once Adam's state exists, and with one parameter group of plain fused Adam (no amsgrad,
    weight decay or maximize), this makes the kernel call the step makes, on the same state
    tensors (so ``state_dict`` and a resume see no difference); anything else goes through
    ``optimizer.step()``.
    """
    groups = optimizer.param_groups
    group = groups[0]
    if (len(groups) != 1 or not isinstance(optimizer, torch.optim.Adam) or not group.get("fused")
            or group["amsgrad"] or group["weight_decay"] or group["maximize"] or group.get("decoupled_weight_decay")):
        optimizer.step()
        return
    params = group["params"]
    states = [optimizer.state.get(param) for param in params]
    if any(not state or param.grad is None for state, param in zip(states, params)):
        optimizer.step()  # the first step creates the state; a parameter without a gradient is skipped there
        return
    steps = [state["step"] for state in states]
    beta1, beta2 = group["betas"]
    with torch.no_grad():
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, [param.grad for param in params], [state["exp_avg"] for state in states],
                           [state["exp_avg_sq"] for state in states], [], steps, amsgrad=False, lr=group["lr"],
                           beta1=beta1, beta2=beta2, weight_decay=0.0, eps=group["eps"], maximize=False,
                           grad_scale=None, found_inf=None)


def compute_gradients(loss: torch.Tensor, parameters: Sequence[nn.Parameter], grad_clip_norm: float | None,
                      backward: Callable[[torch.Tensor], None] | None = None) -> None:
    """Zero the gradients, backward, per-tensor clipping.

    ``backward`` is Lightning's ``manual_backward`` in training (its precision plugins),
    ``loss.backward`` elsewhere.
    """
    for parameter in parameters:  # zero_grad(set_to_none=True) without its per-call hooks
        parameter.grad = None
    (backward or torch.Tensor.backward)(loss)
    if grad_clip_norm is not None:
        clip_grad_norm_per_tensor(parameters, grad_clip_norm)
