"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from emdqn.update import Batch, build_optimizer, compute_gradients, emdqn_loss
from emdqn.networks import build_q_network
from emdqn.schema import register_schemas

CONF = Path(__file__).resolve().parents[1] / "conf"
register_schemas()  # once: Hydra's ConfigStore is one per process


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The same config ``python train.py <overrides>`` would see."""
    os.environ.setdefault("WANDB_MODE", "offline")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def end_with_parent() -> None:
    """A worker process's initializer: the worker gets SIGTERM when its parent dies (killed by
    ``timeout`` or a signal), instead of going on alone (Linux; elsewhere a no-op)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def quiet_logs() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "emdqn"):
        logging.getLogger(name).setLevel(logging.WARNING)


def fixed_batch(obs_shape: Sequence[int] = (4, 84, 84), num_actions: int = 6, batch_size: int = 32,
                device: torch.device | str = "cpu") -> Batch:
    """A replay batch of random uint8 observations (seeded), every row a memory hit: what
    the training step consumes, for timing the update without the loop around it."""
    generator = torch.Generator().manual_seed(0)
    batch = Batch(
        obs=torch.randint(0, 256, (batch_size, *obs_shape), dtype=torch.uint8, generator=generator),
        actions=torch.randint(0, num_actions, (batch_size,), generator=generator),
        rewards=torch.zeros(batch_size),
        next_obs=torch.randint(0, 256, (batch_size, *obs_shape), dtype=torch.uint8, generator=generator),
        terminated=torch.zeros(batch_size, dtype=torch.bool), discounts=torch.full((batch_size,), 0.99),
        memory_values=torch.ones(batch_size), memory_found=torch.ones(batch_size, dtype=torch.bool))
    return Batch(*(field.to(device) if isinstance(field, torch.Tensor) else field for field in batch))


class FixedBatchUpdate:
    """The training step's update on ``fixed_batch()``: the EMDQN loss of the online and
    target nets (alpha 1, beta 0.1), backward, per-tensor clipping, Adam, with the network
    settings of ``cfg.trainer`` (``trainer.compile`` and bf16-mixed autocast as EMDQNModule and
    Lightning apply them). Split in two where a benchmark puts work between the passes and Adam.
    """

    def __init__(self, cfg: DictConfig, obs_shape: Sequence[int] = (4, 84, 84), num_actions: int = 6,
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.q_network = build_q_network(cfg.model, obs_shape, num_actions, cfg.trainer).to(self.device)
        self.target_network = copy.deepcopy(self.q_network).requires_grad_(False)
        self.optimizer = build_optimizer(self.q_network.parameters(), cfg.agent)
        self.parameters = list(self.q_network.parameters())
        self.train_q, self.train_target = self.q_network, self.target_network
        if cfg.trainer.compile:
            self.train_q, self.train_target = torch.compile(self.q_network), torch.compile(self.target_network)
        self.batch = fixed_batch(obs_shape, num_actions, int(cfg.agent.batch_size), self.device)
        self.loss_settings = {"alpha": 1.0, "beta": 0.1,
                              "double_q": bool(cfg.agent.double_q)}
        self.grad_clip_norm = cfg.agent.grad_clip_norm
        self.bf16 = cfg.trainer.precision == "bf16-mixed"

    def forward_backward(self) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = emdqn_loss(self.train_q, self.train_target, self.batch, **self.loss_settings)["loss"]
        compute_gradients(loss, self.parameters, self.grad_clip_norm)

    def __call__(self) -> None:
        self.forward_backward()
        self.optimizer.step()
