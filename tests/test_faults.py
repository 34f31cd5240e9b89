"""Faults: kills at every point of a save, a full disk, corrupted files. Each leaves a
resumable checkpoint or is refused in one line naming the file; nothing is lost silently."""

import csv
import errno
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import emdqn.run.checkpoint as checkpoint
from emdqn.run.checkpoint import CheckpointError, load_checkpoint, restore, save_checkpoint, saved_replay
from emdqn.evaluate import EvaluationError, load_weights
from tests.conftest import ROOT, run_train, small_parts


class Killed(BaseException):
    """Stands for SIGKILL inside the process: nothing after it runs, no handler catches it."""


def play(collector, steps):
    for _ in range(steps):
        collector.play_step()


class FileOperations:
    """Counts the writes and renames of a save, and kills it at the ``kill_at``-th one."""

    def __init__(self, monkeypatch, kill_at=None):
        self.count, self.kill_at, self.points = 0, kill_at, []
        real_replace, real_fsync = os.replace, os.fsync
        operations = self

        def replace(source, target):
            operations.tick(f"rename of {os.path.basename(str(target))}")
            return real_replace(source, target)

        def fsync(descriptor):  # a file's bytes are all written, not yet synced or renamed
            operations.tick(f"write of {os.readlink(f'/proc/self/fd/{descriptor}')}")
            return real_fsync(descriptor)

        real_unlink = checkpoint.Path.unlink

        def unlink(path, missing_ok=False):  # the cleanup after the commit
            operations.tick(f"removal of {path.name}")
            return real_unlink(path, missing_ok=missing_ok)

        monkeypatch.setattr(checkpoint.os, "replace", replace)
        monkeypatch.setattr(checkpoint.os, "fsync", fsync)
        monkeypatch.setattr(checkpoint.Path, "unlink", unlink)

    def tick(self, what):
        self.points.append(what)
        self.count += 1
        if self.count == self.kill_at:
            raise Killed(what)


def test_a_kill_at_any_point_of_a_save_leaves_the_previous_or_the_new_checkpoint(tmp_path, monkeypatch):
    collector, learner = small_parts()
    play(collector, 60)
    save_checkpoint(tmp_path / "reference", learner, collector)
    counting = FileOperations(monkeypatch)
    play(collector, 30)
    save_checkpoint(tmp_path / "reference", learner, collector)
    monkeypatch.undo()
    points = counting.points
    assert any(p.startswith("rename of manifest.json") for p in points) and len(points) > 10

    collector, learner = small_parts()
    play(collector, 60)
    outcomes = set()
    for kill_at in range(1, len(points) + 1):
        run_dir = tmp_path / f"kill{kill_at}"
        save_checkpoint(run_dir, learner, collector)
        first = {name: tensor.clone() for name, tensor in learner.q_network.state_dict().items()}
        play(collector, 30)
        with monkeypatch.context() as patch:
            FileOperations(patch, kill_at)
            with pytest.raises(Killed):
                save_checkpoint(run_dir, learner, collector)
        state = load_checkpoint(run_dir)  # every file it names is checked here and below
        replay = saved_replay(state)
        after_commit = kill_at > points.index("rename of manifest.json") + 1
        assert state["env_steps"] == (collector.env_steps if after_commit else collector.env_steps - 30), \
            points[kill_at - 1]
        assert replay["env0_frames"].shape[0] > 0
        outcomes.add(state["env_steps"])
        fresh_collector, fresh_learner = small_parts()
        restore(state, fresh_learner, fresh_collector)
        if state["env_steps"] == 60:
            for name, tensor in fresh_learner.q_network.state_dict().items():
                assert torch.equal(tensor, first[name])
        assert load_weights(run_dir)[1] == state["env_steps"]
        collector, learner = small_parts()
        play(collector, 60)
    assert outcomes == {60, 90}, "kills before the manifest's rename keep the old checkpoint, after it the new"


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    collector, learner = small_parts()
    play(collector, 50)
    save_checkpoint(tmp_path, learner, collector)
    play(collector, 20)

    def no_space(writer, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint._HashingWriter, "write", no_space)
    with pytest.raises(CheckpointError, match=r"could not write .*No space left on device.*previous checkpoint is kept"):
        save_checkpoint(tmp_path, learner, collector)
    monkeypatch.undo()
    assert not list((tmp_path / "checkpoints").rglob("*.tmp")), "no half-written file is left behind"
    assert load_checkpoint(tmp_path)["env_steps"] == 50


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    run_dir = folder / "run"
    run_train(["env=cartpole", "model=mlp", "agent.total_steps=400", "agent.learning_starts=100", "logger=csv",
               "eval.episodes=0", "buffer.capacity=1000", f"hydra.run.dir={run_dir}"], cwd=folder)
    return run_dir


