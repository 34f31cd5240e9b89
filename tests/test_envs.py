import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from omegaconf import OmegaConf

from emdqn.envs.make import ClipRewardEnv, EpisodicLifeEnv, check_env_id, make_env, real_episode_stats
from tests.conftest import compose_config


def env_cfg(name, **overrides):
    cfg = compose_config([f"env={name}"] + [f"env.{k}={v}" for k, v in overrides.items()]).env
    return cfg


def test_atari_observation_shape_and_dtype():
    env = make_env(env_cfg("pong"), seed=0)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (4, 84, 84)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    obs, reward, terminated, truncated, _ = env.step(0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert reward in (-1.0, 0.0, 1.0)
    env.close()


def test_reset_stack_repeats_the_first_frame():
    env = make_env(env_cfg("pong"), seed=0)
    obs, _ = env.reset(seed=0)
    assert all((obs[i] == obs[-1]).all() for i in range(4))
    env.close()


def test_rewards_are_clipped_but_reported_score_is_real():
    """Breakout bricks in the upper rows score 4-7 points; training sees +1, the report the real score."""
    env = make_env(env_cfg("breakout"), seed=3)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    clipped_total, reported = 0.0, None
    for _ in range(20_000):
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(4)))
        assert reward in (-1.0, 0.0, 1.0)
        clipped_total += reward
        stats = real_episode_stats(info)
        if stats is not None:
            reported = stats[0]
            break
        if terminated or truncated:
            env.reset()
    assert reported is not None, "a random Breakout game should end within 20k steps"
    assert reported >= clipped_total  # brick values are >= 1
    env.close()


def test_life_loss_ends_training_episode_but_not_the_game():
    env = make_env(env_cfg("breakout"), seed=1)
    env.reset(seed=1)
    life_env = env
    while not isinstance(life_env, EpisodicLifeEnv):
        life_env = life_env.env
    rng = np.random.default_rng(0)
    lives_before = life_env.unwrapped.ale.lives()
    for _ in range(5_000):
        _, _, terminated, truncated, info = env.step(int(rng.integers(4)))
        if terminated:
            break
    assert terminated
    assert real_episode_stats(info) is None, "losing one life is not the end of the game"
    assert life_env.unwrapped.ale.lives() == lives_before - 1
    env.reset()
    assert not life_env.game_over and life_env.unwrapped.ale.lives() == lives_before - 1


