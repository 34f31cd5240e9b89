"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The same config ``python train.py <overrides>`` would see."""
    os.environ.setdefault("WANDB_MODE", "offline")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def quiet_logs() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "emdqn"):
        logging.getLogger(name).setLevel(logging.WARNING)


def fixed_batch(obs_shape: Sequence[int] = (4, 84, 84), num_actions: int = 6, batch_size: int = 32,
                device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A replay batch of random uint8 observations (seeded), every row a memory hit: what
    the training step consumes, for timing the update without the loop around it."""
    generator = torch.Generator().manual_seed(0)
    batch = {
        "obs": torch.randint(0, 256, (batch_size, *obs_shape), dtype=torch.uint8, generator=generator),
        "next_obs": torch.randint(0, 256, (batch_size, *obs_shape), dtype=torch.uint8, generator=generator),
        "actions": torch.randint(0, num_actions, (batch_size,), generator=generator),
        "rewards": torch.zeros(batch_size), "terminated": torch.zeros(batch_size, dtype=torch.bool),
        "memory_values": torch.ones(batch_size), "memory_found": torch.ones(batch_size, dtype=torch.bool),
    }
    return {name: tensor.to(device) for name, tensor in batch.items()}
