"""A run's W&B settings, without Lightning: which mode, how quiet, closing it.

``python -m emdqn.evaluate`` adds its result to the run's W&B run through these, without
loading Lightning's logger classes (seconds of imports).
"""

from __future__ import annotations

import netrc
import os
import sys
import warnings
from typing import Any

WANDB_ID_FILE = "wandb_id.txt"  # in the run folder: the W&B run id a resume and evaluate continue


def wandb_mode(configured: str | None) -> str:
    """The configured mode; else WANDB_MODE; else online only when a login exists."""
    if configured:
        return configured
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        netrc_path = os.environ.get("NETRC", os.path.expanduser("~/.netrc"))
        if os.path.exists(netrc_path) and netrc.netrc(netrc_path).authenticators("api.wandb.ai"):
            return "online"
    except (netrc.NetrcParseError, OSError):
        pass
    return "offline"


def quiet_wandb_settings() -> Any:
    """W&B's settings without its run summary at the end (it pushed the last line of a run,
    the command that continues it, off the screen); ``WANDB_QUIET=false`` brings it back."""
    import wandb

    return wandb.Settings(quiet=os.environ.get("WANDB_QUIET", "true").lower() not in ("false", "0", "no"))


def finish_wandb() -> None:
    """Close the current W&B run so the next multirun job starts its own."""
    if "wandb" not in sys.modules:
        return  # this run never used W&B (and a machine without wandb has nothing to close)
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception as error:  # pragma: no cover - closing must not mask the real error
        warnings.warn(f"wandb.finish() failed: {error}", stacklevel=2)
