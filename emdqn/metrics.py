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
        parts = [f"step {env_step:,}/{self.total_steps:,} ({100 * env_step / self.total_steps:.1f}%)",
                 f"eps {epsilon:.3f}",
                 f"return(100) {recent_return:.2f}" if recent_return is not None else "return(100) -",
                 f"SPS {sps:.0f}" if math.isfinite(sps) else "SPS -", f"ETA {format_duration(eta)}"]
        if memory_size is not None:
            parts.append(f"memory {memory_size:,}")
        log.info(" | ".join(parts))
