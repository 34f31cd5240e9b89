"""The framework's own per-step cost, where a small network exposes it: MinAtar Breakout.

    python benchmarks/speed/minatar_throughput.py                                  # about 5 minutes on 2 cores
    python benchmarks/speed/minatar_throughput.py --num-envs 1 8 --before <clone of an earlier commit> \
        --repeats 3 --record benchmarks/results/minatar_throughput.json            # about 25 minutes
    python benchmarks/speed/minatar_throughput.py --loops none kdtree              # ours only

Loops play and learn with the same settings (``experiment=minatar``: MinAtar's network,
batch 32, one Adam step per 4 env steps whatever the number of envs, Huber loss, target
sync every 4,000 env steps, a 100k replay), epsilon fixed at 0.01 so acting costs a forward
pass on nearly every step, one torch thread each, for each count of ``--num-envs``:

1. a bare loop: the envs, the network (one forward pass for all envs), uniform replay
   sampling and the update written as a plain PyTorch loop (CleanRL's shape: no Lightning,
   no episodic memory, no metrics);
2. ours, ``python train.py experiment=minatar memory=none env.num_envs=N``;
3. ours with the episodic memory (``memory=kdtree``, lambda 0.1);

and, with ``--before``, that checkout's ``memory=none`` loop with one env (its own copy of
this script, in a process of its own), the figure a change is measured against; with
``--update-bound``, the gradient step alone on a fixed batch (updates/s x 4), which bounds
every loop that takes one update per 4 env steps.

Each figure is the median of windows of ``--window-steps`` env steps after learning starts
(the first window warms up); the loops alternate ``--repeats`` times so a slow spell of the
shared machine hits all of them.
"""

from __future__ import annotations

import argparse
import copy
import csv
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from _common import FixedBatchUpdate, compose_config

from emdqn.analysis.script_support import quiet_logs
from emdqn.analysis.records import REPO_ROOT, metadata_block, write_record

from emdqn.envs.make import register_minatar
from emdqn.agent.networks import MinAtarCNN
from emdqn.run.train import train

GAME = "breakout"
SETTINGS = ["experiment=minatar", f"env.game={GAME}", "agent.exploration.schedule=[[0,0.01]]", "eval.episodes=0",
            "logger=csv", "checkpoint.every_steps=0", "checkpoint.save_replay=false", "trainer.threads=1"]


