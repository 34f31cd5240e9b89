"""DQN on CartPole-v1: evaluation return per seed after a fixed budget.

    python benchmarks/experiments/learn_cartpole.py                   # 5 seeds x 100k env steps
    python benchmarks/experiments/learn_cartpole.py --seeds 0 1 --steps 50000
    python benchmarks/experiments/learn_cartpole.py --seeds 0 1 2 3 4 5 6 7 8 9 --jobs 2   # two seeds at a time

Each seed is a full ``train`` run of the ``experiment=cartpole`` preset with
``memory=none`` (plain DQN); the figure is the mean return of 10 greedy episodes
after training. Target: median over the seeds >= 450. With ``--jobs N`` the seeds run N at
a time, one torch thread each (a seed's result does not depend on what runs beside it).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from emdqn import compose_config
from emdqn.analysis.script_support import end_with_parent, quiet_logs
from emdqn.analysis.records import REPO_ROOT, metadata_block, write_record

from emdqn.run.train import train


def run_seed(seed: int, steps: int, memory: str, overrides: list[str], folder: str) -> tuple[float, float]:
    """One seed's greedy evaluation return after training, and its wall time in seconds."""
    quiet_logs()
    cfg = compose_config(["experiment=cartpole", f"memory={memory}", f"seed={seed}", f"agent.total_steps={steps}",
                          "logger=csv", "eval.episodes=10", *overrides])
    start = time.perf_counter()
    result = train(cfg, run_dir=Path(folder) / f"seed{seed}")
    return result, time.perf_counter() - start


def markdown_table(record: dict) -> str:
    """The docs' table of a record: each seed's greedy return and the median."""
    seeds = sorted(record["per_seed"], key=int)
    return "\n".join([
        "| seed | " + " | ".join(seeds) + " | median |",
        "|---|" + "---|" * (len(seeds) + 1),
        "| greedy return | " + " | ".join(f"{record['per_seed'][seed]:.1f}" for seed in seeds)
        + f" | **{record['median']:.1f}** |"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--memory", default="none", help="memory config: none (DQN) or kdtree (EMDQN)")
    parser.add_argument("--record", type=Path, help="write the per-seed values as a result record (JSON), e.g. "
                                                    "benchmarks/results/learn_cartpole.json")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at a time (one torch thread each when > 1)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. agent.lr=1e-3")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs} is not allowed: an integer >= 1")
    quiet_logs()
    overrides = list(args.overrides) + (["trainer.threads=1"] if args.jobs > 1 else [])
    results = {}
    with tempfile.TemporaryDirectory() as folder, ProcessPoolExecutor(
            args.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=end_with_parent) as pool:
        futures = {seed: pool.submit(run_seed, seed, args.steps, args.memory, overrides, folder)
                   for seed in args.seeds}
        for seed, future in futures.items():  # printed in seed order as they finish
            results[seed], seconds = future.result()
            print(f"seed {seed}: eval return {results[seed]:.1f} (10 greedy episodes, {args.steps:,} env steps, "
                  f"{seconds:.0f}s)", flush=True)
    values = list(results.values())
    print(f"median over {len(values)} seeds: {statistics.median(values):.1f}  "
          f"(min {min(values):.1f}, max {max(values):.1f}); target >= 450")
    if args.record:
        write_record(args.record if args.record.is_absolute() else REPO_ROOT / args.record,
                     {**metadata_block(), "steps": args.steps, "memory": args.memory, "overrides": args.overrides,
                      "per_seed": {str(seed): value for seed, value in results.items()},
                      "median": statistics.median(values)})


if __name__ == "__main__":
    main()
