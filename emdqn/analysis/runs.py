"""The one reader of run folders: the metrics a run logged, its config, its learning curve.

``python -m emdqn.compare``, the MinAtar suite and the Atari pair all read runs through it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from omegaconf import OmegaConf

RETURN_KEY = "charts/episodic_return"
EVAL_KEY = "eval/episodic_return"
BIN_STEPS = 5_000  # width of a learning curve's bins, env steps
MEMORY_METRICS = ("memory/hit_rate", "memory/revisit_share", "memory/h_minus_q", "memory/loss_share",
                  "memory/h_mean", "memory/size")


def memory_means(rows: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each memory metric over the metric rows that logged it."""
    return {name: float(np.mean([row[name] for row in rows if name in row]))
            for name in MEMORY_METRICS if any(name in row for row in rows)}


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """Every row of a run's ``metrics.csv``, with the columns it has (numbers)."""
    with (run_dir / "metrics.csv").open() as file:
        return [{key: float(value) for key, value in row.items() if value not in ("", None)}
                for row in csv.DictReader(file)]


def learning_curve(episode_steps: np.ndarray, episode_returns: np.ndarray, total_steps: int,
                   bin_steps: int = BIN_STEPS) -> list[float]:
    """Mean return of the games that ended in each ``bin_steps`` bin; a bin without one
    carries the previous bin's value (the first bins take the first game's)."""
    bins = math.ceil(total_steps / bin_steps)
    curve = np.full(bins, np.nan)
    index = np.minimum((episode_steps - 1) // bin_steps, bins - 1).astype(int)
    for b in range(bins):
        chosen = episode_returns[index == b]
        if chosen.size:
            curve[b] = chosen.mean()
    filled = curve[~np.isnan(curve)]
    if not filled.size:
        return [0.0] * bins
    last = filled[0]
    for b in range(bins):
        last = curve[b] = last if np.isnan(curve[b]) else curve[b]
    return [round(float(v), 4) for v in curve]


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    steps: np.ndarray
    returns: np.ndarray
    eval_return: float | None
    group: tuple = field(default=())


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value if not isinstance(value, list) else str(value)
    return flat


def load_run(path: Path) -> Run:
    """Read one run folder; ValueError says why it cannot be used."""
    config_file, metrics_file = path / "config.yaml", path / "metrics.csv"
    if not metrics_file.exists():
        raise ValueError("no metrics.csv")
    try:
        config = flatten(OmegaConf.to_container(OmegaConf.load(config_file), resolve=False))
    except Exception as error:
        raise ValueError(f"unreadable config.yaml ({error})") from None
    try:
        rows = read_metrics(path)
        games = [(row["step"], row[RETURN_KEY]) for row in rows if RETURN_KEY in row]
    except (csv.Error, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"unreadable metrics.csv ({error})") from None
    evaluations = [row[EVAL_KEY] for row in rows if EVAL_KEY in row]
    if not games:
        raise ValueError(f"no {RETURN_KEY} rows (no finished game yet)")
    steps, returns = zip(*games)
    return Run(path, config, np.asarray(steps), np.asarray(returns), evaluations[-1] if evaluations else None)


def find_runs(paths: Sequence[Path]) -> tuple[list[Run], list[tuple[Path, str]]]:
    runs, skipped = [], []
    for root in paths:
        if not root.exists():
            skipped.append((root, "does not exist"))
            continue
        candidates = sorted({p.parent for p in root.rglob("config.yaml") if ".hydra" not in p.parts}
                            | {p.parent for p in root.rglob("metrics.csv")})
        if not candidates:
            skipped.append((root, "no run folder (config.yaml) inside"))
        for folder in candidates:
            if not (folder / "config.yaml").exists():
                skipped.append((folder, "no config.yaml"))
                continue
            try:
                runs.append(load_run(folder))
            except ValueError as reason:
                skipped.append((folder, str(reason)))
    return runs, skipped
