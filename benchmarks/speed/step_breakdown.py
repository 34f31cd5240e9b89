"""Where the time of one gradient step goes, inside a real training run on Pong.

    python benchmarks/speed/step_breakdown.py                  # env.num_envs=4, padding valid, memory=kdtree
    python benchmarks/speed/step_breakdown.py env.num_envs=1 model.padding=same memory=none
    python benchmarks/speed/step_breakdown.py --minatar memory=none       # MinAtar Breakout, one thread

The run has the settings of ``throughput.py`` (batch 32, one update per 4 env steps,
epsilon 0.01, the memory pre-filled with ``--memory-entries`` keys). The parts of the loop
are wrapped with timers (``perf_counter``, well under a microsecond per call) once learning
has started, and the script prints each part's time per gradient step, averaged over
``--steps`` env steps. Indented parts run inside the part above them; "Lightning between
steps" is the wall time outside ``training_step``. A last line gives the acting pass's median
time by its position after the optimizer step (with one env, four passes per update).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch
from _common import compose_config

from emdqn.analysis.script_support import quiet_logs
from _common import COMMON, prefill_memory
from minatar_throughput import SETTINGS as MINATAR_SETTINGS

import emdqn.agent.collector
import emdqn.agent.learner
import emdqn.agent.loss
from emdqn.agent.collector import Collector
from emdqn.agent.memory import EpisodicMemory
from emdqn.run.module import EMDQNModule
from emdqn.agent.replay import MultiEnvReplay
from emdqn.run.train import train
from emdqn.envs.vector import AleVectorEnvs, SerialEnvs

# (owner, attribute, label, depth): the order and nesting of the printed table.
PARTS: list[tuple[Any, str, str, int]] = [
    (Collector, "_finish_step", "receive and store the env step", 1),
    (AleVectorEnvs, "recv", "env recv", 2),
    (SerialEnvs, "recv", "env recv (serial envs step here)", 2),
    (MultiEnvReplay, "add", "replay add", 2),
    (Collector, "_sample_batch", "sample the batch", 1),
    (MultiEnvReplay, "sample", "replay sample", 2),
    (EpisodicMemory, "lookup", "memory lookup", 2),
    (emdqn.agent.learner, "emdqn_loss", "loss forward (online + target)", 1),
    (torch.Tensor, "backward", "backward", 1),
    (emdqn.agent.loss, "clip_grad_norm_per_tensor", "gradient clipping", 1),
    (emdqn.agent.learner, "adam_step", "optimizer step (Adam)", 1),
    (Collector, "_start_step", "act and send the next env step", 1),
    (emdqn.agent.collector, "greedy_actions", "acting forward pass", 2),
    (AleVectorEnvs, "send", "env send", 2),
    (SerialEnvs, "send", "env send", 2),
    (EpisodicMemory, "project", "memory keys", 2),
]


def timed(function: Callable, record: Callable[[float], None]) -> Callable:
    """``function``, wrapped to hand each call's duration in seconds to ``record``."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            record(time.perf_counter() - start)
    return wrapper


def install_timers(totals: Counter, active: list[bool]) -> None:
    for owner, attribute, label, _ in PARTS:
        def add(seconds: float, label: str = label) -> None:
            if active[0]:
                totals[label] += seconds
        setattr(owner, attribute, timed(getattr(owner, attribute), add))


def install_acting_positions(active: list[bool]) -> dict[int, list[float]]:
    """Time each acting pass by how many passes came before it since the last optimizer
    step: the first one after an update finds the caches full of Adam's traffic."""
    by_position: dict[int, list[float]] = {}
    position = [0]

    def add(seconds: float) -> None:
        if active[0]:
            by_position.setdefault(position[0], []).append(seconds)
        position[0] += 1

    optimizer_step = emdqn.agent.learner.adam_step

    @functools.wraps(optimizer_step)
    def counted_step(*args, **kwargs):
        try:
            return optimizer_step(*args, **kwargs)
        finally:
            position[0] = 0

    emdqn.agent.collector.greedy_actions = timed(emdqn.agent.collector.greedy_actions, add)
    emdqn.agent.learner.adam_step = counted_step
    return by_position


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8000, help="env steps timed after learning starts")
    parser.add_argument("--memory-entries", type=int, default=None,
                        help="keys pre-filled in the memory (default 1M for Pong; none for MinAtar, whose run fills it)")
    parser.add_argument("--minatar", action="store_true",
                        help="MinAtar Breakout with the settings of minatar_throughput.py (one thread) instead of Pong")
    parser.add_argument("overrides", nargs="*", help="overrides of the run, e.g. env.num_envs=1")
    args = parser.parse_args()
    quiet_logs()
    learning_starts, warmup = (5000, 5000) if args.minatar else (2000, 2000)
    base = MINATAR_SETTINGS if args.minatar else COMMON + ["memory=kdtree", "env.num_envs=4", "model.padding=valid"]
    cfg = compose_config(base + [f"agent.learning_starts={learning_starts}",
                                   f"agent.total_steps={learning_starts + warmup + args.steps}",
                                   f"trainer.log_every_steps={args.steps}"] + args.overrides)
    totals: Counter = Counter()
    active = [False]
    install_timers(totals, active)
    acting_by_position = install_acting_positions(active)
    updates = [0]
    started = [0.0]
    training_step = EMDQNModule.training_step

    # Lightning reads this hook's parameter names (``dataloader_iter``): no generic wrapper.
    def counting_step(module: EMDQNModule, dataloader_iter: Any) -> None:
        if not active[0] and module.trainer.datamodule.collector.env_steps >= learning_starts + warmup:
            active[0], started[0] = True, time.perf_counter()
        start = time.perf_counter()
        try:
            return training_step(module, dataloader_iter)
        finally:
            if active[0]:
                updates[0] += 1
                totals["training_step"] += time.perf_counter() - start

    EMDQNModule.training_step = counting_step
    with tempfile.TemporaryDirectory() as folder:
        train(cfg, run_dir=Path(folder) / "run", before_fit=prefill_memory(
            args.memory_entries if args.memory_entries is not None else 0 if args.minatar else 1_000_000))
    wall = time.perf_counter() - started[0]
    count = max(updates[0], 1)
    print(f"\n{' '.join(args.overrides) or 'defaults'}: {count} gradient steps, "
          f"{1000 * wall / count:.2f} ms each ({cfg.agent.train_freq * count / wall:.0f} SPS)")
    print(f"  {'training_step':<44} {1000 * totals['training_step'] / count:6.2f} ms")
    printed = set()
    for _, _, label, depth in PARTS:
        if label in totals and label not in printed:
            printed.add(label)
            print(f"  {'  ' * depth}{label:<{44 - 2 * depth}} {1000 * totals[label] / count:6.2f} ms")
    outside = wall - totals["training_step"]
    print(f"  {'Lightning between steps':<44} {1000 * outside / count:6.2f} ms")
    positions = ", ".join(f"{1000 * statistics.median(times):.2f}" for _, times in sorted(acting_by_position.items()))
    print(f"acting forward pass by its position after the optimizer step (median ms): {positions}")


if __name__ == "__main__":
    main()
