import pytest
from omegaconf import OmegaConf

from emdqn.config.checks import ConfigError, resolve_memory_weights, validate
from tests.conftest import compose_config


def test_defaults_reproduce_the_original_settings():
    cfg = compose_config()
    validate(cfg)
    assert cfg.env.id == "PongNoFrameskip-v4"
    assert cfg.memory.name == "kdtree" and cfg.memory.key_dim == 4 and cfg.memory.capacity == 5_000_000
    assert cfg.memory.match == "exact"
    agent = cfg.agent
    assert (agent.gamma, agent.lr, agent.adam_eps, agent.batch_size) == (0.99, 1e-4, 1e-4, 32)
    assert (agent.train_freq, agent.learning_starts, agent.target_update) == (4, 50_000, 40_000)
    assert agent.grad_clip_norm == 10.0 and agent.loss == "huber" and not agent.double_q
    assert OmegaConf.to_container(agent.exploration.schedule) == [[0, 1.0], [200_000, 0.1], [2_000_000, 0.01]]
    assert cfg.buffer.capacity == 1_000_000 and cfg.model.padding == "same"
    assert resolve_memory_weights(cfg.memory) == (1.0, 0.1, 0.1)


def test_short_budgets_learn_from_a_tenth_of_the_budget():
    cfg = compose_config(["env=pong", "memory=none", "agent.total_steps=20000"])
    validate(cfg)
    assert cfg.agent.learning_starts == 2_000
    assert compose_config(["agent.total_steps=100"]).agent.learning_starts == 32  # at least one batch
    assert compose_config(["agent.total_steps=100", "agent.learning_starts=50"]).agent.learning_starts == 50


def test_users_words_compose():
    cfg = compose_config(["env=pong", "memory.lambda=0.1"])
    assert cfg.memory["lambda"] == 0.1
    cfg = compose_config(["env=pong", "memory=none"])
    assert resolve_memory_weights(cfg.memory) == (1.0, 0.0, 0.0)
    cfg = compose_config(["env=cartpole", "model=mlp"])
    validate(cfg)
    cfg = compose_config(["experiment=cartpole"])
    assert cfg.env.id == "CartPole-v1" and cfg.model.name == "mlp" and cfg.agent.total_steps == 100_000


@pytest.mark.parametrize("memory, expected", [
    ({"lambda": 0.5}, (1.0, 0.5, 0.5)),
    ({"lambda": 0.5, "alpha": 2.0}, (2.0, 1.0, 0.5)),
    ({"beta": 0.3}, (1.0, 0.3, 0.3)),
    ({"lambda": 0.2, "beta": 0.2}, (1.0, 0.2, 0.2)),
    ({"lambda": 0}, (1.0, 0.0, 0.0)),
    ({}, (1.0, 0.1, 0.1)),
])
def test_lambda_beta_alpha_rule(memory, expected):
    cfg = compose_config([f"memory.{k}={v}" for k, v in memory.items()])
    assert resolve_memory_weights(cfg.memory) == pytest.approx(expected)


def test_contradictory_lambda_and_beta_is_an_error():
    cfg = compose_config(["memory.lambda=0.1", "memory.beta=0.5"])
    with pytest.raises(ConfigError, match=r"memory.lambda=0.1 and memory.beta=0.5 contradict"):
        resolve_memory_weights(cfg.memory)


BAD_CONFIGS = [
    ("memory.lambda=-0.1", "memory.lambda=-0.1"),
    ("memory.alpha=-1", "memory.alpha=-1"),
    ("memory.beta=-2", "memory.beta=-2"),
    ("memory.key_dim=0", "memory.key_dim=0"),
    ("memory.capacity=0", "memory.capacity=0"),
    ("buffer.capacity=1", "buffer.capacity=1"),
    ("agent.batch_size=2000000", "agent.batch_size=2000000 .*buffer.capacity"),
    ("agent.learning_starts=10", "agent.learning_starts=10 .*agent.batch_size"),
    ("agent.gamma=1.5", r"agent.gamma=1.5 .*\[0, 1\]"),
    ("agent.gamma=-0.1", r"agent.gamma=-0.1"),
    ("agent.train_freq=0", "agent.train_freq=0"),
    ("agent.learning_starts=5000 agent.total_steps=1000", "agent.total_steps=1000 .*agent.learning_starts"),
    ("agent.lr=0", "agent.lr=0"),
    ("agent.loss=l1", "agent.loss='l1'"),
    ("agent.grad_clip_norm=-1", "agent.grad_clip_norm=-1"),
    ("env.id=PongNoFrameskip-v9", "env.id='PongNoFrameskip-v9'.*Did you mean"),
    ("memory.match=fuzzy", "memory.match='fuzzy'"),
    ("memory.k=0", "memory.k=0"),
    ("memory.k=3", "memory.k=3 .*memory.match=knn"),
    ("memory.average=median", "memory.average='median'"),
    ("model.padding=full", "model.padding='full'"),
    ("trainer.threads=0", "trainer.threads=0"),
    ("trainer.precision=16-mixed", "trainer.precision='16-mixed'.*bf16-mixed"),
    ("trainer.precision=32", "trainer.precision='32'"),
    ("eval.episodes=-1", "eval.episodes=-1"),
    ("env.num_envs=0", "env.num_envs=0"),
]


