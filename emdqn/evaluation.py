"""Greedy evaluation on full games (real, unclipped scores)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from emdqn.envs import make_env, real_episode_stats


@torch.inference_mode()
def evaluate(network: torch.nn.Module, env_cfg: Any, episodes: int, epsilon: float = 0.0,
             seed: int = 0) -> list[float]:
    """Returns of ``episodes`` full games played epsilon-greedily (epsilon 0: greedy).

    A lost life ends a *training* episode only; evaluation plays on until the game is over.
    Every env has a time limit (Atari: ``env.max_episode_frames``), so a stalled agent ends.
    """
    env = make_env(env_cfg, seed=seed)
    rng = np.random.default_rng(seed)
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    returns: list[float] = []
    try:
        obs, _ = env.reset(seed=seed)
        while len(returns) < episodes:
            if rng.random() < epsilon:
                action = int(rng.integers(env.action_space.n))
            else:
                action = int(network(torch.as_tensor(obs, device=device).unsqueeze(0)).argmax(dim=1).item())
            obs, _, terminated, truncated, info = env.step(action)
            finished = real_episode_stats(info)
            if finished is not None:
                returns.append(finished[0])
            if terminated or truncated:
                obs, _ = env.reset()
    finally:
        env.close()
        network.train(was_training)
    return returns
