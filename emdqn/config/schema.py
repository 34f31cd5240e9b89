"""The config's types: one schema per config group, registered in Hydra's ConfigStore.

Each YAML option of a group starts from its schema (``defaults: [/emdqn_<group>_schema@_here_]``),
so Hydra refuses, while composing, a key that does not exist and a value of the wrong type
(``agent.batch_size=abc``) before any code runs. The values and their comments stay in the
YAML files; the ranges and the rules between keys are checked by :func:`emdqn.config.checks.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, FloatNode, OmegaConf, open_dict


@dataclass
class ExplorationSchema:
    schedule: List[Any] = MISSING  # [[env_step, epsilon], ...]


@dataclass
class AgentSchema:
    gamma: float = MISSING
    lr: float = MISSING
    lr_schedule: Optional[List[Any]] = None  # [[env_step, factor], ...]
    adam_eps: float = MISSING
    batch_size: int = MISSING
    train_freq: int = MISSING
    n_step: int = MISSING
    learning_starts: int = MISSING
    target_update: int = MISSING
    total_steps: int = MISSING
    grad_clip_norm: Optional[float] = MISSING
    double_q: bool = MISSING
    loss: str = MISSING
    exploration: ExplorationSchema = field(default_factory=ExplorationSchema)


@dataclass
class BufferSchema:
    capacity: int = MISSING


@dataclass
class MemorySchema:
    """Every key of the memory group but ``lambda``, a Python keyword (see :func:`memory_schema`)."""

    name: str = MISSING
    enabled: bool = MISSING
    alpha: float = MISSING
    beta: Optional[float] = MISSING
    key_dim: int = MISSING
    capacity: int = MISSING
    match: str = MISSING
    k: int = MISSING
    seed: int = MISSING
    tolerance: float = MISSING
    average: str = MISSING
    hit_rate_window: int = MISSING


def memory_schema() -> DictConfig:
    """MemorySchema with the typed key ``lambda``, which no dataclass field can be named."""
    schema = OmegaConf.structured(MemorySchema)
    with open_dict(schema):
        schema["lambda"] = FloatNode(None, is_optional=True)
    return schema


@dataclass
class NatureCNNSchema:
    name: str = MISSING
    padding: str = MISSING
    hidden: int = MISSING
    dueling: bool = MISSING
    input_scale: float = MISSING


@dataclass
class MinAtarCNNSchema:
    name: str = MISSING
    filters: int = MISSING
    hidden: int = MISSING
    dueling: bool = MISSING


@dataclass
class MLPSchema:
    name: str = MISSING
    hidden_sizes: List[int] = MISSING
    dueling: bool = MISSING
    input_scale: float = MISSING


@dataclass
class FlatEnvSchema:
    """Classic-control and toy-text envs: a gymnasium id and its keyword arguments."""

    name: str = MISSING
    kind: str = MISSING
    id: str = MISSING
    num_envs: int = MISSING
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class AtariEnvSchema(FlatEnvSchema):
    frame_skip: int = MISSING
    noop_max: int = MISSING
    episodic_life: bool = MISSING
    fire_reset: bool = MISSING
    frame: str = MISSING
    screen_size: int = MISSING
    frame_stack: int = MISSING
    clip_rewards: bool = MISSING
    max_episode_frames: Optional[int] = MISSING


@dataclass
class MinAtarEnvSchema(FlatEnvSchema):
    game: str = MISSING
    action_set: str = MISSING
    max_episode_steps: Optional[int] = MISSING


@dataclass
class TrainerSchema:
    accelerator: str = MISSING
    devices: Any = MISSING  # an int, a list of device ids or "auto", as Lightning takes them
    precision: str = MISSING
    threads: Optional[int] = MISSING
    log_every_steps: int = MISSING
    progress_every_seconds: float = MISSING
    compile: bool = MISSING
    channels_last: bool = MISSING
    onednn_linear: bool = MISSING


@dataclass
class WandbSchema:
    enabled: bool = MISSING
    project: str = MISSING
    entity: Optional[str] = MISSING
    group: Optional[str] = MISSING
    tags: List[str] = MISSING
    mode: Optional[str] = MISSING


@dataclass
class LoggerSchema:
    csv: bool = MISSING
    wandb: WandbSchema = field(default_factory=WandbSchema)


@dataclass
class EvalSchema:
    episodes: int = MISSING
    every_steps: int = MISSING
    epsilon: float = MISSING
    stop_at_return: Optional[float] = MISSING
    keep_best: bool = MISSING
    video: bool = MISSING


@dataclass
class CheckpointSchema:
    every_steps: int = MISSING
    save_replay: bool = MISSING


@dataclass
class RunSchema:
    """The entry config: the groups (typed by their own schemas) and the run's own keys."""

    env: Any = MISSING
    model: Any = MISSING
    agent: Any = MISSING
    buffer: Any = MISSING
    memory: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    seed: int = MISSING
    name: Optional[str] = MISSING
    resume: Optional[str] = MISSING
    allow_config_change: bool = MISSING
    eval: EvalSchema = field(default_factory=EvalSchema)
    checkpoint: CheckpointSchema = field(default_factory=CheckpointSchema)


# Stored outside any group, so `--help` and Hydra's "available options" list only the YAML options.
SCHEMAS = {
    "emdqn_run_schema": RunSchema,
    "emdqn_agent_schema": AgentSchema,
    "emdqn_buffer_schema": BufferSchema,
    "emdqn_memory_schema": memory_schema,
    "emdqn_nature_cnn_schema": NatureCNNSchema,
    "emdqn_minatar_cnn_schema": MinAtarCNNSchema,
    "emdqn_mlp_schema": MLPSchema,
    "emdqn_flat_env_schema": FlatEnvSchema,
    "emdqn_atari_env_schema": AtariEnvSchema,
    "emdqn_minatar_env_schema": MinAtarEnvSchema,
    "emdqn_trainer_schema": TrainerSchema,
    "emdqn_logger_schema": LoggerSchema,
}


def schema_keys(schema: type) -> list[str]:
    """The keys a schema allows, for messages."""
    names = [schema_field.name for schema_field in fields(schema)]
    return [*names, "lambda"] if schema is MemorySchema else names


def not_a_config_key(full_key: str, schema: type) -> str:
    """The one line for a key that ``schema`` (the type of the key's parent) does not have."""
    where = f"the keys of {full_key.rsplit('.', 1)[0]}" if "." in full_key else "the top-level keys"
    return f"{full_key} is not a config key; {where}: {', '.join(schema_keys(schema))}"


def unknown_keys(cfg: DictConfig, path: str = "") -> list[str]:
    """Keys of ``cfg`` that its schemas do not have, as one line each. Hydra refuses them in
    an override but lets an explicit append (``+agent.foo=1``) through, and nothing reads them."""
    schema = OmegaConf.get_type(cfg)
    allowed = set(schema_keys(schema)) if is_dataclass(schema) else None
    lines = []
    for key in cfg.keys():
        full_key = f"{path}.{key}" if path else str(key)
        if allowed is not None and key not in allowed:
            lines.append(not_a_config_key(full_key, schema))
            continue
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
            lines += unknown_keys(node, full_key)
    return lines


def register_schemas() -> None:
    """Put the schemas into Hydra's ConfigStore (needed before any config is composed)."""
    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(name=name, node=schema() if schema is memory_schema else schema)
