"""What ``train.py`` does around Hydra: one-line errors, resume in the run's own folder, quiet output."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import sys
import time
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
    try:  # Hydra opens the run's train.log for appending; a read-only folder would fail there with a traceback
        with (Path(resume[-1]) / "train.log").open("a"):
            pass
    except OSError as error:
        exit_with_one_line(f"resume={resume[-1]}: cannot write into the run folder ({error.strerror or error}); "
                           "a resumed run writes its log, metrics and checkpoints there")
    argv += [*resume_group_choices(argv, Path(resume[-1])), f"hydra.run.dir={resume[-1]}", "hydra.output_subdir=null"]


class JobError(RuntimeError):
    """A user error inside a cluster job, carried to the sweep as the job's result."""


# What a run leaves in its folder: a folder holding any of them holds a run.
RUN_FILES = ("metrics.csv", "checkpoints", "config.yaml")


def run_files_in(folder: Path) -> list[str]:
    return [name for name in RUN_FILES if (folder / name).exists()]


def taken_folder_message(folder: Path, taken: list[str]) -> str:
    return (f"run folder {folder} already holds a run ({', '.join(taken)}); choose another folder "
            f"(hydra.run.dir=...) or resume it with resume={folder}")


def refuse_a_taken_run_folder(argv: list[str]) -> None:
    """A new run in a folder that holds one is refused before Hydra starts logging into the
    folder (its train.log would get the refused run's lines)."""
    if "-m" in argv or "--multirun" in argv or any(arg.startswith("resume=") and arg != "resume=null"
                                                   for arg in argv[1:]):
        return
    named = [arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith("hydra.run.dir=")]
    if named and (taken := run_files_in(Path(named[-1]))):
        exit_with_one_line(taken_folder_message(Path(named[-1]), taken))


def resume_group_choices(argv: list[str], run_dir: Path) -> list[str]:
    """``model=<the run's model>`` and ``memory=<the run's memory>`` unless the command names
    them: a resume's overrides (``model.hidden_sizes=...``) are checked against the run's own
    groups, not the defaults'."""
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[2] / "conf"
    try:
        saved = OmegaConf.load(run_dir / "config.yaml")
    except Exception:  # train() says what is wrong with the file
        return []
    given = {arg.split("=", 1)[0].lstrip("+~") for arg in argv[1:]}
    choices = []
    for group in ("model", "memory"):
        name = OmegaConf.select(saved, f"{group}.name")
        if group not in given and isinstance(name, str) and (conf / group / f"{name}.yaml").is_file():
            choices.append(f"{group}={name}")
    return choices


def print_job_config(argv: list[str]) -> None:
    """``--cfg job`` (``-c job``) shows the config a run uses: λ and β resolved as training
    resolves them (Hydra's own print would show the ``null`` that means "the default").
    A resume's config, ``--package`` and the other ``--cfg`` views stay Hydra's."""
    arguments = argv[1:]
    flag = next((index for index, arg in enumerate(arguments) if arg in ("--cfg", "-c")), None)
    if flag is None or flag + 1 >= len(arguments) or arguments[flag + 1] != "job":
        return
    if any(arg in ("-m", "--multirun", "--package", "-p") or arg.startswith("resume=") for arg in arguments):
        return
    skip = {flag, flag + 1}
    resolve = "--resolve" in arguments
    overrides = [arg for index, arg in enumerate(arguments) if index not in skip and not arg.startswith("-")]
    from omegaconf import OmegaConf

    from emdqn.config.checks import apply_memory_weights
    from emdqn.config.compose import compose_config

    with report_user_errors():
        cfg = compose_config(overrides)
        apply_memory_weights(cfg)
    print(OmegaConf.to_yaml(cfg, resolve=resolve), end="")
    sys.exit(0)


# Set by `one_line_errors` for the whole process tree (sweep jobs included): Hydra then hands
# its errors to us instead of printing them over several lines.
SHORT_ERRORS = "EMDQN_SHORT_ERRORS"


def user_error_types() -> tuple[type[BaseException], ...]:
    from emdqn.config.checks import ConfigError

    # A CheckpointError can only come once its module is loaded; importing it to catch one
    # would load torch (a second) before a config error is printed.
    checkpoint = sys.modules.get("emdqn.run.checkpoint")
    return (ConfigError, FileExistsError) + ((checkpoint.CheckpointError,) if checkpoint is not None else ())