@pytest.mark.parametrize("override, message", BAD_CONFIGS, ids=[o for o, _ in BAD_CONFIGS])
def test_bad_values_are_rejected_with_the_key_and_what_is_allowed(override, message):
    cfg = compose_config(override.split())
    with pytest.raises(ConfigError, match=message) as error:
        validate(cfg)
    assert "allowed" in str(error.value) or "must" in str(error.value) or "Did you mean" in str(error.value)


def test_knn_with_k_below_one_is_rejected():
    cfg = compose_config(["memory.match=knn", "memory.k=0"])
    with pytest.raises(ConfigError, match=r"memory.k=0 .*memory.match=knn"):
        validate(cfg)


def test_memory_none_with_lambda_is_rejected():
    cfg = compose_config(["memory=none", "memory.lambda=0.1"])
    with pytest.raises(ConfigError, match="memory=none trains plain DQN"):
        validate(cfg)


def test_cnn_on_flat_env_is_rejected():
    cfg = compose_config(["env=cartpole"])
    with pytest.raises(ConfigError, match="use model=mlp"):
        validate(cfg)


def test_bad_schedule_is_rejected():
    cfg = compose_config(["agent.exploration.schedule=[[0,1.0],[0,0.5]]"])
    with pytest.raises(ConfigError, match="agent.exploration.schedule"):
        validate(cfg)
    cfg = compose_config(["agent.exploration.schedule=[[0,1.5]]"])
    with pytest.raises(ConfigError, match=r"epsilon values in \[0, 1\]"):
        validate(cfg)


def test_every_validated_key_is_in_the_documented_table():
    """docs/configuration.md lists what each key allows; a newly validated key must join it."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    source = (root / "emdqn" / "config" / "checks.py").read_text()
    keys = set(re.findall(r'_fail\("([\w.]+)"', source)) | set(re.findall(r'_positive_int\(cfg, "([\w.]+)"', source))
    table = (root / "docs" / "configuration.md").read_text().split("## Rejected inputs", 1)[1]
    assert sorted(key for key in keys if f"`{key}`" not in table) == []


def test_lr_schedule_is_validated_and_scales_the_learning_rate():
    cfg = compose_config(["agent.lr_schedule=[[0,1.0],[0,0.5]]"])
    with pytest.raises(ConfigError, match="agent.lr_schedule"):
        validate(cfg)
    cfg = compose_config(["agent.lr_schedule=[[0,-1.0]]"])
    with pytest.raises(ConfigError, match="agent.lr_schedule.*>= 0"):
        validate(cfg)
    validate(compose_config(["agent.lr_schedule=[[0,1.0],[1000,0.0]]"]))


def test_keep_best_needs_periodic_evaluations_only_when_there_are_evaluations():
    with pytest.raises(ConfigError, match="eval.keep_best.*eval.every_steps > 0"):
        validate(compose_config(["eval.keep_best=true", "eval.every_steps=0"]))
    validate(compose_config(["experiment=cartpole", "eval.episodes=0"]))  # nothing evaluated: no effect, no error


def test_every_option_of_every_group_composes_against_its_schema():
    """Each YAML option starts from its group's schema, so its keys and types are checked."""
    from pathlib import Path

    conf = Path(__file__).resolve().parents[1] / "conf"
    for group in ("env", "model", "agent", "buffer", "memory", "trainer", "logger"):
        for option in sorted(path.stem for path in (conf / group).glob("*.yaml")):
            overrides = [f"{group}={option}"] + (["env.id=PongNoFrameskip-v4"] if option == "atari" else [])
            cfg = compose_config(overrides)
            assert OmegaConf.get_type(cfg[group]).__module__ == "emdqn.config.schema", f"{group}={option}"
    for experiment in ("minatar", "cartpole", "frozenlake"):
        validate(compose_config([f"experiment={experiment}"]))


def test_an_appended_key_that_no_schema_has_is_refused_in_one_line():
    from emdqn.config.checks import ConfigError

    for override, line in (("+agent.foo=1", "agent.foo is not a config key; the keys of agent: gamma, lr,"),
                           ("+logger.wandb.x=1", "logger.wandb.x is not a config key; the keys of logger.wandb:"),
                           ("+foo=1", "foo is not a config key; the top-level keys: env, model, agent,")):
        with pytest.raises(ConfigError) as error:
            validate(compose_config([override]))
        assert str(error.value).startswith(line)


