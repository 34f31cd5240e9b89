"""How long the commands take to answer when nothing heavy is needed: help, a refused value,
the env listing, and evaluate on a small MinAtar run (30 games), per checkout.

    python benchmarks/speed/startup.py                                   # this checkout
    python benchmarks/speed/startup.py --before /path/to/other/clone --record benchmarks/results/startup.json

Each command runs ``--repeats`` times, the checkouts alternating, as a fresh process with that
checkout's ``emdqn`` first on the path; the figure is the median wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emdqn.analysis.records import REPO_ROOT, metadata_block, write_record

TINY_MINATAR = ["experiment=minatar", "agent.total_steps=3000", "agent.learning_starts=1000", "eval.episodes=0",
                "logger=csv", "trainer.threads=1", "buffer.capacity=5000"]
COMMANDS = {
    "train.py --help": ["train.py", "--help"],
    "a refused value (agent.lr=-1)": ["train.py", "agent.lr=-1"],
    "python -m emdqn.envs": ["-m", "emdqn.envs"],
    "evaluate, MinAtar, 30 games": ["-m", "emdqn.evaluate", "{run}", "episodes=30"],
}


def environment(checkout: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(checkout), "WANDB_MODE": "offline"}


def seconds(checkout: Path, arguments: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], cwd=checkout, env=environment(checkout), capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="another clone, timed alternately with this one")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    checkouts = {"this checkout": REPO_ROOT}
    if args.before:
        checkouts = {"before": args.before.resolve(), "after": REPO_ROOT}
    times: dict[str, dict[str, list[float]]] = {side: {name: [] for name in COMMANDS} for side in checkouts}
    with tempfile.TemporaryDirectory() as folder:
        runs = {}
        for side, checkout in checkouts.items():  # a run each: a checkout evaluates the runs it can read
            runs[side] = Path(folder) / side.replace(" ", "_")
            subprocess.run([sys.executable, "train.py", *TINY_MINATAR, f"hydra.run.dir={runs[side]}"], cwd=checkout,
                           env=environment(checkout), check=True, capture_output=True)
        for repeat in range(args.repeats):
            for name, command in COMMANDS.items():
                for side, checkout in checkouts.items():
                    arguments = [part.replace("{run}", str(runs[side])) for part in command]
                    times[side][name].append(round(seconds(checkout, arguments), 2))
                    print(f"[{repeat + 1}/{args.repeats}] {side}: {name}: {times[side][name][-1]:.2f} s", flush=True)
    medians = {side: {name: statistics.median(values) for name, values in by_name.items()}
               for side, by_name in times.items()}
    for name in COMMANDS:
        print(f"{name}: " + ", ".join(f"{side} {medians[side][name]:.2f} s" for side in checkouts))
    if args.record:
        write_record(args.record if args.record.is_absolute() else REPO_ROOT / args.record,
                     {**metadata_block(), "checkouts": {side: str(path) for side, path in checkouts.items()},
                      "seconds": times, "medians": medians})


if __name__ == "__main__":
    main()
