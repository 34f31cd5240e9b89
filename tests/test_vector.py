"""env.num_envs > 1: ale-py's vector env behind our contract, env-step counting, resume."""

import numpy as np
import pytest
import torch

from emdqn.run.checkpoint import load_checkpoint, restore, save_checkpoint, saved_replay
from emdqn.config.checks import ConfigError, validate
from emdqn.agent.collector import Collector, greedy_actions
from emdqn.agent.learner import Learner
from emdqn.envs.vector import AleVectorEnvs, SerialEnvs, make_envs
from tests.conftest import compose_config, optimizer_steps, run_train


def test_ale_vector_env_keeps_our_stacking_clipping_and_episodic_life():
    envs = make_envs(compose_config(["env=breakout", "env.num_envs=2"]).env, seed=0)
    assert isinstance(envs, AleVectorEnvs) and envs.observation_shape == (4, 84, 84)
    envs.reset()
    assert all((stack == stack[0]).all() for stack in envs.observations), "a new episode repeats its first frame"
    rng = np.random.default_rng(0)
    ends_in_game = np.zeros(2, dtype=int)
    clipped_in_game = np.zeros(2)
    games = []
    for _ in range(3000):
        before = envs.observations.copy()
        step = envs.step(rng.integers(envs.num_actions, size=2))
        assert set(np.unique(step.rewards)) <= {-1.0, 0.0, 1.0}
        clipped_in_game += step.rewards
        for index in range(2):
            np.testing.assert_array_equal(step.next_obs[index, :-1], before[index, 1:])
            if step.terminated[index] or step.truncated[index]:
                ends_in_game[index] += 1
                stack = envs.observations[index]
                assert (stack == stack[0]).all()
            else:
                np.testing.assert_array_equal(envs.observations[index], step.next_obs[index])
        for index, real_return, length in step.finished_games:
            games.append((ends_in_game[index], real_return, clipped_in_game[index], length))
            ends_in_game[index], clipped_in_game[index] = 0, 0
        if len(games) >= 2:
            break
    assert len(games) >= 2, "random Breakout play ends games within 3000 steps"
    for training_episodes, real_return, clipped_return, length in games:
        assert training_episodes == 5, "each of Breakout's 5 lives ends a training episode; the game ends once"
        assert real_return >= clipped_return >= 0 and length > 0  # the reported score is not clipped
    envs.close()


def test_one_env_and_flat_games_use_our_own_wrappers():
    assert isinstance(make_envs(compose_config(["env=pong"]).env, seed=0), SerialEnvs)
    envs = make_envs(compose_config(["env=cartpole", "env.num_envs=3"]).env, seed=0)
    assert isinstance(envs, SerialEnvs) and envs.num_envs == 3
    envs.reset()
    assert envs.observations.shape == (3, 4)


