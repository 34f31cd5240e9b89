"""``train(cfg)``: build everything from the config, fit, evaluate, finish the loggers."""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities.exceptions import SIGTERMException

from emdqn.agent.cadence import Cadence
from emdqn.run.checkpoint import checkpoint_path, load_checkpoint, restore, save_best_weights, save_checkpoint
from emdqn.run.cli import quiet_third_party_output, run_files_in, taken_folder_message
from emdqn.run.cluster import JobEnded, in_slurm_job, requeued_attempt, requeued_by_slurm
from emdqn.config.checks import (ConfigError, apply_memory_weights, budget_warnings, read_run_config,
                                 validate)
from emdqn.agent.collector import Collector, RunControl
from emdqn.run.data import EarlyEnvStep, EMDQNDataModule
from emdqn.evaluate import evaluate
from emdqn.run.loggers import MetricsCSVLogger, build_wandb_logger, run_name
from emdqn.run.wandb_run import finish_wandb
from emdqn.agent.metrics import EvaluationPlan, log_metrics
from emdqn.agent.learner import Learner
from emdqn.run.module import EMDQNModule

log = logging.getLogger("emdqn")

CONFIG_FILE = "config.yaml"
# Keys that may differ on resume without counting as a change of the experiment.
RESUME_FREE_KEYS = ("resume", "allow_config_change", "trainer.accelerator", "trainer.devices", "trainer.threads",
                    "trainer.progress_every_seconds", "trainer.compile", "trainer.channels_last",
                    "trainer.onednn_linear", "logger", "checkpoint", "hydra")
# Keys that moved to another group: a run saved before the move resumes with the new names.
MOVED_KEYS = {"model.compile": "trainer.compile", "model.channels_last": "trainer.channels_last",
              "model.onednn_linear": "trainer.onednn_linear"}


def hydra_context() -> tuple[str | None, list[str], str | None]:
    """(output dir, task overrides, sweep dir) of the running Hydra job, or Nones outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return None, [], None
    sweep_dir = hydra_cfg.sweep.dir if str(hydra_cfg.mode) == "RunMode.MULTIRUN" else None
    return hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task), sweep_dir


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _is_free_key(key: str) -> bool:
    """A key of RESUME_FREE_KEYS, or one below them."""
    return any(key == free or key.startswith(free + ".") for free in RESUME_FREE_KEYS)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def merge_resume_config(saved: DictConfig, composed: DictConfig, overrides: Sequence[str],
                        allow_change: bool) -> DictConfig:
    """The saved config with this invocation's explicit overrides applied, if allowed."""
    changed = []
    merged = saved.copy()
    drop_moved_keys(merged, composed)
    for override in overrides:
        key = _override_key(override)
        if _is_free_key(key):
            continue
        if "." not in key and OmegaConf.select(composed, f"{key}.name", default=None) is not None and \
                OmegaConf.select(composed, f"{key}.name") == OmegaConf.select(saved, f"{key}.name"):
            continue  # the run's own group option, named so the command's keys are checked against it
        new_value = OmegaConf.select(composed, key)
        old_value = OmegaConf.select(saved, key)
        if _plain(new_value) != _plain(old_value):
            changed.append(f"{key}: {_plain(old_value)!r} -> {_plain(new_value)!r}")
            with open_dict(merged):
                OmegaConf.update(merged, key, new_value, force_add=True)
    if changed and not allow_change:
        raise ConfigError("resume would change the experiment's config (" + "; ".join(changed) + "). "
                          "Resume with the same settings, or add allow_config_change=true to accept the change.")
    if changed:
        log.warning("Resuming with a changed config: %s", "; ".join(changed))
    # Settings of how the run is carried out (threads, loggers, checkpoints) stay as the run
    # was started unless this command gives them; those it gives are listed in one line.
    given = []
    for override in overrides:
        key = _override_key(override)
        if key.startswith("hydra") or key in ("resume", "allow_config_change"):
            continue
        if _is_free_key(key):
            old_value, new_value = OmegaConf.select(saved, key), OmegaConf.select(composed, key)
            with open_dict(merged):
                OmegaConf.update(merged, key, new_value, force_add=True, merge=False)
            if _plain(old_value) != _plain(new_value):
                given.append(f"{key}: {_plain(old_value)!r} -> {_plain(new_value)!r}")
    if given:
        log.info("This resume changes how the run is carried out: %s", "; ".join(given))
    with open_dict(merged):
        for key in ("resume", "allow_config_change"):
            merged[key] = composed.get(key)
        for group in ("trainer", "logger", "checkpoint"):  # keys a run saved before they existed
            if group in composed and group in merged:
                merged[group] = OmegaConf.merge(composed[group], merged[group])
            elif group in composed:
                merged[group] = composed[group]
    return merged


