"""benchmarks/experiments/atari_pair.py, the Pong pair's driver, on a tiny CartPole budget: a stopped
pair continues from its checkpoints, a lost run folder restarts and its record says so, a
finished pair is skipped."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT

DRIVER = ROOT / "benchmarks" / "experiments" / "atari_pair.py"


def driver(tmp_path, steps=6000):
    return [sys.executable, str(DRIVER), "--game", "cartpole", "--steps", str(steps), "--eval-every", "2000",
            "--eval-games", "1", "--checkpoint-every", "1000", "--poll-seconds", "1", "--out", str(tmp_path / "out"),
            "--runs-dir", str(tmp_path / "runs"), "model=mlp", "buffer.capacity=5000"]


def record(tmp_path, arm):
    return json.loads((tmp_path / "out" / f"cartpole__{arm}__s0.json").read_text())


def test_the_pair_continues_after_a_stop_restarts_a_lost_run_and_skips_a_finished_one(tmp_path):
    env = dict(os.environ, WANDB_MODE="offline")
    first = subprocess.Popen(driver(tmp_path), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    logs = [tmp_path / "runs" / f"cartpole__{arm}__s0" / "metrics.csv" for arm in ("emdqn", "dqn")]
    deadline = time.time() + 240
    while not all(log.exists() and log.read_text().count("\n") > 3 for log in logs):
        assert time.time() < deadline and first.poll() is None, first.communicate()[0][-3000:]
        time.sleep(0.5)
    first.send_signal(signal.SIGTERM)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 0, output[-3000:]
    stopped = {arm: record(tmp_path, arm) for arm in ("emdqn", "dqn")}
    for arm, saved in stopped.items():
        assert not saved["finished"] and 0 < saved["env_steps"] < 6000, arm
        assert (tmp_path / "runs" / f"cartpole__{arm}__s0" / "checkpoints" / "manifest.json").is_file()

    shutil.rmtree(tmp_path / "runs" / "cartpole__dqn__s0")  # a lost run folder
    second = subprocess.run(driver(tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "emdqn: resume from env step" in second.stdout and "dqn: restart from env step 0" in second.stdout
    emdqn, dqn = record(tmp_path, "emdqn"), record(tmp_path, "dqn")
    assert emdqn["finished"] and dqn["finished"] and emdqn["env_steps"] == dqn["env_steps"] == 6000
    assert [stretch["action"] for stretch in emdqn["stretches"]] == ["start", "resume"]
    assert emdqn["restarts"] == []
    assert [stretch["action"] for stretch in dqn["stretches"]] == ["start", "restart"]
    assert dqn["restarts"][0]["lost_env_steps"] == stopped["dqn"]["env_steps"]
    assert [evaluation["step"] for evaluation in emdqn["evaluations"]] == [2000, 4000, 6000]
    # The curve has one value per bin it says it has: 6,000 env steps in bins of bin_steps.
    assert len(emdqn["curve"]["returns"]) == -(-6000 // emdqn["curve"]["bin_steps"])
    # Per evaluation interval: every game counted once, and the memory's metrics for EMDQN only.
    assert [(i["from_step"], i["to_step"]) for i in emdqn["intervals"]] == [(0, 2000), (2000, 4000), (4000, 6000)]
    assert sum(i["games"] for i in emdqn["intervals"]) == emdqn["episodes"]
    assert all("memory/loss_share" in i["memory_metrics"] for i in emdqn["intervals"][1:])
    assert all(i["memory_metrics"] == {} for i in dqn["intervals"])
    assert (tmp_path / "out" / "table.md").is_file() and (tmp_path / "out" / "curves.png").is_file()

    third = subprocess.run(driver(tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0
    assert third.stdout.count("finished (6,000 env steps); skipped") == 2
