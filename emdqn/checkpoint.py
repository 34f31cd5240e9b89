"""Resumable checkpoints, written atomically into ``<run>/checkpoints/``.

``last.ckpt`` (torch.save) holds the networks, the optimizer, every counter, the RNG
states, the environments (pickled, with the emulator state including its RNG; ale-py's
vector env cannot be saved, so with it a resumed run starts new games), the episodes in
progress and the episodic memory. The replay buffer is written beside it in chunk files
under ``replay/`` (up to 7 GB for a 1M Atari buffer), each rewritten only when the buffer
changed in it since the previous checkpoint (:mod:`emdqn.replay_files`), before the
checkpoint that names them; files no checkpoint names are removed only after the new
checkpoint is in place. Each file is written to a temporary name and renamed, so a kill
while saving leaves the previous checkpoint loadable.

``last.ckpt`` holds pickled objects, so loading it runs code: a checkpoint is trusted like
code. ``last.json`` beside it records that emdqn wrote it, with its SHA-256; resume refuses
a ``last.ckpt`` that does not match it before unpickling anything. The online network's
weights are also written alone to ``weights_<env step>.pt`` (tensors only, loadable with
``torch.load(weights_only=True)``): evaluation reads only that file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from emdqn.replay_files import ReplayFilesPlan, load_replay, remove_unnamed, replay_bytes

log = logging.getLogger("emdqn")

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.ckpt"
METADATA_FILE = "last.json"
WEIGHTS_PATTERN = "weights_*.pt"
BEST_WEIGHTS_FILE = "weights_best.pt"  # eval.keep_best: kept beside the newest weights
FORMAT_VERSION = 4  # 3: the module's and the collector's own states; 4: the replay in chunk files
READABLE_FORMATS = (3, 4)  # a format-3 checkpoint's replay is one replay_<step>.npz


@contextmanager
def reporting(what: str, size: int, threshold: int = 100_000_000) -> Iterator[None]:
    """A line before and after work on a large file (a full Atari replay is ~7 GB: half a minute or more)."""
    if size < threshold:
        yield
        return
    start = time.perf_counter()
    log.info("%s (%.1f GB)...", what, size / 1e9)
    yield
    log.info("%s: done in %.0f s", what, time.perf_counter() - start)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit this run."""


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE


