"""The run's config composed from Python (a notebook, a script), as ``train.py`` composes it.

    from emdqn import compose_config
    cfg = compose_config(["env=pong", "memory.lambda=0.1"])

Importing :mod:`emdqn` registers what ``conf/`` needs (the typed schemas, the resolvers and
the ``sweeps`` group), so Hydra's own compose API works too once emdqn is imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


def register_config_parts() -> None:
    """Schemas, resolvers and the sweeps group (idempotent: each replaces its earlier self)."""
    from emdqn.config.checks import register_resolvers
    from emdqn.config.schema import register_schemas
    from emdqn.config.sweeps_path import register_sweeps

    register_resolvers()
    register_schemas()
    register_sweeps()


def compose_config(overrides: Sequence[str] = (), config_dir: str | os.PathLike = CONFIG_DIR) -> DictConfig:
    """The config ``python train.py <overrides>`` would run with (before its checks)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))
