"""Published DQN learning curves, kept as records to set beside ours.

    python benchmarks/experiments/published_curves.py --dopamine <clone of google/dopamine> --game pong
    python benchmarks/experiments/published_curves.py --minatar <clone of kenjyoung/MinAtar>

Dopamine publishes, per game and agent, the learning curves of 5 runs in
``baselines/atari/data/<game>.json``: for each iteration of 1M frames (250k agent steps at 4
frames per step), the mean return of the training games played in it. Its agents differ from
the original EMDQN settings (``baselines/atari/README.md``): sticky actions with probability
0.25, ε 0.01 reached after 1M frames, learning from 80k frames, the target synced every 32k
frames. This script keeps the first ``--iterations`` of each agent's runs in
``benchmarks/results/published/dopamine_<game>.json`` with the source's commit, so the
comparison is reproducible without the clone.

MinAtar (Young & Tian 2019) publishes its DQN curves only as a figure, ``img/learning_curves.gif``
(the paper's: each curve the mean over 30 runs of the moving average of the last 100 training
returns, against frames, one frame per env step). ``--minatar`` reads the DQN curve (the blue
one) of each game off that figure at the frames of ``--at``: per column, the median height
of the curve's pixels, converted with the panel's tick marks. The panels' positions are those
of the figure at the recorded commit (3038 × 1629 pixels; another figure is refused). Figures
read off a picture are good to about a twentieth of a panel's grid step (about ±0.3 on
Breakout, ±1 on Freeway); where the curve climbs steeply a small shift in frames moves the
value much more, and the record says where.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
from pathlib import Path

import numpy as np

from emdqn.analysis.records import REPO_ROOT, metadata_block, write_record

AGENTS = {
    "DQN": "Dopamine's TensorFlow DQN: RMSProp, step size 2.5e-4 (the Nature paper's), Huber loss",
    "DQN (Adam + MSE in JAX)": "Dopamine's JAX DQN: Adam, step size 6.25e-5, squared loss",
}
FRAMES_PER_ITERATION = 1_000_000
DATA = "baselines/atari/data/{game}.json"

MINATAR_FIGURE = "img/learning_curves.gif"
MINATAR_FIGURE_SIZE = (3038, 1629)
# Per game: the plot area's left and right edge (0 and 5M frames) and its top and bottom
# edge, in pixels, and two y tick marks (pixel row, value), read off the figure's axes.
MINATAR_PANELS = {
    "seaquest": ((614, 1312, 181, 644), ((624, 0.0), (228, 20.0))),
    "breakout": ((1569, 2266, 181, 644), ((637, 0.0), (286, 15.0))),
    "asterix": ((106, 804, 957, 1419), ((1407, 0.0), (1000, 20.0))),
    "freeway": ((1202, 1900, 957, 1419), ((1398, 0.0), (987, 50.0))),
    "space_invaders": ((2295, 2992, 957, 1419), ((1400, 0.0), (957, 200.0))),
}
MINATAR_FRAMES = 5_000_000  # the x axis: 0 to 5M frames


def read_runs(dopamine: Path, game: str) -> tuple[dict[str, list[list[float]]], str]:
    """Each agent's runs (one list of per-iteration values per run) and the clone's commit."""
    commit = git_commit_of(dopamine)
    shown = file_at_head(dopamine, DATA.format(game=game), f"--game {game}: the Dopamine clone")
    runs: dict[str, list[list[float]]] = {}
    for point in json.loads(shown):  # a run's points are in order; iteration 0 opens the next run
        if point["Iteration"] == 0:
            runs.setdefault(point["Agent"], []).append([])
        runs[point["Agent"]][-1].append(round(point["Value"], 3))
    return runs, commit


def file_at_head(clone: Path, path: str, what: str) -> bytes:
    """``path`` as committed at the clone's HEAD; a one-line exit naming ``what`` lacks it."""
    shown = subprocess.run(["git", "-C", str(clone), "show", f"HEAD:{path}"], capture_output=True)
    if shown.returncode != 0:
        raise SystemExit(f"{what} has no {path}")
    return shown.stdout


def git_commit_of(clone: Path) -> str:
    return subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def dqn_pixels(rgb: np.ndarray) -> np.ndarray:
    """Where the figure's DQN curve is: its blue (about RGB 1, 115, 178); the lighter band around it is not."""
    red, green, blue = (rgb[..., channel].astype(int) for channel in range(3))
    return (red < 70) & (green > 95) & (green < 145) & (blue > 160)


