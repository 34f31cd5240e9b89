"""EMDQN against DQN on one Atari game with the original settings, in stretches: the Pong evidence.

    python benchmarks/experiments/atari_pair.py --commit          # start both runs, or continue them where they stopped
    python benchmarks/experiments/atari_pair.py --report-only     # rebuild the table and the picture from the records

Two runs of ``python train.py env=<game> seed=<seed>`` side by side, one torch thread each:
EMDQN (``memory=kdtree``, λ 0.1) and DQN (``memory=none``), everything else the defaults.
``--steps`` (2,000,000) is the first fifth of the default 10M-step run: the ε schedule, the
target sync and the learning start are in absolute env steps, so the two are the same up to
there. Every ``--eval-every`` env steps each run plays ``--eval-games`` full games at ε 0.05
(the Nature protocol, games capped at 108,000 frames).

A run can be stopped at any time: SIGTERM or Ctrl-C to this script stops both runs, each
writes its checkpoint, and their records are written (and committed with ``--commit``). A
later call continues each run from its checkpoint (``train.py resume=<run>``, the exact
resume); a finished run is skipped; a run whose folder is gone starts again from 0, and its
record notes the restart. After every evaluation the record of that run is rewritten:
``<out>/<game>__<arm>__s<seed>.json`` holds the commit and command of each stretch, the
machine, the evaluations so far, the training return in bins and the speed, so the curve is
in the repository even when a run folder is lost.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from emdqn.analysis.curves import label_axes, mean_with_band, pyplot, save_figure
from emdqn.analysis.records import REPO_ROOT, commit_files, metadata_block, write_record
from emdqn.analysis.runs import MEMORY_METRICS, learning_curve, read_metrics

ARMS = {"emdqn": "kdtree", "dqn": "none"}  # arm -> memory config
BIN_STEPS = 25_000  # width of the training curve's bins, env steps
EVAL_EPSILON = 0.05
POLL_SECONDS = 30


def record_path(out: Path, game: str, arm: str, seed: int) -> Path:
    return out / f"{game}__{arm}__s{seed}.json"


def run_folder(runs_dir: Path, game: str, arm: str, seed: int) -> Path:
    return runs_dir / f"{game}__{arm}__s{seed}"


def has_checkpoint(folder: Path) -> bool:
    """A checkpoint of this emdqn (its manifest) or of the earlier layout (``last.ckpt`` and
    ``last.json``), which a record's commit resumes: a run started before the manifest is
    continued by the version it started with, never restarted from 0."""
    directory = folder / "checkpoints"
    return (directory / "manifest.json").is_file() or all((directory / name).is_file()
                                                          for name in ("last.ckpt", "last.json"))


def plan(record: dict | None, folder: Path, steps: int) -> str:
    """What to do with one arm: ``skip`` (finished), ``resume`` (its checkpoint is there),
    ``start`` (nothing yet) or ``restart`` (a record with progress but no checkpoint: the
    run folder was lost, so the run begins again from 0)."""
    if record is not None and record.get("finished") and record["env_steps"] >= steps:
        return "skip"
    if has_checkpoint(folder):
        return "resume"
    if record is not None and record.get("env_steps", 0) > 0:
        return "restart"
    return "start"


def own_overrides(args: argparse.Namespace) -> list[str]:
    """Settings of the measurement, not of the experiment: given on every start and resume."""
    return ["trainer.threads=1", "logger=csv", f"checkpoint.every_steps={args.checkpoint_every}"]


def start_overrides(args: argparse.Namespace, arm: str) -> list[str]:
    return [f"env={args.game}", f"seed={args.seed}", f"memory={ARMS[arm]}", f"agent.total_steps={args.steps}",
            f"eval.every_steps={args.eval_every}", f"eval.episodes={args.eval_games}",
            f"eval.epsilon={EVAL_EPSILON}", *args.overrides]


def evaluations(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """One entry per evaluated env step (the final evaluation replaces a periodic one at the same step)."""
    by_step: dict[int, dict[str, float]] = {}
    for row in rows:
        if "eval/episodic_return" in row:
            by_step[int(row["step"])] = {"step": int(row["step"]), "return": round(row["eval/episodic_return"], 3),
                                         "std": round(row.get("eval/episodic_return_std", float("nan")), 3)}
    return [by_step[step] for step in sorted(by_step)]


def progress_of(folder: Path) -> dict:
    """What a run folder shows so far: env steps, evaluations, curve, speed, memory metrics."""
    rows = read_metrics(folder) if (folder / "metrics.csv").is_file() else []
    episodes = [(row["step"], row["charts/episodic_return"]) for row in rows if "charts/episodic_return" in row]
    steps = max((int(row["step"]) for row in rows), default=0)
    sps = [row["charts/SPS"] for row in rows if "charts/SPS" in row]
    memory = {name: round(float(np.mean([row[name] for row in rows if name in row])), 4)
              for name in MEMORY_METRICS if any(name in row for row in rows)}
    return {
        "env_steps": steps,
        "episodes": len(episodes),
        "evaluations": evaluations(rows),
        "curve": {"bin_steps": BIN_STEPS,
                  "returns": learning_curve(np.array([s for s, _ in episodes]), np.array([r for _, r in episodes]),
                                            max(steps, 1), bin_steps=BIN_STEPS) if episodes else []},
        "mean_logged_sps": round(float(np.mean(sps)), 1) if sps else None,
        "memory_metrics": memory,
    }


@dataclass
class Arm:
    """One run of the pair: its folder, its record and, while it runs, its process."""

    name: str
    folder: Path
    path: Path
    record: dict | None
    process: subprocess.Popen | None = None
    stretch: dict = field(default_factory=dict)
    evaluations_seen: int = 0

    def launch(self, action: str, args: argparse.Namespace) -> None:
        if action == "resume":
            overrides = [f"resume={self.folder}", *own_overrides(args)]
        else:
            if self.folder.exists():  # a folder without a checkpoint: kept aside, never deleted
                aside = self.folder.with_name(f"{self.folder.name}.lost-{datetime.datetime.now():%Y%m%d-%H%M%S}")
                self.folder.rename(aside)
                print(f"    {self.name}: {self.folder} held no checkpoint; moved to {aside}", flush=True)
            overrides = [*start_overrides(args, self.name), *own_overrides(args), f"hydra.run.dir={self.folder}"]
        command = " ".join(["python", "train.py", *overrides])
        if action == "restart":
            self.record.setdefault("restarts", []).append(
                {"date": now(), "lost_env_steps": self.record["env_steps"], "why": "run folder lost; started from 0"})
            self.record.update(evaluations=[], env_steps=0)
        resumed = progress_of(self.folder) if action == "resume" else None
        from_step = resumed["env_steps"] if resumed else 0
        self.stretch = {**metadata_block(command), "action": action, "from_step": from_step, "started": now()}
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        console = (self.folder.parent / f"{self.folder.name}.console.log").open("a")
        self.process = subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), *overrides], cwd=REPO_ROOT,
                                        stdout=console, stderr=subprocess.STDOUT)
        self.evaluations_seen = len(resumed["evaluations"]) if resumed else 0
        print(f"    {self.name}: {action} from env step {from_step:,}: {command}", flush=True)

    def update_record(self, args: argparse.Namespace, progress: dict, finished: bool = False) -> None:
        """Rewrite the record from ``progress`` (:func:`progress_of` the run folder, read by the caller)."""
        wall = time.time() - datetime.datetime.fromisoformat(self.stretch["started"]).timestamp()
        stretch = {**self.stretch, "to_step": progress["env_steps"], "wall_seconds": round(wall, 1),
                   "env_steps_per_second": round((progress["env_steps"] - self.stretch["from_step"]) / max(wall, 1), 1)}
        previous = self.record or {}
        stretches = [s for s in previous.get("stretches", []) if s["started"] != stretch["started"]] + [stretch]
        self.record = {
            "game": args.game, "arm": self.name, "seed": args.seed, "memory": ARMS[self.name],
            "target_env_steps": args.steps, "eval_every": args.eval_every, "eval_games": args.eval_games,
            "eval_epsilon": EVAL_EPSILON, **progress, "finished": finished,
            "machine_hours": round(sum(s["wall_seconds"] for s in stretches) / 3600, 2),
            "stretches": stretches, "restarts": previous.get("restarts", []),
        }
        write_record(self.path, self.record)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run(args: argparse.Namespace) -> None:
    arms = []
    for name in ARMS:
        path = record_path(args.out, args.game, name, args.seed)
        record = json.loads(path.read_text()) if path.is_file() else None
        arms.append(Arm(name, run_folder(args.runs_dir, args.game, name, args.seed), path, record))
    running = []
    for arm in arms:
        action = plan(arm.record, arm.folder, args.steps)
        if action == "skip":
            print(f"    {arm.name}: finished ({arm.record['env_steps']:,} env steps); skipped", flush=True)
            continue
        arm.launch(action, args)
        running.append(arm)

    stopping = False

    def stop(signum, frame):  # both runs write their checkpoint, then the records are written
        nonlocal stopping
        if not stopping:
            print(f"received {signal.Signals(signum).name}: stopping both runs (each writes its checkpoint)",
                  flush=True)
            stopping = True
            for arm in running:
                if arm.process.poll() is None:
                    arm.process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while running:
        time.sleep(1 if stopping else args.poll_seconds)
        for arm in list(running):
            code = arm.process.poll()
            progress = progress_of(arm.folder)
            finished = code == 0 and not stopping and progress["env_steps"] >= args.steps
            new_evaluation = len(progress["evaluations"]) > arm.evaluations_seen
            if code is None and not new_evaluation:
                continue
            arm.update_record(args, progress, finished=finished)
            arm.evaluations_seen = len(progress["evaluations"])
            last = progress["evaluations"][-1] if progress["evaluations"] else None
            state = ("finished" if finished else "stopped" if code == 0 else
                     "running" if code is None else f"failed (exit {code}; see {arm.folder}.console.log)")
            print(f"    {arm.name}: {state} at env step {progress['env_steps']:,}"
                  + (f", evaluation {last['return']:+.2f} at {last['step']:,}" if last else ""), flush=True)
            if args.commit:
                commit_files([arm.path], f"Pong pair record: {arm.name} seed {args.seed}, "
                                         f"{progress['env_steps']:,} env steps ({state})")
            if code is not None:
                running.remove(arm)
    if all(arm.record and arm.record.get("finished") for arm in arms):
        build_report(args.out, args.game, args.seed)


def first_step_reaching(evals: list[dict], score: float) -> int | None:
    return next((e["step"] for e in evals if e["return"] >= score), None)


def build_report(out: Path, game: str, seed: int) -> tuple[Path, Path]:
    """``table.md`` and ``curves.png`` in ``out``, from the records alone."""
    records = {arm: json.loads(record_path(out, game, arm, seed).read_text()) for arm in ARMS
               if record_path(out, game, arm, seed).is_file()}
    steps = sorted({e["step"] for r in records.values() for e in r["evaluations"]})
    lines = ["| env steps | " + " | ".join(f"{arm} (ε 0.05, mean ± sd)" for arm in records) + " |",
             "|---|" + "---|" * len(records)]
    for step in steps:
        cells = []
        for record in records.values():
            found = next((e for e in record["evaluations"] if e["step"] == step), None)
            cells.append(f"{found['return']:+.2f} ± {found['std']:.2f}" if found else "")
        lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
    lines += ["", "| arm | env steps | first evaluation ≥ 0 | first evaluation ≥ +18 | machine hours |",
              "|---|---|---|---|---|"]
    for arm, record in records.items():
        reach = [first_step_reaching(record["evaluations"], score) for score in (0, 18)]
        lines.append(f"| {arm} | {record['env_steps']:,} | "
                     + " | ".join(f"{s:,}" if s else f"not within {record['env_steps']:,}" for s in reach)
                     + f" | {record['machine_hours']} |")
    table = out / "table.md"
    table.write_text("\n".join(lines) + "\n")

    figure, axis = pyplot().subplots(figsize=(7, 4))
    for (arm, record), color in zip(records.items(), ("tab:red", "tab:blue")):
        curve = record["curve"]
        x = (np.arange(len(curve["returns"])) + 1) * curve["bin_steps"]
        mean_with_band(axis, x, np.asarray(curve["returns"]), color=color, alpha=0.6,
                       label=f"{arm}: training return (ε-greedy)")
        evals = record["evaluations"]
        # One seed: the evaluation's band is the spread of its games (mean ± sd), not an interval over seeds.
        mean_with_band(axis, np.array([e["step"] for e in evals]), np.array([e["return"] for e in evals]),
                       np.array([e["return"] - e["std"] for e in evals]), np.array([e["return"] + e["std"] for e in evals]),
                       color=color, marker="o", label=f"{arm}: evaluation (ε 0.05, {record['eval_games']} games, ± sd)")
    label_axes(axis, "return", f"{game}, seed {seed}", xlabel="env steps (frames = 4 × env steps)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return table, save_figure(figure, out / "curves.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="pong", help="an env config of conf/env (an Atari game)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2_000_000, help="env steps per run")
    parser.add_argument("--eval-every", type=int, default=250_000, help="env steps between evaluations")
    parser.add_argument("--eval-games", type=int, default=10, help="full games per evaluation")
    parser.add_argument("--checkpoint-every", type=int, default=50_000,
                        help="env steps between checkpoints (what a kill without a signal loses at most)")
    parser.add_argument("--out", type=Path, default=None, help="records folder (default benchmarks/results/<game>)")
    parser.add_argument("--runs-dir", type=Path, default=REPO_ROOT / "multirun" / "atari_pair",
                        help="where the run folders go")
    parser.add_argument("--commit", action="store_true", help="git-commit each record as it is written")
    parser.add_argument("--poll-seconds", type=float, default=POLL_SECONDS, help="how often the runs are looked at")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra overrides for both runs' start (kept in the records)")
    args = parser.parse_args()
    if not (REPO_ROOT / "conf" / "env" / f"{args.game}.yaml").is_file():
        parser.error(f"--game {args.game}: no conf/env/{args.game}.yaml")
    for name in ("steps", "eval_games", "eval_every", "checkpoint_every"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive number, got {getattr(args, name)}")
    args.out = args.out or REPO_ROOT / "benchmarks" / "results" / args.game
    if args.report_only:
        for path in build_report(args.out, args.game, args.seed):
            print(f"wrote {path}")
        return
    run(args)


if __name__ == "__main__":
    main()
