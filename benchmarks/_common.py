"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

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
