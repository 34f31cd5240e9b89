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
