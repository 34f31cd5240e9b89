"""What the speed probes share: a fixed batch through the run's Learner, the Pong loop's settings."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from emdqn import compose_config  # noqa: F401  (the scripts import it from here)
from emdqn.config.checks import MemoryWeights
from emdqn.agent.learner import Learner
from emdqn.agent.loss import Batch

os.environ.setdefault("WANDB_MODE", "offline")  # a benchmark never logs in


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
    """The training step's update on ``fixed_batch()``: the run's :class:`Learner` (loss weights
    alpha 1, beta 0.1, every other setting from ``cfg``), under bf16-mixed autocast where
    ``cfg.trainer.precision`` asks for it as Lightning applies it. Split in two where a benchmark
    puts work between the passes and Adam.
    """

    def __init__(self, cfg: DictConfig, obs_shape: Sequence[int] = (4, 84, 84), num_actions: int = 6,
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.learner = Learner.from_config(cfg, obs_shape, num_actions, MemoryWeights(alpha=1.0, beta=0.1, lam=0.1))
        self.learner.q_network.to(self.device)
        self.learner.target_network.to(self.device)
        self.q_network, self.optimizer = self.learner.q_network, self.learner.optimizer
        self.batch = fixed_batch(obs_shape, num_actions, int(cfg.agent.batch_size), self.device)
        self.bf16 = cfg.trainer.precision == "bf16-mixed"

    def forward_backward(self) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            self.learner.gradients(self.batch)

    def __call__(self) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            self.learner.update(self.batch)


COMMON = ["env=pong", "buffer.capacity=100000", "agent.target_update=40000", "agent.exploration.schedule=[[0,0.01]]",
          "eval.episodes=0", "logger=csv", "checkpoint.every_steps=0", "checkpoint.save_replay=false"]


def prefill_memory(entries: int):
    def before_fit(module, collector) -> None:
        memory = getattr(collector.memory_feed, "memory", None)  # NoMemory has no table
        if memory is None or entries == 0:
            return
        rng = np.random.default_rng(0)
        # Keys spread like real Pong keys (projections of uint8 stacks are ~1e4 in scale).
        for start in range(0, entries, 1000):
            n = min(1000, entries - start)
            memory.add_episode(rng.normal(0, 5000, (n, memory.key_dim)).astype(np.float32),
                               rng.integers(0, memory.num_actions, n), rng.normal(size=n), 0.99)
    return before_fit