def experiment_settings(config: Any) -> dict[str, Any]:
    """The part of a config that defines the experiment (what a resume may not change silently)."""
    plain = dict(_plain(config))
    plain = {key: value for key, value in plain.items() if key not in RESUME_FREE_KEYS}
    if isinstance(plain.get("trainer"), dict):
        plain["trainer"] = {key: value for key, value in plain["trainer"].items()
                            if f"trainer.{key}" not in RESUME_FREE_KEYS}
    return plain


def flat_items(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {name: value for key, child in tree.items()
                for name, value in flat_items(child, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def experiment_differences(before: Any, now: Any, before_label: str, now_label: str) -> list[str]:
    """The experiment keys on which two configs differ, one ``key: a <before_label>, b <now_label>`` each."""
    old, new = flat_items(experiment_settings(before)), flat_items(experiment_settings(now))
    return [f"{key}: {old.get(key)!r} {before_label}, {new.get(key)!r} {now_label}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def check_saved_config(run_path: Path, saved: DictConfig, manifest: dict[str, Any], allow_change: bool) -> None:
    """config.yaml must hold the experiment the checkpoint was made with: an edit of it is
    refused in one line (a deliberate change goes through allow_config_change)."""
    recorded = manifest.get("config")
    if recorded is None:
        return
    differing = experiment_differences(recorded, saved, "in the checkpoint", f"in {CONFIG_FILE}")
    if differing and not allow_change:
        raise ConfigError(f"{run_path / CONFIG_FILE} differs from the config of its checkpoint ("
                          + "; ".join(differing[:5]) + (f"; {len(differing) - 5} more" if len(differing) > 5 else "")
                          + "). Change a setting on the resume command with allow_config_change=true instead of "
                            "editing the file, or add allow_config_change=true to accept the edit.")
    if differing:
        log.warning("Resuming with the edited %s: %s", CONFIG_FILE, "; ".join(differing))


def save_config(cfg: DictConfig, run_path: Path) -> None:
    """config.yaml, written whole or not at all."""
    temporary = run_path / (CONFIG_FILE + ".tmp")
    OmegaConf.save(cfg, temporary, resolve=True)
    os.replace(temporary, run_path / CONFIG_FILE)


def drop_moved_keys(saved: DictConfig, composed: DictConfig) -> None:
    """Remove the old names of MOVED_KEYS from a saved config; the new names come from this
    invocation (they are all speed switches, which a resume may change)."""
    for old_key, new_key in MOVED_KEYS.items():
        group, key = old_key.split(".")
        if group not in saved or key not in saved[group]:
            continue
        old_value, new_value = saved[group][key], OmegaConf.select(composed, new_key)
        with open_dict(saved):
            saved[group].pop(key)
        if old_value != new_value:
            log.info("%s is now %s: this resume uses %s (the run started with %s)", old_key, new_key, new_value,
                     old_value)


def prepare_run_dir(run_dir: Path, resuming: bool) -> None:
    """Refuse to reuse a folder that holds another run's results."""
    if resuming:
        return
    if taken := run_files_in(run_dir):
        raise FileExistsError(taken_folder_message(run_dir, taken))
    run_dir.mkdir(parents=True, exist_ok=True)


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def checkpoint_bytes(cfg: DictConfig, collector: Collector, learner: Learner) -> dict[str, float]:
    """What the last checkpoint of this run will take, by part: the replay's filled slots
    (at most the run's env steps), the online and target networks with Adam's two moments, and
    the memory's entries (at most one per env step)."""
    network_bytes = float(learner.parameter_bytes())
    capacity = int(cfg.buffer.capacity)
    filled = min(int(cfg.agent.total_steps) + collector.envs.num_envs, capacity)
    parts = {"replay": collector.replay.nbytes() * filled / capacity if cfg.checkpoint.save_replay else 0.0,
             "networks and optimizer": 4.0 * network_bytes, "weights file": network_bytes}
    if cfg.memory.enabled:
        parts["memory"] = memory_entries(cfg, collector) * (4 * int(cfg.memory.key_dim) + 32)
    return parts


def memory_entries(cfg: DictConfig, collector: Collector) -> int:
    """The most entries the memory can hold in this run: its capacity, or one per env step."""
    return min(int(cfg.memory.capacity) * collector.envs.num_actions, int(cfg.agent.total_steps))


def check_storage(cfg: DictConfig, collector: Collector, learner: Learner, run_dir: Path) -> None:
    """Say what the buffer, the memory and this run's checkpoint will take; refuse a disk that
    cannot hold the checkpoint."""
    replay_bytes = collector.replay.nbytes()
    lines = [f"replay buffer {format_bytes(replay_bytes)} of RAM when full"]
    if cfg.memory.enabled:
        lines.append(f"episodic memory up to {format_bytes(memory_entries(cfg, collector) * 64)}")
    parts = checkpoint_bytes(cfg, collector, learner)
    total = sum(parts.values())
    lines.append(f"this run's checkpoint up to {format_bytes(total)} on disk ("
                 + ", ".join(f"{name} {format_bytes(size)}" for name, size in parts.items() if size) + ")")
    existing = next(folder for folder in (run_dir, *run_dir.absolute().parents) if folder.exists())
    free = shutil.disk_usage(existing).free
    if free < total:
        raise ConfigError(f"this run's checkpoint needs up to {format_bytes(total)} of disk and {existing} has "
                          f"{format_bytes(free)} free: free some space, lower buffer.capacity, or set "
                          "checkpoint.save_replay=false")
    log.info("Storage: %s", "; ".join(lines))


class StopSignals:
    """First SIGINT/SIGTERM (and, in a SLURM job, submitit's SIGUSR2 before the time limit):
    finish the env step, checkpoint, exit. A second SIGINT aborts. :meth:`hand_over` then
    ends the process as the signal asks (see :mod:`emdqn.run.cluster`)."""

    def __init__(self, control: RunControl):
        self.control = control
        self.previous: dict[int, Any] = {}
        self.received: int | None = None

    def __enter__(self) -> "StopSignals":
        signals = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGUSR2] if in_slurm_job() else [])
        for signum in signals:
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not in the main thread (e.g. some launchers): no graceful stop
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.control.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("Received %s: stopping after this env step and writing a checkpoint%s.",
                    signal.Signals(signum).name,
                    "" if in_slurm_job() else " (press Ctrl-C again to abort without one)")
        self.received = signum
        self.control.stop_requested = True

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def hand_over(self) -> None:
        """In a SLURM job, once the checkpoint is written: SIGUSR2 goes on to submitit's handler
        (it requeues the job and ends the process); after the SIGTERM of a requeue the process
        ends without a result (the next attempt brings it); after any other SIGTERM the job
        ends as a stopped run."""
        if not in_slurm_job() or self.received is None:
            return
        previous = self.previous.get(self.received)
        if self.received == signal.SIGUSR2 and callable(previous):
            previous(self.received, None)
        if self.received == signal.SIGUSR2 or requeued_by_slurm():
            raise JobEnded(128 + self.received)


def continue_requeued_run(run_path: Path, cfg: DictConfig) -> bool:
    """A requeued SLURM job starts again in its run folder: True when the folder holds this
    run's checkpoint (to resume); False when the previous attempt ended before its first
    checkpoint (its files are removed, the run starts again). Another run's folder is refused."""
    saved = read_run_config(run_path / CONFIG_FILE)
    mine = cfg.copy()
    apply_memory_weights(mine)
    differing = experiment_differences(saved, mine, "there", "here")
    if differing:
        raise ConfigError(f"run folder {run_path} holds another run (" + "; ".join(differing[:3]) + "); a requeued "
                          "job continues only its own run")
    if checkpoint_path(run_path).exists():
        log.info("Requeued job (attempt %d): continuing the run in %s from its checkpoint", requeued_attempt() + 1,
                 run_path)
        return True
    log.info("Requeued job (attempt %d): the previous attempt ended before its first checkpoint; starting the run "
             "again in %s", requeued_attempt() + 1, run_path)
    for name in run_files_in(run_path):
        target = run_path / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return False


def train(cfg: DictConfig, run_dir: str | Path | None = None, overrides: Sequence[str] | None = None,
          before_fit: Callable[[EMDQNModule, Collector], None] | None = None) -> float:
    """Train one run; returns the final greedy evaluation return (or the recent training return).

    ``run_dir`` defaults to Hydra's output folder; ``cfg.resume`` (a run folder) continues
    that run instead, from its last checkpoint. ``before_fit(module, collector)`` runs
    once everything is built (benchmarks use it to pre-fill the memory).
    """
    hydra_dir, hydra_overrides, sweep_dir = hydra_context()
    overrides = list(overrides) if overrides is not None else hydra_overrides
    resume_dir = cfg.get("resume")
    state = None
    if not resume_dir and requeued_attempt() and in_slurm_job():
        requeued_path = Path(run_dir or hydra_dir or "outputs/run")
        if (requeued_path / CONFIG_FILE).exists() and continue_requeued_run(requeued_path, cfg):
            resume_dir, overrides = str(requeued_path), []
    if resume_dir:
        run_path = Path(resume_dir)
        if not (run_path / CONFIG_FILE).exists():
            raise ConfigError(f"resume={resume_dir!r} is not a run folder (no {CONFIG_FILE} in it)")
        saved = read_run_config(run_path / CONFIG_FILE)
        state = load_checkpoint(run_path)  # every file checked before anything is built
        check_saved_config(run_path, saved, state["manifest"], bool(cfg.get("allow_config_change")))
        cfg = merge_resume_config(saved, cfg, overrides, bool(cfg.get("allow_config_change")))
    else:
        run_path = Path(run_dir or hydra_dir or "outputs/run")
    validate(cfg)
    quiet_third_party_output()
    weights = apply_memory_weights(cfg)
    if not resume_dir:  # shown when the run started; a resume has no preset on its command to judge by
        for message in budget_warnings(cfg, overrides or ()):
            log.warning("%s", message)

    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    control = RunControl()
    collector = Collector.from_config(cfg, control)
    learner = Learner.from_config(cfg, collector.envs.observation_shape, collector.envs.num_actions, weights)
    module = EMDQNModule(learner)
    collector.set_policy(learner.q_network)
    evaluation_plan = EvaluationPlan(int(cfg.agent.total_steps), int(cfg.eval.every_steps or 0), int(cfg.eval.episodes))
    collector.progress.plan_evaluations(evaluation_plan)
    check_storage(cfg, collector, learner, run_path)
    prepare_run_dir(run_path, resuming=state is not None)
    if state is not None:
        restore(state, learner, collector)
        log.info("Resumed %s at env step %s", run_path, f"{collector.env_steps:,}")
    save_config(cfg, run_path)  # after the checks: a refused resume leaves the run's config as it was
    if state is not None and state["manifest"].get("config") is not None and \
            experiment_settings(state["manifest"]["config"]) != experiment_settings(cfg):
        # An accepted change: the checkpoint takes the new config at once, so config.yaml and
        # the checkpoint agree from here on.
        save_checkpoint(run_path, learner, collector, cfg.checkpoint.save_replay, plain_config(cfg))
    if before_fit is not None:
        before_fit(module, collector)

    loggers: list[Any] = []
    if cfg.logger.csv:
        loggers.append(MetricsCSVLogger(run_path, resume_step=collector.env_steps if state is not None else None))
    if cfg.logger.wandb.enabled:
        group = Path(sweep_dir).name if sweep_dir else None
        wandb_logger = build_wandb_logger(cfg, run_path, group)
        if wandb_logger is not None:
            loggers.append(wandb_logger)
    collector.log_to(loggers)

    log.info("Run %s in %s: env=%s, %s, memory=%s, %s actions, %s env steps", run_name(cfg), run_path,
             cfg.env.id, weights, cfg.memory.name, collector.envs.num_actions,
             f"{cfg.agent.total_steps:,}")
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices, precision=cfg.trainer.precision,
        max_epochs=1, logger=loggers or False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(run_path),
        callbacks=[EarlyEnvStep(collector), PeriodicWork(cfg, run_path, collector, control, evaluation_plan)],
    )
    result = math.nan
    stopped_line = None
    try:
        with StopSignals(control) as stop_signals:
            try:
                trainer.fit(module, datamodule=EMDQNDataModule(collector))
            except SIGTERMException:
                control.stop_requested = True
        if control.stop_requested:
            path = save_checkpoint(run_path, learner, collector, cfg.checkpoint.save_replay, plain_config(cfg))
            stopped_line = (f"Stopped at env step {collector.env_steps:,}; checkpoint {path}. "
                            f"Continue with: python train.py resume={run_path}")
            stop_signals.hand_over()
            return result
        module.log_remaining_losses()
        # The episodes in progress stay in the checkpoint, unwritten: a run resumed with a
        # larger budget finishes them and writes them whole.
        save_checkpoint(run_path, learner, collector, cfg.checkpoint.save_replay, plain_config(cfg))
        result = final_evaluation(cfg, run_path, learner, collector, loggers)
    finally:
        for logger in loggers:
            logger.finalize("success")
        finish_wandb()
        collector.envs.close()
        if stopped_line:  # the last line of a stopped run: how to continue it
            log.warning("%s", stopped_line)
    return result


def final_evaluation(cfg: DictConfig, run_dir: Path, learner: Learner, collector: Collector,
                     loggers: list[Any]) -> float:
    """Greedy evaluation after training; falls back to the recent training return.

    With ``eval.keep_best`` it evaluates, on episodes of its own, the network that scored
    best in the periodic evaluations (saved as ``checkpoints/weights_best.pt``).
    """
    if cfg.eval.episodes > 0:
        if cfg.eval.get("keep_best") and learner.best_network is not None:
            path = save_best_weights(run_dir, learner.best_network)
            learner.q_network.load_state_dict(learner.best_network)
            log.info("Evaluating the best network: env step %s (periodic evaluation return %.2f), saved as %s",
                     f"{learner.best_step:,}", learner.best_return, path)
            log_metrics(loggers, {"eval/best_step": learner.best_step}, collector.env_steps)
        start = time.perf_counter()
        returns = evaluate(learner.q_network, cfg.env, cfg.eval.episodes, cfg.eval.epsilon, seed=cfg.seed + 10_000,
                           report=log.info, label="final evaluation", **video_options(cfg, run_dir, collector.env_steps))
        mean = float(np.mean(returns))
        log_metrics(loggers, {"eval/episodic_return": mean, "eval/episodic_return_std": float(np.std(returns))},
                    collector.env_steps)
        log.info("Evaluation over %d episodes: return %.2f +- %.2f (%.1fs)", len(returns), mean, np.std(returns),
                 time.perf_counter() - start)
        return mean
    recent = collector.recent_return()
    return recent if recent is not None else math.nan


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)


