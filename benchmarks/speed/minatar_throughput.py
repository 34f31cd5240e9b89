"""The framework's own per-step cost, where a small network exposes it: MinAtar Breakout.

    python benchmarks/speed/minatar_throughput.py                      # about 5 minutes on 2 cores
    python benchmarks/speed/minatar_throughput.py --repeats 3 --record benchmarks/results/minatar_throughput.json
    python benchmarks/speed/minatar_throughput.py --loops none kdtree   # ours only (e.g. two commits alternating)

Three loops play and learn with the same settings (``experiment=minatar``: MinAtar's
network, batch 32, one Adam step per 4 env steps, Huber loss, target sync every 4,000 env
steps, a 100k replay), epsilon fixed at 0.01 so acting costs a forward pass on nearly
every step, one torch thread each:

1. a bare loop: the env, the network, uniform replay sampling and the update written as a
   plain PyTorch loop (CleanRL's shape: no Lightning, no episodic memory, no metrics);
2. ours, ``python train.py experiment=minatar memory=none``;
3. ours with the episodic memory (``memory=kdtree``, lambda 0.1).

Each figure is the median of windows of ``--window-steps`` env steps after learning starts
(the first window warms up); the three loops alternate ``--repeats`` times so a slow spell
of the shared machine hits all of them. Targets: ours ``memory=none`` >= 0.8 x the bare
loop; the memory <= 10 % over ``memory=none``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from _common import compose_config

from emdqn.analysis.script_support import quiet_logs
from emdqn.analysis.records import REPO_ROOT, metadata_block, write_record

from emdqn.envs.make import register_minatar
from emdqn.agent.networks import MinAtarCNN
from emdqn.run.train import train

GAME = "breakout"
SETTINGS = ["experiment=minatar", f"env.game={GAME}", "agent.exploration.schedule=[[0,0.01]]", "eval.episodes=0",
            "logger=csv", "checkpoint.every_steps=0", "checkpoint.save_replay=false", "trainer.threads=1"]


def bare_loop_sps(learning_starts: int, window_steps: int, windows: int, seed: int = 0) -> float:
    """Plain PyTorch DQN on the same env, network and settings; the median window SPS."""
    torch.set_num_threads(1)
    config = compose_config(SETTINGS)
    cfg = config.agent
    register_minatar()
    with warnings.catch_warnings():  # gymnasium calls -v0 out of date; it is the published action set
        warnings.filterwarnings("ignore", message=".*is out of date.*")
        # The same gymnasium wrappers as our env (a step cap, no env checker).
        env = gym.make(config.env.id, max_episode_steps=config.env.max_episode_steps, disable_env_checker=True)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    def channels_first(frame: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.uint8)

    obs = channels_first(env.reset(seed=seed)[0])
    num_actions = int(env.action_space.n)
    q_network = MinAtarCNN(obs.shape, num_actions)
    target_network = copy.deepcopy(q_network).requires_grad_(False)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    capacity = int(config.buffer.capacity)
    observations = np.zeros((capacity, *obs.shape), dtype=np.uint8)
    next_observations = np.zeros_like(observations)
    actions = np.zeros(capacity, dtype=np.int64)
    rewards = np.zeros(capacity, dtype=np.float32)
    terminals = np.zeros(capacity, dtype=np.float32)
    total = learning_starts + window_steps * (windows + 1)
    rates, window_start = [], None
    for step in range(total):
        if rng.random() < 0.01:
            action = int(rng.integers(num_actions))
        else:
            with torch.no_grad():
                action = int(q_network(torch.from_numpy(obs).unsqueeze(0)).argmax(dim=1).item())
        frame, reward, terminated, truncated, _ = env.step(action)
        next_obs = channels_first(frame)
        slot = step % capacity
        observations[slot], next_observations[slot] = obs, next_obs
        actions[slot], rewards[slot], terminals[slot] = action, reward, float(terminated)
        obs = channels_first(env.reset()[0]) if terminated or truncated else next_obs
        if step >= learning_starts and step % cfg.train_freq == 0:
            rows = rng.integers(0, min(step + 1, capacity), size=cfg.batch_size)
            with torch.no_grad():
                next_values = target_network(torch.from_numpy(next_observations[rows])).max(dim=1).values
                targets = torch.from_numpy(rewards[rows]) + cfg.gamma * next_values * (
                    1.0 - torch.from_numpy(terminals[rows]))
            taken = q_network(torch.from_numpy(observations[rows])).gather(
                1, torch.from_numpy(actions[rows]).unsqueeze(1)).squeeze(1)
            loss = F.smooth_l1_loss(taken, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if step % cfg.target_update == 0:
            target_network.load_state_dict(q_network.state_dict())
        if step >= learning_starts and (step - learning_starts) % window_steps == 0:
            now = time.perf_counter()
            if window_start is not None and step - learning_starts > window_steps:
                rates.append(window_steps / (now - window_start))  # the first window warms up
            window_start = now
    env.close()
    return statistics.median(rates)


def our_loop_sps(memory: str, learning_starts: int, window_steps: int, windows: int, folder: Path) -> float:
    total = learning_starts + window_steps * (windows + 1)
    cfg = compose_config(SETTINGS + [f"memory={memory}", f"agent.learning_starts={learning_starts}",
                                     f"agent.total_steps={total}", f"trainer.log_every_steps={window_steps}"])
    run_dir = folder / f"run{len(list(folder.iterdir()))}"
    train(cfg, run_dir=run_dir)
    with (run_dir / "metrics.csv").open(newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("charts/SPS")]
    return statistics.median(float(row["charts/SPS"]) for row in rows
                             if int(row["step"]) > learning_starts + window_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learning-starts", type=int, default=5000)
    parser.add_argument("--window-steps", type=int, default=5000)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of the three loops")
    parser.add_argument("--loops", nargs="+", choices=("bare", "none", "kdtree"), default=["bare", "none", "kdtree"],
                        help="which loops to run: the bare PyTorch loop, ours with memory=none, ours with the memory")
    parser.add_argument("--record", type=Path, help="write the figures as a result record (JSON)")
    args = parser.parse_args()
    quiet_logs()
    every_loop = {
        "bare": ("bare PyTorch loop", lambda folder: bare_loop_sps(args.learning_starts, args.window_steps,
                                                                   args.windows)),
        "none": ("ours, memory=none", lambda folder: our_loop_sps("none", args.learning_starts, args.window_steps,
                                                                  args.windows, folder)),
        "kdtree": ("ours, memory=kdtree", lambda folder: our_loop_sps("kdtree", args.learning_starts,
                                                                      args.window_steps, args.windows, folder))}
    loops = dict(every_loop[name] for name in args.loops)
    runs: dict[str, list[float]] = {name: [] for name in loops}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for name, loop in loops.items():
                runs[name].append(loop(Path(folder)))
                print(f"[{repeat + 1}/{args.repeats}] {name}: {runs[name][-1]:.0f} SPS", flush=True)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    ratios = {}
    if {"bare", "none"} <= set(args.loops):
        ratios["ours none / bare"] = medians["ours, memory=none"] / medians["bare PyTorch loop"]
    if {"none", "kdtree"} <= set(args.loops):
        ratios["ours kdtree / ours none"] = medians["ours, memory=kdtree"] / medians["ours, memory=none"]
    print("\nmedians (SPS): " + ", ".join(f"{name} {value:.0f}" for name, value in medians.items()))
    targets = {"ours none / bare": "(target >= 0.8)", "ours kdtree / ours none": "(target >= 0.9)"}
    for name, value in ratios.items():
        print(f"{name}: {value:.3f} {targets[name]}")
    if args.record:
        write_record(args.record if args.record.is_absolute() else REPO_ROOT / args.record,
                     {**metadata_block(), "game": GAME, "window_steps": args.window_steps, "windows": args.windows,
                      "learning_starts": args.learning_starts, "sps": runs, "medians": medians, "ratios": ratios})


if __name__ == "__main__":
    main()
