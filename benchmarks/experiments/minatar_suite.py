"""EMDQN against DQN and n-step DQN on the five MinAtar games: the project's headline table.

    python benchmarks/experiments/minatar_suite.py                      # run what is missing, then the report
    python benchmarks/experiments/minatar_suite.py --report-only        # rebuild table and picture from the results
    python benchmarks/experiments/minatar_suite.py --games breakout --seeds 0 --steps 100000 --out my_grid   # a grid of one's own

Arms (``experiment=minatar``, identical settings but for the arm's own keys):

    dqn           memory=none
    emdqn         memory=kdtree (lambda 0.1)
    ndqn          memory=none agent.n_step=3
    emdqn_nstep   memory=kdtree agent.n_step=3   (the memory term added to an n-step TD target)
    emdqn_chosen  memory=kdtree memory.lambda=<--chosen-lambda>   (a λ chosen on other seeds)

Runs go through the project's own multirun (``python train.py -m``, joblib launcher), two
at a time with one torch thread each: the DQN and EMDQN arms of one (game, seed, n_step)
run side by side, so both see the same machine load; the chosen-λ arm runs one launch per
seed over the games, two at a time. Each finished run's result (its
downsampled learning curve, final figures and mean memory metrics) is written to
``<out>/runs/<game>__<arm>__s<seed>.json``; a run whose result exists is never redone, so
the suite resumes where it stopped. After each launch the report
(``<out>/table.md``, ``<out>/curves.png``, ``<out>/summary.json`` and the table in
docs/results.md) is rebuilt from the result files alone (``benchmarks/experiments/minatar_report.py``);
``--commit`` also commits the new results with it (for long suites on machines whose
uncommitted files do not survive). Only the project's published folders (``benchmarks/results/minatar``,
``benchmarks/results/minatar_heldout``) write their tables into docs/results.md and README.md; a results folder holds one budget and one
set of extra overrides, and a grid of other settings is refused there with the line that says so.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from minatar_report import build_report, suite_documents
from omegaconf import OmegaConf

from emdqn.analysis.records import REPO_ROOT, commit_files, config_hash, metadata_block, write_record
from emdqn.analysis.runs import BIN_STEPS, learning_curve, memory_means, read_metrics

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
ARMS = {  # arm -> (memory config, n_step)
    "dqn": ("none", 1),
    "emdqn": ("kdtree", 1),
    "ndqn": ("none", 3),
    "emdqn_nstep": ("kdtree", 3),
    "emdqn_chosen": ("kdtree", 1),  # with --chosen-lambda
}
DEFAULT_LAMBDA = 0.1  # conf/memory/kdtree.yaml's, the original's
LAST_OWN_OVERRIDE = "checkpoint.save_replay=false"  # a run's command holds the user's extra overrides after it



def arm_of(memory: str, n_step: int, lam: float) -> str:
    if memory != "none" and n_step == 1 and lam != DEFAULT_LAMBDA:
        return "emdqn_chosen"
    return next(arm for arm, setting in ARMS.items() if setting == (memory, n_step))


def result_path(out: Path, game: str, arm: str, seed: int) -> Path:
    return out / "runs" / f"{game}__{arm}__s{seed}.json"


def harvest(run_dir: Path, command: str, wall_seconds: float) -> dict:
    """The result of one finished run, from its folder."""
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    rows = read_metrics(run_dir)
    episodes = [(row["step"], row["charts/episodic_return"]) for row in rows if "charts/episodic_return" in row]
    steps = np.array([s for s, _ in episodes])
    returns = np.array([r for _, r in episodes])
    evals = [row["eval/episodic_return"] for row in rows if "eval/episodic_return" in row]
    total = int(config["agent"]["total_steps"])
    arm = arm_of(config["memory"]["name"], int(config["agent"]["n_step"]), float(config["memory"]["lambda"]))
    return {
        "game": config["env"]["game"], "arm": arm, "seed": int(config["seed"]),
        "memory": config["memory"]["name"], "lambda": config["memory"]["lambda"],
        "n_step": int(config["agent"]["n_step"]), "env_steps": total, "episodes": len(returns),
        "final_return": float(returns[-100:].mean()) if returns.size else None,
        "eval_return": evals[-1] if evals else None,
        "eval_episodes": int(config["eval"]["episodes"]),
        "curve": {"bin_steps": BIN_STEPS, "returns": learning_curve(steps, returns, total)},
        "memory_metrics": memory_means(rows),
        "wall_seconds": round(wall_seconds, 1),
        "config_hash": config_hash({k: v for k, v in config.items() if k not in ("trainer", "logger", "hydra")}),
        **metadata_block(command),
    }


def settings_mismatch(out: Path, steps: int, extra: list[str], chosen_lambda: float | None = None) -> str | None:
    """Why the records in ``out`` do not fit a grid of ``steps`` env steps and ``extra``
    overrides (and, when given, a chosen-λ arm of ``chosen_lambda``), or None. A results
    folder holds one setting: a grid of another would skip the runs whose record exists and
    mix its own runs into the same table."""
    for path in sorted((out / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        if chosen_lambda is not None and record["arm"] == "emdqn_chosen" and record["lambda"] != chosen_lambda:
            return (f"--chosen-lambda {chosen_lambda:g} is not allowed with --out {out}: its chosen-λ runs ran "
                    f"λ {record['lambda']:g} ({path.name}); give another --out for another λ")
        tokens = record["command"].split()
        recorded = tokens[tokens.index(LAST_OWN_OVERRIDE) + 1:]
        if record["env_steps"] != steps:
            return (f"--steps {steps} is not allowed with --out {out}: its results ran {record['env_steps']:,} env "
                    f"steps ({path.name}); give another --out for another budget")
        if recorded != list(extra):
            return (f"the overrides {' '.join(extra) or '(none)'} are not allowed with --out {out}: its results ran "
                    f"with {' '.join(recorded) or '(none)'} ({path.name}); give another --out for other settings")
    return None


def launch(name: str, sweep: list[str], jobs: int, runs_dir: Path, extra: list[str]) -> tuple[Path, str, float]:
    """One multirun of ``experiment=minatar`` over ``sweep`` (``jobs`` runs at a time, one
    torch thread each, no checkpoints); returns its folder, command and wall time."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    sweep_dir = runs_dir / f"{name}_{stamp}"
    overrides = ["experiment=minatar", *sweep, "trainer.threads=1", "logger=csv", "hydra/launcher=joblib",
                 f"hydra.launcher.n_jobs={jobs}", "checkpoint.every_steps=0", LAST_OWN_OVERRIDE, *extra]
    command = " ".join(["python", "train.py", "-m", *overrides])
    start = time.perf_counter()
    finished = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), "-m", *overrides,
                               f"hydra.sweep.dir={sweep_dir}"], cwd=REPO_ROOT, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{finished.stdout[-2000:]}\n{finished.stderr[-4000:]}")
    return sweep_dir, command, time.perf_counter() - start


