"""The episodic memory's calls of a real run, replayed against this code and another commit's.

    python benchmarks/speed/memory_trace.py --against 61cf392~1     # about 2 minutes on 2 cores
    python benchmarks/speed/memory_trace.py --against HEAD --steps 60000 --game seaquest

A MinAtar run (``experiment=minatar memory=kdtree``, epsilon fixed at 0.01, one torch thread) records
every ``project``, ``lookup`` and ``add_episode`` call with its arguments. The calls are then
replayed on a fresh memory of this checkout and on one built from ``--against``'s
``emdqn/agent/memory.py`` and ``emdqn/agent/memory_index.py`` (read with ``git show``, imported from a
temporary folder), alternating ``--repeats`` times. Printed: each operation's total time
(median over the repeats) for both, and whether every output and the final state are the
same bit for bit. A change to the memory that is meant to be a pure speed-up must print
``identical``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
from _common import compose_config

from emdqn.analysis.script_support import quiet_logs
from emdqn.analysis.records import REPO_ROOT

import emdqn.agent.memory
from emdqn.run.train import train

OPERATIONS = ("project", "lookup", "add_episode")


def record_calls(game: str, steps: int) -> tuple[tuple[int, ...], int, list[tuple[Any, ...]]]:
    """(observation shape, action count, calls) of a short training run's memory."""
    calls: list[tuple[Any, ...]] = []
    shapes: dict[str, Any] = {}
    memory_class = emdqn.agent.memory.EpisodicMemory
    original = {name: getattr(memory_class, name) for name in OPERATIONS}

    def project(self, obs):
        shapes.update(obs_shape=self.obs_shape, num_actions=self.num_actions)
        calls.append(("project", np.array(obs)))
        return original["project"](self, obs)

    def lookup(self, keys, actions, with_visits=False):
        calls.append(("lookup", np.array(keys), np.array(actions), with_visits))
        return original["lookup"](self, keys, actions, with_visits)

    def add_episode(self, keys, actions, rewards, gamma):
        calls.append(("add_episode", np.array(keys), np.array(actions), np.array(rewards), gamma))
        return original["add_episode"](self, keys, actions, rewards, gamma)

    cfg = compose_config(["experiment=minatar", f"env.game={game}", "agent.exploration.schedule=[[0,0.01]]",
                          "eval.episodes=0", "logger=csv", "checkpoint.every_steps=0",
                          "checkpoint.save_replay=false", "trainer.threads=1", "memory=kdtree",
                          "agent.learning_starts=2000", f"agent.total_steps={steps}",
                          f"trainer.log_every_steps={steps}"])
    for name, wrapper in (("project", project), ("lookup", lookup), ("add_episode", add_episode)):
        setattr(memory_class, name, wrapper)
    try:
        with tempfile.TemporaryDirectory() as folder:
            train(cfg, run_dir=Path(folder) / "run")
    finally:
        for name, function in original.items():
            setattr(memory_class, name, function)
    return shapes["obs_shape"], shapes["num_actions"], calls


def memory_module_at(commit: str, folder: Path) -> types.ModuleType:
    """``emdqn.agent.memory`` as it was at ``commit``, with that commit's ``memory_index``."""
    package = folder / "memory_at_commit"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("memory", "memory_index"):
        source = subprocess.run(["git", "-C", str(REPO_ROOT), "show", f"{commit}:emdqn/{name}.py"],
                                capture_output=True, text=True, check=True).stdout
        source = source.replace("from emdqn.agent.memory_index import", "from memory_at_commit.memory_index import")
        (package / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    spec = importlib.util.find_spec("memory_at_commit.memory")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def replay(module: types.ModuleType, obs_shape: tuple[int, ...], num_actions: int, capacity: int,
           calls: list[tuple[Any, ...]]) -> tuple[dict[str, float], list[Any], dict[str, Any]]:
    """Seconds per operation, every call's output and the final state of a fresh memory."""
    memory = module.EpisodicMemory(num_actions, obs_shape, capacity=capacity)
    seconds = dict.fromkeys(OPERATIONS, 0.0)
    outputs = []
    for name, *arguments in calls:
        start = time.perf_counter()
        outputs.append(getattr(memory, name)(*arguments))
        seconds[name] += time.perf_counter() - start
    return seconds, outputs, memory.state_dict()


def same_bits(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(map(same_bits, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_bits(a[key], b[key]) for key in a if key != "rebuild_seconds")
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="the commit whose memory to compare with")
    parser.add_argument("--game", default="breakout")
    parser.add_argument("--steps", type=int, default=30_000, help="env steps of the recorded run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--capacity", type=int, default=5_000_000,
                        help="entries per action of the replayed memories (small: evictions are replayed too)")
    args = parser.parse_args()
    if args.steps < 3000:
        parser.error(f"--steps must be at least 3000 (learning starts at 2000), got {args.steps}")
    if args.capacity < 1:
        parser.error(f"--capacity must be at least 1, got {args.capacity}")
    if subprocess.run(["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{args.against}:emdqn/agent/memory.py"],
                      capture_output=True).returncode != 0:
        parser.error(f"--against {args.against!r} is not a commit of this repository with emdqn/agent/memory.py")
    quiet_logs()
    print(f"recording the memory calls of {args.steps:,} steps of MinAtar {args.game} ...", flush=True)
    obs_shape, num_actions, calls = record_calls(args.game, args.steps)
    counts = {name: sum(1 for call in calls if call[0] == name) for name in OPERATIONS}
    print("calls: " + ", ".join(f"{name} {count:,}" for name, count in counts.items()), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        modules = {args.against: memory_module_at(args.against, Path(folder)), "this checkout": emdqn.agent.memory}
        times: dict[str, list[dict[str, float]]] = {label: [] for label in modules}
        results = {}
        for repeat in range(args.repeats):
            for label, module in modules.items():
                seconds, outputs, state = replay(module, obs_shape, num_actions, args.capacity, calls)
                times[label].append(seconds)
                results[label] = (outputs, state)
            print(f"  repeat {repeat + 1}/{args.repeats} done", flush=True)
    print(f"\n{'seconds (median)':<16}" + "".join(f"{name:>13}" for name in (*OPERATIONS, "total")))
    for label, runs in times.items():
        medians = [statistics.median(run[name] for run in runs) for name in OPERATIONS]
        print(f"{label:<16}" + "".join(f"{value:13.3f}" for value in (*medians, sum(medians))))
    (old_outputs, old_state), (new_outputs, new_state) = results.values()
    differing = [index for index, (a, b) in enumerate(zip(old_outputs, new_outputs)) if not same_bits(a, b)]
    if differing or not same_bits(old_state, new_state):
        print(f"\nDIFFERENT: {len(differing)} of {len(calls):,} outputs (first at call {differing[:1]}), "
              f"final state {'identical' if same_bits(old_state, new_state) else 'different'}")
        sys.exit(1)
    print(f"\nidentical: all {len(calls):,} outputs and the final state, bit for bit")


if __name__ == "__main__":
    main()