def copy_of(run_dir, tmp_path):
    subprocess.run(["cp", "-r", str(run_dir), str(tmp_path / "copy")], check=True)
    return tmp_path / "copy"


def flip_a_byte(path, offset=-100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("which", ["state", "weights", "replay chunk", "truncated weights"])
def test_each_corrupted_file_is_refused_with_one_line_naming_it(finished_run, tmp_path, which):
    run_dir = copy_of(finished_run, tmp_path)
    folder = run_dir / "checkpoints"
    target = {"state": next(folder.glob("state_*.ckpt")), "weights": next(folder.glob("weights_*.pt")),
              "replay chunk": next((folder / "replay").glob("env0_frames*.npy")),
              "truncated weights": next(folder.glob("weights_*.pt"))}[which]
    if which == "truncated weights":
        target.write_bytes(target.read_bytes()[:-10])
    else:
        flip_a_byte(target)
    if which in ("weights", "truncated weights"):
        with pytest.raises(EvaluationError, match=f"{target.name} is not the file emdqn wrote"):
            load_weights(run_dir)
    else:
        with pytest.raises(CheckpointError, match=f"{target.name} is not the file emdqn wrote"):
            saved_replay(load_checkpoint(run_dir))
    result = run_train([f"resume={run_dir}", "agent.total_steps=500", "allow_config_change=true"],
                       cwd=tmp_path, check=False, extra_env={"HYDRA_FULL_ERROR": "0"})
    if which in ("state", "replay chunk"):
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and target.name in lines[-1]


def test_an_edited_config_is_refused_in_one_line_and_a_deliberate_change_still_goes_through(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("gamma: 0.99", "gamma: 0.9"))
    refused = run_train([f"resume={run_dir}", "agent.total_steps=500", "allow_config_change=true"], cwd=tmp_path,
                        check=False, extra_env={"HYDRA_FULL_ERROR": "0"})
    assert refused.returncode == 0, "allow_config_change=true accepts the edit"
    assert "Resuming with the edited config.yaml: agent.gamma: 0.99 in the checkpoint, 0.9 in config.yaml" \
        in refused.stdout + refused.stderr
    config.write_text(config.read_text().replace("gamma: 0.9", "gamma: 0.5"))
    refused = run_train([f"resume={run_dir}", "agent.total_steps=600", "allow_config_change=false"], cwd=tmp_path,
                        check=False, extra_env={"HYDRA_FULL_ERROR": "0"})
    assert refused.returncode == 2
    line = refused.stderr.strip().splitlines()[-1]
    assert "config.yaml differs from the config of its checkpoint (agent.gamma: 0.9 in the checkpoint, 0.5 in " \
           "config.yaml)" in line


def test_a_refused_resume_leaves_config_yaml_as_it_was(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    before = (run_dir / "config.yaml").read_text()
    refused = run_train([f"resume={run_dir}", "buffer.capacity=100", "allow_config_change=true"], cwd=tmp_path,
                        check=False, extra_env={"HYDRA_FULL_ERROR": "0"})
    assert refused.returncode == 2 and "does not fit this run" in refused.stderr
    assert (run_dir / "config.yaml").read_text() == before
    resumed = run_train([f"resume={run_dir}", "agent.total_steps=450", "allow_config_change=true"], cwd=tmp_path)
    assert "Resumed" in resumed.stdout + resumed.stderr


def test_a_plain_resume_keeps_how_the_run_was_started_and_lists_what_the_command_changes(tmp_path):
    run_dir = tmp_path / "run"
    started = ["env=cartpole", "model=mlp", "agent.total_steps=300", "agent.learning_starts=100", "logger=csv",
               "eval.episodes=0", "buffer.capacity=1000", "trainer.threads=1", "checkpoint.every_steps=250",
               "checkpoint.save_replay=false", f"hydra.run.dir={run_dir}"]
    run_train(started, cwd=tmp_path)
    resumed = run_train([f"resume={run_dir}", "agent.total_steps=400", "allow_config_change=true",
                         "trainer.progress_every_seconds=5"], cwd=tmp_path)
    config = (run_dir / "config.yaml").read_text()
    for kept in ("threads: 1", "every_steps: 250", "save_replay: false", "csv: true"):
        assert kept in config, kept
    assert "wandb:\n    enabled: false" in config
    assert "This resume changes how the run is carried out: trainer.progress_every_seconds: 10.0 -> 5.0" \
        in resumed.stdout + resumed.stderr


KILLED_RUN = textwrap.dedent("""
    import os, runpy, sys
    import emdqn.run.checkpoint as checkpoint
    real_replace, calls, saves = os.replace, [0], [0]
    kill_in_save, kill_at = int(os.environ["KILL_IN_SAVE"]), int(os.environ["KILL_AT"])
    real_save = checkpoint.save_checkpoint

    def save(*args, **kwargs):
        saves[0] += 1
        calls[0] = 0
        return real_save(*args, **kwargs)

    def replace(source, target):
        calls[0] += 1
        if saves[0] == kill_in_save and calls[0] == kill_at:
            os._exit(137)  # as SIGKILL: no handler, no flush
        return real_replace(source, target)

    checkpoint.os.replace = replace
    import emdqn.run.train
    emdqn.run.train.save_checkpoint = save
    sys.argv = ["train.py", *sys.argv[1:]]
    runpy.run_path(os.path.join(os.environ["ROOT"], "train.py"), run_name="__main__")
""")


def test_a_process_killed_inside_a_save_resumes_to_the_same_end_as_an_uninterrupted_run(tmp_path):
    common = ["env=cartpole", "model=mlp", "agent.total_steps=900", "agent.learning_starts=100", "logger=csv",
              "agent.target_update=100", "eval.episodes=0", "buffer.capacity=2000", "checkpoint.every_steps=300",
              "trainer.log_every_steps=100", "trainer.threads=1"]
    run_train([*common, f"hydra.run.dir={tmp_path / 'whole'}"], cwd=tmp_path)
    whole = load_checkpoint(tmp_path / "whole")
    # The second periodic save (env step 600) is killed just before the manifest's rename
    # (the last of its renames but the cleanup): the checkpoint of step 300 must be resumed.
    parted = tmp_path / "parted"
    env = dict(os.environ, KILL_IN_SAVE="2", KILL_AT="0", ROOT=str(ROOT), WANDB_MODE="offline")
    probe = subprocess.run([sys.executable, "-c", KILLED_RUN, *common, f"hydra.run.dir={tmp_path / 'probe'}"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    renames = len(list((tmp_path / "probe" / "checkpoints" / "replay").iterdir())) + 3  # chunks, weights, state, manifest
    env["KILL_AT"] = str(renames)
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, *common, f"hydra.run.dir={parted}"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert load_checkpoint(parted)["env_steps"] == 300
    run_train([f"resume={parted}"], cwd=tmp_path)
    resumed = load_checkpoint(parted)
    assert resumed["env_steps"] == whole["env_steps"] == 900
    for name, tensor in whole["learner"]["q_network"].items():
        assert torch.equal(tensor, resumed["learner"]["q_network"][name]), name
    np.testing.assert_array_equal(saved_replay(resumed)["env0_frames"], saved_replay(whole)["env0_frames"])
    assert metrics_without_clock(parted) == metrics_without_clock(tmp_path / "whole")


WALL_CLOCK = ("charts/SPS", "memory/rebuild_seconds")  # seconds, not results


def metrics_without_clock(run_dir):
    with (run_dir / "metrics.csv").open() as file:
        return [{key: value for key, value in row.items() if key not in WALL_CLOCK} for row in csv.DictReader(file)]


def test_a_garbled_metrics_file_and_a_truncated_config_are_one_line(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    (run_dir / "metrics.csv").write_bytes(b"\xff\xfe garbage\x00,,\n1,2\n")
    garbled = run_train([f"resume={run_dir}", "agent.total_steps=500", "allow_config_change=true"], cwd=tmp_path,
                        check=False, extra_env={"HYDRA_FULL_ERROR": "0"})
    assert garbled.returncode == 2
    assert garbled.stderr.strip().splitlines()[-1].startswith(f"error: {run_dir / 'metrics.csv'} is garbled")
    config = run_dir / "config.yaml"
    config.write_text(config.read_text()[:57] + "\n  - [unclosed")
    for command in ([sys.executable, str(ROOT / "train.py"), f"resume={run_dir}"],
                    [sys.executable, "-m", "emdqn.evaluate", str(run_dir), "episodes=1"]):
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                                env=dict(os.environ, WANDB_MODE="offline"))
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {config} is unreadable (") and \
            lines[0].endswith("the run's config cannot be read from it")


def test_evaluate_refuses_a_result_it_cannot_write_before_playing(finished_run, tmp_path):
    from emdqn.evaluate import run_evaluation

    run_dir = copy_of(finished_run, tmp_path)
    step = load_checkpoint(run_dir)["env_steps"]
    (run_dir / f"eval_nature_{step}.json.tmp").mkdir()  # the result's temporary name cannot be a file
    with pytest.raises(EvaluationError, match=rf"cannot write the result .*eval_nature_{step}.json"):
        run_evaluation(run_dir, {"episodes": 1})


def test_a_refused_second_run_leaves_the_first_runs_log_alone(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    log_before = (run_dir / "train.log").read_bytes()
    refused = run_train(["env=cartpole", "model=mlp", f"hydra.run.dir={run_dir}"], cwd=tmp_path, check=False,
                        extra_env={"HYDRA_FULL_ERROR": "0"})
    assert refused.returncode == 2 and "already holds a run" in refused.stderr
    assert (run_dir / "train.log").read_bytes() == log_before


def test_a_resume_checks_its_keys_against_the_runs_own_model_and_warns_once(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    changed = run_train([f"resume={run_dir}", "model.hidden_sizes=[32]"], cwd=tmp_path, check=False,
                        extra_env={"HYDRA_FULL_ERROR": "0"})
    assert changed.returncode == 2
    assert "resume would change the experiment's config (model.hidden_sizes: [120, 84] -> [32])" in changed.stderr
    resumed = run_train([f"resume={run_dir}", "agent.total_steps=450", "allow_config_change=true"], cwd=tmp_path)
    assert "runs with the Atari agent settings" not in resumed.stdout + resumed.stderr


def test_a_run_folder_that_cannot_be_written_is_one_line_on_resume(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    (run_dir / "train.log").unlink()
    (run_dir / "train.log").mkdir()  # stands for a read-only folder (the tests run as root, whom chmod does not stop)
    result = run_train([f"resume={run_dir}"], cwd=tmp_path, check=False, extra_env={"HYDRA_FULL_ERROR": "0"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: resume={run_dir}: cannot write into the run folder (Is a "
                                                  "directory); a resumed run writes its log, metrics and checkpoints "
                                                  "there"]
