"""Published DQN learning curves on an Atari game, kept as a record to set beside ours.

    python benchmarks/experiments/published_curves.py --dopamine <clone of google/dopamine> --game pong

Dopamine publishes, per game and agent, the learning curves of 5 runs in
``baselines/atari/data/<game>.json``: for each iteration of 1M frames (250k agent steps at 4
frames per step), the mean return of the training games played in it. Its agents differ from
the original EMDQN settings (``baselines/atari/README.md``): sticky actions with probability
0.25, ε 0.01 reached after 1M frames, learning from 80k frames, the target synced every 32k
frames. This script keeps the first ``--iterations`` of each agent's runs in
``benchmarks/results/published/dopamine_<game>.json`` with the source's commit, so the
comparison is reproducible without the clone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from emdqn.analysis.records import REPO_ROOT, metadata_block, write_record

AGENTS = {
    "DQN": "Dopamine's TensorFlow DQN: RMSProp, step size 2.5e-4 (the Nature paper's), Huber loss",
    "DQN (Adam + MSE in JAX)": "Dopamine's JAX DQN: Adam, step size 6.25e-5, squared loss",
}
FRAMES_PER_ITERATION = 1_000_000
DATA = "baselines/atari/data/{game}.json"


def read_runs(dopamine: Path, game: str) -> tuple[dict[str, list[list[float]]], str]:
    """Each agent's runs (one list of per-iteration values per run) and the clone's commit."""
    commit = subprocess.run(["git", "-C", str(dopamine), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    shown = subprocess.run(["git", "-C", str(dopamine), "show", f"HEAD:{DATA.format(game=game)}"],
                           capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f"--game {game}: the Dopamine clone has no {DATA.format(game=game)}")
    runs: dict[str, list[list[float]]] = {}
    for point in json.loads(shown.stdout):  # a run's points are in order; iteration 0 opens the next run
        if point["Iteration"] == 0:
            runs.setdefault(point["Agent"], []).append([])
        runs[point["Agent"]][-1].append(round(point["Value"], 3))
    return runs, commit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dopamine", type=Path, required=True, help="a git clone (or mirror) of google/dopamine")
    parser.add_argument("--game", default="pong", help="the game's file name in Dopamine's data (lower case)")
    parser.add_argument("--iterations", type=int, default=10, help="iterations of 1M frames to keep")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "published")
    args = parser.parse_args()
    if args.iterations <= 0:
        parser.error(f"--iterations must be a positive number, got {args.iterations}")
    runs, commit = read_runs(args.dopamine, args.game)
    missing = [agent for agent in AGENTS if agent not in runs]
    if missing:
        raise SystemExit(f"Dopamine's {DATA.format(game=args.game)} has no agent {missing[0]!r}")
    record = {
        **metadata_block(),
        "source": {"repository": "https://github.com/google/dopamine", "path": DATA.format(game=args.game),
                   "commit": commit, "settings": "https://github.com/google/dopamine/blob/master/baselines/atari/README.md"},
        "game": args.game,
        "frames_per_iteration": FRAMES_PER_ITERATION,
        "value": "mean return of the training games (ε-greedy, ε 0.01 after 1M frames) played in each iteration",
        "environment": "sticky actions (probability 0.25), 4 frames per agent step",
        "agents": {agent: {"about": about, "runs": [run[:args.iterations] for run in runs[agent]]}
                   for agent, about in AGENTS.items()},
    }
    path = args.out / f"dopamine_{args.game}.json"
    write_record(path, record)
    for agent in AGENTS:
        print(f"{agent}: {len(runs[agent])} runs, first {args.iterations} iterations kept")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
