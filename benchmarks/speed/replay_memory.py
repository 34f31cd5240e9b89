"""Bytes per transition of the Atari replay buffer, filled from real Pong frames.

    python benchmarks/speed/replay_memory.py [--transitions 50000]

The buffer stores each 84x84 frame once and rebuilds 4-frame stacks at sample time, so a
transition costs about one frame (7,056 bytes) plus its action, reward, flags, episode
position and 16-byte memory key. Target: <= 7,300 bytes per transition. The script also
extrapolates to the 1M buffer of the original settings and compares with storing stacks.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import compose_config

from emdqn.envs.make import make_env
from emdqn.agent.replay import ReplayBuffer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transitions", type=int, default=50_000)
    args = parser.parse_args()
    cfg = compose_config(["env=pong"])
    env = make_env(cfg.env, seed=0)
    buffer = ReplayBuffer(args.transitions, env.observation_space.shape, frame_stack=4, key_dim=4, seed=0)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    start = time.perf_counter()
    while buffer.filled < buffer.capacity:
        action = int(rng.integers(env.action_space.n))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated, truncated, key=np.zeros(4, np.float32))
        obs = next_obs if not (terminated or truncated) else env.reset()[0]
    fill_seconds = time.perf_counter() - start
    batch = buffer.sample(32)
    assert batch.obs.shape == (32, 4, 84, 84)
    per_transition = buffer.nbytes() / buffer.capacity
    stacked = 2 * 4 * 84 * 84  # obs and next_obs stored as stacks
    print(f"filled {buffer.capacity:,} slots from Pong in {fill_seconds:.0f}s; sampleable transitions {len(buffer):,}")
    print(f"bytes per transition: {per_transition:,.0f}  (target <= 7,300; one frame is {84 * 84:,})")
    print(f"1M-transition buffer: {per_transition * 1e6 / 2**30:.2f} GiB here, "
          f"{4 * 84 * 84 * 1e6 / 2**30:.1f} GiB storing one stack, {stacked * 1e6 / 2**30:.1f} GiB storing obs+next_obs")


if __name__ == "__main__":
    main()