@pytest.mark.parametrize("override, line", [
    ("agent.batch_size=abc", "agent.batch_size='abc' is not allowed: an integer"),
    ("memory.lambda=abc", "memory.lambda='abc' is not allowed: a number"),
    ("eval.keep_best=maybe", "eval.keep_best='maybe' is not allowed: true or false"),
    ("agent.batch_size=null", "agent.batch_size=None is not allowed: a value, not null"),
    ("agent.foo=1", "agent.foo is not a config key; the keys of agent: gamma, lr,"),
    ("memory.bar=1", "memory.bar is not a config key; the keys of memory: name,"),
    ("env=cartpole env.frame_stack=4", "env.frame_stack is not a config key; the keys of env: name, kind, id,"),
    ("env=pongg", "In 'config': Could not find 'env/pongg'. Available options in 'env': atari, breakout, cartpole,"),
])
def test_the_schemas_refuse_unknown_keys_and_wrong_types_in_one_line(override, line):
    from hydra.errors import HydraException

    from emdqn.run.cli import composition_error_line

    with pytest.raises(HydraException) as error:
        compose_config(override.split())
    message = composition_error_line(error.value)
    assert message.startswith(line) and "\n" not in message


BASES = ([], ["experiment=minatar"], ["experiment=cartpole"], ["experiment=frozenlake"])


def bad_values(key, node):
    """The bad values of a key's class, from its schema type."""
    from omegaconf import FloatNode, IntegerNode, ListConfig

    if isinstance(node, FloatNode):
        values = [float("nan"), float("inf"), float("-inf")]
        if key.rsplit(".", 1)[-1].endswith(("epsilon", "prob")):
            values += [2.0, -1.0]
        return values
    if isinstance(node, IntegerNode):
        return [-1]
    if isinstance(node, ListConfig) and node._metadata.element_type is int:
        return [[], [0], [-4]]
    return []


def test_every_key_of_every_group_refuses_the_bad_values_of_its_class_with_its_name():
    """Generated from the schemas: non-finite numbers, negative integers, empty or
    non-positive size lists and probabilities outside [0, 1], for every typed key of every
    group as composed by the presets, through validate (what train.py runs before building)."""
    from emdqn.config.checks import typed_leaves

    checked = set()
    for base in BASES:
        cfg = compose_config(base)
        for key, node, _ in list(typed_leaves(cfg)):
            for value in bad_values(key, node):
                broken = cfg.copy()
                OmegaConf.update(broken, key, value, merge=False)
                with pytest.raises(ConfigError) as error:
                    validate(broken)
                message = str(error.value)
                assert message.startswith(f"{key}=") and "\n" not in message, (key, value, message)
                checked.add(key)
    for key in ("agent.adam_eps", "agent.lr", "eval.epsilon", "model.input_scale", "memory.tolerance", "memory.seed",
                "seed", "model.hidden_sizes", "trainer.threads"):
        assert key in checked, key


@pytest.mark.parametrize("overrides, line", [
    (["agent.exploration.schedule=[[0,nan]]"], "agent.exploration.schedule=[[0, nan]] is not allowed"),
    (["agent.lr_schedule=[[0,inf]]"], "agent.lr_schedule=[[0, inf]] is not allowed"),
    (["trainer.accelerator=foo"], "trainer.accelerator='foo' is not allowed: auto, cpu, cuda, gpu, mps, tpu"),
    (["trainer.devices=0"], "trainer.devices=0 is not allowed"),
    (["model.hidden=0"], "model.hidden=0 is not allowed"),
    (["model.input_scale=0"], "model.input_scale=0.0 is not allowed: a number > 0"),
])
def test_schedules_lightning_arguments_and_sizes_are_refused_with_the_key(overrides, line):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(overrides))
    assert str(error.value).startswith(line)


@pytest.mark.parametrize("overrides, line", [
    (["agent.adam_eps=inf"], "error: agent.adam_eps=inf is not allowed: a finite number"),
    (["experiment=cartpole", "model.hidden_sizes=[]"], "error: model.hidden_sizes=[] is not allowed"),
    (["trainer.devices=0"], "error: trainer.devices=0 is not allowed"),
])
def test_bad_values_through_the_real_cli_are_one_line_exit_2_and_no_folder(tmp_path, overrides, line):
    from tests.conftest import run_train

    run_dir = tmp_path / "run"
    result = run_train([*overrides, f"hydra.run.dir={run_dir}"], cwd=tmp_path, check=False,
                       extra_env={"HYDRA_FULL_ERROR": "0"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(line)
    assert not run_dir.exists()