def read_minatar_curve(curve: np.ndarray, game: str, frames: int) -> tuple[float, float] | None:
    """The DQN return at ``frames`` on ``game``'s panel, and the spread of the curve's pixels
    there in return units (large where the curve is steep), or None where no curve pixel is."""
    (left, right, top, bottom), ((row_a, value_a), (row_b, value_b)) = MINATAR_PANELS[game]
    column = int(round(left + (right - left) * frames / MINATAR_FRAMES))
    columns = range(max(column - 2, left + 3), min(column + 3, right - 2))  # clear of the axes' lines
    rows = [row for x in columns for row in range(top + 2, bottom - 2) if curve[row, x]]
    if not rows:
        return None
    per_row = (value_b - value_a) / (row_b - row_a)
    value = value_a + (float(np.median(rows)) - row_a) * per_row
    return value, abs((max(rows) - min(rows)) * per_row)


def minatar_record(clone: Path, at: list[int]) -> dict:
    from PIL import Image

    image = Image.open(io.BytesIO(file_at_head(clone, MINATAR_FIGURE, f"--minatar {clone}: the clone")))
    if image.size != MINATAR_FIGURE_SIZE:
        raise SystemExit(f"--minatar {clone}: {MINATAR_FIGURE} is {image.size[0]} x {image.size[1]} pixels; the "
                         f"panel positions here are for the {MINATAR_FIGURE_SIZE[0]} x {MINATAR_FIGURE_SIZE[1]} figure")
    curve = dqn_pixels(np.array(image.convert("RGB")))
    games = {}
    for game in MINATAR_PANELS:
        readings = {}
        for frames in at:
            found = read_minatar_curve(curve, game, frames)
            readings[str(frames)] = None if found is None else {"return": round(found[0], 1),
                                                                "spread_of_pixels": round(found[1], 1)}
        games[game] = readings
    return {
        **metadata_block(),
        "source": {"repository": "https://github.com/kenjyoung/MinAtar", "path": MINATAR_FIGURE,
                   "commit": git_commit_of(clone), "paper": "Young & Tian 2019, https://arxiv.org/abs/1903.03176"},
        "value": "DQN's training return: mean over 30 runs of the moving average of the last 100 games, read off "
                 "the figure (one frame per env step)",
        "settings": "the paper's DQN: one update per frame, RMSProp (step size 2.5e-4), ε 1 → 0.1 over 100k frames, "
                    "replay 100k, target every 1,000 updates, full action set, sticky actions 0.1; Seaquest from "
                    "MinAtar 1.0.10 or earlier (an oxygen-bar bug since fixed)",
        "reading": "per column, the median row of the curve's blue pixels, mapped by two tick marks; "
                   "spread_of_pixels is the height of the curve's pixels there in return units",
        "games": games,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dopamine", type=Path, help="a git clone (or mirror) of google/dopamine")
    source.add_argument("--minatar", type=Path, help="a git clone (or mirror) of kenjyoung/MinAtar")
    parser.add_argument("--at", nargs="+", type=int, default=[250_000, 500_000, 1_000_000],
                        help="MinAtar: the frames (= env steps) to read the curves at")
    parser.add_argument("--game", default="pong", help="the game's file name in Dopamine's data (lower case)")
    parser.add_argument("--iterations", type=int, default=10, help="iterations of 1M frames to keep")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "published")
    args = parser.parse_args()
    if args.iterations <= 0:
        parser.error(f"--iterations must be a positive number, got {args.iterations}")
    if not all(0 < frames <= MINATAR_FRAMES for frames in args.at):
        parser.error(f"--at {args.at}: frames between 1 and {MINATAR_FRAMES:,} (the figure's axis)")
    if args.minatar:
        record = minatar_record(args.minatar, args.at)
        path = args.out / "minatar_dqn_young_tian_2019.json"
        write_record(path, record)
        for game, readings in record["games"].items():
            print(f"{game}: " + ", ".join(f"{int(frames):,} frames {reading['return']}" if reading else
                                         f"{int(frames):,} frames —" for frames, reading in readings.items()))
        print(f"wrote {path}")
        return
    runs, commit = read_runs(args.dopamine, args.game)
    missing = [agent for agent in AGENTS if agent not in runs]
    if missing:
        raise SystemExit(f"Dopamine's {DATA.format(game=args.game)} has no agent {missing[0]!r}")
    record = {
        **metadata_block(),
        "source": {"repository": "https://github.com/google/dopamine", "path": DATA.format(game=args.game),
                   "commit": commit, "settings": "https://github.com/google/dopamine/blob/master/baselines/atari/README.md"},
        "game": args.game,
        "frames_per_iteration": FRAMES_PER_ITERATION,
        "value": "mean return of the training games (ε-greedy, ε 0.01 after 1M frames) played in each iteration",
        "environment": "sticky actions (probability 0.25), 4 frames per agent step",
        "agents": {agent: {"about": about, "runs": [run[:args.iterations] for run in runs[agent]]}
                   for agent, about in AGENTS.items()},
    }
    path = args.out / f"dopamine_{args.game}.json"
    write_record(path, record)
    for agent in AGENTS:
        print(f"{agent}: {len(runs[agent])} runs, first {args.iterations} iterations kept")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
