"""Training throughput on Pong, measured in one run on this machine, and the ratios.

    python benchmarks/speed/throughput.py --window-steps 2000 --windows 3   # about 25 minutes on 2 cores
    python benchmarks/speed/throughput.py --skip-sb3 --repeats 1
    python benchmarks/speed/throughput.py trainer.precision=bf16-mixed      # our loops and bounds in bf16-mixed

Settings of every measurement: PongNoFrameskip-v4, batch 32, one gradient step every 4 env
steps, Nature CNN, Adam, target every 40,000 steps, a 100k replay, and epsilon fixed at 0.01
(the late-training value, so acting costs a forward pass on almost every step, as it does
for most of a run). Figures are medians over ``--windows`` windows of ``--window-steps``
env steps, taken after learning starts:

1. env only: random actions through our wrappers (one env), and through ale-py's vector
   env (``--num-envs`` envs, as ``env.num_envs`` runs them);
2. learner bound: gradient steps/s of the same loss, optimizer and clipping on random
   batches, times ``train_freq`` = the SPS if playing and acting were free;
3. our training loop (``train``) with ``memory=none`` and ``memory=kdtree``, with one env
   (the original's setting) and with ``env.num_envs=--num-envs``; the memory pre-filled
   with ``--memory-entries`` keys (what a few million env steps leave there). The bound
   and these runs alternate ``--repeats`` times (median of the runs' medians), so a slow
   spell of the shared machine hits all of them instead of biasing their ratios;
4. Stable-Baselines3 DQN (``pip install -e .[bench]``), CnnPolicy, same settings, with one
   env and with ``--num-envs`` envs (``train_freq=1`` vector step = 4 env steps per update).

SB3's NatureCNN uses 'valid' padding (3136 features); ours defaults to the original's
'same' (7744, 2.5x the first dense layer). The SB3 comparison therefore runs ours with
``model.padding=valid``: the same network size, against its own learner bound.
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
from _common import COMMON, FixedBatchUpdate, compose_config, prefill_memory

from emdqn.analysis.script_support import quiet_logs

from emdqn.run.train import train
from emdqn.envs.vector import make_envs




def env_only_sps(window_steps: int, windows: int, num_envs: int = 1) -> float:
    envs = make_envs(compose_config(["env=pong", f"env.num_envs={num_envs}"]).env, seed=0)
    envs.reset()
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(window_steps // num_envs):
            envs.step(rng.integers(envs.num_actions, size=num_envs))
        rates.append(window_steps // num_envs * num_envs / (time.perf_counter() - start))
    envs.close()
    return statistics.median(rates)


def learner_bound_sps(overrides: list[str], updates: int, windows: int) -> float:
    cfg = compose_config(COMMON + overrides)
    # Where trainer.accelerator=auto (the default) puts the training loop.
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
                          else "cpu")
    update = FixedBatchUpdate(cfg, device=device)  # the same network settings as the loop it bounds
    rates = []
    for window in range(windows + 1):
        start = time.perf_counter()
        for _ in range(updates):
            update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if window:  # the first window warms up
            rates.append(updates / (time.perf_counter() - start))
    return statistics.median(rates) * cfg.agent.train_freq


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


def sb3_sps(window_steps: int, windows: int, num_envs: int = 1) -> float | None:
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
            if (self.num_timesteps >= self.learning_starts
                    and (self.num_timesteps - self.learning_starts) % window_steps < num_envs):
                self.marks.append((self.num_timesteps, time.perf_counter()))
            return True

    learning_starts = 2000
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=num_envs, seed=0), n_stack=4)
    # SB3 counts train_freq in vector steps: one update per 4 env steps in both cases.
    model = DQN("CnnPolicy", env, buffer_size=100_000, learning_starts=learning_starts, batch_size=32,
                train_freq=max(4 // num_envs, 1), gradient_steps=max(num_envs // 4, 1), target_update_interval=40_000, exploration_initial_eps=0.01,
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
    parser.add_argument("--window-steps", type=int, default=2000)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--memory-entries", type=int, default=1_000_000)
    parser.add_argument("--num-envs", type=int, default=4, help="env.num_envs of the vectorized runs")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of the bound and each loop")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra overrides for our runs, e.g. trainer.compile=true")
    args = parser.parse_args()
    quiet_logs()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; windows of {args.window_steps} env steps")
    if compose_config(COMMON + args.overrides).trainer.precision != "32-true":
        print("note: Stable-Baselines3 runs in fp32; the ratios to it compare different arithmetic")
    vector = f"env.num_envs={args.num_envs}"
    figures: dict[str, float] = {}
    figures["env only"] = env_only_sps(args.window_steps, args.windows)
    figures["env only, vector"] = env_only_sps(args.window_steps, args.windows, args.num_envs)
    print(f"env only: {figures['env only']:.0f} SPS (1 env), {figures['env only, vector']:.0f} SPS "
          f"({args.num_envs} envs, ale-py vector env)", flush=True)
    groups = {"same": ["model.padding=same"]}
    if not args.skip_sb3:
        groups["valid"] = ["model.padding=valid"]
    loops = {"none": ["memory=none"], "kdtree": ["memory=kdtree"],
             "none, vector": ["memory=none", vector], "kdtree, vector": ["memory=kdtree", vector]}
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for padding, padding_overrides in groups.items():
                name = f"learner bound {padding}"
                rate = learner_bound_sps(padding_overrides + args.overrides, 40, args.windows)
                runs.setdefault(name, []).append(rate)
                print(f"{name}: {rate:.0f} SPS", flush=True)
                for loop, loop_overrides in loops.items():
                    if padding == "valid" and loop.startswith("none"):
                        continue  # the memory's cost is measured with the default network
                    entries = args.memory_entries if loop.startswith("kdtree") else 0
                    name = f"ours {loop} {padding}"
                    rate = loop_sps(loop_overrides + padding_overrides + args.overrides, args.window_steps,
                                    args.windows, entries, Path(folder))
                    runs.setdefault(name, []).append(rate)
                    print(f"{name}: {rate:.0f} SPS", flush=True)
            if not args.skip_sb3:
                for num_envs in (1, args.num_envs):
                    rate = sb3_sps(args.window_steps, args.windows, num_envs)
                    if rate is not None:
                        runs.setdefault(f"sb3 {num_envs} envs", []).append(rate)
                        print(f"Stable-Baselines3 DQN, {num_envs} envs: {rate:.0f} SPS", flush=True)
    figures.update({name: statistics.median(rates) for name, rates in runs.items()})

    def ratio(numerator: str, denominator: str, target: str = "") -> None:
        if numerator in figures and denominator in figures:
            print(f"  {numerator:>22} / {denominator:<22} {figures[numerator] / figures[denominator]:.3f}  {target}")

    print("\nmedians (SPS): " + ", ".join(f"{name} {rate:.0f}" for name, rate in figures.items()))
    print("ratios (same run, same machine):")
    ratio("ours kdtree same", "learner bound same", "(target >= 0.85)")
    ratio("ours kdtree, vector same", "learner bound same", "(target >= 0.85)")
    ratio("ours kdtree same", "ours none same", "(target >= 0.95)")
    ratio("ours kdtree, vector same", "ours none, vector same", "(target >= 0.95)")
    ratio("ours kdtree valid", "sb3 1 envs", "(target >= 1.4)")
    ratio("ours kdtree, vector valid", f"sb3 {args.num_envs} envs", "(target >= 1.4)")
    ratio("ours kdtree, vector valid", "sb3 1 envs")
    ratio("ours kdtree valid", "learner bound valid")
    ratio("ours kdtree, vector valid", "learner bound valid")


if __name__ == "__main__":
    main()
