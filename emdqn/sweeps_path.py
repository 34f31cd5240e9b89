"""Make the repository's ``sweeps/`` folder a Hydra config group, whatever the cwd.

``train.py`` registers this plugin, so ``python train.py +sweeps=lambda_local`` composes
``sweeps/lambda_local.yaml`` on top of ``conf/``.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

REPO_ROOT = Path(__file__).resolve().parents[1]
SWEEPS_DIR = REPO_ROOT / "sweeps"


class SweepsSearchPathPlugin(SearchPathPlugin):
    """Adds the repository root, where ``sweeps/`` is the config group ``sweeps``."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if SWEEPS_DIR.is_dir():
            search_path.append(provider="emdqn-sweeps", path=f"file://{REPO_ROOT}")


def register_sweeps() -> None:
    Plugins.instance().register(SweepsSearchPathPlugin)
