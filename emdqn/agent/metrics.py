"""One way to send metrics to every logger, with env steps as the x-axis."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from typing import Any, Iterable

log = logging.getLogger("emdqn")


def log_metrics(loggers: Iterable[Any], metrics: dict[str, float], env_step: int) -> None:
    """Log ``metrics`` at ``env_step`` (also written as ``global_step``, CleanRL-style)."""
    row = {name: float(value) for name, value in metrics.items()}
    row["global_step"] = float(env_step)
    for logger in loggers:
        logger.log_metrics(row, step=int(env_step))


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class RateMeter:
    """Steps per second over the last few readings (robust to a slow start)."""

    def __init__(self, window: int = 10):
        self.readings: deque[tuple[float, int]] = deque(maxlen=window)

    def restart(self) -> None:
        """Forget every reading (the speed changed: learning started)."""
        self.readings.clear()

    def update(self, step: int) -> float:
        now = time.perf_counter()
        self.readings.append((now, step))
        if len(self.readings) < 2:
            return math.nan  # not measured yet
        (t0, s0), (t1, s1) = self.readings[0], self.readings[-1]
        return (s1 - s0) / max(t1 - t0, 1e-9)


class EvaluationPlan:
    """The evaluations still to come in a run and what one takes, for the ETA: periodic ones
    every ``every_steps`` env steps and the final one."""

    def __init__(self, total_steps: int, every_steps: int, games: int, final: bool = True):
        self.total_steps, self.every_steps, self.games, self.final = total_steps, every_steps, games, final
        self.seconds_each: float | None = None  # measured by the last evaluation

    def remaining(self, env_step: int) -> int:
        if self.games <= 0:
            return 0
        periodic = self.total_steps // self.every_steps - env_step // self.every_steps if self.every_steps else 0
        return max(periodic, 0) + int(self.final)

    def measured(self, seconds: float) -> None:
        self.seconds_each = seconds

    def eta_part(self, env_step: int) -> tuple[float, str]:
        """(seconds the evaluations still take, or 0 when unknown; the words for them)."""
        count = self.remaining(env_step)
        if not count:
            return 0.0, ""
        plural = "s" if count > 1 else ""
        if self.seconds_each is None:
            return 0.0, f" + {count} evaluation{plural} of {self.games} games"
        return count * self.seconds_each, f" with {count} evaluation{plural}"


class ProgressReporter:
    """Prints one line every ``every_seconds``: env steps, epsilon, recent return, SPS, ETA.

    Before ``learning_starts`` the loop only plays, several times faster than it will
    train: no ETA is given then, and the SPS window restarts once learning has started.
    """

    def __init__(self, total_steps: int, every_seconds: float = 10.0, learning_starts: int = 0):
        self.total_steps = total_steps
        self.every_seconds = every_seconds
        self.learning_starts = learning_starts
        self.rate = RateMeter()
        self.last_print = -math.inf
        self.learning_seen = False
        self.evaluations: EvaluationPlan | None = None

    def plan_evaluations(self, plan: EvaluationPlan) -> None:
        """Count the evaluations to come in the ETA."""
        self.evaluations = plan

    def due(self) -> bool:
        return time.perf_counter() - self.last_print >= self.every_seconds

    def maybe_report(self, env_step: int, epsilon: float, recent_return: float | None,
                     memory_size: int | None, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last_print < self.every_seconds:
            return
        self.last_print = now
        learning = env_step > self.learning_starts
        if learning and not self.learning_seen:
            self.learning_seen = True
            self.rate.restart()
        sps = self.rate.update(env_step)
        eta = (self.total_steps - env_step) / sps if sps > 0 and learning else math.inf  # nan > 0 is False
        if env_step >= self.total_steps:
            eta = 0.0
        evaluation_seconds, evaluation_words = self.evaluations.eta_part(env_step) if self.evaluations else (0.0, "")
        parts = [f"step {env_step:,}/{self.total_steps:,} ({100 * env_step / self.total_steps:.1f}%)",
                 f"eps {epsilon:.3f}",
                 f"return(100) {recent_return:.2f}" if recent_return is not None else "return(100) -",
                 f"SPS {sps:.0f}" if math.isfinite(sps) else "SPS -",
                 f"ETA {format_duration(eta + evaluation_seconds)}{evaluation_words}"]
        if memory_size is not None:
            parts.append(f"memory {memory_size:,}")
        log.info(" | ".join(parts))
