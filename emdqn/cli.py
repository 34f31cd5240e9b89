"""What ``train.py`` does around Hydra: one-line errors, resume in the run's own folder, quiet output."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# Files Hydra writes into a job folder before our code runs: a folder holding only these
# was made for a run that never started.
HYDRA_ONLY = {".hydra", "train.log"}


def continue_in_run_folder(argv: list[str]) -> None:
    """``resume=<run>``: make Hydra's run folder the run's own (its ``train.log`` is appended
    to) and keep Hydra from writing a second ``.hydra`` over the run's original one."""
    resume = [arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith("resume=")]
    if not resume or not resume[-1] or resume[-1] == "null" or "-m" in argv or "--multirun" in argv:
        return
    if any(arg.startswith(("hydra.run.dir=", "hydra.output_subdir=")) for arg in argv[1:]):
        return
    if not (Path(resume[-1]) / "config.yaml").is_file():
        return  # not a run folder: train() says so, and Hydra's own folder for it is removed
    argv += [f"hydra.run.dir={resume[-1]}", "hydra.output_subdir=null"]


def user_error_types() -> tuple[type[BaseException], ...]:
    from emdqn.checkpoint import CheckpointError
    from emdqn.config import ConfigError

    return ConfigError, CheckpointError, FileExistsError


@contextmanager
def report_user_errors() -> Iterator[None]:
    """A rejected input ends the run with one line on stderr (exit code 2), no traceback
    (``HYDRA_FULL_ERROR=1`` shows it), and removes the job folder Hydra made for it."""
    try:
        yield
    except Exception as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not isinstance(error, user_error_types()):
            raise
        print(f"error: {error}", file=sys.stderr)
        remove_unused_job_folder()
        sys.exit(2)


def remove_unused_job_folder() -> None:
    try:
        from hydra.core.hydra_config import HydraConfig

        folder = Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return
    if folder.is_dir() and {entry.name for entry in folder.iterdir()} <= HYDRA_ONLY:
        logging.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


# Third-party output we have chosen to live with, each silenced by its exact message.
QUIET_WARNINGS = (
    # The training step takes Lightning's dataloader iterator on purpose (no prefetch: acting
    # uses the freshly updated network); Lightning calls the signature experimental.
    r"You are using the `dataloader_iter` step flavor",
    r"Found `dataloader_iter` argument in the `training_step`",
    # Lightning's own use of torch's pytree API; nothing for users to change.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # The replay is sampled in the training process on purpose (workers would sample a stale
    # copy of the buffer the collector is filling); Lightning suggests workers on GPU machines.
    r"The 'train_dataloader' does not have many workers",
)


def quiet_third_party_output() -> None:
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    # Lightning's INFO lines (accelerator report, an advertisement, "`Trainer.fit` stopped:
    # `max_epochs=1` reached" after every run, Ctrl-C included) say nothing about the run;
    # our own log says where it is and how it ended.
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
