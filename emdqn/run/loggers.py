"""Loggers: a resumable CSV of every metric, and Weights & Biases (offline without a login)."""

from __future__ import annotations

import csv
import logging
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities import rank_zero_only

from emdqn.run.wandb_run import WANDB_ID_FILE, quiet_wandb_settings, wandb_mode

log = logging.getLogger("emdqn")

METRICS_FILE = "metrics.csv"


class MetricsCSVLogger(Logger):
    """Appends one row per ``log_metrics`` call to ``<run>/metrics.csv``.

    Unlike Lightning's CSVLogger it never deletes an existing file: on resume it keeps the
    rows up to the checkpoint's env step and drops later ones (they will be logged again),
    so the file has no duplicated and no missing rows.
    """

    def __init__(self, run_dir: str | os.PathLike, resume_step: int | None = None, flush_every: int = 50):
        super().__init__()
        self.path = Path(run_dir) / METRICS_FILE
        self.flush_every = flush_every
        self.columns: list[str] = []
        self.pending: list[dict[str, Any]] = []
        if self.path.exists():
            if resume_step is None:
                raise FileExistsError(f"{self.path} exists; refusing to overwrite the metrics of another run")
            self._truncate_after(resume_step)

    def _truncate_after(self, step: int) -> None:
        try:
            with self.path.open(newline="") as file:
                reader = csv.DictReader(file)
                self.columns = list(reader.fieldnames or [])
                if "step" not in self.columns:
                    raise ValueError("no step column")
                rows = [row for row in reader if row.get("step") not in (None, "") and int(float(row["step"])) <= step]
        except (ValueError, TypeError, csv.Error, UnicodeDecodeError) as error:
            from emdqn.run.checkpoint import CheckpointError

            raise CheckpointError(f"{self.path} is garbled ({error}): move it aside to resume with a new metrics "
                                  "file, or restore it") from None
        self._write_all(rows)

    def _write_all(self, rows: list[dict[str, Any]]) -> None:
        temporary = self.path.with_suffix(".csv.tmp")
        with temporary.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temporary, self.path)

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the resolved config is saved as config.yaml in the run folder

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {"step": step, **metrics}
        self.pending.append(row)
        if len(self.pending) >= self.flush_every:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        if not self.pending:
            return
        new_columns = sorted({key for row in self.pending for key in row} - set(self.columns))
        if new_columns:
            rows: list[dict[str, Any]] = []
            if self.path.exists():
                with self.path.open(newline="") as file:
                    rows = list(csv.DictReader(file))
            self.columns = ["step"] + sorted(set(self.columns + new_columns) - {"step"})
            self._write_all(rows)
        with self.path.open("a", newline="") as file:
            csv.DictWriter(file, fieldnames=self.columns).writerows(self.pending)
        self.pending = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


def run_name(cfg: Any) -> str:
    """``{env}__{memory}__lam{lambda}__s{seed}``, or ``name`` when given."""
    if cfg.get("name"):
        return str(cfg.name)
    lam = cfg.memory.get("lambda")
    return f"{cfg.env.name}__{cfg.memory.name}__lam{lam:g}__s{cfg.seed}"


def build_wandb_logger(cfg: Any, run_dir: Path, group: str | None) -> Logger | None:
    """A WandbLogger whose run already started; None (with a warning) when W&B fails."""
    wandb_cfg = cfg.logger.wandb
    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
    mode = wandb_mode(wandb_cfg.mode)
    try:
        from pytorch_lightning.loggers import WandbLogger

        logger = WandbLogger(
            name=run_name(cfg), project=wandb_cfg.project, entity=wandb_cfg.entity, save_dir=str(run_dir),
            id=run_id, group=wandb_cfg.group or group, tags=list(wandb_cfg.tags), mode=mode,
            config=OmegaConf.to_container(cfg, resolve=True), job_type="train", reinit="finish_previous",
            settings=quiet_wandb_settings(),
        )
        # Lightning hands wandb.init anonymous=None, which wandb warns about on every run.
        logger._wandb_init.pop("anonymous", None)
        logger.experiment.define_metric("*", step_metric="global_step")
    except Exception as error:  # W&B must never stop training: the CSV still has everything
        warnings.warn(f"Weights & Biases could not start ({type(error).__name__}: {error}); "
                      "training goes on with the CSV logger only.", stacklevel=2)
        return None
    id_file.write_text(run_id)
    if mode == "offline":
        log.info("W&B runs offline; upload later with: wandb sync %s", run_dir / "wandb")
    return logger
