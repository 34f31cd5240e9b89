"""Compare runs offline: learning curves with bootstrap bands, and a Markdown table.

    python -m emdqn.compare multirun/2026-11-25/10-00-00           # a multirun folder
    python -m emdqn.compare outputs/a outputs/b --by memory.lambda --threshold 18
    python -m emdqn.compare multirun/suite --by memory.lambda,agent.n_step --tasks env.game   # several games

Every folder below the given paths that holds a ``config.yaml`` is a run. Runs are grouped
by the keys that differ between them (``--by`` to choose; ``memory.lambda`` when nothing
differs), seeds within a group are aggregated:

* curve: the return of finished games (``charts/episodic_return``) smoothed over the last
  ``--window`` games and read on a common grid of env steps; the band is a 95% bootstrap
  confidence interval of the mean over seeds (the picture smooths over at least 2% of the
  shortest run's games, so a few seeds of thousands of games read as a curve);
* final return: the last ``eval/episodic_return`` of each run if every run of the group
  has one, else the mean of its last ``--window`` games;
* AUC: the mean of the smoothed curve over the grid (area under the curve / steps);
* steps to X: the first env step where a run's smoothed training curve reaches X, read on
  the same curve as the AUC. By default X is 90% of the way from where the runs' curves start
  (their first smoothed value: play before learning) to the best group's mean curve at the
  last step (its final training return); ``--threshold`` sets X. The column is left out when
  it cannot tell groups apart: no run reaches X, every run reaches it at the first point of
  the grid, or (by default) no group ends above where the runs started. The table says which
  X it used and how it was chosen.

Each statistic comes with a 95% bootstrap interval over seeds and the number of seeds.
Runs that are missing, half-written or unreadable are listed and skipped.

With ``--tasks KEY`` (``env.game``, ``env.id``) the runs of each task are compared on
their own (a table and ``comparison_<task>.png`` each), and the groups are aggregated
across tasks with rliable's stratified bootstrap (``emdqn.analysis.aggregates``): each group's
probability of improvement over ``--baseline`` (default: the first group) on the final
return, and the IQM of its AUC normalized by the baseline's mean AUC on each task. When
every task is an Atari game (``--tasks env.id``), the final returns are also put on the
human-normalized scale and aggregated as the literature does: median, IQM, mean and
optimality gap of the HNS, each with its interval.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emdqn.analysis.aggregates import bootstrap_mean_interval
from emdqn.analysis.curves import label_axes, mean_with_band, pyplot, save_figure
from emdqn.analysis.runs import Run, find_runs
from emdqn.analysis.tables import write_table, write_task_tables

# Keys that differ between runs without defining an experimental condition.
NOT_CONDITIONS = ("seed", "name", "resume", "allow_config_change", "trainer.", "logger.", "checkpoint.", "hydra.")


def condition_keys(runs: Sequence[Run], task_key: str | None = None) -> list[str]:
    keys = sorted({key for run in runs for key in run.config})
    # Keys that follow the task (a game's id and name) are not conditions either.
    task_partition = _partition(runs, task_key) if task_key else None
    differing = [key for key in keys
                 if len({repr(run.config.get(key)) for run in runs}) > 1
                 and not any(key == k or key.startswith(k) for k in NOT_CONDITIONS)
                 and (task_partition is None or _partition(runs, key) != task_partition)]
    # A key that splits the runs exactly as a kept one does (beta follows lambda) adds nothing.
    differing.sort(key=lambda key: key != "memory.lambda")
    kept, partitions = [], []
    for key in differing:
        partition = _partition(runs, key)
        if partition not in partitions:
            kept.append(key)
            partitions.append(partition)
    return kept or ["memory.lambda"]


def _partition(runs: Sequence[Run], key: str) -> frozenset:
    groups: dict[str, set[int]] = {}
    for index, run in enumerate(runs):
        groups.setdefault(repr(run.config.get(key)), set()).add(index)
    return frozenset(frozenset(members) for members in groups.values())


def smoothed_curve(run: Run, grid: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` game returns, read at each grid step (NaN before the first)."""
    cumulative = np.cumsum(np.insert(run.returns, 0, 0.0))
    counts = np.arange(1, len(run.returns) + 1)
    start = np.maximum(counts - window, 0)
    running = (cumulative[counts] - cumulative[start]) / (counts - start)
    index = np.searchsorted(run.steps, grid, side="right") - 1
    return np.where(index >= 0, running[np.clip(index, 0, None)], np.nan)


