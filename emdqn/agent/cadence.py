"""One rule for everything periodic: due when the env-step clock crosses a multiple of N.

Updates (``agent.train_freq``), target syncs, log rows, checkpoints and evaluations all
use it, so a run that plays several env steps at once (``env.num_envs``) or stops and
resumes between two multiples does each of them exactly as often as one env would.
"""

from __future__ import annotations


def crossings(before: int, now: int, every: int) -> int:
    """How many multiples of ``every`` lie in (before, now]; 0 when ``every`` is 0 (never)."""
    return now // every - before // every if every else 0


class Cadence:
    """``due(step)``: a multiple of ``every`` was crossed since the previous call (or ``last``)."""

    def __init__(self, every: int, last: int = 0):
        self.every = int(every or 0)
        self.last = int(last)

    def due(self, step: int) -> bool:
        crossed = crossings(self.last, step, self.every) > 0
        self.last = step
        return crossed
