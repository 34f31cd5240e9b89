"""The Markdown tables of :mod:`emdqn.compare`: per group, per task, and the aggregates."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from emdqn.analysis.aggregates import DISTRIBUTION_AGGREGATES, format_interval


def _interval(value: float, interval: tuple[float, float], integer: bool = False) -> str:
    if not math.isfinite(value):
        return "not reached"
    form = "{:,.0f}" if integer else "{:.2f}"
    return f"{form.format(value)} [{form.format(interval[0])}, {form.format(interval[1])}]"


def write_table(path: Path, rows: list[dict], keys: Sequence[str], reach: dict | None, horizon: float,
                skipped: list[tuple[Path, str]]) -> None:
    lines = [f"# Comparison by {', '.join(keys)}", ""] + table_lines(rows, reach, horizon)
    lines += skipped_lines(skipped)
    path.write_text("\n".join(lines) + "\n")


def write_task_tables(path: Path, sections: dict[str, dict[str, Any]], aggregate: dict[str, Any],
                      keys: Sequence[str], task_key: str, skipped: list[tuple[Path, str]]) -> None:
    lines = [f"# Comparison by {', '.join(keys)} over {task_key}", ""]
    if aggregate:
        lines += [f"Across {len(aggregate['tasks'])} tasks ({', '.join(aggregate['tasks'])}), "
                  f"{aggregate['runs_per_task']} runs each; baseline `{aggregate['baseline']}`; "
                  "95% stratified-bootstrap intervals (rliable).", "",
                  "| group | P(group > baseline), final return | IQM final return | IQM baseline-normalized AUC |",
                  "|---|---|---|---|"]
        for label, values in aggregate["groups"].items():
            cells = [format_interval(values[name]) if values[name] else "—"
                     for name in ("probability_of_improvement", "iqm_final", "iqm_normalized_auc")]
            lines.append(f"| {label} | {' | '.join(cells)} |")
        lines.append("")
    if aggregate.get("human_normalized"):
        lines += [f"Human-normalized final return (HNS) across the {len(aggregate['tasks'])} Atari games, "
                  "95% stratified-bootstrap intervals (rliable); optimality gap: mean of 1 - min(HNS, 1).", "",
                  "| group | median HNS | IQM HNS | mean HNS | optimality gap |", "|---|---|---|---|---|"]
        for label, values in aggregate["human_normalized"].items():
            lines.append(f"| {label} | " + " | ".join(format_interval(values[name]) for name in DISTRIBUTION_AGGREGATES)
                         + " |")
        lines.append("")
    for task, section in sections.items():
        lines += [f"## {task}", ""] + table_lines(section["rows"], section["reach"], section["horizon"]) + [""]
    lines += skipped_lines(skipped)
    path.write_text("\n".join(lines) + "\n")


def skipped_lines(skipped: list[tuple[Path, str]]) -> list[str]:
    return ["", "Skipped:", ""] + [f"- `{folder}`: {reason}" for folder, reason in skipped] if skipped else []


def table_lines(rows: list[dict], reach: dict | None, horizon: float) -> list[str]:
    """The group table; the 'steps to X' column only when ``reach`` says X, with its definition below."""
    atari = any(row.get("hns") is not None for row in rows)  # a human-normalized column for Atari games
    columns = ["group", "seeds", "final return", "AUC (mean return)"]
    columns += [f"steps to {reach['threshold']:.2f}"] if reach else []
    columns += ["final from"] + (["human-normalized final"] if atari else [])
    lines = [f"Curves read up to {horizon:,.0f} env steps (the shortest run). Brackets: 95% bootstrap CI over seeds.",
             "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row["group"], str(row["seeds"]), _interval(*row["final"]), _interval(*row["auc"])]
        if reach:
            reach_value, reach_interval, reached = row["reach"]
            cells.append(_interval(reach_value, reach_interval, integer=True) if reached == row["seeds"]
                         else f"not reached by {row['seeds'] - reached} of {row['seeds']}")
        cells.append(row["final_source"])
        if atari:
            cells.append(f"{row['hns']:.3f}" if row.get("hns") is not None else "—")
        lines.append("| " + " | ".join(cells) + " |")
    if reach:
        lines += ["", f"Steps to {reach['threshold']:.2f}: {reach['rule']}."]
    else:
        lines += ["", "No 'steps to X' column: no X tells these groups apart (no run reaches it, every run starts "
                      "above it, or no group's training return ends above where the runs started)."]
    return lines
