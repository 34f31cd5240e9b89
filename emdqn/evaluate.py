"""Play a trained agent: evaluation protocols, videos and human-normalized scores.

    python -m emdqn.evaluate <run folder>                                # 30 games, the run's env, epsilon 0.05
    python -m emdqn.evaluate <run folder> protocol=machado episodes=100  # sticky actions, no life signal, eps 0.001
    python -m emdqn.evaluate <run folder> video=true                     # MP4s of the first games in <run>/videos/

Protocols (any key overridable: ``epsilon=``, ``episodes=``, ``seed=``, ``env.<key>=``):

* ``nature``: the run's own preprocessing, epsilon 0.05, its 1-30 random no-ops, games
  capped at 108,000 frames (27,000 agent steps on Atari).
* ``machado`` (Machado et al. 2018, Atari only): sticky actions 0.25, no loss-of-life
  signal and no no-op starts, epsilon 0.001, the same cap; the full action set when the
  network was trained on it (else the run's own set, said in the output).

Scores are real, unclipped full games. The result goes to
``<run>/eval_<protocol>_<step>.json`` (per-game returns and lengths, mean, std, median, a
95 % bootstrap interval of the mean, the human-normalized score on Atari) and, when the run
has a W&B run, to it as ``eval/*``. Only the weights-only file
``checkpoints/weights_<step>.pt`` is read, with ``torch.load(weights_only=True)``: no
pickled object of the run is ever unpickled here. The greedy evaluation during training
plays through :func:`play_games` too.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from emdqn.config.checks import ConfigError, read_run_config
from emdqn.envs.make import make_env, real_episode_stats
from emdqn.agent.metrics import format_duration

ATARI_EPISODE_FRAMES = 108_000  # the standard cap of an evaluation game: 30 minutes of play
PROTOCOLS: dict[str, dict[str, Any]] = {
    "nature": {"epsilon": 0.05, "atari_env": {"max_episode_frames": ATARI_EPISODE_FRAMES}},
    "machado": {"epsilon": 0.001, "atari_only": True,
                "atari_env": {"max_episode_frames": ATARI_EPISODE_FRAMES, "episodic_life": False, "noop_max": 0,
                              "kwargs": {"repeat_action_probability": 0.25, "full_action_space": True}}},
}
OPTIONS = ("protocol", "episodes", "epsilon", "seed", "video", "video_games")


class EvaluationError(ValueError):
    """An evaluation request that cannot be carried out (one line for the user)."""


@dataclass
class Games:
    returns: list[float]
    lengths: list[int]


class GameProgress:
    """A line at most every ``every_seconds`` as games finish: games done, mean so far, time left."""

    def __init__(self, games: int, report: Callable[[str], None] | None, label: str, every_seconds: float = 10.0):
        self.games, self.report, self.label, self.every_seconds = games, report, label, every_seconds
        self.start = self.last = time.perf_counter()

    def game_finished(self, returns: list[float]) -> None:
        now = time.perf_counter()
        done = len(returns)
        if self.report is None or (now - self.last < self.every_seconds and done < self.games):
            return
        self.last = now
        left = (now - self.start) / done * (self.games - done)
        if done < self.games:
            self.report(f"{self.label}: {done}/{self.games} games, mean return so far {float(np.mean(returns)):.2f}, "
                        f"about {format_duration(left)} left")
        else:
            self.report(f"{self.label}: {done} games, return {float(np.mean(returns)):.2f} +- "
                        f"{float(np.std(returns)):.2f}, done in {format_duration(now - self.start)}")


@torch.inference_mode()
def play_games(network: torch.nn.Module, env_cfg: Any, games: int, epsilon: float = 0.0, seed: int = 0,
               video_folder: str | Path | None = None, video_games: int = 1, video_prefix: str = "eval",
               report: Callable[[str], None] | None = None, label: str = "evaluation") -> Games:
    """``games`` full games played epsilon-greedily (epsilon 0: greedy), real scores.

    A lost life ends a *training* episode only; a game goes on until it is over or capped.
    With ``video_folder``, the first ``video_games`` games are recorded as MP4 from the
    unprocessed RGB screen. ``report`` gets a progress line as games finish (at most one
    every 10 seconds, and the last).
    """
    progress = GameProgress(games, report, label)
    recorder = None
    if video_folder is not None:
        from gymnasium.wrappers import RecordVideo

        def recorder(env):
            return RecordVideo(env, str(video_folder), episode_trigger=lambda index: index < video_games,
                               name_prefix=video_prefix, disable_logger=True)

    env = make_env(env_cfg, seed=seed, render_mode="rgb_array" if recorder else None, raw_wrapper=recorder)
    rng = np.random.default_rng(seed)
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    played = Games([], [])
    try:
        obs, _ = env.reset(seed=seed)
        while len(played.returns) < games:
            if rng.random() < epsilon:
                action = int(rng.integers(env.action_space.n))
            else:
                action = int(network(torch.as_tensor(obs, device=device).unsqueeze(0)).argmax(dim=1).item())
            obs, _, terminated, truncated, info = env.step(action)
            finished = real_episode_stats(info)
            if finished is not None:
                played.returns.append(finished[0])
                played.lengths.append(finished[1])
                progress.game_finished(played.returns)
            if terminated or truncated:
                obs, _ = env.reset()
    finally:
        env.close()
        network.train(was_training)
    return played


FLAT_GAME_STEPS = 10_000  # the cap of an evaluation game of a flat env that has no time limit of its own


def evaluation_env(env_cfg: Any) -> Any:
    """The env config of an evaluation game: the training env's, with Atari games capped at
    108,000 frames (the cap every published Atari evaluation uses) where training caps them
    later, and games of a flat env without a time limit (CliffWalking) at 10,000 steps: an
    untrained greedy policy can walk into a wall forever."""
    if env_cfg.get("kind") in ("classic", "toy_text"):
        import gymnasium as gym

        spec = gym.spec(env_cfg.id)
        if spec.max_episode_steps is None and "max_episode_steps" not in (env_cfg.get("kwargs") or {}):
            capped = OmegaConf.create(OmegaConf.to_container(env_cfg, resolve=True))
            capped.kwargs = {**(capped.get("kwargs") or {}), "max_episode_steps": FLAT_GAME_STEPS}
            return capped
        return env_cfg
    if env_cfg.get("kind") != "atari":
        return env_cfg
    capped = OmegaConf.create(OmegaConf.to_container(env_cfg, resolve=True))
    capped.max_episode_frames = min(int(env_cfg.get("max_episode_frames") or ATARI_EPISODE_FRAMES),
                                    ATARI_EPISODE_FRAMES)
    return capped


def evaluate(network: torch.nn.Module, env_cfg: Any, episodes: int, epsilon: float = 0.0, seed: int = 0,
             video_folder: str | Path | None = None, video_prefix: str = "eval",
             report: Callable[[str], None] | None = None, label: str = "evaluation") -> list[float]:
    """The returns of ``episodes`` full games (the evaluation during training), capped as
    :func:`evaluation_env` says."""
    return play_games(network, evaluation_env(env_cfg), episodes, epsilon, seed, video_folder,
                      video_prefix=video_prefix, report=report, label=label).returns


def load_weights(run_dir: Path) -> tuple[dict[str, torch.Tensor], int]:
    """The weights-only file of the run's checkpoint, checked against its manifest and loaded
    without unpickling objects."""
    from emdqn.run.checkpoint import CheckpointError, latest_weights, load_weights_file

    try:
        found = latest_weights(run_dir)
        if found is None:
            raise EvaluationError(f"{run_dir} has no checkpoint (checkpoints/manifest.json): train or resume the "
                                  "run to the end of its budget, or let it write a checkpoint (Ctrl-C, "
                                  "checkpoint.every_steps)")
        path, step, digest = found
        return load_weights_file(path, digest), step
    except CheckpointError as error:
        raise EvaluationError(str(error)) from None


def env_spaces(env_cfg: Any) -> tuple[tuple[int, ...], int]:
    """(observation shape, number of actions) of the env a config builds."""
    try:
        probe = make_env(env_cfg, seed=0)
    except ValueError as error:  # an env id unknown to this machine, a bad env option
        raise EvaluationError(str(error)) from None
    try:
        return tuple(probe.observation_space.shape), int(probe.action_space.n)
    finally:
        probe.close()


def trained_network(run_dir: Path, run_cfg: DictConfig, weights: dict[str, torch.Tensor],
                    obs_shape: Sequence[int], num_actions: int) -> torch.nn.Module:
    """The run's Q-network (its ``model`` config) holding ``weights``, in eval mode."""
    from emdqn.agent.networks import build_q_network

    network = build_q_network(run_cfg.model, obs_shape, num_actions, run_cfg.get("trainer"))
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        raise EvaluationError(f"the weights of {run_dir} do not fit its config's network: {error}") from None
    return network.eval()


