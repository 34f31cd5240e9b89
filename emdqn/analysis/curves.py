"""The one way curves are drawn: a mean line with its 95 % band, against env steps.

``python -m emdqn.compare``, the MinAtar suite's report and the Atari pair's report draw
through it, so their pictures read the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mean_with_band(axis: Any, steps: np.ndarray, mean: np.ndarray, low: np.ndarray | None = None,
                   high: np.ndarray | None = None, label: str | None = None, **line_style: Any) -> Any:
    """A curve and, when given, its interval as a shaded band of the same colour."""
    line, = axis.plot(steps, mean, label=label, **line_style)
    if low is not None and high is not None:
        axis.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def short_count(value: float, _position: Any = None) -> str:
    """An axis tick as 250k or 1.5M: full numbers of env steps run into each other on small panels."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def label_axes(axis: Any, ylabel: str, title: str | None = None, xlabel: str = "env steps") -> None:
    from matplotlib.ticker import FuncFormatter

    axis.xaxis.set_major_formatter(FuncFormatter(short_count))
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if title:
        axis.set_title(title)
    axis.grid(alpha=0.3)


def save_figure(figure: Any, path: Path, dpi: int = 120) -> Path:
    plt = pyplot()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path