def bare_loop_sps(learning_starts: int, window_steps: int, windows: int, num_envs: int = 1, seed: int = 0) -> float:
    """Plain PyTorch DQN on the same envs, network and settings; the median window SPS."""
    torch.set_num_threads(1)
    config = compose_config(SETTINGS)
    cfg = config.agent
    register_minatar()
    with warnings.catch_warnings():  # gymnasium calls -v0 out of date; it is the published action set
        warnings.filterwarnings("ignore", message=".*is out of date.*")
        # The same gymnasium wrappers as our env (a step cap, no env checker).
        envs = [gym.make(config.env.id, max_episode_steps=config.env.max_episode_steps, disable_env_checker=True)
                for _ in range(num_envs)]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    def channels_first(frame: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.uint8)

    obs = np.stack([channels_first(env.reset(seed=seed + index)[0]) for index, env in enumerate(envs)])
    num_actions = int(envs[0].action_space.n)
    q_network = MinAtarCNN(obs.shape[1:], num_actions)
    target_network = copy.deepcopy(q_network).requires_grad_(False)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=True)
    capacity = int(config.buffer.capacity)
    observations = np.zeros((capacity, *obs.shape[1:]), dtype=np.uint8)
    next_observations = np.zeros_like(observations)
    actions = np.zeros(capacity, dtype=np.int64)
    rewards = np.zeros(capacity, dtype=np.float32)
    terminals = np.zeros(capacity, dtype=np.float32)
    total = learning_starts + window_steps * (windows + 1)
    rates, window_start, step = [], None, 0
    while step < total:
        with torch.no_grad():
            greedy = q_network(torch.from_numpy(obs)).argmax(dim=1).numpy()
        chosen = np.where(rng.random(num_envs) < 0.01, rng.integers(num_actions, size=num_envs), greedy)
        next_obs = np.empty_like(obs)
        for index, env in enumerate(envs):
            frame, reward, terminated, truncated, _ = env.step(int(chosen[index]))
            next_obs[index] = channels_first(frame)
            slot = (step + index) % capacity
            observations[slot], next_observations[slot] = obs[index], next_obs[index]
            actions[slot], rewards[slot], terminals[slot] = chosen[index], reward, float(terminated)
            if terminated or truncated:
                next_obs[index] = channels_first(env.reset()[0])
        obs = next_obs
        before, step = step, step + num_envs
        # One update per train_freq env steps passed, as in our loop.
        for _ in range(step // cfg.train_freq - before // cfg.train_freq if step > learning_starts else 0):
            rows = rng.integers(0, min(step, capacity), size=cfg.batch_size)
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
        if step // cfg.target_update != before // cfg.target_update:
            target_network.load_state_dict(q_network.state_dict())
        if step >= learning_starts and (step - learning_starts) // window_steps != (before - learning_starts) // window_steps:
            now = time.perf_counter()
            if window_start is not None and before - learning_starts >= window_steps:
                rates.append(window_steps / (now - window_start))  # the first window warms up
            window_start = now
    for env in envs:
        env.close()
    return statistics.median(rates)


def our_loop_sps(memory: str, learning_starts: int, window_steps: int, windows: int, folder: Path,
                 num_envs: int = 1) -> float:
    total = learning_starts + window_steps * (windows + 1)
    cfg = compose_config(SETTINGS + [f"memory={memory}", f"env.num_envs={num_envs}",
                                     f"agent.learning_starts={learning_starts}", f"agent.total_steps={total}",
                                     f"trainer.log_every_steps={window_steps}"])
    run_dir = folder / f"run{len(list(folder.iterdir()))}"
    train(cfg, run_dir=run_dir)
    with (run_dir / "metrics.csv").open(newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("charts/SPS")]
    return statistics.median(float(row["charts/SPS"]) for row in rows
                             if int(row["step"]) > learning_starts + window_steps)


SCRIPTS = ("benchmarks/speed/minatar_throughput.py", "benchmarks/minatar_throughput.py")  # now, before the split
FIGURE = re.compile(r"^\[\d+/\d+\] (.+): (\d+) SPS$", re.MULTILINE)


def checkout_figures(checkout: Path, arguments: list[str]) -> dict[str, float]:
    """Another checkout's own copy of this script run with ``arguments``, in a process of its
    own: the SPS it prints per loop (its last repeat). One-env loops are named as before env
    counts were timed (``ours, memory=none``), so that checkouts of either age compare."""
    script = next(path for path in SCRIPTS if (checkout / path).is_file())
    output = subprocess.run([sys.executable, script, *arguments], cwd=checkout, capture_output=True, text=True,
                            check=True, env={"PATH": "/usr/bin:/bin", "WANDB_MODE": "offline", "HOME": str(Path.home()),
                                             "PYTHONPATH": str(checkout)}).stdout  # that checkout's emdqn
    return {name.removesuffix(", 1 env"): float(value) for name, value in FIGURE.findall(output)}


def checkout_sps(checkout: Path, learning_starts: int, window_steps: int, windows: int) -> float:
    """Another checkout's ``memory=none`` loop with one env."""
    return checkout_figures(checkout, ["--loops", "none", "--repeats", "1", "--learning-starts", str(learning_starts),
                                       "--window-steps", str(window_steps), "--windows", str(windows)]
                            )["ours, memory=none"]


def checkout_commit(checkout: Path, short: bool = False) -> str:
    return subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"], cwd=checkout,
                          capture_output=True, text=True).stdout.strip()


def update_bound_sps(seconds: float = 10.0) -> float:
    """The gradient step alone, as the run takes it (the run's Learner on a fixed MinAtar
    batch): updates per second x train_freq, the most env steps per second any loop with one
    update per train_freq env steps can reach."""
    torch.set_num_threads(1)
    config = compose_config(SETTINGS)
    register_minatar()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is out of date.*")
        env = gym.make(config.env.id, disable_env_checker=True)
    height, width, channels = env.observation_space.shape
    update = FixedBatchUpdate(config, obs_shape=(channels, height, width), num_actions=int(env.action_space.n))
    env.close()
    for _ in range(200):  # warm-up
        update()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        update()
        count += 1
    return count / (time.perf_counter() - start) * int(config.agent.train_freq)


