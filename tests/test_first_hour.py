"""What a new user meets first: one-line errors, no stray folders, quiet runs, small checkpoints."""

import re
import time

import pytest

from emdqn.run.checkpoint import load_checkpoint, saved_replay
from emdqn.config.checks import budget_warnings
from tests.conftest import compose_config, run_train

ONE_LINE = {"HYDRA_FULL_ERROR": "0"}


@pytest.mark.parametrize("override, message", [
    ("memory.lambda=abc", "memory.lambda='abc' is not allowed"),  # refused by the schema, while composing
    ("agent.gamma=2", "agent.gamma=2.0 is not allowed"),           # refused by our validation
    ("agent.foo=1", "agent.foo is not a config key"),
    ("+agent.foo=1", "agent.foo is not a config key"),                # an explicit append, refused by our validation
    ("agent.total_steps=-5", "agent.total_steps=-5 is not allowed"),
    ("resume=no/such/run", "resume='no/such/run' is not a run folder"),
])
def test_a_rejected_input_answers_with_one_line_and_leaves_no_folder(tmp_path, override, message):
    start = time.perf_counter()
    result = run_train([override, "env=cartpole", "model=mlp"], cwd=tmp_path, check=False, extra_env=ONE_LINE)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {result.stderr.strip().splitlines()[-1][7:]}"
    assert message in result.stderr and "Traceback" not in result.stderr
    assert [path.name for path in tmp_path.rglob("*")] in ([], ["outputs"])  # no run or date folder left
    assert time.perf_counter() - start < 30  # the machine's start-up, not a training run


def test_a_multirun_whose_jobs_fail_to_compose_leaves_no_sweep_folder(tmp_path):
    other = tmp_path / "multirun" / "2026-01-01" / "10-00-00-000000"  # someone else's sweep stays
    other.mkdir(parents=True)
    (other / "multirun.yaml").write_text("hydra: {}\n")
    result = run_train(["-m", "memory.lambda=0,abc", "env=cartpole", "model=mlp"], cwd=tmp_path, check=False,
                       extra_env=ONE_LINE)
    assert result.returncode == 2 and "memory.lambda='abc' is not allowed" in result.stderr
    assert sorted((tmp_path / "multirun").rglob("*")) == [other.parent, other, other / "multirun.yaml"]


def test_help_lists_only_real_config_groups(tmp_path):
    (tmp_path / "outputs" / "2026-01-01" / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "multirun" / "x").mkdir(parents=True)
    result = run_train(["--help"], cwd=tmp_path)
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    names = {line.split(":")[0] for line in groups.splitlines() if re.match(r"^[\w/]+: ", line)}
    assert names == {"agent", "buffer", "env", "experiment", "logger", "memory", "model", "sweeps", "trainer"}


def test_resume_continues_in_the_runs_own_folder_and_log(tmp_path):
    run_dir = tmp_path / "outputs" / "run"
    common = ["env=cartpole", "model=mlp", "agent.learning_starts=100", "eval.episodes=0", "logger=csv"]
    run_train([*common, "agent.total_steps=300", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    overrides_before = (run_dir / ".hydra" / "overrides.yaml").read_text()
    run_train([f"resume={run_dir}", "agent.total_steps=600", "allow_config_change=true"], cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["run"]
    log = (run_dir / "train.log").read_text()
    assert "Resumed" in log and log.index("Run cartpole") < log.index("Resumed")
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == overrides_before


def test_a_run_prints_no_third_party_noise(tmp_path):
    result = run_train(["env=cartpole", "model=mlp", "agent.total_steps=300", "agent.learning_starts=100",
                        "eval.episodes=0", "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    output = result.stdout + result.stderr
    for noise in ("Tip:", "dataloader_iter", "LeafSpec", "max_epochs=1", "GPU available"):
        assert noise not in output


def test_a_flat_env_with_atari_agent_settings_warns():
    overrides = ["env=cartpole", "model=mlp", "agent.total_steps=10000"]
    text = " ".join(budget_warnings(compose_config(overrides), overrides))
    assert "reaches epsilon 0.01 only at env step 2,000,000, after the budget agent.total_steps=10,000" in text
    assert "agent.target_update=40,000 env steps: the target network is never synced" in text
    assert "experiment=cartpole" in text
    assert budget_warnings(compose_config(["experiment=cartpole"])) == []
    assert budget_warnings(compose_config(["experiment=minatar"])) == []
    short_preset = ["experiment=minatar", "agent.total_steps=6000"]  # the preset, at a budget too short for it
    text = " ".join(budget_warnings(compose_config(short_preset), short_preset))
    assert "agent.total_steps=6,000" in text and "Atari agent settings" not in text


def test_an_early_pong_checkpoint_writes_only_the_filled_replay(tmp_path):
    run_dir = tmp_path / "run"
    run_train(["env=pong", "buffer.capacity=100000", "memory.capacity=1000", "agent.total_steps=2000",
               "agent.learning_starts=1000", "eval.episodes=0", "logger=csv", f"hydra.run.dir={run_dir}"],
              cwd=tmp_path)
    replay_files = list((run_dir / "checkpoints" / "replay").iterdir())
    assert sum(path.stat().st_size for path in replay_files) < 20_000_000
    arrays = saved_replay(load_checkpoint(run_dir))
    assert len(arrays["env0_frames"]) <= 2000 + 100  # filled slots only: transitions + episode starts


def test_the_progress_line_gives_an_eta_only_once_learning_has_started(caplog, monkeypatch):
    import logging

    import emdqn.agent.metrics as metrics

    clock = [0.0]
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: clock[0])
    reporter = metrics.ProgressReporter(total_steps=10_000, every_seconds=1.0, learning_starts=5_000)
    with caplog.at_level(logging.INFO, logger="emdqn"):
        for second, step in enumerate((0, 2_000, 4_000, 5_100, 5_200, 5_300)):  # 2,000 SPS, then 100
            clock[0] = float(second)
            reporter.maybe_report(step, 1.0, None, None)
    lines = [record.getMessage() for record in caplog.records]
    assert all("ETA ?" in line for line in lines[:3])
    assert "SPS - | ETA ?" in lines[3]  # learning has just started: its speed is not measured yet
    assert "SPS 100 | ETA 0m47s" in lines[-1]  # the playing-only phase is out of the window