def run_pair(game: str, seed: int, n_step: int, memories: list[str], steps: int, jobs: int, runs_dir: Path,
             extra: list[str]) -> tuple[Path, str, float]:
    """The given memory settings of one (game, seed, n_step), side by side."""
    return launch(f"{game}_n{n_step}_s{seed}",
                  [f"env.game={game}", f"seed={seed}", f"agent.n_step={n_step}", f"agent.total_steps={steps}",
                   f"memory={','.join(memories)}"], min(jobs, len(memories)), runs_dir, extra)


def run_chosen(games: list[str], seed: int, lam: float, steps: int, jobs: int, runs_dir: Path,
               extra: list[str]) -> tuple[Path, str, float]:
    """The chosen-λ EMDQN arm of one seed on ``games``, ``jobs`` at a time."""
    return launch(f"chosen_lam{lam:g}_s{seed}",
                  [f"env.game={','.join(games)}", f"seed={seed}", "agent.n_step=1", f"agent.total_steps={steps}",
                   "memory=kdtree", f"memory.lambda={lam:g}"], min(jobs, len(games)), runs_dir, extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=list(GAMES), choices=GAMES)
    parser.add_argument("--arms", nargs="+", default=None, choices=list(ARMS),
                        help="default: every arm but emdqn_chosen, and emdqn_chosen too with --chosen-lambda")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300_000, help="env steps per run")
    parser.add_argument("--chosen-lambda", type=float, default=None,
                        help="λ of the emdqn_chosen arm (chosen on other seeds, for example by "
                             "minatar_lambda.py --select)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "minatar")
    parser.add_argument("--runs-dir", type=Path, default=REPO_ROOT / "multirun" / "minatar_suite",
                        help="where the run folders go")
    parser.add_argument("--commit", action="store_true", help="git-commit each result file as it is written")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run (kept in each result)")
    args = parser.parse_args()
    chosen = args.chosen_lambda
    if chosen is not None and not (np.isfinite(chosen) and chosen > 0 and chosen != DEFAULT_LAMBDA):
        parser.error(f"--chosen-lambda {chosen:g} is not allowed: a finite λ > 0 other than {DEFAULT_LAMBDA:g} "
                     f"(λ {DEFAULT_LAMBDA:g} is the emdqn arm)")
    if args.arms is None:
        args.arms = [arm for arm in ARMS if arm != "emdqn_chosen" or chosen is not None]
    if ("emdqn_chosen" in args.arms) != (chosen is not None) and not args.report_only:
        parser.error("--arms emdqn_chosen and --chosen-lambda go together: give both or neither")

    if not args.report_only:
        if mismatch := settings_mismatch(args.out, args.steps, args.overrides, chosen):
            parser.error(mismatch)
        pair_arms = [arm for arm in args.arms if arm != "emdqn_chosen"]
        plan = []
        for seed in args.seeds:  # per seed: each game's pairs, then the chosen arm over the games that miss it
            plan += [(seed, [game], n_step, [ARMS[arm][0] for arm in pair_arms if ARMS[arm][1] == n_step
                                             and not result_path(args.out, game, arm, seed).exists()])
                     for game in args.games for n_step in sorted({ARMS[a][1] for a in pair_arms})]
            if chosen is not None:
                plan.append((seed, [game for game in args.games
                                    if not result_path(args.out, game, "emdqn_chosen", seed).exists()], 1, ["chosen"]))
        plan = [item for item in plan if item[1] and item[3]]
        total_runs = sum(len(games) * len(memories) for _, games, _, memories in plan)
        print(f"{total_runs} runs to do ({len(plan)} launches); results in {args.out}", flush=True)
        done = 0
        for seed, games, n_step, memories in plan:
            if memories == ["chosen"]:
                print(f"[{done + 1}/{total_runs}] {','.join(games)} seed {seed}: emdqn_chosen (λ {chosen:g}) "
                      f"({datetime.datetime.now():%H:%M})", flush=True)
                sweep_dir, command, wall = run_chosen(games, seed, chosen, args.steps, args.jobs, args.runs_dir,
                                                      args.overrides)
            else:
                game = games[0]
                print(f"[{done + 1}/{total_runs}] {game} seed {seed} n_step {n_step}: memory={','.join(memories)} "
                      f"({datetime.datetime.now():%H:%M})", flush=True)
                sweep_dir, command, wall = run_pair(game, seed, n_step, memories, args.steps, args.jobs,
                                                    args.runs_dir, args.overrides)
            written = []
            for run_dir in sorted(path.parent for path in sweep_dir.glob("*/config.yaml")):
                result = harvest(run_dir, command, wall)
                path = result_path(args.out, result["game"], result["arm"], result["seed"])
                write_record(path, result)
                written.append(path)
                print(f"    {result['game']} {result['arm']}: final return {result['final_return']:.2f}, eval "
                      f"{result['eval_return']}, {wall / 60:.1f} min", flush=True)
            done += len(written)
            if written:
                # The table, picture and docs always match the committed records.
                build_report(args.out)
            if args.commit and written:
                report = [args.out / name for name in ("table.md", "summary.json", "curves.png")]
                commit_files([*written, *report, *(path for path, _ in suite_documents(args.out).values())],
                             f"MinAtar suite results: {', '.join(games)} seed {seed} n_step {n_step} "
                             f"({', '.join(sorted({p.stem.split('__')[1] for p in written}))}), "
                             f"{args.steps:,} env steps")
    build_report(args.out)


if __name__ == "__main__":
    main()
