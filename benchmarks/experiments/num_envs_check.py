"""Does ``env.num_envs=N`` learn like one env? Runs of the MinAtar suite with N envs against its one-env records.

    python benchmarks/experiments/minatar_suite.py --games breakout asterix --arms dqn emdqn --seeds 0 1 2 \
        --steps 300000 --out benchmarks/results/minatar_num_envs8 --commit env.num_envs=8
    python benchmarks/experiments/num_envs_check.py benchmarks/results/minatar_num_envs8

For each game and arm present in both folders (the reference defaults to the suite's own
one-env records, ``benchmarks/results/minatar``, same seeds and budget): the N-env runs'
mean final return (last 100 training games) and AUC (mean of the learning curve) against
the 95 % bootstrap interval of the one-env mean, the verdict "inside" or "outside", and the
per-seed values. Writes ``<folder>/check.md`` and ``<folder>/check.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from emdqn.analysis.aggregates import bootstrap_mean_interval
from emdqn.analysis.records import REPO_ROOT, write_record
from minatar_report import ARM_LABELS, auc, by_game_and_arm, load_results

REFERENCE = REPO_ROOT / "benchmarks" / "results" / "minatar"
SCORES = {"final return": lambda run: run["final_return"], "AUC": auc}


def compare(folder: Path, reference: Path, reps: int = 2000) -> list[dict]:
    batched, single = by_game_and_arm(load_results(folder)), by_game_and_arm(load_results(reference))
    rows = []
    for game in sorted(batched):
        for arm, runs in sorted(batched[game].items()):
            seeds = sorted(set(runs) & set(single.get(game, {}).get(arm, {})))
            if not seeds:
                continue
            for score, read in SCORES.items():
                ours = np.array([read(runs[seed]) for seed in seeds])
                theirs = np.array([read(single[game][arm][seed]) for seed in seeds])
                _, low, high = bootstrap_mean_interval(theirs, reps)
                rows.append({"game": game, "arm": arm, "score": score, "seeds": seeds,
                             "num_envs": runs[seeds[0]]["command"].split("env.num_envs=")[-1].split()[0]
                             if "env.num_envs=" in runs[seeds[0]]["command"] else "1",
                             "mean": float(ours.mean()), "reference_mean": float(theirs.mean()),
                             "reference_interval": [float(low), float(high)], "inside": bool(low <= ours.mean() <= high),
                             "per_seed": ours.tolist(), "reference_per_seed": theirs.tolist()})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| game | arm | score | N envs: mean (per seed) | 1 env: mean [95 % interval] (per seed) | inside |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        per_seed = ", ".join(f"{value:.2f}" for value in row["per_seed"])
        reference = ", ".join(f"{value:.2f}" for value in row["reference_per_seed"])
        low, high = row["reference_interval"]
        lines.append(f"| {row['game']} | {ARM_LABELS.get(row['arm'], row['arm'])} | {row['score']} "
                     f"| {row['mean']:.2f} ({per_seed}) | {row['reference_mean']:.2f} [{low:.2f}, {high:.2f}] "
                     f"({reference}) | {'yes' if row['inside'] else '**no**'} |")
    inside = sum(row["inside"] for row in rows)
    return "\n".join(lines) + f"\n\n{inside} of {len(rows)} means fall inside the one-env interval.\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a suite results folder of runs with env.num_envs=N")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the one-env results folder")
    args = parser.parse_args()
    for folder in (args.folder, args.reference):
        if not (folder / "runs").is_dir():
            parser.error(f"{folder}: not a suite results folder (no runs/ in it)")
    rows = compare(args.folder, args.reference)
    if not rows:
        parser.error(f"{args.folder} and {args.reference} share no game, arm and seed")
    table = markdown(rows)
    print(table)
    (args.folder / "check.md").write_text(table)
    write_record(args.folder / "check.json", {"reference": str(args.reference.resolve().relative_to(REPO_ROOT))
                                              if args.reference.resolve().is_relative_to(REPO_ROOT)
                                              else str(args.reference), "rows": rows})
    print(f"wrote {args.folder / 'check.md'} and {args.folder / 'check.json'}")


if __name__ == "__main__":
    main()
