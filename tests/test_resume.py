"""Interruptions: SIGTERM + resume equals an uninterrupted run; checkpoints survive kills."""

import csv
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from emdqn.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, saved_replay
from tests.conftest import ROOT, compose_config, run_train, small_parts
from tests.test_faults import metrics_without_clock

RUN = ["env=cartpole", "model=mlp", "agent.total_steps=3000", "agent.learning_starts=500", "agent.train_freq=1",
       "agent.target_update=200", "buffer.capacity=5000", "eval.episodes=0", "logger=csv",
       "checkpoint.every_steps=0", "trainer.log_every_steps=100", "trainer.progress_every_seconds=0.1"]


def final_state(run_dir):
    state = load_checkpoint(run_dir)
    return state, saved_replay(state)


def start_and_stop(run_dir, stop_after_step, run=RUN):
    """Start a real run, send SIGTERM once it has passed ``stop_after_step`` env steps."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="offline")
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *run, f"hydra.run.dir={run_dir}"],
                               cwd=run_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    output = []
    deadline = time.time() + 300
    for line in process.stdout:
        output.append(line)
        if "| eps" in line and "step " in line:
            step = int(line.split("step ")[1].split("/")[0].replace(",", ""))
            if step > stop_after_step:
                process.send_signal(signal.SIGTERM)
                break
        assert time.time() < deadline, "the run did not reach the stop point in time"
    output.extend(process.stdout)
    assert process.wait(timeout=120) == 0, "".join(output)
    return "".join(output)


@pytest.mark.parametrize("num_envs", [1, 4])
def test_sigterm_and_resume_equal_one_uninterrupted_run(tmp_path, num_envs):
    run = RUN + [f"env.num_envs={num_envs}"]
    whole = tmp_path / "whole"
    run_train(run + [f"hydra.run.dir={whole}"], cwd=tmp_path)
    parted = tmp_path / "parted"
    output = start_and_stop(parted, stop_after_step=1200, run=run)
    assert "Stopped at env step" in output and f"resume={parted}" in output
    stopped_at = load_checkpoint(parted)["env_steps"]
    assert 1200 < stopped_at < 3000
    run_train([f"resume={parted}"], cwd=tmp_path)

    whole_state, whole_replay = final_state(whole)
    parted_state, parted_replay = final_state(parted)
    assert whole_state["env_steps"] == parted_state["env_steps"] == 3000
    assert len(whole_state["collector"]["memory"]["memory"]["keys"]) == len(parted_state["collector"]["memory"]["memory"]["keys"])
    assert whole_replay.keys() == parted_replay.keys()
    for name in whole_replay:
        np.testing.assert_array_equal(whole_replay[name], parted_replay[name], err_msg=name)
    # CPU, fixed seeds, same operations in the same order: bit-identical weights.
    for name, tensor in whole_state["learner"]["q_network"].items():
        assert torch.equal(tensor, parted_state["learner"]["q_network"][name]), name

    with (parted / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    # (Several envs can end games in the same env step: their rows differ in the episode count.)
    keys = [(row["step"], row["charts/episodes"], tuple(sorted(k for k, v in row.items() if v and k != "step")))
            for row in rows]
    assert len(keys) == len(set(keys)), "no duplicated CSV rows"
    episodes = [float(row["charts/episodes"]) for row in rows if row["charts/episodes"]]
    assert episodes == list(range(1, len(episodes) + 1)), "no missing or repeated episodes"
    with (whole / "metrics.csv").open() as file:
        whole_episodes = [row for row in csv.DictReader(file) if row["charts/episodes"]]
    assert len(whole_episodes) == len(episodes)
    # Wherever the stop fell (almost always between two loss rows), the resumed run's rows are
    # the uninterrupted run's, values included, and torch's RNG ends where the uninterrupted run's does.
    assert metrics_without_clock(parted) == metrics_without_clock(whole)
    assert torch.equal(whole_state["torch_rng"], parted_state["torch_rng"])


def test_a_run_saved_with_the_speed_switches_under_model_resumes_with_them_under_trainer():
    """Runs saved when compile/channels_last/onednn_linear were model keys resume unchanged."""
    from omegaconf import OmegaConf

    from emdqn.config.checks import validate
    from emdqn.run.train import merge_resume_config

    composed = compose_config(["env=pong"])
    saved = OmegaConf.to_container(composed, resolve=True)  # as config.yaml holds it, untyped
    saved["model"].update(compile=False, channels_last=False, onednn_linear=True)
    for key in ("compile", "channels_last", "onednn_linear"):
        del saved["trainer"][key]
    merged = merge_resume_config(OmegaConf.create(saved), composed, overrides=[], allow_change=False)
    assert not {"compile", "channels_last", "onednn_linear"} & set(merged.model)
    assert merged.trainer.channels_last is True and merged.trainer.compile is False
    validate(merged)


def test_resume_refuses_a_changed_config_unless_allowed(tmp_path):
    run_dir = tmp_path / "run"
    short = [arg for arg in RUN if not arg.startswith("agent.total_steps")] + ["agent.total_steps=600"]
    run_train(short + [f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    refused = run_train([f"resume={run_dir}", "agent.lr=0.5"], cwd=tmp_path, check=False)
    assert refused.returncode != 0
    assert "agent.lr: 0.0001 -> 0.5" in refused.stderr and "allow_config_change=true" in refused.stderr
    extended = run_train([f"resume={run_dir}", "agent.total_steps=800", "allow_config_change=true"], cwd=tmp_path)
    assert "Resumed" in extended.stdout + extended.stderr
    assert load_checkpoint(run_dir)["env_steps"] == 800


def test_resume_of_a_folder_without_run_is_a_clear_error(tmp_path):
    result = run_train([f"resume={tmp_path / 'nothing'}"], cwd=tmp_path, check=False)
    assert result.returncode != 0 and "is not a run folder" in result.stderr


def test_a_kill_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    collector, learner = small_parts()
    for _ in range(50):
        collector.play_step()
    save_checkpoint(tmp_path, learner, collector)
    for _ in range(50):
        collector.play_step()

    def killed_mid_write(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, learner, collector)
    monkeypatch.undo()
    state = load_checkpoint(tmp_path)
    assert state["env_steps"] == 50
    assert saved_replay(state)["env0_frames"].shape[0] > 0  # the previous checkpoint's replay files are intact


def test_a_corrupted_checkpoint_names_the_file(tmp_path):
    collector, learner = small_parts()
    for _ in range(40):
        collector.play_step()
    manifest_path = save_checkpoint(tmp_path, learner, collector)
    state_file = next((tmp_path / "checkpoints").glob("state_*.ckpt"))
    state_file.write_bytes(state_file.read_bytes()[:-5])
    with pytest.raises(CheckpointError, match=rf"{state_file.name} is not the file emdqn wrote .*truncated"):
        load_checkpoint(tmp_path)
    manifest_path.write_text("{garbled")
    with pytest.raises(CheckpointError, match=r"manifest.json is unreadable"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "elsewhere")
    earlier = tmp_path / "earlier" / "checkpoints"
    earlier.mkdir(parents=True)
    (earlier / "last.ckpt").write_bytes(b"x")
    (earlier / "last.json").write_text("{}")
    with pytest.raises(CheckpointError, match="written by an earlier emdqn"):
        load_checkpoint(earlier.parent)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "nan"
    result = run_train(["env=cartpole", "model=mlp", "agent.total_steps=2000", "agent.learning_starts=200",
                        "agent.lr=1e36", "agent.adam_eps=1e-8", "agent.grad_clip_norm=null", "agent.loss=mse",
                        "logger=csv", "eval.episodes=0", "checkpoint.every_steps=100", f"hydra.run.dir={run_dir}"],
                       cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "the loss became" in result.stderr and "the last checkpoint is kept" in result.stderr
    state = load_checkpoint(run_dir)
    assert state["env_steps"] <= 300


class Payload:
    """Unpickling this runs ``touch <marker>``: what a shared, malicious checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_replaced_checkpoint_before_unpickling_it(tmp_path):
    run_dir = tmp_path / "run"
    run_train(["env=cartpole", "model=mlp", "agent.total_steps=300", "agent.learning_starts=100", "logger=csv",
               "eval.episodes=0", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    marker = tmp_path / "payload_ran"
    with next((run_dir / "checkpoints").glob("state_*.ckpt")).open("wb") as file:
        pickle.dump(Payload(marker), file)
    with pytest.raises(CheckpointError, match="is not the file emdqn wrote"):
        load_checkpoint(run_dir)
    assert not marker.exists()


def test_a_run_extended_by_resume_ends_with_the_memory_of_one_uninterrupted_run(tmp_path):
    """The end of a run keeps the episode in progress in the checkpoint, unwritten: a resume
    with a larger budget writes it whole, as the uninterrupted run does."""
    common = ["env=cartpole", "model=mlp", "agent.learning_starts=100", "eval.episodes=0", "logger=csv",
              "memory.capacity=5000", "buffer.capacity=5000"]
    run_train([*common, "agent.total_steps=700", f"hydra.run.dir={tmp_path / 'extended'}"], cwd=tmp_path)
    run_train([f"resume={tmp_path / 'extended'}", "agent.total_steps=1400", "allow_config_change=true"], cwd=tmp_path)
    run_train([*common, "agent.total_steps=1400", f"hydra.run.dir={tmp_path / 'straight'}"], cwd=tmp_path)
    extended = load_checkpoint(tmp_path / "extended")
    straight = load_checkpoint(tmp_path / "straight")
    assert extended["env_steps"] == straight["env_steps"] == 1400
    for key in ("keys", "actions", "values", "last_used", "visits"):
        np.testing.assert_array_equal(extended["collector"]["memory"]["memory"][key],
                                      straight["collector"]["memory"]["memory"][key])
    assert extended["collector"]["memory"]["memory"]["clock"] == straight["collector"]["memory"]["memory"]["clock"]
    assert extended["collector"]["memory"]["episode_keys"][0], "an episode was in progress at the end of both runs"


def test_a_checkpoint_rewrites_only_the_replay_chunks_that_changed(tmp_path, monkeypatch):
    import emdqn.run.replay_files

    monkeypatch.setattr(emdqn.run.replay_files, "CHUNK_SLOTS", 16)
    collector, learner = small_parts()  # 100 slots: chunks 0-6 of 16 slots

    def saved_files():
        return {path.name for path in (tmp_path / "checkpoints" / "replay").iterdir()}

    def step_and_save(steps):
        for _ in range(steps):
            collector.play_step()
        save_checkpoint(tmp_path, learner, collector)
        state = load_checkpoint(tmp_path)
        arrays = saved_replay(state)
        stream = collector.replay.streams[0]
        for name, array in arrays.items():  # what the files hold is the buffer, slot for slot
            assert np.array_equal(array, getattr(stream, name.removeprefix("env0_"))[:stream.filled]), name
        return state["env_steps"]

    first = step_and_save(40)
    before = saved_files()
    assert {name.split(".")[1] for name in before if name.startswith("env0_frames")} == {"c0000", "c0001", "c0002"}
    second = step_and_save(5)
    frames = sorted(name for name in saved_files() if name.startswith("env0_frames"))
    # Chunks 0 and 1 hold no slot written since the first checkpoint: their files are kept.
    assert frames[:2] == [f"env0_frames.c0000.s{first}.npy", f"env0_frames.c0001.s{first}.npy"]
    assert frames[2] == f"env0_frames.c0002.s{second}.npy" and len(frames) == 3
    step_and_save(200)  # the buffer wraps: every chunk is rewritten, none of the old files is left
    assert not saved_files() & before


def test_a_resume_copies_the_replay_chunk_by_chunk_without_a_second_copy_of_the_buffer(tmp_path, monkeypatch):
    # Two full Pong replays (7 GB each) resumed side by side must fit where the two runs did:
    # loading may hold one chunk besides the buffer, never a second copy of it.
    import tracemalloc

    import emdqn.run.replay_files
    from emdqn.run.checkpoint import restore

    from emdqn.agent.collector import Collector
    from emdqn.agent.learner import Learner

    monkeypatch.setattr(emdqn.run.replay_files, "CHUNK_SLOTS", 512)

    def parts():
        cfg = compose_config(["env=cartpole", "model=mlp", "memory=none", "buffer.capacity=30000",
                              "agent.learning_starts=32"])  # no memory: its table is restored on its own
        collector = Collector.from_config(cfg)
        learner = Learner.from_config(cfg, collector.envs.observation_shape, collector.envs.num_actions)
        collector.set_policy(learner.q_network)
        return collector, learner

    collector, learner = parts()
    stream = collector.replay.streams[0]
    for _ in range(stream.capacity + 10):  # the buffer is full and wrapped
        collector.play_step()
    save_checkpoint(tmp_path, learner, collector)
    state = load_checkpoint(tmp_path)
    replay_bytes = sum(array.nbytes for array in saved_replay(state).values())
    fresh_collector, fresh_learner = parts()
    tracemalloc.start()
    restore(state, fresh_learner, fresh_collector)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < replay_bytes / 3, f"restoring a {replay_bytes:,}-byte replay allocated {peak:,} bytes at its peak"
    for name in ("frames", "actions", "rewards", "has_transition"):
        assert np.array_equal(getattr(fresh_collector.replay.streams[0], name), getattr(stream, name)), name
