"""Same seed, same config, same CPU: the same metrics, with and without the memory."""

import csv

import pytest

from tests.conftest import run_train

# Wall-clock figures are the only metrics allowed to differ between two identical runs.
TIMING = ("charts/SPS", "memory/rebuild_seconds")


def metrics(run_dir):
    with (run_dir / "metrics.csv").open() as file:
        return [{key: value for key, value in row.items() if key not in TIMING} for row in csv.DictReader(file)]


@pytest.mark.parametrize("env_args", [
    ["experiment=cartpole", "agent.total_steps=800", "agent.learning_starts=200", "eval.episodes=2"],
    ["env=pong", "agent.total_steps=300", "agent.learning_starts=100", "buffer.capacity=2000", "eval.episodes=0",
     "memory.capacity=2000"],
], ids=["cartpole", "pong"])
@pytest.mark.parametrize("memory", ["kdtree", "none"])
def test_two_runs_with_the_same_seed_log_identical_metrics(tmp_path, env_args, memory):
    runs = []
    for name in ("first", "second"):
        run_train([*env_args, f"memory={memory}", "seed=3", "logger=csv",
                   "trainer.log_every_steps=100", f"hydra.run.dir={tmp_path / name}"], cwd=tmp_path)
        runs.append(metrics(tmp_path / name))
    assert len(runs[0]) >= 3 and runs[0] == runs[1]


def test_the_direct_update_equals_lightnings_and_a_hook_override_brings_lightnings_back(tmp_path):
    """Without callbacks on Lightning's update hooks, the gradient step calls torch directly;
    overriding one (here on_after_backward) sends every step through manual_backward and
    Lightning's optimizer wrapper. Both paths give the same weights and optimizer state."""
    import torch

    from emdqn.run.checkpoint import load_checkpoint
    from emdqn.run.train import train
    from tests.conftest import compose_config, optimizer_steps

    cfg = compose_config(["experiment=cartpole", "agent.total_steps=600", "agent.learning_starts=200",
                          "eval.episodes=0", "logger=csv", "seed=5", "trainer.threads=1"])
    hook_calls = []

    def count_hook_calls(module, collector):
        module.on_after_backward = lambda: hook_calls.append(collector.env_steps)

    train(cfg.copy(), run_dir=tmp_path / "direct")
    train(cfg.copy(), run_dir=tmp_path / "lightning", before_fit=count_hook_calls)
    states = [load_checkpoint(tmp_path / name) for name in ("direct", "lightning")]
    assert len(hook_calls) == optimizer_steps(states[1]) == optimizer_steps(states[0]) > 0
    direct, lightning = (state["learner"] for state in states)
    for name, tensor in direct["q_network"].items():
        assert torch.equal(tensor, lightning["q_network"][name]), name
    for index, state in direct["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, lightning["optimizer"]["state"][index][key]), (index, key)
