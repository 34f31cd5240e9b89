"""Piecewise-linear schedules (epsilon, the learning-rate factor), clocked in env steps."""

from __future__ import annotations

from typing import Sequence

import numpy as np


class PiecewiseLinearSchedule:
    """Linear interpolation between ``[(step, value), ...]``; constant outside the points.

    The original code's epsilon is ``[(0, 1.0), (200_000, 0.1), (2_000_000, 0.01)]``.
    """

    def __init__(self, points: Sequence[Sequence[float]]):
        if not points:
            raise ValueError("schedule points must not be empty")
        steps = [float(step) for step, _ in points]
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"schedule steps must increase strictly, got {steps}")
        self.steps = np.asarray(steps)
        self.values = np.asarray([float(value) for _, value in points])

    def __call__(self, step: float) -> float:
        return float(np.interp(step, self.steps, self.values))