def bootstrap_interval(values: np.ndarray, rng: np.random.Generator, samples: int = 2000) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean (ignoring NaN); a single seed gives a point."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan
    _, low, high = bootstrap_mean_interval(values, reps=samples, rng=rng)
    return float(low), float(high)


def final_return(run: Run, use_eval: bool, window: int) -> float:
    return run.eval_return if use_eval else float(np.mean(run.returns[-window:]))


def steps_to_threshold(curve: np.ndarray, grid: np.ndarray, threshold: float) -> float:
    reached = np.flatnonzero(np.nan_to_num(curve, nan=-np.inf) >= threshold)
    return float(grid[reached[0]]) if len(reached) else math.inf


def group_label(keys: Sequence[str], values: tuple) -> str:
    short = [key.split(".")[-1] for key in keys]
    return ", ".join(f"{name}={value}" for name, value in zip(short, values))


def compare(paths: Sequence[Path], out_dir: Path, by: Sequence[str] | None = None, window: int = 10,
            threshold: float | None = None, points: int = 100, seed: int = 0, tasks: str | None = None,
            baseline: str | None = None) -> dict[str, Any]:
    """Write ``comparison.png`` (one per task with ``tasks``) and ``comparison.md`` into
    ``out_dir``; returns the table rows (per task) and the aggregates across tasks."""
    runs, skipped = find_runs(paths)
    for folder, reason in skipped:
        print(f"skipped {folder}: {reason}", file=sys.stderr)
    if not runs:
        raise SystemExit("no usable run found in " + ", ".join(map(str, paths)))
    keys = list(by) if by else condition_keys(runs, tasks)
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tasks is None:
        result = compare_runs(runs, keys, window, threshold, points, rng)
        plot_curves(out_dir / "comparison.png", result["grid"], result["groups"], keys, window, rng)
        write_table(out_dir / "comparison.md", result["rows"], keys, result["reach"], result["horizon"], skipped)
        return {"rows": result["rows"], "reach": result["reach"], "keys": keys, "skipped": skipped,
                "written": [out_dir / "comparison.md", out_dir / "comparison.png"]}
    by_task: dict[str, list[Run]] = {}
    for run in runs:
        by_task.setdefault(str(run.config.get(tasks)), []).append(run)
    sections = {}
    for task in sorted(by_task):
        result = compare_runs(by_task[task], keys, window, threshold, points, rng)
        plot_curves(out_dir / f"comparison_{safe_name(task)}.png", result["grid"], result["groups"], keys, window,
                    rng, title=task)
        sections[task] = result
    aggregate = aggregate_tasks(sections, keys, baseline, seed)
    write_task_tables(out_dir / "comparison.md", sections, aggregate, keys, tasks, skipped)
    return {"tasks": {task: section["rows"] for task, section in sections.items()}, "aggregate": aggregate,
            "keys": keys, "skipped": skipped,
            "written": [out_dir / "comparison.md", *(out_dir / f"comparison_{safe_name(task)}.png" for task in sections)]}


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def compare_runs(runs: Sequence[Run], keys: Sequence[str], window: int, threshold: float | None, points: int,
                 rng: np.random.Generator) -> dict[str, Any]:
    """Curves and table rows of one set of runs grouped by ``keys``."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        run.group = tuple(run.config.get(key) for key in keys)
        groups.setdefault(run.group, []).append(run)
    horizon = min(run.steps[-1] for run in runs)
    grid = np.linspace(horizon / points, horizon, points)
    curves = {group: np.stack([smoothed_curve(run, grid, window) for run in members])
              for group, members in groups.items()}
    finals = {group: np.array([final_return(run, all(r.eval_return is not None for r in members), window)
                               for run in members]) for group, members in groups.items()}
    reach = reach_target(curves, threshold)
    steps_to = {group: np.array([steps_to_threshold(curve, grid, reach["threshold"]) for curve in group_curves])
                for group, group_curves in curves.items()} if reach else {}
    if reach and not discriminates(np.concatenate(list(steps_to.values())), grid):
        reach = None
    rows = []
    for group in sorted(groups, key=lambda g: tuple(str(v) for v in g)):
        members = groups[group]
        auc = np.nanmean(curves[group], axis=1)
        steps = steps_to.get(group)
        rows.append({
            "group": group_label(keys, group), "seeds": len(members),
            "per_seed": {"seed": [run.config.get("seed") for run in members], "final": finals[group].tolist(),
                         "auc": auc.tolist()},
            "final": (float(finals[group].mean()), bootstrap_interval(finals[group], rng)),
            "auc": (float(np.nanmean(auc)), bootstrap_interval(auc, rng)),
            "reach": (float(np.mean(steps)) if np.isfinite(steps).all() else math.inf,
                      bootstrap_interval(steps, rng) if np.isfinite(steps).all() else (math.inf, math.inf),
                      int(np.isfinite(steps).sum())) if reach else None,
            "final_source": "eval" if all(r.eval_return is not None for r in members) else f"last {window} games",
            "hns": human_normalized(members, finals[group]),
        })
    return {"rows": rows, "groups": groups, "grid": grid, "reach": reach, "horizon": horizon}


REACH_FRACTION = 0.9  # of the way from where the curves start to the best group's final training return


def reach_target(curves: dict[tuple, np.ndarray], threshold: float | None) -> dict[str, Any] | None:
    """X of the 'steps to X' column and how it was chosen; None when no group learned (by default)."""
    if threshold is not None:
        return {"threshold": float(threshold), "rule": f"the first env step where a run's smoothed training return "
                                                       f"reaches {threshold:g} (--threshold)"}
    starts = [curve[np.isfinite(curve)][0] for group_curves in curves.values() for curve in group_curves
              if np.isfinite(curve).any()]
    finals = [np.nanmean(group_curves[:, -1]) for group_curves in curves.values()]
    if not starts or not np.isfinite(finals).any():
        return None
    start, best = float(np.mean(starts)), float(np.nanmax(finals))
    if best <= start:
        return None
    target = start + REACH_FRACTION * (best - start)
    return {"threshold": target,
            "rule": f"the first env step where a run's smoothed training return reaches {target:.2f}: "
                    f"{REACH_FRACTION:.0%} of the way from where the runs start ({start:.2f}, their first smoothed "
                    f"value) to the best group's final training return ({best:.2f}), on the same curve"}


def discriminates(steps: np.ndarray, grid: np.ndarray) -> bool:
    """Whether 'steps to X' can tell the groups apart: some run reaches X, and not every run at the first point."""
    return bool(np.isfinite(steps).any()) and not bool((steps == grid[0]).all())


def human_normalized(runs: Sequence[Run], finals: np.ndarray) -> float | None:
    """The human-normalized score of the mean final return, when every run plays one Atari game."""
    from emdqn.envs.atari_scores import human_normalized_score

    game = atari_game_of(runs)
    return human_normalized_score(game, float(finals.mean())) if game is not None else None


def atari_game_of(runs: Sequence[Run]) -> str | None:
    """The Atari game every one of ``runs`` plays, or None (not Atari, or several games)."""
    from emdqn.envs.atari_scores import atari_game

    games = {atari_game(str(run.config.get("env.id"))) for run in runs}
    return games.pop() if len(games) == 1 else None


def aggregate_tasks(sections: dict[str, dict[str, Any]], keys: Sequence[str], baseline: str | None,
                    seed: int) -> dict[str, Any]:
    """rliable aggregates of each group across the tasks where every group has runs."""
    from emdqn.analysis.aggregates import aggregate_scores, normalize_by_baseline

    labels = sorted({row["group"] for section in sections.values() for row in section["rows"]})
    complete = {task: {row["group"]: row for row in section["rows"]} for task, section in sections.items()
                if {row["group"] for row in section["rows"]} == set(labels)}
    if len(labels) < 2 or not complete:
        return {}
    baseline = baseline or labels[0]
    if baseline not in labels:
        raise SystemExit(f"--baseline={baseline!r} is not one of the groups: {', '.join(labels)}")
    runs = min(row["seeds"] for rows in complete.values() for row in rows.values())  # same count on every task

    def scores(part: str) -> dict[str, np.ndarray]:
        return {label: np.array([rows[label]["per_seed"][part][:runs] for rows in complete.values()]).T
                for label in labels}

    finals = aggregate_scores(scores("final"), baseline=baseline, seed=seed)
    try:
        normalized = aggregate_scores(normalize_by_baseline(scores("auc"), baseline), seed=seed)
    except ValueError:  # a baseline AUC <= 0 cannot normalize
        normalized = {}
    result = {"tasks": sorted(complete), "runs_per_task": runs, "baseline": baseline,
              "groups": {label: {"probability_of_improvement": finals[label].get("probability_of_improvement"),
                                 "iqm_final": finals[label]["iqm"],
                                 "iqm_normalized_auc": normalized.get(label, {}).get("iqm")} for label in labels}}
    games = [atari_game_of([run for members in sections[task]["groups"].values() for run in members])
             for task in complete]
    if None not in games:  # every task an Atari game: the literature's aggregates of human-normalized scores
        from emdqn.analysis.aggregates import score_distribution
        from emdqn.envs.atari_scores import human_normalized_score

        finals_by_label = scores("final")
        hns = {label: np.array([[human_normalized_score(game, value) for game, value in zip(games, run)]
                                for run in finals_by_label[label]]) for label in labels}
        result["human_normalized"] = score_distribution(hns, seed=seed)
    return result


PLOT_WINDOW_SHARE = 0.02  # the picture smooths over at least 2% of the shortest run's games


def plot_window(groups: dict[tuple, list[Run]], window: int) -> int:
    """Games in the picture's smoothing window: ``window``, or more for runs of thousands of games, so
    that a mean over 2-5 seeds reads as a curve rather than noise."""
    fewest = min(len(run.returns) for members in groups.values() for run in members)
    return max(window, int(fewest * PLOT_WINDOW_SHARE))


def plot_curves(path: Path, grid: np.ndarray, groups: dict[tuple, list[Run]], keys: Sequence[str], window: int,
                rng: np.random.Generator, title: str | None = None) -> None:
    games = plot_window(groups, window)
    figure, axis = pyplot().subplots(figsize=(7, 4.5))
    for group in sorted(groups, key=lambda g: tuple(str(v) for v in g)):
        curve = np.stack([smoothed_curve(run, grid, games) for run in groups[group]])
        counts = np.isfinite(curve).sum(axis=0)
        mean = np.where(counts > 0, np.nansum(curve, axis=0) / np.maximum(counts, 1), np.nan)
        band = np.array([bootstrap_interval(curve[:, i], rng, samples=500) for i in range(len(grid))])
        mean_with_band(axis, grid, mean, band[:, 0], band[:, 1], label=f"{group_label(keys, group)} (n={len(groups[group])})")
    label_axes(axis, f"episodic return (mean of the last {games} games)",
               (f"{title}: " if title else "") + "return vs env steps, mean over seeds, 95% bootstrap CI")
    axis.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emdqn.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="multirun folders or run folders")
    parser.add_argument("--by", action="append",
                        help="config key(s) to group by, comma-separated or repeated (default: the keys that differ)")
    parser.add_argument("--tasks", help="config key that names the task (env.game, env.id): per-task tables and "
                                        "aggregates across tasks")
    parser.add_argument("--baseline", help="with --tasks: the group the others are compared to (its label as the "
                                           "table prints it; default: the first group)")
    parser.add_argument("--out", type=Path, help="output folder (default: the single path given, else .)")
    parser.add_argument("--window", type=int, default=10, help="games in the smoothing window")
    parser.add_argument("--threshold", type=float, help="X of 'steps to X' (default: 90%% of the way from where "
                                                        "the curves start to the best group's final training return)")
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error(f"--window={args.window} is not allowed: an integer >= 1")
    out_dir = args.out or (args.paths[0] if len(args.paths) == 1 and args.paths[0].is_dir() else Path("."))
    by = [key.strip() for value in args.by for key in value.split(",") if key.strip()] if args.by else None
    result = compare(args.paths, out_dir, by=by, window=args.window, threshold=args.threshold, tasks=args.tasks,
                     baseline=args.baseline)
    print((out_dir / "comparison.md").read_text())
    sections = result["tasks"].values() if args.tasks else [result["rows"]]
    runs = sum(row["seeds"] for rows in sections for row in rows)
    groups = len({row["group"] for rows in sections for row in rows})
    print(f"wrote {', '.join(map(str, result['written']))} ({runs} runs in {groups} groups"
          + (f" on {len(result['tasks'])} tasks)" if args.tasks else ")"))


if __name__ == "__main__":
    main()