def test_clip_reward_wrapper_signs():
    wrapper = ClipRewardEnv(gym.make("CartPole-v1"))
    assert [wrapper.reward(r) for r in (-7.0, 0.0, 0.3, 12.0)] == [-1.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("name", ["cartpole", "frozenlake"])
def test_flat_envs_pass_the_gymnasium_checker(name):
    env = make_env(env_cfg(name), seed=0)
    check_env(env, skip_render_check=True)  # our wrappers included
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.ndim == 1
    if name == "frozenlake":
        assert obs.shape == (64,) and obs.sum() == 1.0


def test_unknown_env_id_fails_with_hint():
    with pytest.raises(ValueError, match=r"env.id='PongNoFrameskip-v9'.*Did you mean.*PongNoFrameskip-v4"):
        check_env_id("PongNoFrameskip-v9")
    with pytest.raises(ValueError, match="List the valid ids"):
        check_env_id("NoSuchGame-v0")


def test_generic_atari_config_runs_any_game():
    cfg = compose_config(["env=atari", "env.id=SeaquestNoFrameskip-v4"]).env
    env = make_env(cfg, seed=0)
    assert env.observation_space.shape == (4, 84, 84)
    assert OmegaConf.to_container(cfg, resolve=True)["name"] == "SeaquestNoFrameskip-v4"
    env.close()


class StillScreen(gym.Env):
    """An ALE-shaped RGB screen that never changes (for the frame processing alone)."""

    def __init__(self, screen):
        self.screen = screen
        self.observation_space = gym.spaces.Box(0, 255, screen.shape, dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        return self.screen, {}

    def step(self, action):
        return self.screen, 0.0, False, False, {}


def test_original_frame_is_the_original_formula_and_crops_the_score_bar():
    from emdqn.envs.make import OriginalFrame

    screen = np.zeros((210, 160, 3), dtype=np.uint8)
    screen[:, :] = (100, 50, 200)  # gray 0.299*100 + 0.587*50 + 0.114*200 = 82.05 -> 82 (truncated)
    frame = OriginalFrame(StillScreen(screen)).observation(screen)
    assert frame.shape == (84, 84) and frame.dtype == np.uint8 and (frame == 82).all()
    scored = screen.copy()
    scored[:30] = 255  # the score bar: rows above 18/110 of the screen are cut away
    assert (OriginalFrame(StillScreen(scored)).observation(scored) == frame).all()
    moved = screen.copy()
    moved[100:104, 40:44] = 255  # the play field stays
    assert (OriginalFrame(StillScreen(moved)).observation(moved) != frame).any()


def test_pong_frames_default_to_the_original_crop_and_resize_is_an_option():
    original = make_env(env_cfg("pong"), seed=0)
    resized = make_env(env_cfg("pong", frame="resize"), seed=0)
    a, _ = original.reset(seed=0)
    b, _ = resized.reset(seed=0)
    assert a.shape == b.shape == (4, 84, 84) and not (a == b).all()
    original.close()
    resized.close()


def test_the_episode_frame_cap_reaches_ale():
    env = make_env(env_cfg("pong", max_episode_frames=400, noop_max=0, fire_reset=False), seed=0)
    assert env.unwrapped.ale.getInt("max_num_frames_per_episode") == 400
    env.reset(seed=0)
    for step in range(1, 200):
        _, _, terminated, truncated, _ = env.step(0)
        if terminated or truncated:
            break
    assert truncated and not terminated and step == 100  # 400 frames / frame skip 4
    env.close()


class ActionLog(gym.Wrapper):
    """Records every action the emulator receives, one per frame."""

    def __init__(self, env):
        super().__init__(env)
        self.actions = []
        self.lives = []

    def step(self, action):
        self.actions.append(int(action))
        result = self.env.step(action)
        self.lives.append(self.env.unwrapped.ale.lives())
        return result


def test_a_lost_life_is_followed_by_random_noops_and_fire_as_in_the_original():
    recorder = {}

    def record(env):
        recorder["log"] = ActionLog(env)
        return recorder["log"]

    env = make_env(env_cfg("breakout"), seed=1, raw_wrapper=record)
    log = recorder["log"]
    env.reset(seed=1)
    noop_runs = []
    while len(noop_runs) < 4:
        _, _, terminated, truncated, _ = env.step(3)  # LEFT, never FIRE or NOOP: the noops are the wrappers'
        if terminated or truncated:
            start = len(log.actions)
            env.reset()
            after = log.actions[start:]
            noops = next(index for index, action in enumerate(after) if action != 0)
            assert after[noops:noops + 4] == [1, 1, 1, 1]  # then FIRE for one agent step (4 frames)
            noop_runs.append(noops)
    # One no-op frame to continue from the lost life, then 1-30 random no-op frames.
    assert all(2 <= count <= 31 for count in noop_runs) and len(set(noop_runs)) > 1
    env.close()


def test_game_statistics_report_the_real_score_of_a_full_game_across_lives():
    env = make_env(env_cfg("breakout"), seed=0)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    lives_lost, clipped = 0, 0.0
    while True:
        _, reward, terminated, truncated, info = env.step(int(rng.integers(4)))
        clipped += reward
        if "episode" in info:
            break
        if terminated:
            lives_lost += 1
            env.reset()
    assert lives_lost == 4  # Breakout's five lives: four training episodes end before the game
    assert info["episode"]["r"] >= clipped and info["episode"]["l"] > 0
    env.close()


def test_every_listed_flat_env_trains_and_an_unlisted_one_is_refused_in_one_line(tmp_path):
    """python -m emdqn.envs lists only what trains: each entry runs a few steps of training."""
    import math

    from emdqn.config.checks import ConfigError, validate
    from emdqn.envs.make import available_envs
    from emdqn.run.train import train
    from tests.conftest import compose_config

    listed = available_envs()["classic control and toy text (model=mlp)"]
    assert "Pendulum-v1" not in listed and "Blackjack-v1" not in listed and "CartPole-v1" in listed
    for env_id in listed:
        cfg = compose_config(["env=cartpole", "model=mlp", f"env.id={env_id}", "agent.total_steps=200",
                              "agent.learning_starts=64", "buffer.capacity=500", "eval.episodes=1",
                              "eval.every_steps=0", "logger=csv", "checkpoint.save_replay=false",
                              "trainer.progress_every_seconds=60"])
        result = train(cfg, run_dir=tmp_path / env_id)
        assert math.isfinite(result), env_id
        assert cfg.env.name in ("cartpole", "acrobot", "mountaincar", "frozenlake", "frozenlake8x8", "taxi",
                                "cliffwalking", "cliffwalkingslippery"), cfg.env.name
    for env_id, words in (("Pendulum-v1", "DQN needs a finite set of actions"),
                          ("Blackjack-v1", "model=mlp takes a flat vector or a Discrete state")):
        with pytest.raises(ConfigError) as error:
            validate(compose_config(["env=cartpole", "model=mlp", f"env.id={env_id}"]))
        assert str(error.value).startswith(f"env.id='{env_id}' is not allowed") and words in str(error.value)