def _atomic_write(path: Path, write: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda file: torch.save(obj, file))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_path(run_dir: str | os.PathLike, env_steps: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"weights_{env_steps}.pt"


def save_best_weights(run_dir: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> Path:
    """The best network of the periodic evaluations (``eval.keep_best``), tensors only."""
    path = Path(run_dir) / CHECKPOINT_DIR / BEST_WEIGHTS_FILE
    _atomic_torch_save(tensors, path)
    return path


def latest_weights(run_dir: str | os.PathLike) -> tuple[Path, int] | None:
    """The newest weights-only file of a run and its env step, or None."""
    found = []
    for path in (Path(run_dir) / CHECKPOINT_DIR).glob(WEIGHTS_PATTERN):
        step = path.stem.split("_", 1)[1]
        if step.isdigit():
            found.append((int(step), path))
    if not found:
        return None
    step, path = max(found)
    return path, step


def save_checkpoint(run_dir: str | os.PathLike, module: Any, collector: Any, save_replay: bool = True) -> Path:
    """Write a resumable checkpoint of the run (the module's and the collector's state); returns its path."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    replay_index = None
    replay_meta = None
    if save_replay:
        replay_state = collector.replay.state_dict()
        plan = ReplayFilesPlan(directory, collector.env_steps, replay_state, previous_replay_index(directory))
        with reporting("Saving the replay buffer's changed part", plan.bytes_to_write):
            replay_index = plan.write(_atomic_write)
        replay_meta = {key: value for key, value in replay_state.items() if key != "arrays"}
    state = {
        "format": FORMAT_VERSION,
        "env_steps": collector.env_steps,
        "module": module.training_state(),
        "collector": collector.state_dict(),
        "replay_index": replay_index,
        "replay_meta": replay_meta,
        "torch_rng": torch.get_rng_state(),
    }
    weights = weights_path(run_dir, collector.env_steps)
    _atomic_torch_save({name: tensor.detach().cpu() for name, tensor in module.q_network.state_dict().items()},
                       weights)
    path = directory / CHECKPOINT_FILE
    _atomic_torch_save(state, path)
    metadata = {"written_by": "emdqn", "format": FORMAT_VERSION, "env_steps": collector.env_steps,
                "sha256": file_sha256(path), "weights": weights.name, "replay": replay_index}
    _atomic_write(directory / METADATA_FILE, lambda file: file.write(json.dumps(metadata, indent=1).encode()))
    remove_unnamed(directory, replay_index)
    for old in [*directory.glob("replay_*.npz"), *directory.glob(WEIGHTS_PATTERN)]:  # npz: format 3
        if old.name not in (weights.name, BEST_WEIGHTS_FILE):
            old.unlink()
    return path


def previous_replay_index(directory: Path) -> dict[str, Any] | None:
    """The replay files of the checkpoint in ``directory`` (from its metadata), or None."""
    try:
        metadata = json.loads((directory / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None
    return metadata.get("replay") if isinstance(metadata, dict) else None


def load_checkpoint(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``<run>/checkpoints/last.ckpt``; CheckpointError names the file on any problem."""
    path = checkpoint_path(run_dir)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: this run folder cannot be resumed")
    metadata_path = path.with_name(METADATA_FILE)
    try:
        metadata = json.loads(metadata_path.read_text())
    except (OSError, ValueError):
        metadata = None
    # Unpickling runs code: only a file emdqn wrote (its hash recorded beside it) is opened.
    if not isinstance(metadata, dict) or metadata.get("written_by") != "emdqn":
        raise CheckpointError(f"checkpoint {path} has no {METADATA_FILE} written by emdqn beside it: refusing to "
                              "unpickle it (a checkpoint runs code when loaded; resume only emdqn's own checkpoints)")
    if metadata.get("sha256") != file_sha256(path):
        raise CheckpointError(f"checkpoint {path} is not the file emdqn wrote ({METADATA_FILE} records another "
                              "SHA-256; a corrupted or replaced file): refusing to unpickle it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(f"checkpoint {path} is corrupted or unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
        raise CheckpointError(f"checkpoint {path} has an incompatible format "
                              f"(found {state.get('format') if isinstance(state, dict) else type(state)}, "
                              f"need {' or '.join(map(str, READABLE_FORMATS))})")
    state["path"] = path
    return state


def restore(state: dict[str, Any], module: Any, collector: Any) -> None:
    """Load a checkpoint into a freshly built module and collector (the optimizer follows at fit start)."""
    path = state["path"]
    try:
        module.load_training_state(state["module"])
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path} does not fit this model: {error}") from None
    arrays = saved_replay(state)
    if arrays is not None:
        try:
            collector.replay.load_state_dict({"arrays": arrays, **state["replay_meta"]})
        except (ValueError, KeyError) as error:
            raise CheckpointError(f"the replay of checkpoint {path} does not fit this run: {error}") from None
    # After the replay: games that cannot be restored close their episodes in it.
    try:
        collector.load_state_dict(state["collector"])
    except ValueError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from None
    if arrays is None:
        collector.replay_not_restored()
    torch.set_rng_state(state["torch_rng"])


def saved_replay(state: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The replay arrays a loaded checkpoint names (None when it was saved without them)."""
    directory = state["path"].parent
    index, old_file = state.get("replay_index"), state.get("replay_file")
    if index is None and old_file is None:
        return None
    try:
        if index is not None:
            with reporting("Loading the replay buffer", replay_bytes(directory, index)):
                return load_replay(directory, index)
        with reporting("Loading the replay buffer", (directory / old_file).stat().st_size), \
                np.load(directory / old_file) as arrays:
            return dict(arrays)
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"the replay files of checkpoint {state['path']} cannot be loaded: {error}") from None
