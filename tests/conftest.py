import os
import subprocess
import sys
from pathlib import Path

import pytest
from emdqn import compose_config  # noqa: F401  (the tests compose as a user's script does)

ROOT = Path(__file__).resolve().parents[1]

# Tests never touch the network: W&B always runs offline here.
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")


def run_train(args, cwd, timeout=600, check=True, extra_env=None):
    """Run the real CLI (python train.py ...) in ``cwd``; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="offline", HYDRA_FULL_ERROR="1")
    env.update(extra_env or {})
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-5000:]}")
    return result


def small_parts():
    """A collector and a learner of a tiny CartPole run, built as train() builds them."""
    from emdqn.agent.collector import Collector
    from emdqn.agent.learner import Learner

    cfg = compose_config(["env=cartpole", "model=mlp", "buffer.capacity=100", "agent.learning_starts=32"])
    collector = Collector.from_config(cfg)
    learner = Learner.from_config(cfg, collector.envs.observation_shape, collector.envs.num_actions)
    collector.set_policy(learner.q_network)
    return collector, learner


def optimizer_steps(state):
    """Adam's step count in a checkpoint: the gradient steps the run made."""
    return int(next(iter(state["learner"]["optimizer"]["state"].values()))["step"])


@pytest.fixture
def compose_cfg():
    return compose_config
