"""Env steps until the greedy policy first reaches the goal, for several lambda values.

    python benchmarks/experiments/sample_efficiency.py                      # Atari-like update ratios
    python benchmarks/experiments/sample_efficiency.py --regime fast        # an update every step, target every 500
    python benchmarks/experiments/sample_efficiency.py --lambdas 0 1 --seeds 0 1 2
    python benchmarks/experiments/sample_efficiency.py --record benchmarks/results/frozenlake_atari.json trainer.threads=1

Task: FrozenLake 8x8 with is_slippery=False and one-hot states (``experiment=frozenlake``):
the only reward is 1 at the goal, 14+ correct moves away, and exact state repeats happen,
so the episodic memory's best return reaches Q in one step. A greedy episode is played
every 1,000 env steps; the figure is the first env step at which it reaches the goal (the
run stops there). Runs that never do within the budget count as the budget (marked >).
Everything but lambda is identical across runs of the same seed.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

from emdqn import compose_config
from emdqn.analysis.script_support import quiet_logs
from emdqn.analysis.records import REPO_ROOT, metadata_block, write_record

from emdqn.run.train import train

REGIMES = {
    "atari": [],  # the preset: 1 update per 4 env steps, target every 2,000 env steps
    "fast": ["agent.train_freq=1", "agent.target_update=500"],
}


def solved_at(run_dir: Path) -> int | None:
    with (run_dir / "metrics.csv").open(newline="") as file:
        for row in csv.DictReader(file):
            if row.get("eval/episodic_return") and float(row["eval/episodic_return"]) >= 1.0:
                return int(float(row["step"]))
    return None


def markdown_table(record: dict) -> str:
    """The docs' table of a record: the median and per-seed env steps of each lambda."""
    seeds = record["seeds"]
    label = f"per seed ({seeds[0]}–{seeds[-1]})" if seeds == list(range(seeds[0], seeds[-1] + 1)) else "per seed"
    lines = [f"| λ | median | {label} |", "|---|---|---|"]
    for lam, results in record["per_seed"].items():
        median = record["median"][lam]
        shown = f">{median:,.0f}" if median >= record["steps"] else f"{median:,.0f}"
        per_seed = ", ".join(f"{'' if result['solved'] else '>'}{result['steps']:,}" for result in results)
        lines.append(f"| {lam + ' (DQN)' if float(lam) == 0 else lam} | {shown} | {per_seed} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.1, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--regime", choices=sorted(REGIMES), default="atari")
    parser.add_argument("--steps", type=int, default=150_000, help="budget per run")
    parser.add_argument("--record", type=Path, help="write the per-seed figures as a result record (JSON)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. trainer.threads=1")
    args = parser.parse_args()
    quiet_logs()
    table: dict[float, list[tuple[int, bool]]] = {lam: [] for lam in args.lambdas}
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            for lam in args.lambdas:
                cfg = compose_config(["experiment=frozenlake", f"memory.lambda={lam}", f"seed={seed}",
                                      f"agent.total_steps={args.steps}", "logger=csv", *REGIMES[args.regime],
                                      *args.overrides])
                run_dir = Path(folder) / f"lam{lam}_seed{seed}"
                start = time.perf_counter()
                train(cfg, run_dir=run_dir)
                step = solved_at(run_dir)
                table[lam].append((step or args.steps, step is not None))
                print(f"seed {seed} lambda {lam:g}: " + (f"goal at {step:,} env steps" if step else
                      f"not solved in {args.steps:,}") + f" ({time.perf_counter() - start:.0f}s)", flush=True)
    print(f"\nregime {args.regime}: env steps until the greedy policy first reaches the goal")
    print(f"{'lambda':>7} {'median':>9}  per seed")
    medians = {}
    for lam, results in table.items():
        medians[lam] = statistics.median(step for step, _ in results)
        per_seed = ", ".join(f"{'' if solved else '>'}{step:,}" for step, solved in results)
        print(f"{lam:>7g} {medians[lam]:>9,.0f}  {per_seed}")
    if 0.0 in medians and len(medians) > 1:
        best = min((m, lam) for lam, m in medians.items() if lam > 0)
        print(f"best lambda > 0: {best[1]:g}, median ratio to lambda=0: {best[0] / medians[0.0]:.2f} (target <= 0.5)")
    if args.record:
        write_record(args.record if args.record.is_absolute() else REPO_ROOT / args.record,
                     {**metadata_block(), "regime": args.regime, "steps": args.steps, "seeds": args.seeds,
                      "overrides": args.overrides,
                      "per_seed": {f"{lam:g}": [{"steps": step, "solved": solved} for step, solved in results]
                                   for lam, results in table.items()},
                      "median": {f"{lam:g}": median for lam, median in medians.items()}})


if __name__ == "__main__":
    main()
