"""Make the repository's ``sweeps/`` folder a Hydra config group, whatever the cwd.

``train.py`` registers this plugin, so ``python train.py +sweeps=lambda_local`` composes
``sweeps/lambda_local.yaml`` on top of ``conf/``.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

REPO_ROOT = Path(__file__).resolve().parents[2]
SWEEPS_DIR = REPO_ROOT / "sweeps"
# A folder whose only entry is a link to sweeps/: Hydra lists every folder under a search
# path root as a config group, so the repository root itself would add outputs/, .git/, ...
SEARCH_ROOT = Path(__file__).resolve().parent / "hydra_search_root"


class SweepsSearchPathPlugin(SearchPathPlugin):
    """Adds ``sweeps/`` (and nothing else) as the config group ``sweeps``."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if (SEARCH_ROOT / "sweeps").is_dir():
            search_path.append(provider="emdqn-sweeps", path=f"file://{SEARCH_ROOT}")


def register_sweeps() -> None:
    Plugins.instance().register(SweepsSearchPathPlugin)