@pytest.mark.parametrize("overrides, key", [
    (["env=pong", "env.num_envs=600", "buffer.capacity=1000"], "env.num_envs=600"),
    (["env=pong", "env.num_envs=2", "+env.kwargs.mode=1"], "env.kwargs=['mode']"),
])
def test_vector_settings_are_checked(overrides, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        validate(compose_config(overrides))


def test_pong_with_four_envs_trains_end_to_end_and_counts_env_steps(tmp_path):
    run_dir = tmp_path / "pong4"
    run_train(["env=pong", "env.num_envs=4", "agent.total_steps=400", "agent.learning_starts=200",
               "buffer.capacity=1000", "memory.capacity=1000", "trainer.log_every_steps=100", "eval.episodes=0",
               "logger=csv", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    state = load_checkpoint(run_dir)
    assert state["env_steps"] == 400
    # one update per 4 env steps from step 200 to 400, as with one env
    assert optimizer_steps(state) == len(range(200, 401, 4))
    replay = saved_replay(state)
    stored = sum(int(replay[f"env{index}_has_transition"].sum()) for index in range(4))
    assert stored == 400
    assert state["collector"]["memory"] is not None


@pytest.mark.parametrize("num_envs", [1, 3, 8])
def test_updates_follow_env_steps_whatever_the_number_of_envs(tmp_path, num_envs):
    run_dir = tmp_path / f"cartpole{num_envs}"
    run_train(["env=cartpole", "model=mlp", f"env.num_envs={num_envs}", "agent.total_steps=480",
               "agent.learning_starts=100", "agent.train_freq=4", "buffer.capacity=1000", "eval.episodes=0",
               "logger=csv", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    state = load_checkpoint(run_dir)
    assert state["env_steps"] == 480
    assert optimizer_steps(state) == len(range(100, 481, 4))


def test_resume_with_ale_vector_env_starts_new_games_and_keeps_counting(tmp_path):
    cfg = compose_config(["env=pong", "env.num_envs=2", "buffer.capacity=400", "memory.capacity=400",
                          "agent.learning_starts=32"])
    collector = Collector.from_config(cfg)
    learner = Learner.from_config(cfg, collector.envs.observation_shape, collector.envs.num_actions)
    collector.set_policy(learner.q_network)
    for _ in range(30):
        collector.play_step()
    save_checkpoint(tmp_path, learner, collector)
    collector.envs.close()

    resumed = Collector.from_config(cfg)
    resumed_learner = Learner.from_config(cfg, resumed.envs.observation_shape, resumed.envs.num_actions)
    resumed.set_policy(resumed_learner.q_network)
    restore(load_checkpoint(tmp_path), resumed_learner, resumed)
    assert resumed.env_steps == 60 and resumed.envs.observations is None
    assert all(stream.current == -1 for stream in resumed.replay.streams), "the interrupted episodes are closed"
    # Cut off by the restart, the interrupted episodes are not written to the memory.
    assert resumed.memory_feed.size() == 0 and not any(resumed.memory_feed.episode_keys)
    stored = resumed.replay.num_transitions
    resumed.play_step()
    assert resumed.env_steps == 62 and resumed.replay.num_transitions == stored + 2
    for stream, stack in zip(resumed.replay.streams, resumed.envs.observations):
        assert stream.episode_pos[stream.current] == 1  # a new episode began in each env
    resumed.envs.close()
    torch.testing.assert_close(resumed_learner.q_network.state_dict(), learner.q_network.state_dict())


def test_a_step_started_early_plays_and_stores_the_same_as_a_step_in_the_loop(tmp_path):
    """ale-py emulates the games while Lightning works between two gradient steps; the data
    must not change, and a checkpoint taken meanwhile must not contain half a step."""
    cfg = compose_config(["env=pong", "env.num_envs=2", "buffer.capacity=400", "memory.capacity=400",
                          "agent.exploration.schedule=[[0,0.5]]"])
    in_loop, early = Collector.from_config(cfg), Collector.from_config(cfg)
    learner = Learner.from_config(cfg, in_loop.envs.observation_shape, in_loop.envs.num_actions)
    in_loop.set_policy(learner.q_network)
    early.set_policy(learner.q_network)
    for _ in range(40):
        in_loop.play_step()
        early.start_next_step_early()
        assert early.step_in_flight is not None
        early.play_step()
    early.start_next_step_early()  # in flight while the checkpoint is taken
    data_state = early.state_dict()
    save_checkpoint(tmp_path, learner, early)
    for name, array in in_loop.replay.state_dict()["arrays"].items():
        np.testing.assert_array_equal(early.replay.state_dict()["arrays"][name], array, err_msg=name)
    assert early.env_steps == in_loop.env_steps == 80
    assert early.memory_feed.episode_rewards == in_loop.memory_feed.episode_rewards
    assert data_state["rng"] == in_loop.rng.bit_generator.state, "the checkpoint holds the RNG before that step"
    assert load_checkpoint(tmp_path)["env_steps"] == 80
    early.play_step()  # finishes the step in flight instead of starting one
    assert early.env_steps == 82 and early.step_in_flight is None
    for collector in (in_loop, early):
        collector.envs.close()


def test_serial_envs_never_start_a_step_early():
    cfg = compose_config(["env=cartpole", "model=mlp", "env.num_envs=2"])
    collector = Collector.from_config(cfg)
    learner = Learner.from_config(cfg, collector.envs.observation_shape, collector.envs.num_actions)
    collector.set_policy(learner.q_network)
    collector.start_next_step_early()
    assert collector.step_in_flight is None  # they would step in this thread: nothing to overlap


def test_acting_stays_fp32_inside_the_gradient_steps_autocast():
    """trainer.precision=bf16-mixed: the env steps are played inside training_step, under autocast."""
    cfg = compose_config(["env=cartpole", "model=mlp"])
    collector = Collector.from_config(cfg)
    learner = Learner.from_config(cfg, collector.envs.observation_shape, collector.envs.num_actions)
    autocast_seen, output_dtypes = [], []

    def record(layer, inputs, output) -> None:
        autocast_seen.append(torch.is_autocast_enabled("cpu"))
        output_dtypes.append(output.dtype)

    learner.q_network.head.advantage[0].register_forward_hook(record)
    learner.q_network.register_forward_hook(record)
    collector.envs.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actions = greedy_actions(learner.q_network, collector.envs.observations)
    assert actions.shape == (1,)
    assert autocast_seen == [False, False]
    assert output_dtypes == [torch.float32, torch.float32]  # the hidden layer too, not only the output
    collector.envs.close()


def test_several_minatar_envs_store_what_each_env_played_alone():
    """env.num_envs=3 plays three games in one loop: given the same actions, each env's replay
    and the memory hold exactly what three one-env runs with those seeds hold."""
    overrides = ["experiment=minatar", "env.game=breakout", "buffer.capacity=3000", "memory.capacity=10000"]
    steps, num_envs = 400, 3
    actions = np.random.default_rng(1).integers(3, size=(steps, num_envs))

    def play(collector, columns):
        collector.set_policy(None)  # never asked: the actions are given
        collector._choose_actions = lambda obs: actions[collector.env_steps // collector.num_envs, columns]
        for _ in range(steps):
            collector.play_step()
        return collector

    together = play(Collector.from_config(compose_config(overrides + [f"env.num_envs={num_envs}", "seed=5"])),
                    slice(None))
    alone = [play(Collector.from_config(compose_config(overrides + [f"seed={5 + index}"])), slice(index, index + 1))
             for index in range(num_envs)]
    assert together.env_steps == steps * num_envs
    for index, single in enumerate(alone):
        stream, own = together.replay.streams[index].state_dict(), single.replay.streams[0].state_dict()
        for name, array in own["arrays"].items():
            np.testing.assert_array_equal(stream["arrays"][name], array, err_msg=f"env {index}: {name}")
        assert stream["cursor"] == own["cursor"] and stream["num_transitions"] == own["num_transitions"]

    def entries(feeds):
        table = {}
        for feed in feeds:
            state = feed.memory.state_dict()
            for key, action, value in zip(map(tuple, state["keys"]), state["actions"], state["values"]):
                table[key, action] = max(value, table.get((key, action), -np.inf))
        return table

    merged = entries(single.memory_feed for single in alone)
    assert len(merged) > 100, "finished episodes were written"
    assert entries([together.memory_feed]) == merged
    for collector in (together, *alone):
        collector.envs.close()


def test_a_batch_from_several_envs_holds_only_transitions_they_stored():
    cfg = compose_config(["experiment=minatar", "env.game=breakout", "env.num_envs=4", "buffer.capacity=2000",
                          "memory=none", "agent.n_step=3", "agent.exploration.schedule=[[0,1.0]]"])
    collector = Collector.from_config(cfg)
    for _ in range(300):
        collector.play_step()
    stored, owners = {}, {}
    for index, stream in enumerate(collector.replay.streams):
        for slot in np.flatnonzero(stream.has_transition):
            obs = stream.stacks(np.array([slot]))[0].tobytes()
            stored.setdefault(obs, []).append(int(stream.actions[slot]))
            owners.setdefault(obs, set()).add(index)
    sample = collector.replay.sample(256, n_step=3, gamma=0.9)
    assert sample.obs.shape == (256, *collector.envs.observation_shape)
    for obs, action in zip(sample.obs, sample.actions):
        assert action in stored[obs.tobytes()]
    assert set().union(*(owners[obs.tobytes()] for obs in sample.obs)) == {0, 1, 2, 3}, "every env is drawn from"
    assert np.isin(np.round(sample.discounts.astype(np.float64), 6), [0.9, 0.81, 0.729]).all()
    collector.envs.close()
