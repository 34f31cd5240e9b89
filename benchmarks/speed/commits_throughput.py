"""Two checkouts' loops timed alternately: does a change slow the run down?

    python benchmarks/speed/commits_throughput.py /path/to/before /path/to/after --rounds 2 \
        --record benchmarks/results/refactor_throughput.json
    python benchmarks/speed/commits_throughput.py /path/to/before /path/to/after --pong-only --rounds 3

Each round runs ``benchmarks/speed/minatar_throughput.py --loops none kdtree --repeats 1`` (MinAtar
Breakout, one thread) in each checkout and, with ``--pong``, a short Pong run of each
checkout's ``train.py`` (memory=kdtree, ε fixed at 0.01, the median SPS after learning starts),
alternating which checkout goes first, so a slow spell of the shared machine hits both. The
ratio after / before of the medians is the figure.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from minatar_throughput import checkout_commit, checkout_figures

from emdqn.analysis.records import REPO_ROOT, metadata_block, write_record

MINATAR = ["--loops", "none", "kdtree", "--repeats", "1", "--windows", "2",
           "--window-steps", "4000", "--learning-starts", "4000"]


def minatar_figures(checkout: Path) -> dict[str, float]:
    return {f"minatar {name}": value for name, value in checkout_figures(checkout, MINATAR).items()}


PONG = ["env=pong", "memory=kdtree", "agent.exploration.schedule=[[0,0.01]]", "agent.learning_starts=2000",
        "agent.total_steps=8000", "buffer.capacity=20000", "eval.episodes=0", "logger=csv", "checkpoint.every_steps=0",
        "checkpoint.save_replay=false", "trainer.log_every_steps=1000"]


def pong_figure(checkout: Path) -> dict[str, float]:
    """Median SPS of a short Pong run's logged windows after learning starts (the first warms up)."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "train.py", *PONG, f"hydra.run.dir={folder}/run"], cwd=checkout, check=True,
                       capture_output=True, env={"PATH": "/usr/bin:/bin", "WANDB_MODE": "offline",
                                                 "HOME": str(Path.home()), "PYTHONPATH": str(checkout)})
        with open(f"{folder}/run/metrics.csv", newline="") as file:
            rates = [float(row["charts/SPS"]) for row in csv.DictReader(file)
                     if row.get("charts/SPS") and float(row["step"]) > 3000]
    return {"pong ours, memory=kdtree": statistics.median(rates)}


def commit_of(checkout: Path) -> str:
    return checkout_commit(checkout, short=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pong", action="store_true", help="also a short Pong run per checkout and round")
    parser.add_argument("--pong-only", action="store_true", help="only the Pong runs (implies --pong)")
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    args.pong = args.pong or args.pong_only
    checkouts = {"before": args.before.resolve(), "after": args.after.resolve()}
    figures: dict[str, dict[str, list[float]]] = {side: {} for side in checkouts}
    for round_index in range(args.rounds):
        order = list(checkouts) if round_index % 2 == 0 else list(reversed(checkouts))
        for side in order:
            measured = {} if args.pong_only else minatar_figures(checkouts[side])
            if args.pong:
                measured.update(pong_figure(checkouts[side]))
            for name, value in measured.items():
                figures[side].setdefault(name, []).append(value)
                print(f"[{round_index + 1}/{args.rounds}] {side} ({commit_of(checkouts[side])}) {name}: {value:.0f} SPS",
                      flush=True)
    medians = {side: {name: statistics.median(values) for name, values in by_name.items()}
               for side, by_name in figures.items()}
    ratios = {name: medians["after"][name] / medians["before"][name] for name in medians["before"]}
    for name, ratio in ratios.items():
        print(f"{name}: before {medians['before'][name]:.0f}, after {medians['after'][name]:.0f} SPS, "
              f"after / before {ratio:.3f}")
    if args.record:
        write_record(args.record if args.record.is_absolute() else REPO_ROOT / args.record,
                     {**metadata_block(), "commits": {side: commit_of(path) for side, path in checkouts.items()},
                      "command": None if args.pong_only else MINATAR, "pong_command": PONG if args.pong else None, "sps": figures, "medians": medians, "ratios": ratios})


if __name__ == "__main__":
    main()
