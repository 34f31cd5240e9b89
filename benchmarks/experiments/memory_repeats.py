"""How often the memory can do what only it can: exact repeats of a state (and state-action).

    python benchmarks/experiments/memory_repeats.py                               # Pong, both frame options, random policy
    python benchmarks/experiments/memory_repeats.py --env breakout --steps 50000
    python benchmarks/experiments/memory_repeats.py --run outputs/<run> --epsilon 0.05   # that run's trained policy

H(s, a) is the best return over *repeated* visits of (s, a); on a stream without repeats
EMDQN is DQN plus a Monte-Carlo regression. For each ``env.frame`` option this plays N env
steps and counts the steps whose memory key (``EpisodicMemory.project`` of the observation
the agent acts from) was seen before, and those whose (key, action) was. Atari only for the
frame options; MinAtar games (``--env minatar --game breakout``) have one frame format.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from emdqn import compose_config
from emdqn.analysis.records import REPO_ROOT, metadata_block, write_record

from emdqn.envs.make import make_env
from emdqn.agent.memory import EpisodicMemory


def repeat_shares(env_cfg, steps: int, seed: int, policy=None, epsilon: float = 1.0) -> dict[str, float]:
    env = make_env(env_cfg, seed=seed)
    memory = EpisodicMemory(int(env.action_space.n), env.observation_space.shape)
    rng = np.random.default_rng(seed)
    seen_states, seen_pairs = set(), set()
    state_repeats = pair_repeats = 0
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        if policy is None or rng.random() < epsilon:
            action = int(rng.integers(env.action_space.n))
        else:
            with torch.inference_mode():
                action = int(policy(torch.as_tensor(obs).unsqueeze(0)).argmax(dim=1).item())
        key = memory.project(np.asarray(obs)[None])[0].tobytes()
        state_repeats += key in seen_states
        pair_repeats += (key, action) in seen_pairs
        seen_states.add(key)
        seen_pairs.add((key, action))
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return {"state_repeats": state_repeats / steps, "state_action_repeats": pair_repeats / steps}


def load_policy(run_dir: Path, env_cfg):
    """The run's trained network (its weights-only file), for the env it will play."""
    from omegaconf import OmegaConf

    from emdqn.evaluate import env_spaces, load_weights, trained_network

    weights, _ = load_weights(run_dir)
    obs_shape, num_actions = env_spaces(env_cfg)
    return trained_network(run_dir, OmegaConf.load(run_dir / "config.yaml"), weights, obs_shape, num_actions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="pong", help="an env config: pong, breakout, atari, minatar")
    parser.add_argument("--game", help="env.game for --env minatar")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", type=Path, help="play this run's policy (its weights-only file) instead of random")
    parser.add_argument("--epsilon", type=float, default=0.05, help="with --run: share of random actions")
    parser.add_argument("--record", type=Path, help="write the figures as a result record (JSON)")
    args = parser.parse_args()
    overrides = [f"env={args.env}"] + ([f"env.game={args.game}"] if args.game else [])
    frames = ["original", "resize"] if args.env != "minatar" else [None]
    results = {}
    for frame in frames:
        env_cfg = compose_config(overrides + ([f"env.frame={frame}"] if frame else [])).env
        policy = load_policy(args.run, env_cfg) if args.run else None
        shares = repeat_shares(env_cfg, args.steps, args.seed, policy, args.epsilon if policy else 1.0)
        label = frame or "minatar"
        results[label] = shares
        print(f"{env_cfg.id}, frame {label}, {'run ' + str(args.run) if policy else 'random policy'}, "
              f"{args.steps:,} env steps: state repeats {100 * shares['state_repeats']:.1f} %, "
              f"state-action repeats {100 * shares['state_action_repeats']:.1f} %", flush=True)
    if args.record:
        write_record(args.record if args.record.is_absolute() else REPO_ROOT / args.record,
                     {**metadata_block(), "env": args.env, "game": args.game, "steps": args.steps, "seed": args.seed,
                      "policy": str(args.run) if args.run else "random", "results": results})


if __name__ == "__main__":
    main()
