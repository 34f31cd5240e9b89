"""Configuration checks and derived settings, run before any env or buffer is built.

Every rejected value raises :class:`ConfigError` with one message that names the key, the
value and what is allowed. ``lambda`` is a Python keyword: read it as ``cfg.memory["lambda"]``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterator, NamedTuple, Sequence

from omegaconf import DictConfig, FloatNode, IntegerNode, ListConfig, OmegaConf, open_dict

from emdqn.config.choices import (ATARI_FRAMES, ENV_KINDS, IMAGE_MODELS, LOSSES, MATCH_MODES, MEMORY_AVERAGES,
                           MINATAR_ACTION_SETS, MINATAR_GAMES, MODEL_NAMES, PADDINGS, PRECISIONS)
from emdqn.config.schema import unknown_keys

DEFAULT_LAMBDA = 0.1  # the paper's and the original code's memory weight


class ConfigError(ValueError):
    """A configuration value that is not allowed."""


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


class MemoryWeights(NamedTuple):
    """The loss weights, resolved once from ``memory.alpha``/``lambda``/``beta`` (immutable)."""

    alpha: float
    beta: float
    lam: float  # lambda = beta / alpha

    def __str__(self) -> str:
        return f"alpha={self.alpha:g} beta={self.beta:g} lambda={self.lam:g}"


def resolve_memory_weights(memory_cfg: Any) -> MemoryWeights:
    """(alpha, beta, lambda) of the loss alpha * TD + beta * memory term.

    Rule: beta = lambda * alpha. Give lambda or beta; giving both is allowed only when they
    agree. With neither, lambda = 0.1 (the paper's value). ``memory=none`` has beta = 0.
    """
    alpha = memory_cfg.get("alpha", 1.0)
    lam = memory_cfg.get("lambda")
    beta = memory_cfg.get("beta")
    for key, value in (("alpha", alpha), ("lambda", lam), ("beta", beta)):
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not math.isfinite(value) or value < 0):
            _fail(f"memory.{key}", value, "a finite number >= 0")
    if not memory_cfg.get("enabled", True):
        if (lam or 0) != 0 or (beta or 0) != 0:
            _fail("memory.lambda" if lam else "memory.beta", lam if lam else beta,
                  "memory=none trains plain DQN, so lambda and beta must be 0; use memory=kdtree for EMDQN")
        return MemoryWeights(float(alpha), 0.0, 0.0)
    if lam is None and beta is None:
        lam = DEFAULT_LAMBDA
    if beta is None:
        beta = lam * alpha
    elif lam is None:
        lam = beta / alpha if alpha > 0 else 0.0
    elif not math.isclose(beta, lam * alpha, rel_tol=1e-9, abs_tol=1e-12):
        raise ConfigError(
            f"memory.lambda={lam!r} and memory.beta={beta!r} contradict each other with memory.alpha={alpha!r}: "
            f"beta must equal lambda * alpha ({lam * alpha!r}). Set only one of lambda and beta.")
    if alpha == 0 and beta == 0:
        raise ConfigError("memory.alpha=0 and memory.beta=0 leave nothing to learn: at least one must be > 0")
    return MemoryWeights(float(alpha), float(beta), float(lam))


def apply_memory_weights(cfg: DictConfig) -> MemoryWeights:
    """Resolve λ, β and α once and write them into ``cfg`` (config.yaml and --cfg show the values used)."""
    weights = resolve_memory_weights(cfg.memory)
    with open_dict(cfg):
        cfg.memory["lambda"], cfg.memory.beta = weights.lam, weights.beta
    return weights


def register_resolvers() -> None:
    """``${emdqn_lambda:${memory}}``: the effective lambda, for folder and run names."""

    def effective_lambda(memory_cfg: Any) -> str:
        try:
            return f"{resolve_memory_weights(memory_cfg).lam:g}"
        except ConfigError:
            return "invalid"  # validate() reports it with the full message

    OmegaConf.register_new_resolver("emdqn_lambda", effective_lambda, replace=True)
    OmegaConf.register_new_resolver("emdqn_learning_starts", default_learning_starts, replace=True)

    def minatar_env_id(game: str, action_set: str) -> str:
        from emdqn.envs.make import minatar_id

        return minatar_id(game, action_set)

    OmegaConf.register_new_resolver("emdqn_minatar_id", minatar_env_id, replace=True)
    # Run folder names from env ids such as ALE/Tetris-v5: one folder, not a nested one.
    OmegaConf.register_new_resolver("emdqn_safe_name", lambda text: str(text).replace("/", "_"), replace=True)
    # A flat env's name from the id it plays (CartPole-v1: cartpole), so a run folder is named
    # after its game whichever env option it started from.
    OmegaConf.register_new_resolver("emdqn_env_name", lambda text: re.sub(r"-v\d+$", "", str(text)).lower()
                                    .replace("/", "_"), replace=True)


def default_learning_starts(total_steps: Any, batch_size: Any) -> Any:
    """The original's 50,000 env steps, or a tenth of a shorter budget (at least one batch).

    ``python train.py agent.total_steps=20000`` should learn, not only collect data; an
    explicit ``agent.learning_starts`` above the budget is still an error.
    """
    if not isinstance(total_steps, int) or not isinstance(batch_size, int):
        return 50_000  # validate() reports the bad budget or batch size itself
    return max(min(50_000, total_steps // 10), batch_size)


def _positive_int(cfg: DictConfig, key: str, minimum: int = 1) -> int:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(key, value, f"an integer >= {minimum}")
    return value


def typed_leaves(cfg: DictConfig, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(key, node, value) of every leaf of a composed config, in order."""
    for key in cfg.keys():
        node = cfg._get_node(key)
        full_key = f"{path}.{key}" if path else str(key)
        if isinstance(node, DictConfig):
            if not node._is_missing() and not node._is_none():
                yield from typed_leaves(node, full_key)
        elif not node._is_missing():
            value = cfg[key]  # resolved: an interpolation gives its value
            yield full_key, node, OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value


PROBABILITY_KEYS = ("epsilon", "prob")  # a key whose name ends so is a probability


def _check_value_classes(cfg: DictConfig) -> None:
    """Rules that hold for every key of a type (from the schemas), whatever the key:
    numbers are finite, integers (counts, sizes, steps, seeds) are >= 0, lists of sizes are
    non-empty and positive, probabilities lie in [0, 1]."""
    for key, node, value in typed_leaves(cfg):
        if value is None:
            continue
        if isinstance(node, FloatNode):
            if not math.isfinite(value):
                _fail(key, value, "a finite number")
            if key.rsplit(".", 1)[-1].endswith(PROBABILITY_KEYS) and not 0.0 <= value <= 1.0:
                _fail(key, value, "a probability in [0, 1]")
        elif isinstance(node, IntegerNode) and value < 0:
            _fail(key, value, "an integer >= 0")
        elif isinstance(node, ListConfig) and node._metadata.element_type is int:
            if not value or any(size < 1 for size in value):
                _fail(key, value, "a non-empty list of integers >= 1")


COMMON_ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")  # names every Lightning 2.x accepts


def _check_lightning_arguments(trainer: DictConfig) -> None:
    """What Lightning's Trainer would refuse only after the envs and buffers are built."""
    if trainer.accelerator not in COMMON_ACCELERATORS:  # Lightning's registry (seconds to import) only for another name
        from pytorch_lightning.accelerators import AcceleratorRegistry

        allowed = sorted({"auto", "cpu", "gpu", *AcceleratorRegistry.available_accelerators()})
        if trainer.accelerator not in allowed:
            _fail("trainer.accelerator", trainer.accelerator, ", ".join(allowed))
    devices = OmegaConf.to_container(trainer.devices) if OmegaConf.is_config(trainer.devices) else trainer.devices
    if devices == "auto" or devices == -1:
        return
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        return
    if isinstance(devices, list) and devices and all(isinstance(d, int) and d >= 0 for d in devices):
        return
    _fail("trainer.devices", devices, "a number of devices >= 1, a non-empty list of device indices, -1 (all) or auto")


def validate(cfg: DictConfig) -> None:
    """Check a composed config; raise ConfigError on the first invalid value."""
    for line in unknown_keys(cfg):
        raise ConfigError(line)
    _check_value_classes(cfg)
    _check_lightning_arguments(cfg.trainer)
    agent = cfg.agent
    gamma = agent.gamma
    if not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
        _fail("agent.gamma", gamma, "a number in [0, 1]")
    if not isinstance(agent.lr, (int, float)) or not agent.lr > 0:
        _fail("agent.lr", agent.lr, "a number > 0")
    if not isinstance(agent.adam_eps, (int, float)) or not agent.adam_eps > 0:
        _fail("agent.adam_eps", agent.adam_eps, "a number > 0")
    batch_size = _positive_int(cfg, "agent.batch_size")
    _positive_int(cfg, "agent.train_freq")
    _positive_int(cfg, "agent.n_step")
    learning_starts = _positive_int(cfg, "agent.learning_starts", 0)
    _positive_int(cfg, "agent.target_update")
    total_steps = _positive_int(cfg, "agent.total_steps")
    capacity = _positive_int(cfg, "buffer.capacity", 2)
    if batch_size > capacity:
        _fail("agent.batch_size", batch_size, f"at most buffer.capacity ({capacity})")
    if learning_starts < batch_size:
        _fail("agent.learning_starts", learning_starts, f"at least agent.batch_size ({batch_size})")
    if total_steps < learning_starts:
        _fail("agent.total_steps", total_steps, f"at least agent.learning_starts ({learning_starts}), "
              "or no gradient step would ever be taken")
    clip = agent.grad_clip_norm
    if clip is not None and (not isinstance(clip, (int, float)) or not clip > 0):
        _fail("agent.grad_clip_norm", clip, "a number > 0, or null for no clipping")
    if agent.loss not in LOSSES:
        _fail("agent.loss", agent.loss, " or ".join(LOSSES))
    _validate_schedule("agent.exploration.schedule", agent.exploration.schedule, "epsilon", 1.0)
    if agent.get("lr_schedule") is not None:
        _validate_schedule("agent.lr_schedule", agent.lr_schedule, "factor of agent.lr", None)

    memory = cfg.memory
    resolve_memory_weights(memory)
    _positive_int(cfg, "memory.key_dim")
    _positive_int(cfg, "memory.capacity")
    if memory.match not in MATCH_MODES:
        _fail("memory.match", memory.match, " or ".join(MATCH_MODES))
    k = memory.k
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        _fail("memory.k", k, f"an integer >= 1 (memory.match={memory.match})")
    if memory.match == "exact" and k != 1:
        _fail("memory.k", k, "1 with memory.match=exact (exact matching takes the one equal key); use memory.match=knn")
    if memory.average not in MEMORY_AVERAGES:
        _fail("memory.average", memory.average, "batch (mean over the whole batch, original) or hits")
    if not isinstance(memory.tolerance, (int, float)) or memory.tolerance < 0:
        _fail("memory.tolerance", memory.tolerance, "a number >= 0")
    _positive_int(cfg, "memory.hit_rate_window")

    env = cfg.env
    if env.kind not in ENV_KINDS:
        _fail("env.kind", env.kind, ", ".join(ENV_KINDS))
    if env.kind == "minatar":
        if env.game not in MINATAR_GAMES:
            _fail("env.game", env.game, ", ".join(MINATAR_GAMES))
        if env.action_set not in MINATAR_ACTION_SETS:
            _fail("env.action_set", env.action_set, "full (6 actions, -v0) or minimal (-v1)")
    if OmegaConf.is_missing(env, "id"):
        _fail("env.id", "???", "a gymnasium id such as PongNoFrameskip-v4 (env=atari needs env.id=...)")
    from emdqn.envs.make import check_env_id

    try:
        check_env_id(env.id)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if env.kind in ("classic", "toy_text"):
        from emdqn.envs.make import untrainable_reason

        if (reason := untrainable_reason(env.id)) is not None:
            _fail("env.id", env.id, f"an env DQN can train; {reason} (python -m emdqn.envs lists those it can)")
    num_envs = _positive_int(cfg, "env.num_envs")
    if capacity // num_envs < 2:
        _fail("env.num_envs", num_envs, f"at most buffer.capacity / 2 ({capacity // 2}): each env keeps "
              "its own share of the replay buffer")
    if env.kind == "atari" and num_envs > 1:
        from emdqn.envs.vector import ALE_VECTOR_KWARGS, unsupported_vector_kwargs

        unsupported = unsupported_vector_kwargs(env)
        if unsupported:
            _fail("env.kwargs", unsupported, f"with env.num_envs > 1 (ale-py's vector env) only "
                  f"{', '.join(ALE_VECTOR_KWARGS)}; use env.num_envs=1 for the others")
    if env.kind == "atari":
        if env.get("frame", "resize") not in ATARI_FRAMES:
            _fail("env.frame", env.frame, "original (the original code's cropped 84x84 frame) or resize (84x84 "
                  "resize of the whole screen)")
        for key in ("frame_skip", "frame_stack", "screen_size"):
            _positive_int(cfg, f"env.{key}")
        _positive_int(cfg, "env.noop_max", 0)

    if cfg.model.name not in MODEL_NAMES:
        _fail("model.name", cfg.model.name, ", ".join(MODEL_NAMES))
    for size in ("hidden", "filters"):
        if size in cfg.model:
            _positive_int(cfg, f"model.{size}")
    scale = cfg.model.get("input_scale")
    if scale is not None and not scale > 0:
        _fail("model.input_scale", scale, "a number > 0")
    built_for = IMAGE_MODELS.get(cfg.model.name)
    if built_for is not None and env.kind != built_for:
        better = {"atari": "nature_cnn", "minatar": "minatar_cnn"}.get(env.kind, "mlp")
        _fail("model", cfg.model.name, f"{built_for} envs; env={env.name} is a {env.kind} env, use model={better}")
    if cfg.model.name == "nature_cnn" and cfg.model.padding not in PADDINGS:
        _fail("model.padding", cfg.model.padding, "same (original TF layout, 7744 features) or valid (3136)")

    _positive_int(cfg, "eval.episodes", 0)
    _positive_int(cfg, "eval.every_steps", 0)
    keep_best = cfg.eval.get("keep_best", False)
    if keep_best and cfg.eval.episodes and not cfg.eval.every_steps:
        _fail("eval.keep_best", keep_best, "true only with periodic evaluations (eval.every_steps > 0): the best "
              "network is chosen by them")
    _positive_int(cfg, "checkpoint.every_steps", 0)
    _positive_int(cfg, "trainer.log_every_steps")
    threads = cfg.trainer.threads
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        _fail("trainer.threads", threads, "an integer >= 1, or null for torch's default")
    if cfg.trainer.precision not in PRECISIONS:
        # 16-mixed is left out on purpose: its loss scaling would reach the per-tensor
        # gradient clipping with scaled gradients.
        _fail("trainer.precision", cfg.trainer.precision,
              "32-true (fp32, the default) or bf16-mixed (bf16 autocast of the gradient step, fp32 weights and "
              "Q-values: faster where the CPU or GPU has bf16 units, not bit-identical to fp32)")


def read_run_config(path: Any) -> DictConfig:
    """A run's saved ``config.yaml``; a truncated, garbled or foreign file is one line."""
    try:
        saved = OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: this is not a run folder") from None
    except Exception as error:  # YAML's own errors span several lines
        raise ConfigError(f"{path} is unreadable ({type(error).__name__}): the run's config cannot be read from it") \
            from None
    if not isinstance(saved, DictConfig) or not all(key in saved for key in ("env", "model", "agent")):
        raise ConfigError(f"{path} does not hold a run's config (no env, model and agent in it)")
    return saved


def budget_warnings(cfg: DictConfig, overrides: Sequence[str] = ()) -> list[str]:
    """Settings that cannot work at this budget (an Atari schedule on a short flat-env run).
    ``overrides``: the command line's, which say whether a preset (``experiment=...``) set the
    agent; without one, a non-Atari env runs with the Atari agent settings."""
    agent, total = cfg.agent, int(cfg.agent.total_steps)
    messages = []
    schedule = OmegaConf.to_container(agent.exploration.schedule)
    last_step, last_epsilon = schedule[-1]
    if last_step > total:
        messages.append(f"agent.exploration.schedule reaches epsilon {last_epsilon} only at env step {last_step:,}, "
                        f"after the budget agent.total_steps={total:,}")
    if int(agent.target_update) >= total - int(agent.learning_starts):
        messages.append(f"agent.target_update={agent.target_update:,} env steps: the target network is never synced "
                        f"between learning starts ({agent.learning_starts:,}) and the end of the budget ({total:,})")
    preset = any(override.lstrip("+~").startswith("experiment=") for override in overrides)
    if messages and cfg.env.kind != "atari" and not preset:
        messages.append(f"env={cfg.env.name} runs with the Atari agent settings; the presets experiment=cartpole, "
                        "experiment=frozenlake and experiment=minatar set values that fit")
    return messages


def _validate_schedule(key: str, schedule: Any, value_name: str, largest: float | None) -> None:
    """A piecewise-linear schedule: [[env_step, value], ...], steps increasing, values in range."""
    points = OmegaConf.to_container(schedule, resolve=True) if OmegaConf.is_config(schedule) else schedule
    if not isinstance(points, list) or not points:
        _fail(key, points, f"a non-empty list of [env_step, {value_name}] pairs")
    allowed = f"in [0, {largest:g}]" if largest is not None else ">= 0"
    last_step = -1
    for point in points:
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            _fail(key, points, f"a list of [env_step, {value_name}] pairs")
        step, value = point
        if not isinstance(step, (int, float)) or not math.isfinite(step) or step <= last_step:
            _fail(key, points, "pairs with strictly increasing env steps starting at >= 0")
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or \
                (largest is not None and value > largest):
            _fail(key, points, f"{value_name} values {allowed}")
        last_step = step


register_resolvers()