def wants_tracebacks() -> bool:
    """The user set ``HYDRA_FULL_ERROR=1`` (not this module)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(SHORT_ERRORS) != "1"


def exit_with_one_line(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


@contextmanager
def report_user_errors() -> Iterator[None]:
    """A rejected input ends the run with one line on stderr (exit code 2), no traceback
    (``HYDRA_FULL_ERROR=1`` shows it), and removes the job folder Hydra made for it."""
    try:
        yield
    except Exception as error:
        if not isinstance(error, user_error_types()):
            raise
        from emdqn.run.cluster import in_slurm_job

        if in_slurm_job() and not wants_tracebacks():
            # An exception reaches the sweep as the job's result (an exit would leave none);
            # the job's folder keeps its log.
            raise JobError(str(error)) from None
        remove_unused_job_folder()
        if wants_tracebacks():
            raise
        exit_with_one_line(str(error))


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Hydra's own rejections (an unknown key or option, a value of the wrong type, a bad
    override) as one line and exit code 2, like ours. Hydra prints them over several lines
    unless ``HYDRA_FULL_ERROR=1``, with which it raises them: set here, and undone for the
    user's view by ``SHORT_ERRORS``. A user's own ``HYDRA_FULL_ERROR=1`` keeps every traceback."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        yield
        return
    os.environ["HYDRA_FULL_ERROR"] = os.environ[SHORT_ERRORS] = "1"
    from hydra.errors import HydraException

    from emdqn.run.cluster import failed_job_line

    started, argv = time.time(), list(sys.argv)
    try:
        yield
    except HydraException as error:  # composing the config; errors of our code keep their traceback
        remove_unused_sweep_folder(argv, started)
        exit_with_one_line(composition_error_line(error))
    except JobError as error:  # a sweep job on the cluster refused its input
        exit_with_one_line(f"a SLURM job of the sweep failed: {error}")
    except Exception as error:
        line = failed_job_line(error)
        if line is None:
            raise
        exit_with_one_line(line)


def composition_error_line(error: BaseException) -> str:
    """One line from Hydra's message and its cause; a key or value the schemas refuse reads
    like our own rejections (``agent.batch_size='abc' is not allowed: an integer``)."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    from emdqn.config.schema import not_a_config_key

    cause = error.__cause__
    key = getattr(cause, "full_key", None)
    override = str(error).removeprefix("Error merging override ").strip()
    if isinstance(cause, ValidationError) and key and "=" in override:
        return f"{key}={override_value(override)!r} is not allowed: {expected_value(cause)}"
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key and dataclasses.is_dataclass(
            cause.object_type):
        return not_a_config_key(key, cause.object_type)
    lines = [line.strip() for line in str(error).split("Config search path:")[0].splitlines() if line.strip()]
    parts: list[str] = []
    for line in lines:
        if parts and parts[-1].startswith("Available options"):  # one option per line follows
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
        else:
            parts.append(line)
    text = " ".join(part if part.endswith((".", ":")) or part is parts[-1] else part + "." for part in parts)
    if cause is not None and str(cause).strip():
        text += f" ({str(cause).strip().splitlines()[0]})"
    return text


def override_value(override: str) -> object:
    """The value of ``key=value`` as Hydra reads it (1.5 a float, abc a string)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).value()
    except Exception:  # not parseable as an override: show the text
        return override.split("=", 1)[1]


# OmegaConf's reasons for refusing a value (first line), in the words of our own messages.
EXPECTED_VALUES = (("converted to Integer", "an integer"), ("converted to Float", "a number"),
                   ("converted to Boolean", "true or false"), ("is not a valid bool", "true or false"),
                   ("converted to String", "a string"), ("is not Optional", "a value, not null"),
                   ("is not a ListConfig", "a list [...]"), ("to Dict", "a mapping {key: value}"))


def expected_value(error: BaseException) -> str:
    message = str(error).splitlines()[0]
    return next((words for reason, words in EXPECTED_VALUES if reason in message), message)


def remove_unused_job_folder() -> None:
    try:
        from hydra.core.hydra_config import HydraConfig

        folder = Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return
    if folder.is_dir() and {entry.name for entry in folder.iterdir()} <= HYDRA_ONLY:
        logging.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
        parent = folder.parent
        if parent.is_dir() and {entry.name for entry in parent.iterdir()} == {"multirun.yaml"}:
            shutil.rmtree(parent, ignore_errors=True)  # a sweep none of whose jobs started
            parent = parent.parent
        remove_empty_date_folder(parent)


def remove_empty_date_folder(folder: Path) -> None:
    """Hydra's ``<date>`` folder (``outputs/2026-11-26``) once nothing is left in it."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", folder.name):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            pass


def remove_unused_sweep_folder(argv: list[str], started: float) -> None:
    """A multirun whose jobs fail to compose has written only Hydra's ``multirun.yaml`` into
    its new sweep folder (Hydra composes every job before it launches one). Remove that
    folder, the one written since ``started`` whose recorded overrides are this command's,
    and its date folder when nothing else is in it."""
    if "-m" not in argv and "--multirun" not in argv:
        return
    from omegaconf import OmegaConf

    overrides = [arg for arg in argv[1:] if not arg.startswith("-")]
    named = [arg.split("=", 1)[1] for arg in overrides if arg.startswith("hydra.sweep.dir=")]
    folders = [Path(named[-1])] if named else [path.parent for path in Path("multirun").glob("*/*/multirun.yaml")]
    for folder in folders:
        written = folder / "multirun.yaml"
        if not written.is_file() or {entry.name for entry in folder.iterdir()} != {"multirun.yaml"}:
            continue
        try:
            recorded = list(OmegaConf.load(written).hydra.overrides.task)
        except Exception:  # not a file Hydra wrote as we expect: leave it
            continue
        if written.stat().st_mtime >= started and recorded == [arg for arg in overrides
                                                               if not arg.startswith("hydra.")]:
            shutil.rmtree(folder, ignore_errors=True)
            remove_empty_date_folder(folder.parent)


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
    # On a machine with SLURM's tools, Lightning suggests srun for every run; a run is one
    # process, and SLURM jobs go through the submitit launcher (docs/sweeps.md).
    r"The `srun` command is available on your system but is not used",
)


def quiet_third_party_output() -> None:
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    # Lightning's INFO lines (accelerator report, an advertisement, "`Trainer.fit` stopped:
    # `max_epochs=1` reached" after every run, Ctrl-C included) say nothing about the run;
    # our own log says where it is and how it ended.
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
