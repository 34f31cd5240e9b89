"""Fixed-seed runs whose results must not change under a refactor: their fingerprints.

    python benchmarks/experiments/same_results.py --checkout /path/to/other/clone > before.json
    python benchmarks/experiments/same_results.py > after.json
    python benchmarks/experiments/same_results.py --compare before.json after.json

Each case trains a short fixed-seed run through ``train.py`` of the given checkout (MinAtar
Breakout and CartPole, with the memory and without, one thread, a stop and a resume half-way)
and prints the SHA-256 of its logged metrics (wall-clock columns left out), of the final
weights and of the final greedy evaluation. Two checkouts that give the same fingerprints
train identically, bit for bit.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
TIMING = ("charts/SPS", "memory/rebuild_seconds")  # the only columns allowed to differ between identical runs
COMMON = ["seed=7", "logger=csv", "trainer.threads=1", "trainer.log_every_steps=1000"]
CASES = {
    "minatar_breakout_kdtree": ["experiment=minatar", "env.id=MinAtar/Breakout-v1", "memory=kdtree",
                                "agent.total_steps=12000", "agent.learning_starts=2000", "buffer.capacity=20000",
                                "eval.episodes=3", "checkpoint.every_steps=6000"],
    "minatar_breakout_none": ["experiment=minatar", "env.id=MinAtar/Breakout-v1", "memory=none",
                              "agent.total_steps=12000", "agent.learning_starts=2000", "buffer.capacity=20000",
                              "eval.episodes=3", "checkpoint.every_steps=6000"],
    "cartpole_kdtree": ["experiment=cartpole", "memory=kdtree", "agent.total_steps=6000",
                        "agent.learning_starts=500", "eval.episodes=3", "checkpoint.every_steps=3000"],
    "cartpole_none": ["experiment=cartpole", "memory=none", "agent.total_steps=6000",
                      "agent.learning_starts=500", "eval.episodes=3", "checkpoint.every_steps=3000"],
}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def metrics_digest(run_dir: Path) -> tuple[str, int]:
    with (run_dir / "metrics.csv").open() as file:
        rows = [{key: value for key, value in row.items() if key not in TIMING} for row in csv.DictReader(file)]
    return digest(json.dumps(rows, sort_keys=True).encode()), len(rows)


def weights_digest(run_dir: Path) -> str:
    manifest = json.loads((run_dir / "checkpoints" / "manifest.json").read_text())
    weights = torch.load(run_dir / "checkpoints" / manifest["weights"][0], weights_only=True)
    return digest(b"".join(tensor.numpy().tobytes() for _, tensor in sorted(weights.items())))


def run_case(checkout: Path, overrides: list[str], work: Path) -> dict:
    """Train to half the budget, stop (the budget ends there), resume to the full budget."""
    run_dir = work / "run"
    total = next(int(item.split("=")[1]) for item in overrides if item.startswith("agent.total_steps="))
    first = [item for item in overrides if not item.startswith("agent.total_steps=")]
    subprocess.run([sys.executable, "train.py", *first, *COMMON, f"agent.total_steps={total // 2}", "eval.episodes=0",
                    f"hydra.run.dir={run_dir}"], cwd=checkout, check=True, capture_output=True)
    subprocess.run([sys.executable, "train.py", f"resume={run_dir}", f"agent.total_steps={total}", "allow_config_change=true",
                    *[item for item in overrides if item.startswith("eval.episodes=")]],
                   cwd=checkout, check=True, capture_output=True)
    metrics, rows = metrics_digest(run_dir)
    return {"metrics": metrics, "metric_rows": rows, "weights": weights_digest(run_dir)}


def fingerprints(checkout: Path) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True,
                            text=True).stdout.strip()
    results = {"commit": commit, "cases": {}}
    for name, overrides in CASES.items():
        with tempfile.TemporaryDirectory() as work:
            results["cases"][name] = run_case(checkout, overrides, Path(work))
        print(f"{name}: {results['cases'][name]}", file=sys.stderr)
    return results


def compare(before: Path, after: Path) -> int:
    first, second = json.loads(before.read_text()), json.loads(after.read_text())
    differing = [name for name in first["cases"] if first["cases"][name] != second["cases"].get(name)]
    for name in first["cases"]:
        print(f"{name}: {'identical' if name not in differing else 'DIFFERENT'} "
              f"({first['commit']} {first['cases'][name]} / {second['commit']} {second['cases'].get(name)})")
    return 1 if differing else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the clone whose train.py runs (default: this one)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="compare two fingerprint files instead of training")
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    print(json.dumps(fingerprints(args.checkout.resolve()), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