LOOP_NAMES = {"bare": "bare PyTorch loop", "none": "ours, memory=none", "kdtree": "ours, memory=kdtree"}
UPDATE_BOUND = "gradient step alone (updates/s x train_freq)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learning-starts", type=int, default=5000)
    parser.add_argument("--window-steps", type=int, default=5000)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of every loop")
    parser.add_argument("--loops", nargs="+", choices=tuple(LOOP_NAMES), default=list(LOOP_NAMES),
                        help="which loops to run: the bare PyTorch loop, ours with memory=none, ours with the memory")
    parser.add_argument("--num-envs", nargs="+", type=int, default=[1], help="env counts to time each loop with")
    parser.add_argument("--before", type=Path, help="a checkout whose memory=none loop (one env) is timed alongside")
    parser.add_argument("--update-bound", action="store_true",
                        help="also time the gradient step alone (the bound of every loop), alternating with the loops")
    parser.add_argument("--record", type=Path, help="write the figures as a result record (JSON)")
    args = parser.parse_args()
    if args.before is not None and not (args.before / "train.py").is_file():
        parser.error(f"--before {args.before}: not a checkout of this project (no train.py in it)")
    if any(count < 1 for count in args.num_envs):
        parser.error(f"--num-envs {args.num_envs}: every count must be >= 1")
    quiet_logs()
    timing = (args.learning_starts, args.window_steps, args.windows)
    loops = {}
    if args.update_bound:
        loops[UPDATE_BOUND] = lambda folder: update_bound_sps()
    if args.before is not None:
        loops["before: ours, memory=none, 1 env"] = lambda folder: checkout_sps(args.before, *timing)
    for count in args.num_envs:
        suffix = f", {count} env{'s' if count > 1 else ''}"
        for name in args.loops:
            if name == "bare":
                loops[LOOP_NAMES[name] + suffix] = lambda folder, count=count: bare_loop_sps(*timing, num_envs=count)
            else:
                loops[LOOP_NAMES[name] + suffix] = lambda folder, name=name, count=count: our_loop_sps(
                    name, *timing, folder, num_envs=count)
    runs: dict[str, list[float]] = {name: [] for name in loops}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for name, loop in loops.items():
                runs[name].append(loop(Path(folder)))
                print(f"[{repeat + 1}/{args.repeats}] {name}: {runs[name][-1]:.0f} SPS", flush=True)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    ratios = loop_ratios(medians, args.num_envs)
    print("\nmedians (SPS): " + ", ".join(f"{name} {value:.0f}" for name, value in medians.items()))
    for name, value in ratios.items():
        print(f"{name}: {value:.3f}")
    if args.record:
        before = {"before": {"commit": checkout_commit(args.before)}} if args.before else {}
        write_record(args.record if args.record.is_absolute() else REPO_ROOT / args.record,
                     {**metadata_block(), **before, "game": GAME, "window_steps": args.window_steps,
                      "windows": args.windows, "learning_starts": args.learning_starts, "num_envs": args.num_envs,
                      "sps": runs, "medians": medians, "ratios": ratios})


def loop_ratios(medians: dict[str, float], env_counts: list[int]) -> dict[str, float]:
    """The figures the targets are stated in, for the loops that were run."""
    ratios = {}
    before = medians.get("before: ours, memory=none, 1 env")
    for count in env_counts:
        suffix = f", {count} env{'s' if count > 1 else ''}"
        none, kdtree, bare = (medians.get(LOOP_NAMES[name] + suffix) for name in ("none", "kdtree", "bare"))
        if none and bare:
            ratios[f"ours none / bare{suffix}"] = none / bare
        if none and kdtree:
            ratios[f"ours kdtree / ours none{suffix}"] = kdtree / none
        if none and before:
            ratios[f"ours none{suffix} / before (1 env)"] = none / before
    return ratios


if __name__ == "__main__":
    main()
