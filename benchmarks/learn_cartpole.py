"""DQN on CartPole-v1: evaluation return per seed after a fixed budget.

    python benchmarks/learn_cartpole.py                   # 5 seeds x 100k env steps
    python benchmarks/learn_cartpole.py --seeds 0 1 --steps 50000

Each seed is a full ``train`` run of the ``experiment=cartpole`` preset with
``memory=none`` (plain DQN); the figure is the mean return of 10 greedy episodes
after training. Target: median over 5 seeds >= 450.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import compose_config, quiet_logs
from _records import REPO_ROOT, metadata_block, write_record

from emdqn.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--memory", default="none", help="memory config: none (DQN) or kdtree (EMDQN)")
    parser.add_argument("--record", type=Path, help="write the per-seed values as a result record (JSON), e.g. "
                                                    "benchmarks/results/learn_cartpole.json")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. agent.lr=1e-3")
    args = parser.parse_args()
    quiet_logs()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            cfg = compose_config(["experiment=cartpole", f"memory={args.memory}", f"seed={seed}",
                                  f"agent.total_steps={args.steps}", "logger=csv", "eval.episodes=10",
                                  *args.overrides])
            start = time.perf_counter()
            results[seed] = train(cfg, run_dir=Path(folder) / f"seed{seed}")
            print(f"seed {seed}: eval return {results[seed]:.1f} (10 greedy episodes, {args.steps:,} env steps, "
                  f"{time.perf_counter() - start:.0f}s)", flush=True)
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
