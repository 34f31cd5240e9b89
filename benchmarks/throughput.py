"""Training throughput on Pong, measured in one run on this machine, and the ratios.

    python benchmarks/throughput.py --window-steps 2000 --windows 3   # about 12 minutes on 2 cores
    python benchmarks/throughput.py --skip-sb3 --windows 3

Settings of every measurement: PongNoFrameskip-v4 with our wrappers, batch 32, one gradient
step every 4 env steps, Nature CNN, Adam, target every 40,000 steps, a 100k replay, and
epsilon fixed at 0.01 (the late-training value, so acting costs a forward pass on almost
every step, as it does for most of a run). Figures are medians over ``--windows`` windows
of ``--window-steps`` env steps, taken after learning starts:

1. env only: random actions through the wrappers;
2. learner bound: gradient steps/s of the same loss, optimizer and clipping on random
   batches, times ``train_freq`` = the SPS if playing and acting were free;
3. our training loop (``train``) with ``memory=none`` and ``memory=kdtree``, the memory
   pre-filled with ``--memory-entries`` keys (what a few million env steps leave there),
   run alternately ``--repeats`` times each (median of the runs' medians);
4. Stable-Baselines3 DQN (``pip install -e .[bench]``), CnnPolicy, same settings.

SB3's NatureCNN uses 'valid' padding (3136 features); ours defaults to the original's
'same' (7744, 2.5x the first dense layer). The SB3 comparison therefore also runs ours
with ``model.padding=valid``: the same network size.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import compose_config, quiet_logs

from emdqn.envs import make_env
from emdqn.module import build_optimizer, clip_grad_norm_per_tensor, emdqn_loss
from emdqn.networks import build_q_network
from emdqn.train import train

COMMON = ["env=pong", "buffer.capacity=100000", "agent.target_update=40000", "agent.exploration.schedule=[[0,0.01]]",
          "eval.episodes=0", "logger=csv", "checkpoint.every_steps=0", "checkpoint.save_replay=false"]


def env_only_sps(window_steps: int, windows: int) -> float:
    env = make_env(compose_config(["env=pong"]).env, seed=0)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(window_steps):
            _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            if terminated or truncated:
                env.reset()
        rates.append(window_steps / (time.perf_counter() - start))
    return statistics.median(rates)


def learner_bound_sps(overrides: list[str], updates: int, windows: int) -> float:
    cfg = compose_config(COMMON + overrides)
    q_network = build_q_network(cfg.model, (4, 84, 84), 6)
    target_network = build_q_network(cfg.model, (4, 84, 84), 6).requires_grad_(False)
    optimizer = build_optimizer(q_network.parameters(), cfg.agent)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "obs": torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8, generator=generator),
        "next_obs": torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8, generator=generator),
        "actions": torch.randint(0, 6, (32,), generator=generator), "rewards": torch.zeros(32),
        "terminated": torch.zeros(32, dtype=torch.bool), "memory_values": torch.ones(32),
        "memory_found": torch.ones(32, dtype=torch.bool),
    }
    rates = []
    for window in range(windows + 1):
        start = time.perf_counter()
        for _ in range(updates):
            loss = emdqn_loss(q_network, target_network, batch, gamma=0.99, alpha=1.0, beta=0.1)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad_norm_per_tensor(list(q_network.parameters()), 10.0)
            optimizer.step()
        if window:  # the first window warms up
            rates.append(updates / (time.perf_counter() - start))
    return statistics.median(rates) * cfg.agent.train_freq


def prefill_memory(entries: int):
    def before_fit(module, datamodule) -> None:
        memory = datamodule.memory
        if memory is None or entries == 0:
            return
        rng = np.random.default_rng(0)
        # Keys spread like real Pong keys (projections of uint8 stacks are ~1e4 in scale).
        for start in range(0, entries, 1000):
            n = min(1000, entries - start)
            memory.add_episode(rng.normal(0, 5000, (n, memory.key_dim)).astype(np.float32),
                               rng.integers(0, memory.num_actions, n), rng.normal(size=n), 0.99)
    return before_fit


def loop_sps(overrides: list[str], window_steps: int, windows: int, memory_entries: int, folder: Path) -> float:
    learning_starts = 2000
    total = learning_starts + window_steps * (windows + 1)
    cfg = compose_config(COMMON + overrides + [f"agent.learning_starts={learning_starts}",
                                               f"agent.total_steps={total}",
                                               f"trainer.log_every_steps={window_steps}"])
    run_dir = folder / f"run{len(list(folder.iterdir()))}"
    train(cfg, run_dir=run_dir, before_fit=prefill_memory(memory_entries))
    with (run_dir / "metrics.csv").open(newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("charts/SPS")]
    # Windows that start after learning starts (the first full one is a warm-up).
    rates = [float(row["charts/SPS"]) for row in rows if int(row["step"]) > learning_starts + window_steps]
    return statistics.median(rates)


def sb3_sps(window_steps: int, windows: int) -> float | None:
    try:
        from stable_baselines3 import DQN
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.env_util import make_atari_env
        from stable_baselines3.common.vec_env import VecFrameStack
    except ImportError:
        print("Stable-Baselines3 is not installed: pip install -e '.[bench]' to compare with it")
        return None

    class WindowTimer(BaseCallback):
        def __init__(self, learning_starts: int):
            super().__init__()
            self.learning_starts = learning_starts
            self.marks: list[tuple[int, float]] = []

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.learning_starts and (self.num_timesteps - self.learning_starts) % window_steps == 0:
                self.marks.append((self.num_timesteps, time.perf_counter()))
            return True

    learning_starts = 2000
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0), n_stack=4)
    model = DQN("CnnPolicy", env, buffer_size=100_000, learning_starts=learning_starts, batch_size=32, train_freq=4,
                gradient_steps=1, target_update_interval=40_000, exploration_initial_eps=0.01,
                exploration_final_eps=0.01, learning_rate=1e-4, policy_kwargs={"optimizer_kwargs": {"eps": 1e-4}},
                max_grad_norm=10,
                seed=0, verbose=0, device="cpu")
    timer = WindowTimer(learning_starts)
    model.learn(total_timesteps=learning_starts + window_steps * (windows + 1), callback=timer)
    marks = timer.marks[1:]  # the first window warms up
    rates = [(b[0] - a[0]) / (b[1] - a[1]) for a, b in zip(marks, marks[1:])]
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window-steps", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--memory-entries", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2, help="alternating none/kdtree runs of each")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra overrides for our runs, e.g. model.compile=true")
    args = parser.parse_args()
    quiet_logs()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; windows of {args.window_steps} env steps")
    figures: dict[str, float] = {}
    figures["env only"] = env_only_sps(args.window_steps, args.windows)
    print(f"env only (random actions): {figures['env only']:.0f} SPS", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        # The learner bound, none and kdtree alternate, --repeats times each: on a shared
        # machine a slow spell then hits all of them instead of biasing their ratios.
        runs: dict[str, list[float]] = {"none": [], "kdtree": []}
        bounds: list[float] = []
        for _ in range(args.repeats):
            bounds.append(learner_bound_sps(args.overrides, 40, args.windows))
            print(f"learner bound (padding same): {bounds[-1]:.0f} SPS", flush=True)
            for memory in ("none", "kdtree"):
                runs[memory].append(loop_sps([f"memory={memory}", *args.overrides], args.window_steps, args.windows,
                                             args.memory_entries if memory == "kdtree" else 0, Path(folder)))
                print(f"ours memory={memory}: {runs[memory][-1]:.0f} SPS", flush=True)
        for memory, rates in runs.items():
            figures[f"ours memory={memory}"] = statistics.median(rates)
        figures["learner bound"] = statistics.median(bounds)
        if not args.skip_sb3:
            figures["learner bound valid"] = learner_bound_sps(["model.padding=valid", *args.overrides], 40,
                                                               args.windows)
            print(f"learner bound (padding valid): {figures['learner bound valid']:.0f} SPS", flush=True)
            figures["ours kdtree valid"] = loop_sps(["memory=kdtree", "model.padding=valid", *args.overrides],
                                                    args.window_steps, args.windows, args.memory_entries, Path(folder))
            print(f"ours memory=kdtree, padding valid: {figures['ours kdtree valid']:.0f} SPS", flush=True)
            sb3 = sb3_sps(args.window_steps, args.windows)
            if sb3 is not None:
                figures["sb3"] = sb3
                print(f"Stable-Baselines3 DQN: {sb3:.0f} SPS", flush=True)
    print("\nratios (same run, same machine):")
    print(f"  kdtree / learner bound           {figures['ours memory=kdtree'] / figures['learner bound']:.2f}  (target >= 0.85)")
    print(f"  kdtree / none                    {figures['ours memory=kdtree'] / figures['ours memory=none']:.3f} "
          "(target >= 0.95)")
    if "sb3" in figures:
        print(f"  kdtree (valid) / SB3 DQN         {figures['ours kdtree valid'] / figures['sb3']:.2f}  (target >= 1.4)")
        print(f"  kdtree (same, 2.5x dense) / SB3  {figures['ours memory=kdtree'] / figures['sb3']:.2f}")
        print(f"  kdtree (valid) / learner (valid) {figures['ours kdtree valid'] / figures['learner bound valid']:.2f}")


if __name__ == "__main__":
    main()