def flush(loggers: Sequence[Any]) -> None:
    for logger in loggers:
        logger.save()


def video_options(cfg: DictConfig, run_dir: Path, step: int) -> dict[str, Any]:
    """With ``eval.video=true``: record the evaluation's first game into ``<run>/videos/``."""
    if not cfg.eval.get("video", False):
        return {}
    return {"video_folder": run_dir / "videos", "video_prefix": f"train_step{step}"}


class PeriodicWork(pl.Callback):
    """Checkpoints and evaluations every N env steps (``checkpoint.every_steps``, ``eval.every_steps``)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, collector: Collector, control: RunControl,
                 evaluation_plan: EvaluationPlan):
        self.cfg, self.run_dir, self.collector, self.control = cfg, run_dir, collector, control
        self.evaluation_plan = evaluation_plan  # told how long each evaluation took, for the ETA
        self.checkpoints = Cadence(int(cfg.checkpoint.every_steps or 0))
        self.evaluations = Cadence(int(cfg.eval.every_steps or 0) if cfg.eval.episodes else 0)

    def on_train_start(self, trainer: pl.Trainer, module: EMDQNModule) -> None:
        self.checkpoints.last = self.evaluations.last = self.collector.env_steps

    def on_train_batch_end(self, trainer: pl.Trainer, module: EMDQNModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = self.collector.env_steps
        if self.checkpoints.due(step):
            path = save_checkpoint(self.run_dir, module.learner, self.collector, self.cfg.checkpoint.save_replay,
                                   plain_config(self.cfg))
            flush(trainer.loggers)  # the metrics file holds every row up to the checkpoint
            log.info("Checkpoint at env step %s: %s", f"{step:,}", path)
        if self.evaluations.due(step):
            start = time.perf_counter()
            returns = evaluate(module.q_network, self.cfg.env, self.cfg.eval.episodes, self.cfg.eval.epsilon,
                               seed=self.cfg.seed + 10_000 + step, report=log.info,
                               label=f"evaluation at env step {step:,}", **video_options(self.cfg, self.run_dir, step))
            self.evaluation_plan.measured(time.perf_counter() - start)
            mean = float(np.mean(returns))
            log_metrics(trainer.loggers, {"eval/episodic_return": mean, "eval/episodic_return_std": float(np.std(returns))},
                        step)
            flush(trainer.loggers)  # an evaluation is on disk as soon as it is played
            if self.cfg.eval.get("keep_best"):
                module.learner.remember_if_best(mean, step)
            target = self.cfg.eval.get("stop_at_return")
            if target is not None and mean >= target:
                log.info("Evaluation return %.2f reached eval.stop_at_return=%s at env step %s: done",
                         mean, target, f"{step:,}")
                self.control.solved_at_step = step


__all__ = ["train", "checkpoint_path", "ConfigError"]
