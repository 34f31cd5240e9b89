"""The real CLI end to end: python train.py ... in a subprocess, then the run folder."""

import csv
import math

import torch

from emdqn.run.checkpoint import load_checkpoint

from tests.conftest import optimizer_steps, run_train

PONG_TINY = ["env=pong", "agent.total_steps=400", "agent.learning_starts=200", "buffer.capacity=1000",
             "memory.capacity=1000", "trainer.log_every_steps=100", "eval.episodes=0"]
CARTPOLE_TINY = ["env=cartpole", "model=mlp", "agent.total_steps=600", "agent.learning_starts=200",
                 "buffer.capacity=1000", "trainer.log_every_steps=100", "eval.episodes=2"]


def read_rows(run_dir):
    with (run_dir / "metrics.csv").open() as file:
        return list(csv.DictReader(file))


def test_pong_run_writes_config_metrics_checkpoint_and_wandb(tmp_path):
    run_dir = tmp_path / "pong"
    result = run_train(PONG_TINY + [f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert "step 400/400" in result.stdout + result.stderr  # the progress line
    assert (run_dir / "config.yaml").exists() and (run_dir / ".hydra" / "config.yaml").exists()
    rows = read_rows(run_dir)
    columns = set(rows[0])
    for name in ("global_step", "charts/SPS", "charts/epsilon", "charts/frames", "losses/td_loss",
                 "losses/memory_loss", "losses/loss", "losses/q_values", "memory/hit_rate", "memory/h_mean",
                 "memory/size", "memory/rebuild_seconds"):
        assert name in columns, name
    logged = [row for row in rows if row["losses/td_loss"]]
    assert [int(row["step"]) for row in logged] == [200, 300, 400]
    loop_rows = [row for row in rows if row["charts/frames"]]  # the collector's own rows
    assert {200, 300, 400} <= {int(row["step"]) for row in loop_rows}
    assert all(float(row["charts/frames"]) == 4 * int(row["step"]) for row in loop_rows)
    state = load_checkpoint(run_dir)
    assert state["env_steps"] == 400
    assert [path.name for path in (run_dir / "checkpoints" / "replay").glob("env0_frames.*")] == \
        ["env0_frames.c0000.s400.npy"]
    assert list((run_dir / "wandb").glob("offline-run-*")), "an offline W&B run is written"


def test_cartpole_trains_and_evaluates_with_the_same_code_path(tmp_path):
    run_dir = tmp_path / "cartpole"
    result = run_train(CARTPOLE_TINY + [f"hydra.run.dir={run_dir}", "logger=csv"], cwd=tmp_path)
    rows = read_rows(run_dir)
    returns = [float(r["charts/episodic_return"]) for r in rows if r["charts/episodic_return"]]
    assert len(returns) >= 10 and all(r >= 8 for r in returns)
    assert any(r["eval/episodic_return"] for r in rows)
    assert "Evaluation over 2 episodes" in result.stdout + result.stderr


def test_pong_trains_with_bf16_mixed_precision_and_keeps_fp32_weights(tmp_path):
    run_dir = tmp_path / "bf16"
    run_train(PONG_TINY + [f"hydra.run.dir={run_dir}", "trainer.precision=bf16-mixed", "logger=csv"], cwd=tmp_path)
    losses = [float(row["losses/loss"]) for row in read_rows(run_dir) if row["losses/loss"]]
    assert len(losses) == 3 and all(math.isfinite(value) for value in losses)
    state = load_checkpoint(run_dir)
    weights = state["learner"]["q_network"]
    assert all(tensor.dtype == torch.float32 for tensor in weights.values())
    assert optimizer_steps(state) == len(range(200, 401, 4))


def test_plain_dqn_with_memory_none(tmp_path):
    run_dir = tmp_path / "dqn"
    run_train(CARTPOLE_TINY + [f"hydra.run.dir={run_dir}", "memory=none", "logger=csv"], cwd=tmp_path)
    rows = read_rows(run_dir)
    assert "memory/hit_rate" not in rows[0]
    memory_losses = [float(r["losses/memory_loss"]) for r in rows if r["losses/memory_loss"]]
    assert memory_losses and all(value == 0.0 for value in memory_losses)


def test_an_existing_run_folder_is_never_overwritten(tmp_path):
    run_dir = tmp_path / "taken"
    run_train(CARTPOLE_TINY + [f"hydra.run.dir={run_dir}", "logger=csv", "eval.episodes=0"], cwd=tmp_path)
    before = (run_dir / "metrics.csv").read_bytes()
    result = run_train(CARTPOLE_TINY + [f"hydra.run.dir={run_dir}", "logger=csv"], cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "already holds a run" in result.stderr
    assert (run_dir / "metrics.csv").read_bytes() == before


def test_bad_config_fails_fast_with_the_key(tmp_path):
    result = run_train(["memory.lambda=-1", f"hydra.run.dir={tmp_path / 'bad'}"], cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "memory.lambda=-1.0 is not allowed" in result.stderr
    assert not (tmp_path / "bad" / "metrics.csv").exists()


def test_keep_best_and_the_lr_schedule(tmp_path):
    """eval.keep_best evaluates and saves the best periodic network; agent.lr_schedule sets the lr by env step."""
    run_dir = tmp_path / "best"
    settings = ["eval.every_steps=200", "eval.keep_best=true", "agent.lr=1e-3",
                "agent.lr_schedule=[[0,1.0],[1200,0.0]]"]
    result = run_train(CARTPOLE_TINY + [f"hydra.run.dir={run_dir}", "logger=csv", *settings], cwd=tmp_path)
    rows = read_rows(run_dir)
    evaluations = [row for row in rows if row["eval/episodic_return"]]
    periodic = {int(row["step"]): float(row["eval/episodic_return"]) for row in evaluations[:-1]}  # last: the final
    assert sorted(periodic) == [200, 400, 600]
    best_step = max(step for step, value in periodic.items() if value == max(periodic.values()))
    assert f"Evaluating the best network: env step {best_step:,}" in result.stdout + result.stderr
    assert [int(float(row["eval/best_step"])) for row in rows if row.get("eval/best_step")] == [best_step]
    best = torch.load(run_dir / "checkpoints" / "weights_best.pt", weights_only=True)
    state = load_checkpoint(run_dir)
    assert all(torch.equal(best[name], tensor) for name, tensor in state["learner"]["best"]["network"].items())
    # The last gradient step is at env step 600: half way down the lr factor's line.
    assert state["learner"]["optimizer"]["param_groups"][0]["lr"] == 1e-3 * 0.5
