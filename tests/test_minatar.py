"""MinAtar: registration, frames, the network, the preset, and a real run through the CLI."""


import numpy as np
import pytest
import torch

from emdqn.config.checks import ConfigError, validate
from emdqn.config.choices import MINATAR_GAMES
from emdqn.envs.make import make_env, minatar_id
from emdqn.agent.networks import MinAtarCNN, build_q_network
from tests.conftest import compose_config, run_train


@pytest.mark.parametrize("game", MINATAR_GAMES)
def test_every_game_is_registered_and_observes_uint8_channels_first(game):
    cfg = compose_config(["experiment=minatar", f"env.game={game}"])
    validate(cfg)
    env = make_env(cfg.env, seed=0)
    obs, _ = env.reset(seed=0)
    channels = env.observation_space.shape[0]
    assert obs.dtype == np.uint8 and obs.shape == (channels, 10, 10) and set(np.unique(obs)) <= {0, 1}
    assert env.action_space.n == 6  # -v0: the full action set of the published results
    obs, reward, terminated, truncated, _ = env.step(0)
    assert obs.shape == (channels, 10, 10) and obs.dtype == np.uint8
    env.close()


def test_ids_and_the_minimal_action_set():
    assert minatar_id("space_invaders") == "MinAtar/SpaceInvaders-v0"
    cfg = compose_config(["experiment=minatar", "env.game=breakout", "env.action_set=minimal"])
    assert cfg.env.id == "MinAtar/Breakout-v1"
    env = make_env(cfg.env, seed=0)
    assert env.action_space.n == 3
    env.close()


def test_the_step_cap_truncates():
    cfg = compose_config(["experiment=minatar", "env.game=freeway", "env.max_episode_steps=5"])
    env = make_env(cfg.env, seed=0)
    env.reset(seed=0)
    ends = [env.step(0)[2:4] for _ in range(5)]
    assert ends[-1] == (False, True) and all(end == (False, False) for end in ends[:-1])
    env.close()


def test_minatar_network_is_the_published_one():
    cfg = compose_config(["experiment=minatar", "env.game=seaquest"])
    network = build_q_network(cfg.model, (10, 10, 10), 6)
    assert isinstance(network, MinAtarCNN) and network.flat_features == 16 * 8 * 8
    assert network(torch.zeros(5, 10, 10, 10, dtype=torch.uint8)).shape == (5, 6)
    assert sum(p.numel() for p in network.parameters()) == (10 * 9 * 16 + 16) + (1024 * 128 + 128) + (128 * 6 + 6)


@pytest.mark.parametrize("overrides, key", [
    (["env.game=pong"], "env.game"),
    (["model=nature_cnn"], "model"),
    (["agent.n_step=0"], "agent.n_step"),
])
def test_bad_minatar_settings_name_the_key(overrides, key):
    cfg = compose_config(["experiment=minatar", *overrides])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_minatar_experiment_trains_end_to_end(tmp_path):
    run_train(["experiment=minatar", "env.game=breakout", "agent.total_steps=3000", "agent.learning_starts=500",
               "agent.n_step=3", "eval.episodes=1", "logger=csv", "trainer.threads=1",
               f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    for metric in ("charts/episodic_return", "losses/td_loss", "memory/hit_rate", "memory/revisit_share",
                   "memory/h_minus_q", "memory/loss_share", "eval/episodic_return"):
        assert metric in header
