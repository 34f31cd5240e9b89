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


def write_table(path: Path, rows: list[dict], keys: Sequence[str], threshold: float, horizon: float,
                skipped: list[tuple[Path, str]]) -> None:
    lines = [f"# Comparison by {', '.join(keys)}", ""] + table_lines(rows, threshold, horizon)
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
        lines += [f"## {task}", ""] + table_lines(section["rows"], section["threshold"], section["horizon"]) + [""]
    lines += skipped_lines(skipped)
    path.write_text("\n".join(lines) + "\n")


def skipped_lines(skipped: list[tuple[Path, str]]) -> list[str]:
    return ["", "Skipped:", ""] + [f"- `{folder}`: {reason}" for folder, reason in skipped] if skipped else []


def table_lines(rows: list[dict], threshold: float, horizon: float) -> list[str]:
    atari = any(row.get("hns") is not None for row in rows)  # a human-normalized column for Atari games
    lines = [f"Curves read up to {horizon:,.0f} env steps (the shortest run). Brackets: 95% bootstrap CI over seeds.",
             "", f"| group | seeds | final return | AUC (mean return) | steps to {threshold:.2f} | final from |"
             + (" human-normalized final |" if atari else ""), "|---|---|---|---|---|---|" + ("---|" if atari else "")]
    for row in rows:
        reach_value, reach_interval, reached = row["reach"]
        reach = _interval(reach_value, reach_interval, integer=True)
        if reached < row["seeds"]:
            reach = f"not reached by {row['seeds'] - reached} of {row['seeds']}"
        hns = (f" {row['hns']:.3f} |" if row.get("hns") is not None else " — |") if atari else ""
        lines.append(f"| {row['group']} | {row['seeds']} | {_interval(*row['final'])} | {_interval(*row['auc'])} "
                     f"| {reach} | {row['final_source']} |{hns}")
    return lines