def evaluation_config(run_cfg: DictConfig, protocol: str, overrides: dict[str, Any]) -> tuple[DictConfig, dict]:
    """The env config the games are played with, and the settings (epsilon, games, seed, ...)."""
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"protocol={protocol!r} is not allowed: {', '.join(PROTOCOLS)}")
    preset = PROTOCOLS[protocol]
    env_cfg = run_cfg.env.copy()
    kind = env_cfg.kind
    if preset.get("atari_only") and kind != "atari":
        raise EvaluationError(f"protocol={protocol} is defined for Atari games; this run plays {env_cfg.id} "
                              "(use protocol=nature)")
    with open_dict(env_cfg):
        env_cfg.num_envs = 1
        if kind == "atari":
            env_cfg.merge_with(OmegaConf.create(preset["atari_env"]))
        for key, value in overrides.get("env", {}).items():
            OmegaConf.update(env_cfg, key, value, force_add=True)
    settings = {"protocol": protocol, "epsilon": float(overrides.get("epsilon", preset["epsilon"])),
                "episodes": overrides.get("episodes", 30), "seed": overrides.get("seed", int(run_cfg.seed) + 20_000),
                "video": bool(overrides.get("video", False)), "video_games": overrides.get("video_games", 2)}
    for key in ("episodes", "video_games"):
        value = settings[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise EvaluationError(f"{key}={value!r} is not allowed: an integer >= 1")
    if not 0.0 <= settings["epsilon"] <= 1.0:
        raise EvaluationError(f"epsilon={settings['epsilon']!r} is not allowed: a number in [0, 1]")
    return env_cfg, settings


def summarize(games: Games, env_id: str) -> dict[str, Any]:
    from emdqn.analysis.aggregates import bootstrap_mean_interval
    from emdqn.envs.atari_scores import atari_game, human_normalized_score

    returns = np.asarray(games.returns, dtype=np.float64)
    mean, low, high = bootstrap_mean_interval(returns)
    summary = {"returns": games.returns, "lengths": games.lengths, "mean": float(mean), "std": float(returns.std()),
               "median": float(np.median(returns)), "ci95": [float(low), float(high)]}
    game = atari_game(env_id)
    hns = human_normalized_score(game, float(mean))
    if math.isfinite(hns):
        summary["atari_game"] = game
        summary["hns"] = hns
    return summary


def output_path(run_dir: Path, protocol: str, step: int) -> Path:
    """``eval_<protocol>_<step>.json``; an existing file is kept and the new one numbered."""
    path = run_dir / f"eval_{protocol}_{step}.json"
    number = 2
    while path.exists():
        path = run_dir / f"eval_{protocol}_{step}_{number}.json"
        number += 1
    return path


def log_to_wandb(run_dir: Path, run_cfg: DictConfig, step: int, summary: dict, protocol: str,
                 videos: Sequence[Path]) -> bool:
    """Add the result to the run's W&B run (when it has one); False when there is none or W&B fails."""
    from emdqn.run.wandb_run import WANDB_ID_FILE, quiet_wandb_settings, wandb_mode

    id_file = run_dir / WANDB_ID_FILE
    if not id_file.exists():
        return False
    try:
        import wandb

        wandb_cfg = run_cfg.logger.wandb
        run = wandb.init(id=id_file.read_text().strip(), project=wandb_cfg.project, entity=wandb_cfg.entity,
                         dir=str(run_dir), resume="allow", mode=wandb_mode(wandb_cfg.mode), job_type="eval",
                         settings=quiet_wandb_settings())
        metrics = {f"eval/{protocol}/episodic_return": summary["mean"], "global_step": step}
        if "hns" in summary:
            metrics[f"eval/{protocol}/hns"] = summary["hns"]
        for video in videos:
            metrics[f"eval/{protocol}/video"] = wandb.Video(str(video), format="mp4")
        run.log(metrics)
        run.finish()
    except Exception as error:  # the JSON file already has everything
        print(f"warning: W&B logging failed ({type(error).__name__}: {error}); the result is in the JSON file",
              file=sys.stderr)
        return False
    return True


def run_evaluation(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> tuple[dict, Path]:
    """Evaluate a run folder; returns the summary and the JSON file written."""
    run_dir = Path(run_dir)
    overrides = dict(overrides or {})
    if not (run_dir / "config.yaml").exists():
        inside = sorted(str(path.parent) for path in run_dir.glob("*/config.yaml"))
        if inside:  # a sweep's folder: say which runs it holds
            shown = ", ".join(inside[:5]) + (f" and {len(inside) - 5} more" if len(inside) > 5 else "")
            raise EvaluationError(f"{run_dir} is a sweep folder, not a run folder: evaluate one of its {len(inside)} "
                                  f"runs: {shown}")
        raise EvaluationError(f"{run_dir} is not a run folder (no config.yaml in it)")
    unknown = sorted(set(overrides) - set(OPTIONS) - {"env"})
    if unknown:
        raise EvaluationError(f"unknown option {unknown[0]}=...: allowed are {', '.join(OPTIONS)} and env.<key>")
    weights, step = load_weights(run_dir)
    try:
        run_cfg = read_run_config(run_dir / "config.yaml")
    except ConfigError as error:
        raise EvaluationError(str(error)) from None
    env_cfg, settings = evaluation_config(run_cfg, str(overrides.get("protocol", "nature")), overrides)
    obs_shape, num_actions = env_spaces(env_cfg)
    notes = []
    if env_cfg.kind == "atari" and env_cfg.get("kwargs", {}).get("full_action_space"):
        trained_env = run_cfg.env.copy()
        with open_dict(trained_env):
            trained_env.num_envs = 1
        _, trained_actions = env_spaces(trained_env)  # the network's outputs: the run's own action set
        if trained_actions != num_actions:
            with open_dict(env_cfg):
                env_cfg.kwargs.full_action_space = False
            notes.append(f"the network has {trained_actions} outputs (trained on the minimal action set): "
                         "played with that set")
            num_actions = trained_actions
    network = trained_network(run_dir, run_cfg, weights, obs_shape, num_actions)
    if run_cfg.trainer.get("threads"):  # as the run was set to; more threads beside other jobs slow batch-1 passes
        torch.set_num_threads(int(run_cfg.trainer.threads))
    path = output_path(run_dir, settings["protocol"], step)
    writable_or_refused(path)  # before the games, not after them
    video_folder = run_dir / "videos" if settings["video"] else None
    prefix = f"{settings['protocol']}_step{step}"
    games = play_games(network, env_cfg, settings["episodes"], settings["epsilon"], settings["seed"], video_folder,
                       settings["video_games"], prefix, report=lambda line: print(line, file=sys.stderr, flush=True),
                       label=f"{env_cfg.id} at env step {step:,}")
    summary = {"run": str(run_dir), "env_id": str(env_cfg.id), "step": step, **settings,
               "env_overrides": OmegaConf.to_container(env_cfg, resolve=True), "notes": notes,
               **summarize(games, str(env_cfg.id))}
    videos = sorted(video_folder.glob(f"{prefix}*.mp4")) if video_folder else []
    summary["videos"] = [str(path) for path in videos]
    path.write_text(json.dumps(summary, indent=1) + "\n")
    summary["wandb"] = log_to_wandb(run_dir, run_cfg, step, summary, settings["protocol"], videos)
    return summary, path


def writable_or_refused(path: Path) -> None:
    """Refuse, in one line, a result file that cannot be written (a read-only run folder)."""
    probe = path.with_name(path.name + ".tmp")
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise EvaluationError(f"cannot write the result {path} ({error.strerror or error}): make the run folder "
                              "writable or copy it elsewhere") from None


def parse_overrides(arguments: Sequence[str]) -> dict[str, Any]:
    for argument in arguments:
        if "=" not in argument:
            raise EvaluationError(f"{argument!r} is not key=value (e.g. episodes=10, protocol=machado)")
    return OmegaConf.to_container(OmegaConf.from_dotlist(list(arguments)))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        summary, path = run_evaluation(argv[0], parse_overrides(argv[1:]))
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    line = (f"{summary['env_id']} at env step {summary['step']:,}, protocol {summary['protocol']}, "
            f"{len(summary['returns'])} games: mean {summary['mean']:.2f} "
            f"[{summary['ci95'][0]:.2f}, {summary['ci95'][1]:.2f}], median {summary['median']:.2f}, "
            f"std {summary['std']:.2f}")
    if "hns" in summary:
        line += f", human-normalized {summary['hns']:.3f}"
    print(line)
    for note in summary["notes"]:
        print(f"note: {note}")
    for video in summary["videos"]:
        print(f"video: {video}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
