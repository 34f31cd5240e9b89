"""What a run prints: evaluation games show progress, the ETA counts the evaluations, and a
stopped run's last line is the command that continues it."""

import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT, run_train

RUN = ["experiment=cartpole", "agent.total_steps=12000", "agent.learning_starts=1000", "eval.every_steps=5000",
       "trainer.progress_every_seconds=0.5", "trainer.threads=1"]


def test_evaluation_games_show_progress_and_the_eta_counts_the_evaluations(tmp_path):
    result = run_train([*RUN, "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    lines = (result.stdout + result.stderr).splitlines()
    first_progress = next(line for line in lines if "| ETA" in line)
    assert "+ 3 evaluations of 10 games" in first_progress  # at 5k and 10k, and the final one
    after_first = [line for line in lines if "| ETA" in line and "with 2 evaluations" in line]
    assert after_first, "once an evaluation was timed, the ETA includes the remaining ones"
    assert any("evaluation at env step 5,000: 10 games, return" in line and "done in" in line for line in lines)
    assert any("final evaluation: 10 games, return" in line for line in lines)


def test_the_last_line_of_a_stopped_run_is_how_to_continue_it(tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *RUN, "agent.total_steps=200000",
                                f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output = []
    deadline = time.time() + 180
    for line in process.stdout:  # W&B (on by default, offline) is running once training reports
        output.append(line)
        if "| ETA" in line and "step 1/" not in line:
            process.send_signal(signal.SIGTERM)
            break
        assert time.time() < deadline
    output.extend(process.stdout)
    assert process.wait(timeout=120) == 0
    last = [line for line in output if line.strip()][-1]
    assert f"Continue with: python train.py resume={run_dir}" in last, "".join(output[-20:])


def test_help_shows_the_projects_commands_and_the_env_listing_has_help(tmp_path):
    shown = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0
    for command in ("python train.py env=pong memory.lambda=0.1", "python train.py resume=<run folder>",
                    "python -m emdqn.evaluate <run folder>", "python -m emdqn.compare <sweep folder>",
                    "== Configuration groups =="):
        assert command in shown.stdout, command
    listing = subprocess.run([sys.executable, "-m", "emdqn.envs", "--help"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
    assert listing.returncode == 0 and listing.stdout.startswith("python -m emdqn.envs: the environments")


def test_the_pre_run_estimate_of_a_checkpoint_matches_what_the_run_writes(tmp_path):
    import re

    run_dir = tmp_path / "run"
    result = run_train(["env=pong", "agent.total_steps=300", "agent.learning_starts=100", "eval.episodes=0",
                        "logger=csv", "trainer.threads=1", "memory.capacity=1000", f"hydra.run.dir={run_dir}"],
                       cwd=tmp_path)
    found = re.search(r"this run's checkpoint up to ([\d.]+) (KB|MB|GB) on disk", result.stdout + result.stderr)
    assert found, (result.stdout + result.stderr)[-2000:]
    estimate = float(found.group(1)) * {"KB": 1e3, "MB": 1e6, "GB": 1e9}[found.group(2)]
    written = sum(path.stat().st_size for path in (run_dir / "checkpoints").rglob("*") if path.is_file())
    assert 0.8 < written / estimate < 1.25, (written, estimate)


def test_cfg_job_shows_the_lambda_and_beta_that_run(tmp_path):
    import yaml

    shown = {}
    for name, overrides in {"default": [], "beta": ["memory.beta=0.5"], "none": ["memory=none"]}.items():
        result = run_train(["--cfg", "job", *overrides], cwd=tmp_path)
        memory = yaml.safe_load(result.stdout)["memory"]
        shown[name] = (memory["lambda"], memory["beta"])
    assert shown == {"default": (0.1, 0.1), "beta": (0.5, 0.5), "none": (0.0, 0.0)}
    refused = run_train(["--cfg", "job", "memory.lambda=-1"], cwd=tmp_path, check=False,
                        extra_env={"HYDRA_FULL_ERROR": "0"})
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith("error: memory.lambda=-1.0")
    assert not any(tmp_path.iterdir()), "printing the config writes nothing"
