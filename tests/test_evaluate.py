"""python -m emdqn.evaluate: protocols, videos, human-normalized scores, safe loading."""

import hashlib
import json
import os

import numpy as np
import pickle
import shutil

import pytest

from emdqn.envs.atari_scores import ATARI_SCORES, atari_game, human_normalized_score
from emdqn.evaluate import EvaluationError, main as evaluate_main, run_evaluation
from tests.conftest import run_train


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cartpole")
    run_train(["experiment=cartpole", "agent.total_steps=600", "agent.learning_starts=200", "eval.episodes=0",
               "logger=csv", f"hydra.run.dir={folder / 'run'}"], cwd=folder)
    return folder / "run"


@pytest.fixture(scope="module")
def pong_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pong")
    run_train(["env=pong", "agent.total_steps=300", "agent.learning_starts=100", "buffer.capacity=1000",
               "memory.capacity=1000", "eval.episodes=0", "logger=csv", f"hydra.run.dir={folder / 'run'}"], cwd=folder)
    return folder / "run"


def test_cartpole_run_is_evaluated_and_written(cartpole_run, capsys):
    assert evaluate_main([str(cartpole_run), "episodes=2"]) == 0
    assert "2 games" in capsys.readouterr().out
    result = json.loads((cartpole_run / "eval_nature_600.json").read_text())
    assert len(result["returns"]) == 2 and result["epsilon"] == 0.05 and result["step"] == 600
    assert result["mean"] == pytest.approx(sum(result["returns"]) / 2) and "hns" not in result
    run_evaluation(cartpole_run, {"episodes": 1})  # a second evaluation never overwrites the first
    assert (cartpole_run / "eval_nature_600_2.json").exists()
    with pytest.raises(EvaluationError, match="protocol=machado is defined for Atari"):
        run_evaluation(cartpole_run, {"protocol": "machado"})


def test_pong_both_protocols_with_a_video_and_the_human_normalized_score(pong_run):
    short = {"env": {"max_episode_frames": 1200}}  # short capped games keep the test fast
    nature, _ = run_evaluation(pong_run, {"episodes": 2, "video": True, "video_games": 1, **short})
    assert len(nature["returns"]) == 2 and nature["atari_game"] == "pong"
    assert nature["hns"] == pytest.approx((nature["mean"] + 20.7) / (14.6 + 20.7))
    assert len(nature["videos"]) == 1 and os.path.getsize(nature["videos"][0]) > 1000
    machado, path = run_evaluation(pong_run, {"protocol": "machado", "episodes": 2, **short})
    assert path.name == "eval_machado_300.json" and machado["epsilon"] == 0.001
    assert machado["env_overrides"]["kwargs"]["repeat_action_probability"] == 0.25
    assert machado["env_overrides"]["episodic_life"] is False
    assert any("minimal action set" in note for note in machado["notes"])


def test_human_normalized_scores_by_hand():
    assert len(ATARI_SCORES) == 57
    assert human_normalized_score("pong", 14.6) == pytest.approx(1.0)
    assert human_normalized_score("breakout", 1.7) == pytest.approx(0.0)
    assert human_normalized_score("breakout", 30.5 + 28.8) == pytest.approx(2.0)
    assert atari_game("SpaceInvadersNoFrameskip-v4") == "space_invaders"
    assert atari_game("MinAtar/Breakout-v0") is None and atari_game("CartPole-v1") is None


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_weights_file_carrying_a_pickle_payload_is_refused_and_never_runs(cartpole_run, tmp_path, capsys):
    shared = tmp_path / "shared_run"
    shutil.copytree(cartpole_run, shared)
    marker = tmp_path / "payload_ran"
    weights = shared / "checkpoints" / "weights_600.pt"
    with weights.open("wb") as file:
        pickle.dump({"q_network": Payload(marker)}, file)
    assert evaluate_main([str(shared)]) == 2
    assert "weights_600.pt is not the file emdqn wrote" in capsys.readouterr().err  # the manifest's hash
    # A tampered folder whose manifest names the payload's hash: still tensors only, never unpickled.
    manifest_path = shared / "checkpoints" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["weights"][1] = [weights.stat().st_size, hashlib.sha256(weights.read_bytes()).hexdigest()]
    manifest_path.write_text(json.dumps(manifest))
    assert evaluate_main([str(shared)]) == 2
    assert "not a weights-only file" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.parametrize("arguments, message", [
    (["episodes=0"], "episodes=0 is not allowed"),
    (["protocol=atari100k"], "protocol='atari100k' is not allowed"),
    (["colour=red"], "unknown option colour"),
    (["env.id=NoSuchGame-v0"], "NoSuchGame-v0"),
])
def test_bad_requests_get_one_line(cartpole_run, capsys, arguments, message):
    assert evaluate_main([str(cartpole_run), *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_folder_without_weights_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    assert evaluate_main([str(tmp_path)]) == 2
    assert "has no checkpoint (checkpoints/manifest.json)" in capsys.readouterr().err


def test_minatar_videos_show_the_game(tmp_path):
    """MinAtar renders floats in [0, 1]: videos get visible uint8 pixels, 16 per cell."""
    from emdqn.envs.make import make_env
    from emdqn.evaluate import play_games
    from emdqn.agent.networks import build_q_network
    from tests.conftest import compose_config

    cfg = compose_config(["experiment=minatar", "env.game=breakout"])
    env = make_env(cfg.env, seed=0, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (160, 160, 3) and frame.max() > 100
    env.close()
    network = build_q_network(cfg.model, (4, 10, 10), 6)
    play_games(network, cfg.env, 1, epsilon=1.0, video_folder=tmp_path / "videos", video_prefix="random")
    (video,) = (tmp_path / "videos").glob("random*.mp4")
    assert video.stat().st_size > 1000


def test_a_sweep_folder_is_refused_with_the_runs_it_holds(tmp_path, capsys):
    for name in ("0_cartpole_kdtree_lam0_s0", "1_cartpole_kdtree_lam0.1_s0"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("seed: 0\n")
    assert evaluate_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path} is a sweep folder, not a run folder: evaluate one of its 2 runs: ")
    assert str(tmp_path / "1_cartpole_kdtree_lam0.1_s0") in err and len(err.splitlines()) == 1
